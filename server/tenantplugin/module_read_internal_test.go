package tenantplugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A stored module replaced on the server's disk by a link (to /dev/zero,
// an endless file) or by a file larger than any module may be is refused
// before it is read; it once cost its size in memory at every start and
// swap, before the digest check refused it.
func TestReadModuleBounded(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link")
	if err := os.Symlink("/dev/zero", link); err != nil {
		t.Skip("no symlinks here:", err)
	}
	if _, err := readModule(link); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("a link to /dev/zero: %v", err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, maxStoredModuleBytes+1); err != nil {
		t.Fatal(err)
	}
	if _, err := readModule(big); err == nil || !strings.Contains(err.Error(), "more than a module may") {
		t.Fatalf("a file past the bound: %v", err)
	}
	ok := filepath.Join(dir, "ok")
	if err := os.WriteFile(ok, []byte("\x00asm"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := readModule(ok); err != nil || string(b) != "\x00asm" {
		t.Fatalf("a module's file: %q, %v", b, err)
	}
}
