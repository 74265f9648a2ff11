//go:build unix

package core_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// TestCursorsDirectoryALinkIsDamage: a store whose cursors directory is a
// symbolic link to somewhere else neither reads positions through it nor
// writes, replaces or removes anything there: opening a named cursor,
// committing and resetting one are *CorruptionErrors naming the
// directory, and the files the link points at are left as they were.
func TestCursorsDirectoryALinkIsDamage(t *testing.T) {
	dir := t.TempDir()
	s := openWith(t, testConfig(dir))
	mustAppend(t, s, mustCoord(t, "order:1", "shop"), core.MustKind(1, 1), payloadN(0))
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim.pos")
	if err := os.WriteFile(victim, []byte("IMPORTANT"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(outside, "victim2.pos"), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.RemoveAll(filepath.Join(dir, "cursors"))
	if err := os.Symlink(outside, filepath.Join(dir, "cursors")); err != nil {
		t.Fatal(err)
	}
	var ce *core.CorruptionError
	if _, err := s.NamedCursor("victim", core.All()); !errors.As(err, &ce) {
		t.Fatalf("NamedCursor through a linked cursors directory: %v, want a *CorruptionError", err)
	}
	for _, name := range []string{"victim", "victim2"} {
		if err := s.ResetCursor(name); !errors.As(err, &ce) {
			t.Fatalf("ResetCursor(%s) through a linked cursors directory: %v, want a *CorruptionError", name, err)
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "IMPORTANT" {
		t.Fatalf("the file the link points at: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(outside, "victim2.pos")); err != nil || !fi.IsDir() {
		t.Fatalf("the directory the link points at: %v", err)
	}
}

// TestSnapshotDoesNotCopyThroughCursorLinks: a snapshot copies a damaged
// cursor position as it is only when it is a file of the store's own: a
// position that is a link to a file elsewhere is not followed into the
// snapshot, and a cursors directory that is a link refuses the snapshot
// (*CorruptionError) rather than copying what it points at.
func TestSnapshotDoesNotCopyThroughCursorLinks(t *testing.T) {
	dir := t.TempDir()
	s := openWith(t, testConfig(dir))
	mustAppend(t, s, mustCoord(t, "order:1", "shop"), core.MustKind(1, 1), payloadN(0))
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("TOP-SECRET-OUTSIDE-THE-STORE"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "cursors"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "cursors", "x.pos")); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "snap")
	if _, err := s.Snapshot(context.Background(), snap); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(snap, "cursors", "x.pos")); err == nil {
		t.Fatalf("the snapshot holds what the link pointed at: %q", b)
	}

	_ = os.RemoveAll(filepath.Join(dir, "cursors"))
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "y.pos"), []byte("TOP-SECRET-OUTSIDE-THE-STORE"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "cursors")); err != nil {
		t.Fatal(err)
	}
	var ce *core.CorruptionError
	if _, err := s.Snapshot(context.Background(), filepath.Join(t.TempDir(), "snap2")); !errors.As(err, &ce) {
		t.Fatalf("a snapshot through a linked cursors directory: %v, want a *CorruptionError", err)
	}
}
