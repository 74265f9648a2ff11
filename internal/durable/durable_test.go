package durable_test

import (
	"os"
	"path/filepath"
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
