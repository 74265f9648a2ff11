package vfs

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/windows"
)

// The Windows versions of the calls os_unix.go and os_linux.go make.

// lockRange is the byte range lockFile locks: one byte at the largest
// offset, far past the pid the file holds, because Windows locks are
// mandatory and a lock over the pid would stop other processes reading it.
const lockRange = ^uint32(0)

// lockFile takes an exclusive lock on f without waiting (LockFileEx).
// Windows drops it when the process dies.
func lockFile(f *os.File) error {
	ol := windows.Overlapped{Offset: lockRange, OffsetHigh: lockRange}
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
	if err == windows.ERROR_LOCK_VIOLATION {
		return ErrLocked
	}
	return err
}

// unlockFile drops the lock lockFile took.
func unlockFile(f *os.File) error {
	ol := windows.Overlapped{Offset: lockRange, OffsetHigh: lockRange}
	return windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, &ol)
}

// mmapRead maps the first n bytes of f read-only, or fewer: Windows cannot
// map a read-only view past the end of the file, so the view stops at EOF.
// The segment cache then maps the active segment again after it grows
// (setActive drops a mapping shorter than the active mapping length), where
// Linux maps it once. Views see later writes to the file, as on Unix.
func mmapRead(f *os.File, n int) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n = int(min(int64(n), st.Size()))
	if n == 0 {
		return nil, errors.New("cannot map an empty file")
	}
	h, err := windows.CreateFileMapping(windows.Handle(f.Fd()), nil, windows.PAGE_READONLY, 0, 0, nil)
	if err != nil {
		return nil, os.NewSyscallError("CreateFileMapping", err)
	}
	// The view keeps the mapping object alive after its handle is closed.
	defer windows.CloseHandle(h)
	addr, err := windows.MapViewOfFile(h, windows.FILE_MAP_READ, 0, 0, uintptr(n))
	if err != nil {
		return nil, os.NewSyscallError("MapViewOfFile", err)
	}
	return unsafe.Slice((*byte)(*(*unsafe.Pointer)(unsafe.Pointer(&addr))), n), nil
}

// mmapWrite returns no mapping on Windows: a writable view past EOF would
// grow the file to the view's length, so the writer writes every group with
// WriteAt instead of copying small ones into a shared mapping.
func mmapWrite(*os.File, int) ([]byte, error) { return nil, nil }

// munmap releases a view made by mmapRead.
func munmap(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return windows.UnmapViewOfFile(uintptr(unsafe.Pointer(&b[0])))
}

// syncData is FlushFileBuffers (Windows has one flush for data and
// metadata).
func syncData(f *os.File) error { return f.Sync() }

// syncAll is FlushFileBuffers.
func syncAll(f *os.File) error { return f.Sync() }

// syncDirEntries does nothing: a directory opened with os.Open cannot be
// flushed on Windows. NTFS records creates, renames and removes in its
// metadata journal, which Windows commits on its own schedule, so a power
// loss (not a process crash) shortly after one can undo it.
func syncDirEntries(string) error { return nil }

// openFlags: Windows has neither named pipes in the file system's
// namespace nor O_NOFOLLOW; openChecked's mode check remains.
func openFlags(writing bool) int { return 0 }

// isSymlinkRefusal: never, without O_NOFOLLOW.
func isSymlinkRefusal(err error) bool { return false }

// openedRegular: nothing to undo.
func openedRegular(f *os.File) error { return nil }
