//go:build unix

package main

import (
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestExportOutIntoAPipe: --out naming a named pipe (or a symlink to one,
// as /dev/stdout is to the process's output) writes into it, and leaves
// it a pipe: replacing it with the finished file, as --out replaces a
// regular file, turned /dev/null into a file when root ran
// "export --out /dev/null".
func TestExportOutIntoAPipe(t *testing.T) {
	dir := isolate(t)
	ok(t, "append", "--entity", "order:1", "--scope", "shop", "--kind", "1:1", "--data", `{"n":1}`)
	whole := ok(t, "export")
	pipe := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(pipe, 0o600); err != nil {
		t.Skipf("no named pipe here: %v", err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(pipe, link); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{pipe, link} {
		got := make(chan string, 1)
		go func() {
			f, err := os.Open(pipe)
			if err != nil {
				got <- err.Error()
				return
			}
			defer f.Close()
			b, _ := io.ReadAll(f)
			got <- string(b)
		}()
		ok(t, "export", "--out", out)
		select {
		case g := <-got:
			if g != whole {
				t.Errorf("export --out %s: the pipe's reader got %q, want %q", out, g, whole)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("export --out %s: nothing came through the pipe", out)
		}
		if st, err := os.Lstat(pipe); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
			t.Fatalf("after export --out %s the pipe is %v (%v)", out, st.Mode(), err)
		}
		if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("after export --out %s the link is %v (%v)", out, st.Mode(), err)
		}
	}
}
