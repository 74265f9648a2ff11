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
// path is replaced, never written through.
type outFile struct {
	*os.File
	path string
}

// createOut starts writing path (see outFile). A directory at path is
// refused; a file there keeps its permissions.
func createOut(path string) (*outFile, error) {
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
