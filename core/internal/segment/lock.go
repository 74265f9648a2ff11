package segment

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/batpak-go/batpak/core/internal/vfs"
)

// LockFileName is the writer lock's file in a store directory.
const LockFileName = "LOCK"

// ErrLockMoved is what Lock returns when dir/LOCK was removed or replaced
// between opening it and locking it: the lock it took is on a file that no
// longer guards the directory (a store being removed under its lock
// unlinks LOCK before releasing it), so it is dropped. Open tries again.
var ErrLockMoved = errors.New("batpak: the lock file was removed or replaced while it was being locked")

// Lock takes the store's exclusive writer lock (flock on dir/LOCK,
// LockFileEx on Windows) and records this process's pid in it. The kernel
// drops the lock when the process dies, so a crash never leaves a stale
// lock. Open calls it once per writable store and keeps the file until
// Unlock. A lock counts only while dir/LOCK is still the file locked: a
// holder may unlink LOCK (and remove the directory) before it lets go, and
// an opener that opened LOCK before that and locked it after would
// otherwise write beside whoever creates the next LOCK. So once locked,
// Lock checks that the path still names the file it locked. Errors: a
// *LockedError (naming the holder's pid when it could be read) when
// another process holds the lock; ErrLockMoved when LOCK was removed or
// replaced meanwhile (nothing is held); otherwise the I/O error, wrapped.
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
	held, herr := f.Stat()
	now, nerr := fsys.Lstat(path)
	if herr != nil || nerr != nil || !vfs.SameFile(held, now) {
		_ = fsys.Unlock(f)
		f.Close()
		return nil, ErrLockMoved
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
