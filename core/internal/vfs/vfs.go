package vfs

import (
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// File is an open file of an FS.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.WriterAt
	// Name is the path the file was opened with.
	Name() string
	Stat() (fs.FileInfo, error)
	Truncate(size int64) error
	// Sync is os.File.Sync: fsync (F_FULLFSYNC on macOS).
	Sync() error
	// SyncData flushes the data and the metadata needed to read it back.
	SyncData() error
	// SyncAll flushes the data and all metadata, through the drive's cache
	// where the OS separates the two (macOS).
	SyncAll() error
	Close() error
}

// FS is the set of file-system operations the store makes. See the package
// documentation for the contract.
type FS interface {
	// Open opens a file for reading.
	Open(name string) (File, error)
	// OpenFile opens a file with os.OpenFile's flags and permissions.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
	MkdirAll(path string, perm fs.FileMode) error
	ReadDir(name string) ([]fs.DirEntry, error)
	Stat(name string) (fs.FileInfo, error)
	Lstat(name string) (fs.FileInfo, error)
	// SyncDir makes the entries of directory dir durable.
	SyncDir(dir string) error
	// Lock takes an exclusive lock on f without waiting (ErrLocked when
	// held elsewhere); Unlock releases it.
	Lock(f File) error
	Unlock(f File) error
	// MmapRead maps the first n bytes of f read-only (fewer where the
	// mapping stops at EOF).
	MmapRead(f File, n int) ([]byte, error)
	// MmapWrite maps the first n bytes of f writable, or returns nil where
	// that is not supported.
	MmapWrite(f File, n int) ([]byte, error)
	// Munmap releases a mapping made by MmapRead or MmapWrite.
	Munmap(b []byte) error
}

// ErrLocked is what Lock returns when another holder has the lock.
var ErrLocked = errors.New("locked by another process")

// Default returns the operating system's file system.
func Default() FS { return osFS{} }

// ErrNoLinks is what Link returns for a file system without hard links.
var ErrNoLinks = errors.New("hard links not supported")

// Link makes newname a hard link to the file oldname, as os.Link does,
// where fsys has hard links (an FS with a Link method: the operating
// system's on Unix); ErrNoLinks elsewhere.
func Link(fsys FS, oldname, newname string) error {
	if l, ok := fsys.(interface{ Link(string, string) error }); ok {
		return l.Link(oldname, newname)
	}
	return ErrNoLinks
}

// ErrNoAllocate is what Allocate returns where blocks cannot be reserved
// without writing them: outside Linux, for a file another FS opened, or on
// a file system that refuses fallocate(2).
var ErrNoAllocate = errors.New("block allocation not supported")

// Allocate reserves disk blocks for [off, off+n) of f and grows f to at
// least off+n, as fallocate(2) with mode 0 does: the range reads as zeros
// wherever nothing was written, and a later write into it (through a
// mapping too) cannot fail for want of space. Bytes already in the range
// are left as they are. Where that is not available it returns
// ErrNoAllocate and changes nothing; other errors are the file system's
// (ENOSPC when the disk is full).
func Allocate(f File, off, n int64) error {
	if a, ok := f.(interface{ Allocate(off, n int64) error }); ok {
		return a.Allocate(off, n)
	}
	return ErrNoAllocate
}

// SameFile reports whether a and b describe the same file: os.SameFile
// for the operating system's files (device and inode on Unix), the same
// node for a MemFS's. Infos of different file systems are never the same.
func SameFile(a, b fs.FileInfo) bool {
	if ma, ok := a.(memInfo); ok {
		mb, ok := b.(memInfo)
		return ok && ma.node != nil && ma.node == mb.node
	}
	if _, ok := b.(memInfo); ok {
		return false
	}
	return os.SameFile(a, b)
}

// Shared reports whether the file name has more than one hard link (where
// fsys has links; false elsewhere): a change written into it in place
// shows through every link.
func Shared(fsys FS, name string) (bool, error) {
	if _, ok := fsys.(interface{ Link(string, string) error }); !ok {
		return false, nil
	}
	fi, err := fsys.Stat(name)
	if err != nil {
		return false, err
	}
	return linkCount(fi) > 1, nil
}

// ReadFile reads the whole file name, as os.ReadFile does.
func ReadFile(fsys FS, name string) ([]byte, error) {
	if r, ok := fsys.(interface{ ReadFile(string) ([]byte, error) }); ok {
		return r.ReadFile(name)
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// ReadFileAtMost is ReadFile for a file that holds at most max bytes
// when undamaged (a store's small records: a cursor, the erasure epoch,
// the compaction journal): a larger one is refused with a
// *TooLargeError before it is read, so a file made huge (sparse, or
// overwritten) cannot take all the memory there is.
func ReadFileAtMost(fsys FS, name string, max int64) ([]byte, error) {
	if r, ok := fsys.(interface {
		ReadFileAtMost(string, int64) ([]byte, error)
	}); ok {
		return r.ReadFileAtMost(name, max)
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > max {
		return nil, &TooLargeError{Name: name, Size: st.Size(), Max: max}
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(b)) > max {
		return nil, &TooLargeError{Name: name, Size: int64(len(b)), Max: max}
	}
	return b, err
}

// CreateTemp creates a new file in dir for reading and writing, named by
// pattern with its last "*" replaced by a random string (appended when
// there is none), as os.CreateTemp does.
func CreateTemp(fsys FS, dir, pattern string) (File, error) {
	prefix, suffix := pattern, ""
	if i := strings.LastIndexByte(pattern, '*'); i >= 0 {
		prefix, suffix = pattern[:i], pattern[i+1:]
	}
	for try := 0; ; try++ {
		name := filepath.Join(dir, prefix+strconv.FormatUint(uint64(rand.Uint32()), 10)+suffix)
		f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) && try < 10000 {
			continue
		}
		return f, err
	}
}
