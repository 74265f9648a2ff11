package vfs

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncData flushes f's data and the metadata needed to read it back
// (fdatasync), for SyncData.
func syncData(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// syncAll flushes f's data and all its metadata (fsync), for SyncAll.
func syncAll(f *os.File) error { return f.Sync() }

// startWriteback starts writing f's dirty pages in [off, off+n) to the
// device without waiting for them (sync_file_range with
// SYNC_FILE_RANGE_WRITE), for StartWriteback.
func startWriteback(f *os.File, off, n int64) error {
	return unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
