package durable

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFile makes dst hold data, durably: it writes a temporary file
// beside dst (named ".upload-*", so a crash leaves only such files for
// the caller's cleanup to remove), syncs it, renames it over dst and
// syncs the directory. A dst already holding exactly data is left as it
// is. Directories are created with mode 0700. On error dst is unchanged
// (or absent) and the temporary file removed.
func WriteFile(dst string, data []byte) error {
	if b, err := os.ReadFile(dst); err == nil && bytes.Equal(b, data) {
		return nil
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".upload-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadFile reads back a file such as WriteFile writes: a regular file
// (not a link, a device or a pipe) of at most max bytes, its size checked
// before it is read and the read bounded too, so that a file replaced on
// the disk (by a link to /dev/zero, or something larger than an upload
// can be) costs no more than max. Errors name the path and what was
// wrong; a missing file's error matches fs.ErrNotExist.
func ReadFile(path string, max int64) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s holds %d bytes, more than the %d it may", path, fi.Size(), max)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(data)) > max {
		err = fmt.Errorf("%s holds more than the %d bytes it may", path, max)
	}
	return data, err
}
