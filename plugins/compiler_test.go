package plugins_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/batpak-go/batpak/plugins"
)

// cacheEntries counts the compiled-code entries under dir (not the host's
// markers).
func cacheEntries(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.Contains(path, "batpak-") {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCompilerCompilesFirst: a host with a Compiler gives it each new
// module before compiling it, finds what it compiled in the cache (the
// host adds no entry of its own), and gives the same module to it once,
// across hosts over the same directory.
func TestCompilerCompilesFirst(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	var calls atomic.Int32
	compiler := func(ctx context.Context, cacheDir string, wasm []byte) error {
		calls.Add(1)
		if cacheDir != dir {
			t.Errorf("compiler given %q, want the host's CacheDir %q", cacheDir, dir)
		}
		return plugins.CompileInto(ctx, cacheDir, wasm)
	}
	for round := 1; round <= 2; round++ {
		h, err := plugins.NewHost(plugins.HostOptions{CacheDir: dir, Compiler: compiler, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		p := load(t, h, fixture(t, "counter"), projManifest("c"))
		s := openStore(t)
		appendEvents(t, s, "order:1", 3)
		if n := projectCount(t, s, "order:1", plugins.Projection{P: p}); n != 3 {
			t.Fatalf("round %d: count %d, want 3", round, n)
		}
		if err := h.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("round %d: the compiler was called %d times, want once in all", round, n)
		}
		if n := cacheEntries(t, dir); n != 1 {
			t.Fatalf("round %d: %d compiled entries, want the compiler's one (the host compiled a different module)", round, n)
		}
	}
}

// TestCompilerRefusal: a module the Compiler refuses is not loaded, and
// the refusal says so with the Compiler's reason.
func TestCompilerRefusal(t *testing.T) {
	over := errors.New("it took longer than 1s")
	h, err := plugins.NewHost(plugins.HostOptions{CacheDir: t.TempDir(), Logger: quietLogger(),
		Compiler: func(context.Context, string, []byte) error { return over }})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	_, err = h.Load(context.Background(), fixture(t, "counter"), projManifest("c"))
	le := asLoadError(t, err)
	if le.Reason != "compiling the module" || !errors.Is(err, over) {
		t.Fatalf("refusal %q (cause %v), want the compiler's", le.Reason, le.Cause)
	}
	if _, ok := h.Plugin("c"); ok {
		t.Fatal("a refused module is loaded")
	}
	if _, err := plugins.NewHost(plugins.HostOptions{Compiler: func(context.Context, string, []byte) error { return nil }}); err == nil {
		t.Fatal("a Compiler without a CacheDir accepted")
	}
}
