package vfs

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// syncData is fsync(2): macOS has no fdatasync, and its fsync hands the
// data to the drive without flushing the drive's write cache, so a power
// loss can still lose it. Use SyncAll where that matters.
func syncData(f *os.File) error { return unix.Fsync(int(f.Fd())) }

// syncAll is fcntl(F_FULLFSYNC), which also flushes the drive's cache
// (plain fsync where the file system does not support it, as on SMB).
func syncAll(f *os.File) error {
	_, err := unix.FcntlInt(f.Fd(), unix.F_FULLFSYNC, 0)
	if errors.Is(err, unix.ENOTSUP) {
		err = unix.Fsync(int(f.Fd()))
	}
	return err
}
