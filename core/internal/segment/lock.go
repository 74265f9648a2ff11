package segment

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/batpak-go/batpak/core/internal/vfs"
)

// LockFileName is the writer lock's file in a store directory.
const LockFileName = "LOCK"

// Lock takes the store's exclusive writer lock (flock on dir/LOCK,
// LockFileEx on Windows) and records this process's pid in it. The kernel
// drops the lock when the process dies, so a crash never leaves a stale
// lock. Open calls it once per writable store and keeps the file until
// Unlock. Errors: a *LockedError (naming the holder's pid when it could be
// read) when another process holds the lock; otherwise the I/O error,
// wrapped.
func Lock(fsys vfs.FS, dir string) (vfs.File, error) {
	path := filepath.Join(dir, LockFileName)
	f, err := fsys.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("batpak: open lock file: %w", err)
	}
	if err := fsys.Lock(f); err != nil {
		b, _ := vfs.ReadFileAtMost(fsys, path, 4<<10) // a pid; more is not ours
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		f.Close()
		if err == vfs.ErrLocked {
			return nil, &LockedError{Dir: dir, PID: pid}
		}
		return nil, fmt.Errorf("batpak: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// Unlock clears the pid, drops the lock taken by Lock and closes f (nil:
// nothing to do). It returns the close error.
func Unlock(fsys vfs.FS, f vfs.File) error {
	if f == nil {
		return nil
	}
	_ = f.Truncate(0)
	_ = fsys.Unlock(f)
	return f.Close()
}
