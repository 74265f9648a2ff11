package segment

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/batpak-go/batpak/core/internal/vfs"
)

// File helpers shared by the writer, recovery and maintenance: atomic
// whole-file writes, durable directories, zero fill. None holds a lock;
// callers serialize writes to the same file.

// zeros is a block of zeros to write from.
var zeros = make([]byte, 1<<20)

// ZeroFill writes zeros over [from, to) of f and syncs its data (one
// fdatasync): preallocation ahead of the active segment's data, a torn
// tail discarded, a batch rolled back. The file never shrinks (a reader in
// another process may have it mapped). Errors are the file's, unwrapped.
func ZeroFill(f vfs.File, from, to int64) error {
	if err := WriteZeros(f, from, to); err != nil {
		return err
	}
	return f.SyncData()
}

// WriteZeros is ZeroFill without the sync, for a caller whose own later
// sync of f covers the zeros too (preallocation ahead of the active
// segment). Errors are the file's, unwrapped.
func WriteZeros(f vfs.File, from, to int64) error {
	for off := from; off < to; {
		n := min(int64(len(zeros)), to-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// Preallocate reserves [from, to) of f without writing it where the file
// system can (vfs.Allocate: fallocate on Linux), and writes zeros over it
// (WriteZeros) elsewhere. Either way the range reads as zeros and later
// writes into it cannot fail for want of space; the caller's own later
// sync makes it durable. Errors are the file's, unwrapped.
func Preallocate(f vfs.File, from, to int64) error {
	err := vfs.Allocate(f, from, to-from)
	if errors.Is(err, vfs.ErrNoAllocate) {
		return WriteZeros(f, from, to)
	}
	return err
}

// unwritePage is the piece ZeroFillBackward zeroes with each write: one
// page, aligned, which a kill either writes whole or not at all (the
// kernel cuts a write short, on a fatal signal, only between pages).
const unwritePage = 4096

// ZeroFillBackward is ZeroFill for frames that must disappear, not zero
// space: it zeroes [from, to) from the end towards from, one aligned page
// per write, then syncs the data. A process killed part-way leaves a
// prefix of the old frames followed by zeros — readable as a log cut
// short, the last frame torn at worst — never zeros followed by old
// frames, which a reader must take for damage in the middle of the log.
// Errors are the file's, unwrapped.
func ZeroFillBackward(f vfs.File, from, to int64) error {
	for end := to; end > from; {
		start := max(from, (end-1)&^(unwritePage-1))
		if _, err := f.WriteAt(zeros[:end-start], start); err != nil {
			return err
		}
		end = start
	}
	return f.SyncData()
}

// WriteFileAtomic writes dir/name through a temporary file and a rename, so
// readers see the old content or the new. With durable set it fsyncs the
// file before the rename and the directory after: a crash then leaves the
// old or the new content, never a damaged file. Errors are the file
// system's, unwrapped (a failed directory sync is wrapped by SyncDir).
func WriteFileAtomic(fsys vfs.FS, dir, name string, b []byte, durable bool) error {
	return WriteFileAtomicParts(fsys, dir, name, [][]byte{b}, durable)
}

// WriteFileAtomicParts is WriteFileAtomic of the parts one after another,
// written in turn rather than first copied into one buffer.
func WriteFileAtomicParts(fsys vfs.FS, dir, name string, parts [][]byte, durable bool) error {
	mkdir := fsys.MkdirAll
	if durable {
		mkdir = func(dir string, _ fs.FileMode) error { return MkdirDurable(fsys, dir) }
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
	for _, b := range parts {
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
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
	return SyncDir(fsys, dir)
}

// SyncDir makes dir's entries (files created, renamed, removed) durable.
// Its error names the operation ("batpak: sync directory: ...").
func SyncDir(fsys vfs.FS, dir string) error {
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("batpak: sync directory: %w", err)
	}
	return nil
}

// MkdirDurable creates dir and any missing parents (MkdirAll) and syncs
// the parent of each directory it created, so that the new directories
// survive a power loss (files synced inside a directory whose own entry
// was never synced can vanish with it).
func MkdirDurable(fsys vfs.FS, dir string) error {
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
		if err := SyncDir(fsys, filepath.Dir(created[i])); err != nil {
			return err
		}
	}
	return nil
}

// WriteSynced writes data to path (created or truncated) and syncs it
// (the file only, not its directory); it returns the bytes written.
func WriteSynced(fsys vfs.FS, path string, data []byte) (int64, error) {
	f, err := fsys.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return int64(len(data)), err
}
