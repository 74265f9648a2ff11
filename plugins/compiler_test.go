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
	wasm := fixture(t, "counter")
	compiler := func(ctx context.Context, cacheDir string, original, rewritten []byte) error {
		calls.Add(1)
		if cacheDir != dir || string(original) != string(wasm) || rewritten == nil {
			t.Errorf("compiler given %q, %d and %d bytes; want the host's CacheDir %q, the module as written and as rewritten", cacheDir, len(original), len(rewritten), dir)
		}
		return plugins.CompileInto(ctx, cacheDir, original, rewritten)
	}
	for round := 1; round <= 2; round++ {
		h, err := plugins.NewHost(plugins.HostOptions{CacheDir: dir, Compiler: compiler, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		p := load(t, h, wasm, projManifest("c"))
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
		Compiler: func(context.Context, string, []byte, []byte) error { return over }})
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
	if _, err := plugins.NewHost(plugins.HostOptions{Compiler: func(context.Context, string, []byte, []byte) error { return nil }}); err == nil {
		t.Fatal("a Compiler without a CacheDir accepted")
	}
}

// TestCompilerValidates: with a Compiler, a module not valid as written is
// refused with the Compiler's reason as a module not valid WebAssembly
// (the host does not validate it itself), and so is one the host cannot
// measure.
func TestCompilerValidates(t *testing.T) {
	var calls atomic.Int32
	h, err := plugins.NewHost(plugins.HostOptions{CacheDir: t.TempDir(), Logger: quietLogger(),
		Compiler: func(ctx context.Context, dir string, original, rewritten []byte) error {
			calls.Add(1)
			return plugins.CompileInto(ctx, dir, original, rewritten)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	for name, wasm := range map[string][]byte{
		"garbage after the header":  []byte("\x00asm\x01\x00\x00\x00garbage"),
		"a global it does not have": fixture(t, "depthreset"), // uses the global the rewrite would append
	} {
		_, err := h.Load(context.Background(), wasm, projManifest("bad"))
		if le := asLoadError(t, err); le.Reason != "the module is not valid WebAssembly" || !errors.Is(err, plugins.ErrInvalidModule) {
			t.Errorf("%s: %q (%v), want the module not valid", name, le.Reason, le.Cause)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("the compiler was asked %d times, want twice (the host validates nothing itself)", n)
	}
}
