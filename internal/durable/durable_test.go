package durable_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/internal/durable"
)

// TestWriteFile: the file holds the data, directories are created, a
// rewrite replaces it whole, and no temporary file is left behind.
func TestWriteFile(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "a", "b", "blob")
	for _, data := range []string{"first", "first", "second, longer"} {
		if err := durable.WriteFile(dst, []byte(data)); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(dst); err != nil || string(b) != data {
			t.Fatalf("after writing %q: %q, %v", data, b, err)
		}
	}
	ents, err := os.ReadDir(filepath.Dir(dst))
	if err != nil || len(ents) != 1 {
		t.Fatalf("directory holds %v (%v), want the file alone", ents, err)
	}
	// A destination that cannot be replaced: an error, and no temporary file.
	if err := os.Mkdir(dst+"-dir", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst+"-dir", "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := durable.WriteFile(dst+"-dir", []byte("x")); err == nil {
		t.Fatal("writing over a non-empty directory succeeded")
	}
	if ents, _ := os.ReadDir(filepath.Dir(dst)); len(ents) != 2 {
		t.Fatalf("a failed write left %v", ents)
	}
}

// TestReadFileBounded: a file replaced on the disk by a link (to
// /dev/zero, an endless file) or by one larger than the bound is refused
// before it is read — stored plugin modules and cluster blobs were once
// read whole before their digest check; a file within the bound is read.
func TestReadFileBounded(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link")
	if err := os.Symlink("/dev/zero", link); err != nil {
		t.Skip("no symlinks here:", err)
	}
	if _, err := durable.ReadFile(link, 1<<20); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("a link to /dev/zero: %v", err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 1<<20+1); err != nil {
		t.Fatal(err)
	}
	if _, err := durable.ReadFile(big, 1<<20); err == nil || !strings.Contains(err.Error(), "holds 1048577 bytes, more than the 1048576 it may") {
		t.Fatalf("a file past the bound: %v", err)
	}
	if _, err := durable.ReadFile(filepath.Join(dir, "missing"), 1<<20); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a missing file: %v", err)
	}
	ok := filepath.Join(dir, "ok")
	if err := durable.WriteFile(ok, []byte("upload")); err != nil {
		t.Fatal(err)
	}
	if b, err := durable.ReadFile(ok, 6); err != nil || string(b) != "upload" {
		t.Fatalf("a file at the bound: %q, %v", b, err)
	}
}
