package plugins_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/plugins"
)

// damageCacheEntries flips bytes in the middle of every compiled-code
// entry under dir (not the host's markers), so that each fails wazero's
// checksum, and fails the test if there was none to damage.
func damageCacheEntries(t *testing.T, dir string) {
	t.Helper()
	damaged := 0
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || strings.Contains(path, "batpak-") {
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
		t.Fatalf("damaging the compile cache: %d entries, %v", damaged, err)
	}
}

// hostOverDamagedCache loads wasm in a host over a new cache directory,
// closes that host, damages the cache's entries and returns a second host
// over the same directory (closed when the test ends), with the code bytes
// the first load was charged.
func hostOverDamagedCache(t *testing.T, wasm []byte) (*plugins.Host, int64) {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	h1, err := plugins.NewHost(plugins.HostOptions{CacheDir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	one := load(t, h1, wasm, projManifest("first")).CodeBytes()
	if err := h1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	damageCacheEntries(t, dir)
	h2, err := plugins.NewHost(plugins.HostOptions{CacheDir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h2.Close(ctx) })
	return h2, one
}

// TestDamagedCompileCacheEntry: a compiled-code cache entry damaged on
// disk (its checksum fails) does not stop the module loading from a new
// host over the same directory, and the plugin runs right.
func TestDamagedCompileCacheEntry(t *testing.T) {
	wasm := fixture(t, "counter")
	h2, _ := hostOverDamagedCache(t, wasm)
	p := load(t, h2, wasm, projManifest("c"))
	s := openStore(t)
	appendEvents(t, s, "order:1", 3)
	if n := projectCount(t, s, "order:1", plugins.Projection{P: p}); n != 3 {
		t.Fatalf("count %d over a damaged cache entry, want 3", n)
	}
}

// rss is the process's resident memory, after returning what the
// garbage collector can to the system.
func rss(t *testing.T) int64 {
	t.Helper()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// TestDamagedCacheEntryDoesNotLeak: wazero maps the code of a cache entry
// before it checks it and keeps that memory when the check fails, so the
// host compiles a module whose entry failed in memory from then on:
// loading and unloading a module compiling to about 7 MB four times over
// a damaged entry costs the process at most the first failure.
func TestDamagedCacheEntryDoesNotLeak(t *testing.T) {
	ctx := context.Background()
	wasm := fixture(t, "widebranch")
	h2, one := hostOverDamagedCache(t, wasm)
	load(t, h2, wasm, projManifest("w0")) // the one failure
	if err := h2.Unload(ctx, "w0"); err != nil {
		t.Fatal(err)
	}
	before := rss(t)
	for i := range 4 {
		name := fmt.Sprintf("w%d", i+1)
		load(t, h2, wasm, projManifest(name))
		if err := h2.Unload(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	// Leaking each load would grow it by 4 × one; the allocator's own
	// noise on a loaded machine has reached 2.2 × one.
	if grew := rss(t) - before; grew > 3*one {
		t.Fatalf("4 loads over a damaged cache entry of a module compiling to %d bytes grew the process by %d bytes", one, grew)
	}
}
