package errorfs

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/batpak-go/batpak/core/internal/vfs"
)

// The errors a fault commonly injects.
var (
	EIO    error = syscall.EIO
	ENOSPC error = syscall.ENOSPC
)

// Op is a kind of file-system operation.
type Op int

// The operations errorfs counts and can fail.
const (
	OpOpen     Op = iota // FS.Open, FS.OpenFile
	OpWrite              // File.Write, File.WriteAt
	OpSync               // File.Sync, SyncData, SyncAll
	OpTruncate           // File.Truncate
	OpRename             // FS.Rename (matched against either name)
	OpRemove             // FS.Remove
	OpMkdir              // FS.MkdirAll
	OpSyncDir            // FS.SyncDir (matched against the directory)
	OpMmap               // FS.MmapRead, FS.MmapWrite
	OpReadDir            // FS.ReadDir
	OpLock               // FS.Lock
	numOps
)

var opNames = [...]string{"open", "write", "sync", "truncate", "rename", "remove", "mkdir", "syncdir", "mmap", "readdir", "lock"}

func (o Op) String() string {
	if o >= 0 && o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Fault says which operation fails and how.
type Fault struct {
	Op Op
	// Pattern, when set, limits the fault to files whose base name matches
	// it (filepath.Match, e.g. "*.seg", "*.pos.tmp*", "journal*").
	Pattern string
	// Nth is which matching operation fails, from 1 (0 counts as 1).
	Nth int
	// Persist makes every matching operation from the Nth on fail.
	Persist bool
	// Err is the error returned (EIO when nil).
	Err error
	// Short (OpWrite only) writes the first half of the bytes before
	// failing with Err, as a write cut short by a full disk does.
	Short bool
	// Hook, when set, runs each time the fault fires, before the
	// operation fails: a test looks at the store from inside the
	// operation (on the goroutine doing it).
	Hook func()
	// Size (OpWrite only), when set, limits the fault to writes of
	// exactly that many bytes (a frame's 8-byte header, say).
	Size int
	// Pass (OpSync and OpWrite) lets the operation run after Hook instead
	// of failing: a probe of what is visible while a sync or write is in
	// progress, or a place to stop the process.
	Pass bool

	seen, fired int // guarded by FS.mu
}

// FS is a vfs.FS that injects faults into another.
type FS struct {
	inner  vfs.FS
	mu     sync.Mutex
	faults []*Fault
	counts [numOps]int
}

// Wrap returns an FS passing every operation to inner, with no fault yet.
func Wrap(inner vfs.FS) *FS { return &FS{inner: inner} }

// Inject adds a fault; it returns the fault, whose Fired reports whether
// it has fired.
func (e *FS) Inject(f Fault) *Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f.Nth <= 0 {
		f.Nth = 1
	}
	if f.Err == nil {
		f.Err = EIO
	}
	p := &f
	e.faults = append(e.faults, p)
	return p
}

// Clear removes every fault (the counts stay).
func (e *FS) Clear() {
	e.mu.Lock()
	e.faults = nil
	e.mu.Unlock()
}

// Fired reports how many times the fault made an operation fail.
func (e *FS) Fired(f *Fault) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return f.fired
}

// Count returns how many operations of kind op were attempted (failed ones
// included).
func (e *FS) Count(op Op) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counts[op]
}

// check counts an operation on the named files and returns the fault that
// fails it, if any.
func (e *FS) check(op Op, names ...string) *Fault { return e.checkSize(op, 0, names...) }

// checkSize is check of a write of size bytes (0: not a write).
func (e *FS) checkSize(op Op, size int, names ...string) *Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counts[op]++
	var hit *Fault
	for _, f := range e.faults {
		if f.Op != op || !f.matches(names) || (f.Size > 0 && f.Size != size) {
			continue
		}
		f.seen++
		if hit == nil && (f.seen == f.Nth || (f.Persist && f.seen > f.Nth)) {
			f.fired++
			hit = f
		}
	}
	return hit
}

func (f *Fault) matches(names []string) bool {
	if f.Pattern == "" {
		return true
	}
	for _, n := range names {
		if ok, _ := filepath.Match(f.Pattern, filepath.Base(n)); ok {
			return true
		}
	}
	return false
}

func fail(op Op, name string, f *Fault) error {
	if f.Hook != nil {
		f.Hook()
	}
	return &fs.PathError{Op: op.String(), Path: name, Err: f.Err}
}

func (e *FS) Open(name string) (vfs.File, error) {
	if f := e.check(OpOpen, name); f != nil {
		return nil, fail(OpOpen, name, f)
	}
	inner, err := e.inner.Open(name)
	if err != nil {
		return nil, err
	}
	return &file{File: inner, fs: e}, nil
}

func (e *FS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	if f := e.check(OpOpen, name); f != nil {
		return nil, fail(OpOpen, name, f)
	}
	inner, err := e.inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &file{File: inner, fs: e}, nil
}

func (e *FS) Rename(oldpath, newpath string) error {
	if f := e.check(OpRename, oldpath, newpath); f != nil {
		return fail(OpRename, newpath, f)
	}
	return e.inner.Rename(oldpath, newpath)
}

func (e *FS) Remove(name string) error {
	if f := e.check(OpRemove, name); f != nil {
		return fail(OpRemove, name, f)
	}
	return e.inner.Remove(name)
}

func (e *FS) MkdirAll(name string, perm fs.FileMode) error {
	if f := e.check(OpMkdir, name); f != nil {
		return fail(OpMkdir, name, f)
	}
	return e.inner.MkdirAll(name, perm)
}

func (e *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	if f := e.check(OpReadDir, name); f != nil {
		return nil, fail(OpReadDir, name, f)
	}
	return e.inner.ReadDir(name)
}

func (e *FS) Stat(name string) (fs.FileInfo, error)  { return e.inner.Stat(name) }
func (e *FS) Lstat(name string) (fs.FileInfo, error) { return e.inner.Lstat(name) }

func (e *FS) SyncDir(dir string) error {
	if f := e.check(OpSyncDir, dir); f != nil {
		return fail(OpSyncDir, dir, f)
	}
	return e.inner.SyncDir(dir)
}

func (e *FS) Lock(fl vfs.File) error {
	if f := e.check(OpLock, fl.Name()); f != nil {
		return fail(OpLock, fl.Name(), f)
	}
	return e.inner.Lock(unwrap(fl))
}

func (e *FS) Unlock(fl vfs.File) error { return e.inner.Unlock(unwrap(fl)) }

func (e *FS) MmapRead(fl vfs.File, n int) ([]byte, error) {
	if f := e.check(OpMmap, fl.Name()); f != nil {
		return nil, fail(OpMmap, fl.Name(), f)
	}
	return e.inner.MmapRead(unwrap(fl), n)
}

func (e *FS) MmapWrite(fl vfs.File, n int) ([]byte, error) {
	if f := e.check(OpMmap, fl.Name()); f != nil {
		return nil, fail(OpMmap, fl.Name(), f)
	}
	return e.inner.MmapWrite(unwrap(fl), n)
}

func (e *FS) Munmap(b []byte) error { return e.inner.Munmap(b) }

func unwrap(f vfs.File) vfs.File {
	if w, ok := f.(*file); ok {
		return w.File
	}
	return f
}

// file is a file opened through an FS.
type file struct {
	vfs.File
	fs *FS
}

func (w *file) Write(b []byte) (int, error) {
	if f := w.fs.checkSize(OpWrite, len(b), w.Name()); f != nil {
		return w.short(f, b, func(p []byte) (int, error) { return w.File.Write(p) })
	}
	return w.File.Write(b)
}

func (w *file) WriteAt(b []byte, off int64) (int, error) {
	if f := w.fs.checkSize(OpWrite, len(b), w.Name()); f != nil {
		return w.short(f, b, func(p []byte) (int, error) { return w.File.WriteAt(p, off) })
	}
	return w.File.WriteAt(b, off)
}

// short fails a write, first writing half of b when the fault says so
// (or, with Pass, runs Hook and writes b).
func (w *file) short(f *Fault, b []byte, write func([]byte) (int, error)) (int, error) {
	if f.Pass {
		if f.Hook != nil {
			f.Hook()
		}
		return write(b)
	}
	n := 0
	if f.Short && len(b) > 1 {
		n, _ = write(b[:len(b)/2])
	}
	return n, fail(OpWrite, w.Name(), f)
}

func (w *file) Truncate(size int64) error {
	if f := w.fs.check(OpTruncate, w.Name()); f != nil {
		return fail(OpTruncate, w.Name(), f)
	}
	return w.File.Truncate(size)
}

// syncFault is the fault, if any, of a sync of w: nil when none fires or
// the one that fires passes (after its Hook).
func (w *file) syncFault() error {
	f := w.fs.check(OpSync, w.Name())
	if f == nil {
		return nil
	}
	if f.Pass {
		if f.Hook != nil {
			f.Hook()
		}
		return nil
	}
	return fail(OpSync, w.Name(), f)
}

func (w *file) Sync() error {
	if err := w.syncFault(); err != nil {
		return err
	}
	return w.File.Sync()
}

func (w *file) SyncData() error {
	if err := w.syncFault(); err != nil {
		return err
	}
	return w.File.SyncData()
}

func (w *file) SyncAll() error {
	if err := w.syncFault(); err != nil {
		return err
	}
	return w.File.SyncAll()
}
