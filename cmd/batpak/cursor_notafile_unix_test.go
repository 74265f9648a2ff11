//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDamagedCursorNotAFile: a cursor position that is a symbolic link
// (to another file, or dangling), a directory or a named pipe is listed as
// DAMAGED, as NamedCursor says, and reset replaces it with a file of the
// store without writing through the link; a ".pos" file whose name is no
// cursor name is mentioned and the others listed.
func TestDamagedCursorNotAFile(t *testing.T) {
	root := isolate(t)
	dir := filepath.Join(root, "store")
	dd := "--data-dir=" + dir
	ok(t, "demo", dd, "--orders", "2") // 6 events
	ok(t, "cursor", "ls", dd)
	commitCursors(t, dir, 4, "audit")
	cursors := filepath.Join(dir, "cursors")
	victim := filepath.Join(root, "victim")
	writeFile(t, victim, "precious")
	for name, make := range map[string]func(string) error{
		"link":     func(p string) error { return os.Symlink(victim, p) },
		"linkgood": func(p string) error { return os.Symlink(filepath.Join(cursors, "audit.pos"), p) },
		"dangling": func(p string) error { return os.Symlink(filepath.Join(root, "nothing"), p) },
		"dir":      func(p string) error { return os.Mkdir(p, 0o755) },
		"fifo":     func(p string) error { return syscall.Mkfifo(p, 0o644) },
		"-stray":   func(p string) error { return os.WriteFile(p, nil, 0o644) },
	} {
		if err := make(filepath.Join(cursors, name+".pos")); err != nil {
			t.Fatal(err)
		}
	}

	r := batpak(t, "cursor", "ls", dd)
	if r.code != exitCorrupt || !regexpMatch(`(?m)^audit\s+4\s+2\s+-$`, r.stdout) || !strings.HasSuffix(r.stdout, "6 cursors\n") ||
		!strings.Contains(r.stderr, "batpak: warning: "+filepath.Join(cursors, "-stray.pos")+" is not a named cursor's position") {
		t.Errorf("cursor ls: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, n := range []string{"link", "linkgood", "dangling", "dir", "fifo"} {
		if !regexpMatch(`(?m)^`+n+`\s+DAMAGED\s+-\s+-$`, r.stdout) {
			t.Errorf("cursor ls does not list %s as DAMAGED:\n%s", n, r.stdout)
		}
		if out := ok(t, "cursor", "reset", n, dd); out != "cursor "+n+" reset from a damaged position to 0\n" {
			t.Errorf("cursor reset %s: %q", n, out)
		}
		if fi, err := os.Lstat(filepath.Join(cursors, n+".pos")); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("after reset, %s.pos is not a regular file: %v", n, err)
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "precious" {
		t.Errorf("reset wrote through the link: %q %v", b, err)
	}
	if c := decode[cursorJSON](t, ok(t, "cursor", "info", "audit", dd, "-o", "json")); c.Committed != 4 {
		t.Errorf("audit's position moved: %+v", c)
	}
	r = batpak(t, "cursor", "ls", dd)
	if r.code != 0 || !regexpMatch(`(?m)^link\s+0\s+6\s+-$`, r.stdout) {
		t.Errorf("cursor ls after resets: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
