package core_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// TestNamedCursorSymlinkOrDirectory: a cursor position that is a symbolic
// link (even to a sound position file) or a directory is damaged;
// ResetCursor replaces the link itself, never what it names, and removes
// an empty directory, but leaves one with files in it with an error.
func TestNamedCursorSymlinkOrDirectory(t *testing.T) {
	s := openStore(t)
	dir := s.Config().Dir
	if err := s.ResetCursor("sound"); err != nil {
		t.Fatal(err)
	}
	cursors := filepath.Join(dir, "cursors")
	sound := filepath.Join(cursors, "sound.pos")
	before, err := os.ReadFile(sound)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sound, filepath.Join(cursors, "link.pos")); err != nil {
		t.Skip("no symbolic links here:", err)
	}
	if err := os.Mkdir(filepath.Join(cursors, "dir.pos"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(cursors, "full.pos", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"link", "dir", "full"} {
		if _, err := s.NamedCursor(n, core.All()); !errors.Is(err, core.ErrCorrupt) {
			t.Errorf("NamedCursor(%s) = %v, want a CorruptionError", n, err)
		}
	}
	for _, n := range []string{"link", "dir"} {
		if err := s.ResetCursor(n); err != nil {
			t.Errorf("ResetCursor(%s): %v", n, err)
		}
		if fi, err := os.Lstat(filepath.Join(cursors, n+".pos")); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("after ResetCursor, %s.pos is not a regular file: %v", n, err)
		}
		if _, err := s.NamedCursor(n, core.All()); err != nil {
			t.Errorf("NamedCursor(%s) after reset: %v", n, err)
		}
	}
	if after, err := os.ReadFile(sound); err != nil || string(after) != string(before) {
		t.Errorf("ResetCursor wrote through the link: %v", err)
	}
	if err := s.ResetCursor("full"); err == nil {
		t.Error("ResetCursor removed a directory with files in it")
	}
	if _, err := os.Stat(filepath.Join(cursors, "full.pos", "x")); err != nil {
		t.Errorf("the directory's files are gone: %v", err)
	}
}
