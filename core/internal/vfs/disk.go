package vfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
)

// osFS is the operating system's file system.
type osFS struct{}

// osFile is an open *os.File.
type osFile struct{ *os.File }

func wrap(f *os.File, err error) (File, error) {
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// Open and OpenFile refuse a pipe, socket or device, and a symbolic link
// opened for writing (openChecked).
func (osFS) Open(name string) (File, error) { return wrap(openChecked(name, os.O_RDONLY, 0)) }
func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	return wrap(openChecked(name, flag, perm))
}
func (osFS) Rename(oldpath, newpath string) error         { return os.Rename(oldpath, newpath) }
func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) MkdirAll(path string, perm fs.FileMode) error { return os.MkdirAll(path, perm) }
func (osFS) ReadDir(name string) ([]fs.DirEntry, error)   { return os.ReadDir(name) }
func (osFS) Stat(name string) (fs.FileInfo, error)        { return os.Stat(name) }
func (osFS) Lstat(name string) (fs.FileInfo, error)       { return os.Lstat(name) }
func (osFS) ReadFile(name string) ([]byte, error)         { return readFileChecked(name) }
func (osFS) ReadFileAtMost(name string, max int64) ([]byte, error) {
	return readFileCheckedAtMost(name, max)
}
func (osFS) SyncDir(dir string) error { return syncDirEntries(dir) }
func (osFS) Munmap(b []byte) error    { return munmap(b) }

func (osFS) Lock(f File) error {
	o, err := osOf(f)
	if err != nil {
		return err
	}
	return lockFile(o)
}

func (osFS) Unlock(f File) error {
	o, err := osOf(f)
	if err != nil {
		return err
	}
	return unlockFile(o)
}

func (osFS) MmapRead(f File, n int) ([]byte, error) {
	o, err := osOf(f)
	if err != nil {
		return nil, err
	}
	return mmapRead(o, n)
}

func (osFS) MmapWrite(f File, n int) ([]byte, error) {
	o, err := osOf(f)
	if err != nil {
		return nil, err
	}
	return mmapWrite(o, n)
}

// errForeignFile is returned when an osFS call is given a file another FS
// opened.
var errForeignFile = errors.New("vfs: file was not opened by the OS file system")

func osOf(f File) (*os.File, error) {
	if o, ok := f.(osFile); ok {
		return o.File, nil
	}
	return nil, errForeignFile
}

func (f osFile) SyncData() error { return syncData(f.File) }
func (f osFile) SyncAll() error  { return syncAll(f.File) }

// ReadFrom lets io.Copy between two OS files (whole, or limited by an
// io.LimitedReader) keep the kernel's copy (copy_file_range).
func (f osFile) ReadFrom(r io.Reader) (int64, error) {
	switch src := r.(type) {
	case osFile:
		return f.File.ReadFrom(src.File)
	case *io.LimitedReader:
		if o, ok := src.R.(osFile); ok {
			lr := &io.LimitedReader{R: o.File, N: src.N}
			n, err := f.File.ReadFrom(lr)
			src.N = lr.N
			return n, err
		}
	}
	return f.File.ReadFrom(r)
}
