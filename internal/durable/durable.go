// Package durable writes whole files that survive a crash or power loss:
// the server's content-addressed uploads (policy bundles, plugin modules).
package durable

import (
	"bytes"
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
