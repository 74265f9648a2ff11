package tenantplugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server/tenantplugin"
)

// withCustomSection is wasm with a custom section appended: the same
// code, another module (digest, compiled form).
func withCustomSection(wasm []byte, payload string) []byte {
	body := append([]byte{1, 'v'}, payload...)
	out := append(slices.Clone(wasm), 0, byte(len(body)))
	return append(out, body...)
}

func cacheBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// TestCompileCacheBounded: a tenant uploading a new module again and
// again (each version another module) grows the compile cache only to
// Options.CacheMaxBytes (plus the module just compiled): the oldest
// compiled modules are removed. The active version keeps running, and a
// restarted manager compiles it again (through the Compiler: the marker
// that vouched for its compiled code went with it).
func TestCompileCacheBounded(t *testing.T) {
	e := newResetEnv(t)
	var compiles atomic.Int32
	opts := func(max int64) tenantplugin.Options {
		return tenantplugin.Options{Dir: filepath.Join(e.root, "plugins"), Plane: e.plane, CacheDir: filepath.Join(e.root, "cache"), CacheMaxBytes: max, Logger: slog.New(slog.DiscardHandler),
			Compiler: func(ctx context.Context, dir string, original, rewritten []byte) error {
				if rewritten != nil {
					compiles.Add(1)
				}
				return plugins.CompileInto(ctx, dir, original, rewritten)
			}}
	}
	manifest := func(version string, wasm []byte) []byte {
		b, _ := json.Marshal(map[string]any{"name": "trap", "version": version, "kind": "projection", "sha256": plugins.Digest(wasm)})
		return b
	}
	// One module's compiled size, with no bound.
	m, err := tenantplugin.Open(e.ctx, opts(-1))
	if err != nil {
		t.Fatal(err)
	}
	first := withCustomSection(e.trap, "0")
	if _, err := m.Push(e.ctx, "acme", manifest("0", first), first, true); err != nil {
		t.Fatal(err)
	}
	one := cacheBytes(t, filepath.Join(e.root, "cache"))
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	max := 4 * one
	if m, err = tenantplugin.Open(e.ctx, opts(max)); err != nil {
		t.Fatal(err)
	}
	peak := int64(0)
	const versions = 24
	for i := 1; i <= versions; i++ {
		wasm := withCustomSection(e.trap, fmt.Sprint(i))
		if _, err := m.Push(e.ctx, "acme", manifest(fmt.Sprint(i), wasm), wasm, true); err != nil {
			t.Fatalf("version %d: %v", i, err)
		}
		// Versions are kept up to the tenant's limit: delete the oldest.
		if err := m.Delete(e.ctx, "acme", "trap", fmt.Sprint(i-1)); err != nil {
			t.Fatalf("deleting version %d: %v", i-1, err)
		}
		peak = max64(peak, cacheBytes(t, filepath.Join(e.root, "cache")))
	}
	if peak > max+2*one {
		t.Fatalf("the cache reached %d bytes over %d versions; bound %d (one module: %d)", peak, versions, max, one)
	}
	if _, err := m.Project(e.ctx, e.store, "acme", "trap", "order:1"); err == nil {
		t.Fatal("the trap plugin did not trap: is it running?")
	}
	if st, err := m.Status("acme", "trap"); err != nil || st.Active != fmt.Sprint(versions) || !st.Loaded {
		t.Fatalf("status %+v, %v; want version %d active", st, err, versions)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := compiles.Load()
	if m, err = tenantplugin.Open(e.ctx, opts(max)); err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if err := m.WaitStarted(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Project(e.ctx, e.store, "acme", "trap", "order:1"); err == nil || errors.Is(err, tenantplugin.ErrLoading) {
		t.Fatalf("after a restart, the trap plugin did not trap: %v", err)
	}
	t.Logf("one compiled module: %d bytes; peak %d over %d versions; bound %d; compiles %d, after the restart %d", one, peak, versions, max, before, compiles.Load()-before)
}

func max64(a, b int64) int64 { return max(a, b) }
