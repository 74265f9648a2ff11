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
