package tenantplugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/tenantplugin"
)

// TestSlowModulesDoNotHoldUpTheStart: a manager opens without waiting for
// its tenants' plugins to load (a module missing from the compile cache
// is compiled again, which a hostile module can make take up to the
// compile timeout): Open returns at once, a projection of a plugin still
// loading fails with a *NotLoadedError wrapping ErrLoading, another
// tenant's plugin loads beside it, and once its compile ends the plugin
// serves. WaitLoaded (what hosted workers use) waits for it.
func TestSlowModulesDoNotHoldUpTheStart(t *testing.T) {
	e := newResetEnv(t)
	if _, err := e.plane.CreateTenant(e.ctx, "globex", control.Quotas{}, control.Settings{}); err != nil {
		t.Fatal(err)
	}
	acmeWasm, globexWasm := withCustomSection(e.trap, "acme"), withCustomSection(e.trap, "globex")
	manifest := func(wasm []byte) []byte {
		b, _ := json.Marshal(map[string]any{"name": "trap", "version": "1", "kind": "projection", "sha256": plugins.Digest(wasm)})
		return b
	}
	var held atomic.Pointer[chan struct{}] // acme's compile waits on it while set
	cache := filepath.Join(e.root, "cache")
	opts := tenantplugin.Options{Dir: filepath.Join(e.root, "plugins"), Plane: e.plane, CacheDir: cache, Logger: slog.New(slog.DiscardHandler),
		Compiler: func(ctx context.Context, dir string, original, rewritten []byte) error {
			if c := held.Load(); c != nil && plugins.Digest(original) == plugins.Digest(acmeWasm) {
				select {
				case <-*c:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return plugins.CompileInto(ctx, dir, original, rewritten)
		}}
	m, err := tenantplugin.Open(e.ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for tenant, wasm := range map[string][]byte{"acme": acmeWasm, "globex": globexWasm} {
		if _, err := m.Push(e.ctx, tenant, manifest(wasm), wasm, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A cold start: every module is compiled again, acme's until released.
	if err := os.RemoveAll(cache); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	held.Store(&release)
	start := time.Now()
	m, err = tenantplugin.Open(e.ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Open took %v while a module compiled", d)
	}
	var nl *tenantplugin.NotLoadedError
	if _, err := m.Project(e.ctx, e.store, "acme", "trap", "order:1"); !errors.As(err, &nl) || !errors.Is(err, tenantplugin.ErrLoading) {
		t.Fatalf("a projection of a plugin still loading: %v; want a *NotLoadedError wrapping ErrLoading", err)
	}
	// globex's plugin loads while acme's still compiles.
	other, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	if err := m.WaitLoaded(other, "globex", "trap"); err != nil {
		t.Fatalf("globex's plugin while acme's compiles: %v", err)
	}
	if _, err := m.Project(e.ctx, e.store, "globex", "trap", "order:1"); err == nil || errors.Is(err, tenantplugin.ErrLoading) {
		t.Fatalf("globex's plugin: %v; want the trap's fault", err)
	}
	short, cancel2 := context.WithTimeout(e.ctx, 100*time.Millisecond)
	defer cancel2()
	if err := m.WaitLoaded(short, "acme", "trap"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitLoaded of a plugin still compiling: %v; want it to wait", err)
	}
	close(release)
	if err := m.WaitLoaded(e.ctx, "acme", "trap"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Project(e.ctx, e.store, "acme", "trap", "order:1"); err == nil || errors.Is(err, tenantplugin.ErrLoading) {
		t.Fatalf("acme's plugin once compiled: %v; want the trap's fault", err)
	}
	if err := m.WaitStarted(e.ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCloseStopsTheStartLoads: closing a manager while its start-up loads
// still compile stops them (their compiles' contexts end) and returns at
// once, the loads' waiters let go.
func TestCloseStopsTheStartLoads(t *testing.T) {
	e := newResetEnv(t)
	var hold atomic.Bool
	cache := filepath.Join(e.root, "cache")
	opts := tenantplugin.Options{Dir: filepath.Join(e.root, "plugins"), Plane: e.plane, CacheDir: cache, Logger: slog.New(slog.DiscardHandler),
		Compiler: func(ctx context.Context, dir string, original, rewritten []byte) error {
			if hold.Load() {
				<-ctx.Done() // compiles until the manager stops it
				return ctx.Err()
			}
			return plugins.CompileInto(ctx, dir, original, rewritten)
		}}
	m, err := tenantplugin.Open(e.ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Push(e.ctx, "acme", e.manifest("1"), e.trap, true); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(cache); err != nil {
		t.Fatal(err)
	}
	hold.Store(true)
	if m, err = tenantplugin.Open(e.ctx, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Project(e.ctx, e.store, "acme", "trap", "order:1"); !errors.Is(err, tenantplugin.ErrLoading) {
		t.Fatalf("a projection while the plugin compiles: %v; want ErrLoading", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- m.Close(context.Background()) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a start-up load compiled")
	}
	if err := m.WaitStarted(e.ctx); err != nil {
		t.Fatal(err)
	}
}
