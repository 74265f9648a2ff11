package plugins_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/plugins"
)

// TestDamagedCompileCacheEntry: a compiled-code cache entry damaged on
// disk (its checksum fails) does not stop the module loading from a new
// host over the same directory, and the plugin runs right.
func TestDamagedCompileCacheEntry(t *testing.T) {
	dir := t.TempDir()
	wasm := fixture(t, "counter")
	ctx := context.Background()
	h1, err := plugins.NewHost(plugins.HostOptions{CacheDir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	load(t, h1, wasm, projManifest("c"))
	if err := h1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	damaged := 0
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(path, "batpak-valid") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i := len(b) / 3; i < len(b)/3+8 && i < len(b); i++ {
			b[i] ^= 0xff
		}
		damaged++
		return os.WriteFile(path, b, 0o600)
	})
	if err != nil || damaged == 0 {
		t.Fatalf("damaging the cache: %d entries, %v", damaged, err)
	}
	h2, err := plugins.NewHost(plugins.HostOptions{CacheDir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close(ctx)
	p := load(t, h2, wasm, projManifest("c"))
	s := openStore(t)
	appendEvents(t, s, "order:1", 3)
	if n := projectCount(t, s, "order:1", plugins.Projection{P: p}); n != 3 {
		t.Fatalf("count %d over a damaged cache entry, want 3", n)
	}
}
