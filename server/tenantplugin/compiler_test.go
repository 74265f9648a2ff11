package tenantplugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server/tenantplugin"
)

// TestCompilerWithoutAUsableCache: a compile cache directory the server
// cannot use does not take the bound off compiling: the modules are
// given to the Compiler with a temporary directory, removed at Close.
func TestCompilerWithoutAUsableCache(t *testing.T) {
	e := newResetEnv(t)
	notADir := filepath.Join(e.root, "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var dirs []string
	var calls atomic.Int32
	m, err := tenantplugin.Open(e.ctx, tenantplugin.Options{Dir: filepath.Join(e.root, "plugins"), Plane: e.plane, CacheDir: filepath.Join(notADir, "cache"),
		Compiler: func(ctx context.Context, dir string, original, rewritten []byte) error {
			calls.Add(1)
			dirs = append(dirs, dir)
			return plugins.CompileInto(ctx, dir, original, rewritten)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Push(e.ctx, "acme", e.manifest("1"), e.trap, true); err != nil {
		t.Fatal(err)
	}
	if calls.Load() == 0 {
		t.Fatal("the module was compiled without the Compiler")
	}
	if _, err := os.Stat(dirs[0]); err != nil {
		t.Fatalf("the temporary cache: %v", err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dirs[0]); !os.IsNotExist(err) {
		t.Fatalf("the temporary cache %s is left after Close: %v", dirs[0], err)
	}
}

// TestCompilerWithNoCacheAtAll: with neither the cache directory nor a
// temporary one usable, a tenant's module is refused rather than compiled
// without the bound.
func TestCompilerWithNoCacheAtAll(t *testing.T) {
	e := newResetEnv(t)
	notADir := filepath.Join(e.root, "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", notADir)
	m, err := tenantplugin.Open(e.ctx, tenantplugin.Options{Dir: filepath.Join(e.root, "plugins"), Plane: e.plane, CacheDir: filepath.Join(notADir, "cache"),
		Compiler: func(ctx context.Context, dir string, original, rewritten []byte) error {
			return plugins.CompileInto(ctx, dir, original, rewritten)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if _, err := m.Push(e.ctx, "acme", e.manifest("1"), e.trap, true); err == nil || !strings.Contains(err.Error(), "no compile cache") {
		t.Fatalf("push with no cache at all: %v, want a refusal", err)
	}
}

// A compile cut short because the caller's context ended (the server
// shutting down, the client gone) is not a refusal of the module: the
// push fails with the context's error, and the same module is accepted
// when pushed again.
func TestCompileCancelledIsNoRefusal(t *testing.T) {
	e := newResetEnv(t)
	var cancelNext atomic.Bool
	cancelNext.Store(true)
	ctx, cancel := context.WithCancel(e.ctx)
	m, err := tenantplugin.Open(e.ctx, tenantplugin.Options{Dir: filepath.Join(e.root, "plugins"), Plane: e.plane, CacheDir: filepath.Join(e.root, "cache"),
		Compiler: func(cctx context.Context, dir string, original, rewritten []byte) error {
			if cancelNext.Swap(false) {
				cancel()
				<-cctx.Done()
				return cctx.Err()
			}
			return plugins.CompileInto(cctx, dir, original, rewritten)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	_, err = m.Push(ctx, "acme", e.manifest("1"), e.trap, true)
	var rej *tenantplugin.RejectedError
	if !errors.Is(err, context.Canceled) || errors.As(err, &rej) {
		t.Fatalf("a push whose context ended while compiling: %v, want context.Canceled, not a refusal", err)
	}
	if _, err := m.Push(e.ctx, "acme", e.manifest("1"), e.trap, true); err != nil {
		t.Fatalf("the same module pushed again: %v", err)
	}
}

// TestUploadsReportTheirCheckTime: each upload's check reports how long
// it held its slot (OnCheck), refused or not, so a server can charge a
// module's compile time to the tenant (a module that compiles until the
// timeout costs that time, not just its few bytes).
func TestUploadsReportTheirCheckTime(t *testing.T) {
	e := newResetEnv(t)
	var refuse atomic.Bool
	var held []time.Duration
	m, err := tenantplugin.Open(e.ctx, tenantplugin.Options{Dir: filepath.Join(e.root, "plugins"), Plane: e.plane, CacheDir: filepath.Join(e.root, "cache"),
		Compiler: func(ctx context.Context, dir string, original, rewritten []byte) error {
			time.Sleep(300 * time.Millisecond)
			if refuse.Load() {
				return errors.New("took longer than the compile timeout")
			}
			return plugins.CompileInto(ctx, dir, original, rewritten)
		},
		OnCheck: func(tenant string, d time.Duration) {
			if tenant != "acme" {
				t.Errorf("OnCheck for tenant %q", tenant)
			}
			held = append(held, d)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if _, err := m.Push(e.ctx, "acme", e.manifest("1"), e.trap, true); err != nil {
		t.Fatal(err)
	}
	refuse.Store(true)
	slow := withCustomSection(e.trap, "slow")
	mf, _ := json.Marshal(map[string]any{"name": "trap", "version": "2", "kind": "projection", "sha256": plugins.Digest(slow)})
	var rej *tenantplugin.RejectedError
	if _, err := m.Push(e.ctx, "acme", mf, slow, true); !errors.As(err, &rej) {
		t.Fatalf("a module the compiler refused: %v, want a refusal", err)
	}
	if len(held) != 2 || held[0] < 300*time.Millisecond || held[1] < 300*time.Millisecond {
		t.Fatalf("check times reported: %v; want two, each at least the compile's 300ms", held)
	}
}
