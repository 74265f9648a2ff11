package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/control"
)

// storedModules lists the module files kept for a tenant.
func storedModules(t testing.TB, root, tenant string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "plugins", tenant))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// paddedManifest is a pinned manifest for wasm of exactly size bytes as
// the client sends it (compact JSON), padded with an env grant.
func paddedManifest(t testing.TB, name, version string, wasm []byte, size int) json.RawMessage {
	t.Helper()
	mk := func(pad int) []byte {
		b, err := json.Marshal(map[string]any{"name": name, "version": version, "kind": "projection", "sha256": plugins.Digest(wasm),
			"grants": map[string]any{"env": map[string]string{"PAD": strings.Repeat("x", pad)}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := mk(0)
	b = mk(size - len(b))
	if len(b) != size {
		t.Fatalf("padded manifest is %d bytes, want %d", len(b), size)
	}
	return b
}

// TestTenantPluginManifestSizeLimit: a manifest of exactly
// control.MaxPluginManifestBytes is accepted; one byte more is refused
// before the module is compiled or stored, naming the limit, and no
// module file is left behind (a hostile admin could otherwise fill the
// disk with modules no version refers to).
func TestTenantPluginManifestSizeLimit(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), nil)
	ctx := context.Background()
	wasm := fixture(t, "counter")
	over := paddedManifest(t, "big", "1", wasm, control.MaxPluginManifestBytes+1)
	for _, activate := range []bool{true, false} {
		_, err := e.acme.PushPlugin(ctx, over, wasm, activate)
		if ce := wantCode(t, "manifest one byte over", err, client.CodePluginRejected); !strings.Contains(ce.Detail, "65536") {
			t.Errorf("manifest over: %q, want it to name the limit", ce.Detail)
		}
		if files := storedModules(t, e.root, "acme"); len(files) != 0 {
			t.Fatalf("a refused upload (activate %v) left %v stored", activate, files)
		}
	}
	// A running plugin, then an oversized manifest for a new version of
	// it (hot swap path and kept-version path): refused, the running
	// version and only its module stay.
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "big", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatal(err)
	}
	v2 := fixture(t, "counter2")
	for _, activate := range []bool{true, false} {
		_, err := e.acme.PushPlugin(ctx, paddedManifest(t, "big", "2", v2, control.MaxPluginManifestBytes+1), v2, activate)
		wantCode(t, "new version's manifest one byte over", err, client.CodePluginRejected)
		if files := storedModules(t, e.root, "acme"); len(files) != 1 || files[0] != plugins.Digest(wasm)+".wasm" {
			t.Fatalf("after a refused version (activate %v): %v stored", activate, files)
		}
		if st, err := e.acme.PluginStatus(ctx, "big"); err != nil || st.Active != "1" || st.Digest != plugins.Digest(wasm) || len(st.Versions) != 1 {
			t.Fatalf("after a refused version: %+v, %v", st, err)
		}
	}
	// Exactly the limit: accepted.
	if _, err := e.acme.PushPlugin(ctx, paddedManifest(t, "big", "2", v2, control.MaxPluginManifestBytes), v2, true); err != nil {
		t.Fatalf("manifest of exactly the limit: %v", err)
	}
}

// TestTenantPluginDamagedModuleAtStart: a kept module missing or damaged
// on disk when the server starts: the server starts, the plugin's status
// and projections say it is not loaded and why — without the server's
// directories — and pushing a version brings it back.
func TestTenantPluginDamagedModuleAtStart(t *testing.T) {
	root := t.TempDir()
	e := startPluginEnv(t, root, nil)
	ctx := context.Background()
	wasm, v2 := fixture(t, "counter"), fixture(t, "counter2")
	for _, name := range []string{"gone", "bent"} {
		if _, err := e.acme.PushPlugin(ctx, manifestOf(t, name, "1", "projection", wasm, nil), wasm, true); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "bent", "2", "projection", v2, nil), v2, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "fine", "1", "projection", v2, nil), v2, true); err != nil {
		t.Fatal(err)
	}
	appendN(t, e.acmeWriter, "order:1", 2)
	e.ps.stop()
	// Both "gone" and "bent" run counter.wasm: damage it (bent then has
	// nothing loadable but its kept version 2) …
	stored := filepath.Join(e.root, "plugins", "acme", plugins.Digest(wasm)+".wasm")
	if err := os.WriteFile(stored, []byte("\x00asm damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	e2 := startPluginEnv(t, root, nil)
	check := func(name, why string) {
		t.Helper()
		st, err := e2.acme.PluginStatus(ctx, name)
		if err != nil || st.Loaded || !strings.Contains(st.LoadError, why) || strings.Contains(st.LoadError, root) {
			t.Fatalf("%s after restart: loaded %v, load error %q, %v; want not loaded saying %q, no server path", name, st.Loaded, st.LoadError, err, why)
		}
		_, _, err = e2.acmeReader.Project(ctx, name, "order:1", "")
		if ce := wantCode(t, name+" projection", err, client.CodePluginFault); ce.Status != 424 || strings.Contains(ce.Detail, root) {
			t.Fatalf("%s projection: %d %q", name, ce.Status, ce.Detail)
		}
	}
	check("bent", "damaged")
	// … and remove it on the next start.
	e2.ps.stop()
	if err := os.Remove(stored); err != nil {
		t.Fatal(err)
	}
	e3 := startPluginEnv(t, root, nil)
	e2 = e3
	check("gone", "missing")
	check("bent", "missing")
	// Another plugin of the tenant serves.
	if _, _, err := e3.acmeReader.Project(ctx, "fine", "order:1", ""); err != nil {
		t.Fatalf("a sound plugin beside damaged ones: %v", err)
	}
	// Swapping back to the missing version is refused with the reason;
	// a kept sound version swaps in; pushing the module again restores.
	_, err := e3.acme.SwapPlugin(ctx, "gone", "1")
	if ce := wantCode(t, "swap to a missing module", err, client.CodePluginRejected); strings.Contains(ce.Detail, root) || !strings.Contains(ce.Detail, "missing") {
		t.Fatalf("swap to a missing module: %q", ce.Detail)
	}
	if _, err := e3.acme.SwapPlugin(ctx, "bent", "2"); err != nil {
		t.Fatalf("swap to a sound kept version: %v", err)
	}
	if p, _, err := e3.acmeReader.Project(ctx, "bent", "order:1", ""); err != nil || p.Version != "2" {
		t.Fatalf("bent after swapping to 2: %+v, %v", p, err)
	}
	if _, err := e3.acme.PushPlugin(ctx, manifestOf(t, "gone", "3", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatalf("pushing a module again: %v", err)
	}
	if p, _, err := e3.acmeReader.Project(ctx, "gone", "order:1", ""); err != nil || counterState(t, p) != 2 {
		t.Fatalf("gone after a new push: %+v, %v", p, err)
	}
}

// TestTenantPluginDamagedCompileCache: every file of the shared compiled
// code cache damaged (bytes flipped, or cut short) while the server is
// down: the server starts, the plugins load and project right, and a
// tenant pushing the same module again is not refused.
func TestTenantPluginDamagedCompileCache(t *testing.T) {
	root := t.TempDir()
	e := startPluginEnv(t, root, nil)
	ctx := context.Background()
	wasm, v2 := fixture(t, "counter"), fixture(t, "counter2")
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "count", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "count2", "1", "projection", v2, nil), v2, true); err != nil {
		t.Fatal(err)
	}
	appendN(t, e.acmeWriter, "order:1", 2)
	e.ps.stop()
	damaged := 0
	cut := false
	err := filepath.WalkDir(filepath.Join(e.root, "plugin-cache"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(path, "batpak-valid") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil || len(b) < 64 {
			return err
		}
		if cut = !cut; cut {
			b = b[:len(b)/2]
		} else {
			for i := len(b) / 3; i < len(b)/3+16; i++ {
				b[i] ^= 0xff
			}
		}
		damaged++
		return os.WriteFile(path, b, 0o600)
	})
	if err != nil || damaged < 2 {
		t.Fatalf("damaging the cache: %d files, %v", damaged, err)
	}
	e2 := startPluginEnv(t, root, nil)
	for name, want := range map[string]uint64{"count": 2, "count2": 4} { // counter2 counts each event twice
		if st, err := e2.acme.PluginStatus(ctx, name); err != nil || !st.Loaded {
			t.Fatalf("%s over a damaged compile cache: loaded %v (%q), %v", name, st.Loaded, st.LoadError, err)
		}
		if p, _, err := e2.acmeReader.Project(ctx, name, "order:1", ""); err != nil || counterState(t, p) != want {
			t.Fatalf("%s over a damaged compile cache: %+v, %v", name, p, err)
		}
	}
	if _, err := e2.globex.PushPlugin(ctx, manifestOf(t, "count", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatalf("another tenant pushing a module whose cached code was damaged: %v", err)
	}
}

// TestTenantPluginUploadsDoNotBlockOtherTenants: one tenant's upload that
// takes long to check (a start function that loops until the call
// timeout) does not hold another tenant's uploads, swaps or deletions.
func TestTenantPluginUploadsDoNotBlockOtherTenants(t *testing.T) {
	const slow = 4 * time.Second
	e := startPluginEnv(t, t.TempDir(), func(c *server.Config) { c.Plugins.CallTimeout = slow })
	ctx := context.Background()
	loop, wasm := fixture(t, "startloop"), fixture(t, "counter")
	done := make(chan error, 1)
	go func() {
		_, err := e.acme.PushPlugin(ctx, manifestOf(t, "spin", "1", "projection", loop, map[string]any{"timeout": slow.String()}), loop, true)
		done <- err
	}()
	time.Sleep(500 * time.Millisecond) // acme's upload is being checked
	start := time.Now()
	if _, err := e.globex.PushPlugin(ctx, manifestOf(t, "count", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatal(err)
	}
	if err := e.globex.DeletePlugin(ctx, "count", ""); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	select {
	case err := <-done:
		t.Fatalf("globex's push and delete waited %v for acme's slow upload (%v)", took, err)
	default:
	}
	if err := <-done; err == nil {
		t.Fatal("a module whose start function loops was accepted")
	}
}

// TestTenantPluginDeleteWhileProjecting: a plugin deleted and pushed
// again over and over while readers project through it: every answer is
// the state, 404 (no such plugin) or 424 (the call ended by the
// deletion); never a server error.
func TestTenantPluginDeleteWhileProjecting(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), nil)
	ctx := context.Background()
	wasm := fixture(t, "counter")
	push := func() {
		if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "count", "1", "projection", wasm, nil), wasm, true); err != nil {
			t.Error(err)
		}
	}
	push()
	appendN(t, e.acmeWriter, "order:1", 3)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, gone atomic.Int64
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// A fresh entity now and then, so that calls reach the plugin.
				entity := "order:1"
				if i%2 == 0 {
					entity = fmt.Sprintf("order:none-%d", i)
				}
				_, _, err := e.acmeReader.Project(ctx, "count", entity, "")
				var ce *client.Error
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &ce) && (ce.Status == 404 || ce.Status == 424):
					gone.Add(1)
				default:
					t.Errorf("a projection while the plugin is deleted: %v", err)
					return
				}
			}
		}()
	}
	for i := 0; i < 60 && !t.Failed(); i++ {
		if err := e.acme.DeletePlugin(ctx, "count", ""); err != nil {
			t.Error(err)
		}
		push()
	}
	close(stop)
	wg.Wait()
	t.Logf("%d answers, %d refusals", ok.Load(), gone.Load())
}

// TestTenantPluginHostMemoryUnderQuota: a plugin's call stack and tables,
// host memory beside its linear memory, are bounded by the tenant's
// plugin_memory_bytes: limits.stack_bytes and 8 × limits.table_elements
// of exactly the quota are accepted, one more is refused naming the quota
// and the member (a manifest could otherwise ask a 256 MiB stack, up to
// twice that of host heap per running call, under a 256 KiB quota).
func TestTenantPluginHostMemoryUnderQuota(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), nil)
	ctx := context.Background()
	const quota = 4 * 65536
	if _, err := e.op.SetQuotas(ctx, "acme", client.Quotas{PluginMemoryBytes: quota}); err != nil {
		t.Fatal(err)
	}
	wasm := fixture(t, "counter")
	for i, c := range []struct {
		field    string
		at, over int
	}{
		{"stack_bytes", quota, quota + 1},
		{"table_elements", quota / 8, quota/8 + 1},
	} {
		_, err := e.acme.PushPlugin(ctx, manifestOf(t, "p", "over", "projection", wasm, map[string]any{c.field: c.over}), wasm, true)
		if ce := wantCode(t, c.field+" one over", err, client.CodeQuotaExceeded); ce.Status != 422 ||
			!strings.Contains(ce.Detail, "plugin_memory_bytes") || !strings.Contains(ce.Detail, c.field) {
			t.Errorf("%s one over the quota: %d %q, want 422 naming plugin_memory_bytes and %s", c.field, ce.Status, ce.Detail, c.field)
		}
		version := fmt.Sprint(i + 1)
		if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "p", version, "projection", wasm, map[string]any{c.field: c.at}), wasm, true); err != nil {
			t.Fatalf("%s at the quota: %v", c.field, err)
		}
	}
	// Left out, they are the host's defaults lowered to the quota: the
	// plugin loads and serves.
	appendN(t, e.acmeWriter, "order:1", 2)
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "q", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatal(err)
	}
	if p, _, err := e.acmeReader.Project(ctx, "q", "order:1", ""); err != nil || counterState(t, p) != 2 {
		t.Fatalf("a plugin under a small quota: %+v, %v", p, err)
	}
}

// TestTenantPluginStrayFilesRemovedAtStart: files the server stopped
// while writing (an upload's temporary file, a module no version refers
// to) are removed when it starts again; kept modules stay and load.
func TestTenantPluginStrayFilesRemovedAtStart(t *testing.T) {
	root := t.TempDir()
	e := startPluginEnv(t, root, nil)
	ctx := context.Background()
	wasm := fixture(t, "counter")
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "count", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatal(err)
	}
	e.ps.stop()
	dir := filepath.Join(e.root, "plugins", "acme")
	for _, name := range []string{".upload-123456", plugins.Digest([]byte("orphan")) + ".wasm"} {
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e2 := startPluginEnv(t, root, nil)
	if files := storedModules(t, e2.root, "acme"); len(files) != 1 || files[0] != plugins.Digest(wasm)+".wasm" {
		t.Fatalf("after a restart: %v stored, want only the kept module", files)
	}
	if st, err := e2.acme.PluginStatus(ctx, "count"); err != nil || !st.Loaded {
		t.Fatalf("the kept plugin after a restart: %+v, %v", st, err)
	}
}

// TestTenantPluginUnusableCompileCache: the shared compile cache
// directory unusable when the server starts (a file in its place): the
// server starts all the same, says so in its log, and the tenants'
// plugins load, compiled in memory.
func TestTenantPluginUnusableCompileCache(t *testing.T) {
	root := t.TempDir()
	e := startPluginEnv(t, root, nil)
	ctx := context.Background()
	wasm := fixture(t, "counter")
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "count", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatal(err)
	}
	appendN(t, e.acmeWriter, "order:1", 2)
	e.ps.stop()
	cache := filepath.Join(e.root, "plugin-cache")
	if err := os.RemoveAll(cache); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cache, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	var mu sync.Mutex
	e2 := startPluginEnv(t, root, func(c *server.Config) { c.Stderr = lockedWriter{&mu, &log} })
	if p, _, err := e2.acmeReader.Project(ctx, "count", "order:1", ""); err != nil || counterState(t, p) != 2 {
		t.Fatalf("over an unusable compile cache: %+v, %v", p, err)
	}
	if _, err := e2.globex.PushPlugin(ctx, manifestOf(t, "count", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatalf("a push over an unusable compile cache: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(log.String(), "plugin-cache") {
		t.Errorf("the server's log does not say the compile cache is unusable:\n%s", log.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// TestTenantPluginChecksBound: server.plugin_checks uploads are checked
// at once across tenants (exactly the limit run together), one more
// waits for a slot; the setting is checked at start.
func TestTenantPluginChecksBound(t *testing.T) {
	const slow = 3 * time.Second
	e := startPluginEnv(t, t.TempDir(), func(c *server.Config) { c.Plugins.CallTimeout = slow; c.PluginChecks = 2 })
	ctx := context.Background()
	if _, err := e.op.CreateTenant(ctx, "initech", nil, nil); err != nil {
		t.Fatal(err)
	}
	k, err := e.op.IssueKey(ctx, "initech", "k", "admin")
	if err != nil {
		t.Fatal(err)
	}
	initech := clientOf(t, e.ps, k.Key).Tenant("initech")
	loop, wasm := fixture(t, "startloop"), fixture(t, "counter")
	start := time.Now()
	var wg sync.WaitGroup
	for _, tn := range []*client.Tenant{e.acme, e.globex} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := tn.PushPlugin(ctx, manifestOf(t, "spin", "1", "projection", loop, map[string]any{"timeout": slow.String()}), loop, true)
			if err == nil {
				t.Error("a module whose start function loops was accepted")
			}
			if took := time.Since(start); took > 2*slow-500*time.Millisecond {
				t.Errorf("two tenants' uploads under plugin_checks 2 took %v: not checked at once", took)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // both slots taken
	third := time.Now()
	if _, err := initech.PushPlugin(ctx, manifestOf(t, "count", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(third); took < slow-time.Second {
		t.Errorf("a third upload beside two slow ones took %v: it did not wait for a slot", took)
	}
	wg.Wait()
	startPluginServer(t, t.TempDir(), func(c *server.Config) { c.PluginChecks = 64 }) // the largest starts
	for _, n := range []int{-1, 65} {
		cfg := server.DefaultConfig()
		cfg.Root, cfg.PluginChecks = t.TempDir(), n
		if _, err := server.New(ctx, cfg); err == nil || !strings.Contains(err.Error(), "server.plugin_checks") {
			t.Errorf("plugin_checks %d: %v", n, err)
		}
	}
}
