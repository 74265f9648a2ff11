//go:build unix

package vfs

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// The calls Linux, macOS and the BSDs share: the writer lock and memory
// mappings. Per-OS syncs are in os_linux.go, os_darwin.go and os_bsd.go.

// lockFile takes an exclusive flock on f without waiting. The kernel drops
// it when the process dies.
func lockFile(f *os.File) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == unix.EWOULDBLOCK {
		return ErrLocked
	}
	return err
}

// unlockFile drops the lock lockFile took.
func unlockFile(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_UN) }

// mmapRead maps the first n bytes of f shared and read-only. n may exceed
// the file's size (the pages past EOF must never be touched): the active
// segment is mapped once at its final length and read as it grows.
func mmapRead(f *os.File, n int) ([]byte, error) {
	return unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ, unix.MAP_SHARED)
}

// mmapWrite maps the first n bytes of f shared and writable.
func mmapWrite(f *os.File, n int) ([]byte, error) {
	return unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
}

// munmap releases a mapping made by mmapRead or mmapWrite.
func munmap(b []byte) error { return unix.Munmap(b) }

// syncDirEntries makes the directory's entries (files created, renamed,
// removed) durable.
func syncDirEntries(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// openFlags are the flags openChecked adds: O_NONBLOCK, so that opening a
// named pipe does not wait for its other end (openedRegular takes it off
// again), and O_NOFOLLOW when writing.
func openFlags(writing bool) int {
	if writing {
		return unix.O_NONBLOCK | unix.O_NOFOLLOW
	}
	return unix.O_NONBLOCK
}

// isSymlinkRefusal reports whether err is O_NOFOLLOW's refusal of a link
// (ELOOP; EMLINK on FreeBSD).
func isSymlinkRefusal(err error) bool {
	return errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EMLINK)
}

// openedRegular puts a file openChecked accepted back in blocking mode.
func openedRegular(f *os.File) error { return unix.SetNonblock(int(f.Fd()), false) }
