package vfs

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// syncData flushes f's data and the metadata needed to read it back
// (fdatasync), for SyncData.
func syncData(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// syncAll flushes f's data and all its metadata (fsync), for SyncAll.
func syncAll(f *os.File) error { return f.Sync() }

// Allocate is Allocate for an OS file: fallocate(2) with mode 0.
func (f osFile) Allocate(off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return ErrNoAllocate
	}
	if err != nil {
		return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
	}
	return nil
}
