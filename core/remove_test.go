package core_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// newEmptyStore opens a store in a new directory, has an import fail in
// it (nothing written) and closes it: what a failed `batpak import`
// leaves.
func newEmptyStore(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := core.Open(testConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(context.Background(), strings.NewReader("{\"id\":\n"), nil); err == nil {
		t.Fatal("a broken import line was accepted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestRemoveEmpty: an empty store is removed with its directory; a store
// holding anything (an event, a cursor, a file of its own) or open in
// another process is refused with every file left.
func TestRemoveEmpty(t *testing.T) {
	dir := newEmptyStore(t)
	if err := core.RemoveEmpty(dir); err != nil {
		t.Fatalf("RemoveEmpty of an empty store: %v", err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the store directory is still there: %v", err)
	}

	listing := func(dir string) string {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return strings.Join(names, " ")
	}
	refused := func(name, dir, reason string) {
		t.Helper()
		before := listing(dir)
		err := core.RemoveEmpty(dir)
		var ne *core.NotEmptyError
		if !errors.As(err, &ne) || !errors.Is(err, core.ErrNotEmpty) || !strings.Contains(err.Error(), reason) {
			t.Errorf("%s: RemoveEmpty = %v, want a NotEmptyError naming %q", name, err, reason)
		}
		if after := listing(dir); after != before {
			t.Errorf("%s: RemoveEmpty changed the directory: %s, was %s", name, after, before)
		}
	}

	// One event.
	dir = filepath.Join(t.TempDir(), "s")
	s, err := core.Open(testConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(context.Background(), mustCoord(t, "order:1", "shop"), kindA, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// Open: the lock is held.
	if err := core.RemoveEmpty(dir); !errors.Is(err, core.ErrLocked) {
		t.Errorf("RemoveEmpty of an open store = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	refused("an event", dir, "00000000000000000001.seg holds data")

	// A cursor and nothing else.
	dir = newEmptyStore(t)
	if err := os.MkdirAll(filepath.Join(dir, "cursors"), 0o755); err != nil {
		t.Fatal(err)
	}
	refused("a cursor directory", dir, "cursors")

	// A file an empty store does not hold.
	dir = newEmptyStore(t)
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	refused("another file", dir, "notes.txt")

	// A segment file that is a symbolic link.
	dir = newEmptyStore(t)
	seg := filepath.Join(dir, "00000000000000000001.seg")
	if err := os.Rename(seg, seg+".real"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(seg+".real", seg); err != nil {
		t.Skip("no symbolic links here:", err)
	}
	refused("a linked segment", dir, "not a regular file")

	// A symbolic link to an empty store is not followed.
	target := newEmptyStore(t)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := core.RemoveEmpty(link); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("RemoveEmpty through a link = %v, want a refusal", err)
	}
	if _, err := os.Stat(filepath.Join(target, "LOCK")); err != nil {
		t.Errorf("the linked store lost its files: %v", err)
	}
}

// lockMovingFS is the OS file system where LOCK vanishes (it and, with
// dirToo, the store directory) the first time it has been opened and
// before it is locked: what an opener sees when RemoveEmpty removes the
// store between the two steps.
type lockMovingFS struct {
	vfs.FS
	dirToo bool
	once   sync.Once
}

func (f *lockMovingFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err == nil && filepath.Base(name) == "LOCK" {
		f.once.Do(func() {
			_ = f.FS.Remove(name)
			if f.dirToo {
				_ = f.FS.Remove(filepath.Dir(name))
			}
		})
	}
	return file, err
}

// TestOpenLocksTheLOCKAtItsPath: an Open whose LOCK file is removed (with
// the store directory, or not) between its open and its lock does not
// keep a lock on the removed file: it creates the directory and LOCK again
// and locks that, so a second Open is refused, not let in beside it.
func TestOpenLocksTheLOCKAtItsPath(t *testing.T) {
	for _, dirToo := range []bool{false, true} {
		for _, fsName := range []string{"os", "mem"} {
			base, dir := vfs.Default(), filepath.Join(t.TempDir(), "store")
			if fsName == "mem" {
				base, dir = vfs.NewStrictMem(), "/store"
			}
			if err := base.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			s, err := core.OpenWithFS(testConfig(dir), &lockMovingFS{FS: base, dirToo: dirToo})
			if err != nil {
				t.Errorf("%s, directory removed %v: Open: %v", fsName, dirToo, err)
				continue
			}
			second, err := core.OpenWithFS(testConfig(dir), base)
			if err == nil {
				_ = second.Close()
			}
			if !errors.Is(err, core.ErrLocked) {
				t.Errorf("%s, directory removed %v: a second Open = %v, want ErrLocked (two writers)", fsName, dirToo, err)
			}
			if _, err := s.Append(context.Background(), mustCoord(t, "order:1", "shop"), kindA, []byte(`{}`)); err != nil {
				t.Errorf("%s, directory removed %v: Append: %v", fsName, dirToo, err)
			}
			_ = s.Close()
		}
	}
}

// TestRemoveEmptyLeavesNoLockInADirectoryOfOtherFiles: a directory that is
// no empty store is refused without a LOCK file made in it.
func TestRemoveEmptyLeavesNoLockInADirectoryOfOtherFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := core.RemoveEmpty(dir); !errors.Is(err, core.ErrNotEmpty) {
		t.Fatalf("RemoveEmpty of a directory of notes: %v, want ErrNotEmpty", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "notes.txt" {
		t.Fatalf("the directory now holds %v", ents)
	}
}
