package core

import (
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/batpak-go/batpak/core/internal/vfs"
)

// File helpers shared by the writer, recovery and maintenance: atomic
// whole-file writes, durable directories, zero fill.

// zeros is a block of zeros to write from.
var zeros = make([]byte, 1<<20)

// zeroFill writes zeros over [from, to) of f and syncs its data (one
// fdatasync): preallocation ahead of the active segment's data, a torn
// tail discarded, a batch rolled back. The file never shrinks (a reader in
// another process may have it mapped).
func zeroFill(f vfs.File, from, to int64) error {
	for off := from; off < to; {
		n := min(int64(len(zeros)), to-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		off += n
	}
	return f.SyncData()
}

// writeFileAtomic writes dir/name through a temporary file and a rename, so
// readers see the old content or the new. With durable set it fsyncs the
// file before the rename and the directory after: a crash then leaves the
// old or the new content, never a damaged file.
func writeFileAtomic(fsys vfs.FS, dir, name string, b []byte, durable bool) error {
	mkdir := fsys.MkdirAll
	if durable {
		mkdir = func(dir string, _ fs.FileMode) error { return mkdirDurable(fsys, dir) }
	}
	if err := mkdir(dir, 0o755); err != nil {
		return err
	}
	f, err := vfs.CreateTemp(fsys, dir, name+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer fsys.Remove(tmp)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if durable {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fsys.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	if !durable {
		return nil
	}
	return syncDir(fsys, dir)
}

// syncDir makes dir's entries (files created, renamed, removed) durable.
func syncDir(fsys vfs.FS, dir string) error {
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("batpak: sync directory: %w", err)
	}
	return nil
}

// mkdirDurable creates dir and any missing parents (MkdirAll) and syncs
// the parent of each directory it created, so that the new directories
// survive a power loss (files synced inside a directory whose own entry
// was never synced can vanish with it).
func mkdirDurable(fsys vfs.FS, dir string) error {
	var created []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := fsys.Stat(d); err == nil || filepath.Dir(d) == d {
			break
		}
		created = append(created, d)
	}
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := len(created) - 1; i >= 0; i-- {
		if err := syncDir(fsys, filepath.Dir(created[i])); err != nil {
			return err
		}
	}
	return nil
}
