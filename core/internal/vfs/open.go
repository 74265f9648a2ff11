package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// ErrNotRegular is why an open of a store file that is a named pipe, a
// socket or a device fails: opening a pipe would wait for a writer for
// ever, and reading a device is not reading the store. Wrapped in an
// *fs.PathError naming the file.
var ErrNotRegular = errors.New("not a regular file (a named pipe, socket or device)")

// ErrSymlinkWrite is why an open for writing of a store file that is a
// symbolic link fails: the store writes its own files only, never through
// a link to another. Wrapped in an *fs.PathError naming the file.
var ErrSymlinkWrite = errors.New("a symbolic link: the store writes only to its own files, not through links")

// openChecked opens name as os.OpenFile does, refusing what a store's
// file may not be: a pipe, socket or device (ErrNotRegular; the open
// itself does not wait for a pipe's other end), or, when opened for
// writing, a symbolic link (ErrSymlinkWrite). Directories open as usual.
func openChecked(name string, flag int, perm fs.FileMode) (*os.File, error) {
	writing := flag&(os.O_WRONLY|os.O_RDWR) != 0
	f, err := os.OpenFile(name, flag|openFlags(writing), perm)
	if err != nil {
		if writing && isSymlinkRefusal(err) {
			return nil, &fs.PathError{Op: "open", Path: name, Err: ErrSymlinkWrite}
		}
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Mode()&(fs.ModeNamedPipe|fs.ModeSocket|fs.ModeDevice|fs.ModeCharDevice|fs.ModeIrregular) != 0 {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: ErrNotRegular}
	}
	if err := openedRegular(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// readFileChecked is os.ReadFile through openChecked.
func readFileChecked(name string) ([]byte, error) {
	return readFileCheckedAtMost(name, -1)
}

// readFileCheckedAtMost is readFileChecked refusing, before it allocates
// anything for it, a file of more than max bytes (max < 0: no bound)
// with a *TooLargeError.
func readFileCheckedAtMost(name string, max int64) ([]byte, error) {
	f, err := openChecked(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var size int
	if st, err := f.Stat(); err == nil && st.Size() > 0 && int64(int(st.Size())) == st.Size() {
		size = int(st.Size())
	}
	if max >= 0 && int64(size) > max {
		return nil, &TooLargeError{Name: name, Size: int64(size), Max: max}
	}
	b := make([]byte, 0, size+512) // as os.ReadFile: one read for a file of the size it says
	for {
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if max >= 0 && int64(len(b)) > max {
			// It grew after the Stat.
			return nil, &TooLargeError{Name: name, Size: int64(len(b)), Max: max}
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// TooLargeError is why ReadFileAtMost refused a file: it holds more
// bytes than the file can hold undamaged (a sparse or overwritten file),
// and reading it whole could take all the memory there is.
type TooLargeError struct {
	Name      string
	Size, Max int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s is %d bytes, more than the %d such a file holds", e.Name, e.Size, e.Max)
}
