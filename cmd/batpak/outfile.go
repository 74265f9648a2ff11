package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// outFile is a file named by --out, written whole or not at all: the
// data goes to a temporary file beside it, which replaces the named path
// only when the command succeeds (finish). A failed or interrupted export
// leaves an existing file as it was and no partial one; a symlink at the
// path is replaced, never written through — unless the path is, or a
// symlink leads to, a device, a named pipe or a socket (/dev/null,
// /dev/stdout, a pipe to another program): that is written to as it is
// (direct), since replacing it would put a file where the device was.
type outFile struct {
	*os.File
	path   string
	direct bool
}

// streamModes are the kinds of file --out writes into rather than
// replaces.
const streamModes = os.ModeDevice | os.ModeCharDevice | os.ModeNamedPipe | os.ModeSocket

// createOut starts writing path (see outFile). A directory at path is
// refused; a file there keeps its permissions.
func createOut(path string) (*outFile, error) {
	if st, err := os.Stat(path); err == nil && st.Mode()&streamModes != 0 {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, badInput("--out", err)
		}
		return &outFile{File: f, path: path, direct: true}, nil
	}
	mode := os.FileMode(0o644)
	if st, err := os.Lstat(path); err == nil {
		switch {
		case st.IsDir():
			return nil, badInput("--out", fmt.Errorf("%s is a directory", path))
		case st.Mode().IsRegular():
			mode = st.Mode().Perm()
		}
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, badInput("--out", err)
	}
	if err := f.Chmod(mode); err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return nil, err
	}
	return &outFile{File: f, path: path}, nil
}

// finish ends the write: with *err nil, or an exit code the command chose
// after writing what it could (export --salvage on a damaged store), the
// file is synced and renamed over the path; otherwise it is removed and
// the path left alone. A failure to commit becomes *err.
func (o *outFile) finish(err *error) {
	if o.direct {
		if cerr := o.Close(); cerr != nil && *err == nil {
			*err = fmt.Errorf("writing %s: %w", o.path, cerr)
		}
		return
	}
	var ec *exitCodeError
	if *err != nil && !errors.As(*err, &ec) {
		_ = o.Close()
		_ = os.Remove(o.Name())
		return
	}
	cerr := o.Sync()
	if e := o.Close(); cerr == nil {
		cerr = e
	}
	if cerr == nil {
		cerr = os.Rename(o.Name(), o.path)
	}
	if cerr != nil {
		_ = os.Remove(o.Name())
		if *err == nil || ec != nil {
			*err = fmt.Errorf("writing %s: %w", o.path, cerr)
		}
	}
}
