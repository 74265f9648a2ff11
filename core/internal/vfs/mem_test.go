package vfs_test

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"github.com/batpak-go/batpak/core/internal/vfs"
	"github.com/batpak-go/batpak/core/internal/vfs/errorfs"
)

func write(t *testing.T, m vfs.FS, name, data string, sync bool) {
	t.Helper()
	f, err := m.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.SyncData(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func read(m vfs.FS, name string) (string, error) {
	b, err := vfs.ReadFile(m, name)
	return string(b), err
}

func TestStrictMemKeepsOnlyWhatWasSynced(t *testing.T) {
	m := vfs.NewStrictMem()
	if err := m.MkdirAll("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.SyncDir("/"); err != nil {
		t.Fatal(err)
	}
	write(t, m, "/d/synced", "one", true)
	write(t, m, "/d/unsynced", "two", false)
	if err := m.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	write(t, m, "/d/synced", "one more", false) // contents not synced
	write(t, m, "/d/nameless", "three", true)   // entry not synced
	if err := m.Rename("/d/unsynced", "/d/renamed"); err != nil {
		t.Fatal(err)
	}
	c := m.CrashClone()
	if got, err := read(c, "/d/synced"); err != nil || got != "one" {
		t.Fatalf("synced file after a power loss: %q, %v; want the synced contents", got, err)
	}
	if got, err := read(c, "/d/unsynced"); err != nil || got != "" {
		t.Fatalf("file whose entry was synced but not its data: %q, %v; want it empty", got, err)
	}
	for _, name := range []string{"/d/nameless", "/d/renamed"} {
		if _, err := c.Stat(name); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s (entry never synced) after a power loss: %v, want ErrNotExist", name, err)
		}
	}
	if got, _ := read(m, "/d/synced"); got != "one more" {
		t.Fatalf("CrashClone changed the original: %q", got)
	}
	m.ResetToSyncedState()
	if _, err := m.Stat("/d/renamed"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ResetToSyncedState kept an unsynced rename: %v", err)
	}
}

func TestErrorFSFailsTheNthMatchingOperation(t *testing.T) {
	e := errorfs.Wrap(vfs.NewStrictMem())
	f := e.Inject(errorfs.Fault{Op: errorfs.OpWrite, Pattern: "*.seg", Nth: 2, Err: errorfs.ENOSPC, Short: true})
	write(t, e, "/a.seg", "x", false)   // first matching write
	write(t, e, "/b.other", "y", false) // does not match
	g, err := e.OpenFile("/c.seg", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	n, err := g.WriteAt([]byte("abcd"), 0)
	if !errors.Is(err, errorfs.ENOSPC) || n != 2 {
		t.Fatalf("second matching write: n=%d err=%v, want a short write of 2 and ENOSPC", n, err)
	}
	if got, _ := read(e, "/c.seg"); got != "ab" {
		t.Fatalf("short write left %q, want the first half", got)
	}
	if _, err := g.WriteAt([]byte("z"), 0); err != nil {
		t.Fatalf("third write (fault fires once): %v", err)
	}
	if e.Fired(f) != 1 || e.Count(errorfs.OpWrite) != 4 {
		t.Fatalf("fired %d, writes counted %d; want 1 and 4", e.Fired(f), e.Count(errorfs.OpWrite))
	}
}
