package server_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
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
)

// fixture reads a module of plugins/testdata.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "plugins", "testdata", name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// manifestOf is a pinned manifest for wasm; extra members (limits) are
// merged in.
func manifestOf(t testing.TB, name, version, kind string, wasm []byte, limits map[string]any) json.RawMessage {
	t.Helper()
	m := map[string]any{"name": name, "version": version, "kind": kind, "sha256": plugins.Digest(wasm)}
	if limits != nil {
		m["limits"] = limits
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pluginEnv is a server with tenants acme and globex and their keys.
type pluginEnv struct {
	ps                          policyServer
	root                        string // the server's root
	op                          *client.Admin
	acme, acmeReader, globex    *client.Tenant
	acmeWriter                  *client.Tenant
	acmeAdminKey, globexKey     string
	acmeReaderKey, acmeWriteKey string
}

// startPluginServer runs a server over root on loopback.
func startPluginServer(t testing.TB, root string, tune func(*server.Config)) policyServer {
	t.Helper()
	return startTunedServer(t, root, tune)
}

func clientOf(t testing.TB, ps policyServer, token string) *client.Client {
	c, err := client.New(ps.base, token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startPluginEnv(t testing.TB, root string, tune func(*server.Config)) pluginEnv {
	t.Helper()
	ps := startPluginServer(t, root, tune)
	ctx := context.Background()
	if err := ps.srv.PluginsLoaded(ctx); err != nil { // what the server found at start serves
		t.Fatal(err)
	}
	e := pluginEnv{ps: ps, root: filepath.Join(root, "srv"), op: clientOf(t, ps, "bpko_"+strings.Repeat("a", 52)).Admin()}
	for _, id := range []string{"acme", "globex"} {
		if _, err := e.op.CreateTenant(ctx, id, nil, nil); err != nil && !errors.Is(err, client.ErrConflict) {
			t.Fatal(err)
		}
	}
	key := func(tenant string, roles ...string) string {
		k, err := e.op.IssueKey(ctx, tenant, "k", roles...)
		if err != nil {
			t.Fatal(err)
		}
		return k.Key
	}
	e.acmeAdminKey, e.acmeReaderKey, e.acmeWriteKey, e.globexKey = key("acme", "admin"), key("acme", "reader"), key("acme", "writer"), key("globex", "admin")
	e.acme = clientOf(t, ps, e.acmeAdminKey).Tenant("acme")
	e.acmeReader = clientOf(t, ps, e.acmeReaderKey).Tenant("acme")
	e.acmeWriter = clientOf(t, ps, e.acmeWriteKey).Tenant("acme")
	e.globex = clientOf(t, ps, e.globexKey).Tenant("globex")
	return e
}

// counterState decodes counter.wasm's state (a little-endian u64 count of
// the events folded), as the projection endpoint answers it (base64).
func counterState(t testing.TB, p client.Projection) uint64 {
	t.Helper()
	if p.StateEncoding != "base64" {
		t.Fatalf("state encoding %q, want base64", p.StateEncoding)
	}
	var b []byte
	if err := json.Unmarshal(p.State, &b); err != nil || len(b) != 8 {
		t.Fatalf("state %s: %v", p.State, err)
	}
	return binary.LittleEndian.Uint64(b)
}

func wantCode(t testing.TB, what string, err error, code string) *client.Error {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
	return e
}

func appendN(t testing.TB, w *client.Tenant, entity string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := w.Append(context.Background(), note(entity)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTenantPluginProjection: an admin pushes a projection plugin; a
// reader reads an entity's state through it, with an ETag that answers
// 304 until the entity changes; the status shows the version; a reader
// cannot push, swap or reset; another tenant's key sees nothing of it.
func TestTenantPluginProjection(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), nil)
	ctx := context.Background()
	wasm := fixture(t, "counter")
	tp, err := e.acme.PushPlugin(ctx, manifestOf(t, "count", "1.0.0", "projection", wasm, nil), wasm, true)
	if err != nil {
		t.Fatal(err)
	}
	if tp.Active != "1.0.0" || len(tp.Versions) != 1 || tp.Versions[0].Digest != plugins.Digest(wasm) {
		t.Fatalf("pushed: %+v", tp)
	}
	appendN(t, e.acmeWriter, "order:1", 3)
	p, nm, err := e.acmeReader.Project(ctx, "count", "order:1", "")
	if err != nil || nm {
		t.Fatalf("project: %v (not modified %v)", err, nm)
	}
	if got := counterState(t, p); got != 3 || !p.Found || p.Version != "1.0.0" || p.Digest != plugins.Digest(wasm) || p.ETag == "" {
		t.Fatalf("projection %+v (count %d), want 3 events by 1.0.0 with an ETag", p, got)
	}
	if _, nm, err := e.acmeReader.Project(ctx, "count", "order:1", p.ETag); err != nil || !nm {
		t.Fatalf("If-None-Match with the current ETag: not modified %v, %v; want 304", nm, err)
	}
	appendN(t, e.acmeWriter, "order:1", 1)
	p2, nm, err := e.acmeReader.Project(ctx, "count", "order:1", p.ETag)
	if err != nil || nm || counterState(t, p2) != 4 || p2.ETag == p.ETag {
		t.Fatalf("after an append: %+v, not modified %v, %v; want 4 events and a new ETag", p2, nm, err)
	}
	// An entity without events: found false, no state.
	if p, _, err := e.acmeReader.Project(ctx, "count", "order:none", ""); err != nil || p.Found || string(p.State) != "null" {
		t.Fatalf("empty entity: %+v, %v", p, err)
	}
	// Roles: a reader reads; only an admin changes.
	if _, err := e.acmeReader.PushPlugin(ctx, manifestOf(t, "count", "2", "projection", wasm, nil), wasm, true); err == nil {
		t.Fatal("a reader pushed a plugin")
	} else {
		wantCode(t, "reader push", err, client.CodeForbidden)
	}
	if _, err := e.acmeWriter.SwapPlugin(ctx, "count", "1.0.0"); err == nil {
		t.Fatal("a writer swapped")
	}
	if _, err := e.acmeReader.ResetPlugin(ctx, "count"); err == nil {
		t.Fatal("a reader reset")
	}
	if st, err := e.acmeReader.PluginStatus(ctx, "count"); err != nil || st.Active != "1.0.0" || !st.Loaded || st.Stats.Requests < 3 {
		t.Fatalf("status: %+v, %v", st, err)
	}
	// Another tenant: its key is refused on acme's routes, and its own
	// routes know nothing of acme's plugin.
	otherOnAcme := clientOf(t, e.ps, e.globexKey).Tenant("acme")
	for what, err := range map[string]error{
		"project": func() error { _, _, err := otherOnAcme.Project(ctx, "count", "order:1", ""); return err }(),
		"status":  func() error { _, err := otherOnAcme.PluginStatus(ctx, "count"); return err }(),
		"list":    func() error { _, err := otherOnAcme.Plugins(ctx); return err }(),
		"swap":    func() error { _, err := otherOnAcme.SwapPlugin(ctx, "count", "1.0.0"); return err }(),
		"delete":  otherOnAcme.DeletePlugin(ctx, "count", ""),
	} {
		var ce *client.Error
		if !errors.As(err, &ce) || (ce.Status != 403 && ce.Status != 404) {
			t.Errorf("globex's key on acme's %s: %v, want 403 or 404", what, err)
		}
	}
	if ps, err := e.globex.Plugins(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("globex's plugins: %+v, %v; want none", ps, err)
	}
	if _, _, err := e.globex.Project(ctx, "count", "order:1", ""); err == nil {
		t.Fatal("globex projected through acme's plugin")
	} else {
		wantCode(t, "globex project", err, client.CodeNotFound)
	}
	// Delete: gone, and its module file with it.
	if err := e.acme.DeletePlugin(ctx, "count", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.acmeReader.Project(ctx, "count", "order:1", ""); err == nil {
		t.Fatal("a deleted plugin still projects")
	}
	if _, err := os.Stat(filepath.Join(e.root, "plugins", "acme", plugins.Digest(wasm)+".wasm")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the deleted plugin's module is still stored: %v", err)
	}
}

// TestTenantPluginFaultFixtures pushes every fault fixture as acme's
// projection plugin: each is refused at upload with its reason (nothing
// kept), or loads and faults only its own requests — 424 naming the
// fault, then quarantined after its max_faults, visible in its status to
// acme alone — while acme's healthy plugin and globex go on serving.
func TestTenantPluginFaultFixtures(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), func(c *server.Config) { c.Plugins.Plugins = 64 })
	ctx := context.Background()
	if _, err := e.op.SetQuotas(ctx, "acme", client.Quotas{MaxPlugins: 64}); err != nil { // a plugin per fixture
		t.Fatal(err)
	}
	counter := fixture(t, "counter")
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "healthy", "1", "projection", counter, nil), counter, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.globex.PushPlugin(ctx, manifestOf(t, "healthy", "1", "projection", counter, nil), counter, true); err != nil {
		t.Fatal(err)
	}
	appendN(t, e.acmeWriter, "order:1", 2)
	refused := map[string]string{
		"abi2":                 "ABI version 2",
		"bigmem":               "initial memory",
		"bigtable":             "table elements",
		"manytables":           "tables",
		"depthreset":           "not valid WebAssembly",
		"handler-double":       "does not export batpak_fold",
		"handler-flaky":        "does not export batpak_fold",
		"handler-malformed":    "does not export batpak_fold",
		"handler-steps":        "does not export batpak_fold",
		"handler-fan-first":    "does not export batpak_fold",
		"handler-notify-steps": "does not export batpak_fold",
		"importname-forge":     "instantiating",
		"inspect-forge":        "instantiating",
		"inspect":              "does not export batpak_fold",
		"noexport":             "does not export batpak_fold",
		"nomemory":             "defines no memory",
		"startloop":            "timeout",
		"badalloc":             "the module's batpak_alloc is (i32) -> (), the ABI's is (i32) -> i32",
		"badhandle":            "does not export batpak_fold",
		"badinit":              "the module's _initialize is (i32) -> (), the ABI's is () -> ()",
		"reactflood":           "does not export batpak_fold",
	}
	faults := map[string]string{
		"bigout": "output-limit", "fatframes": "stack", "guesterr": "guest-error", "guesterr-forge": "guest-error",
		"loop": "timeout", "membomb": "memory", "recurse": "stack", "tablegrow": "guest-error", "trap": "trap",
	}
	healthy := map[string]bool{"growpages": true, "logflood": true, "slowok": true, "slowsmall": true, "wasi-file": true, "wasi-sock": true, "counter2": true, "widebranch": true}
	files, err := filepath.Glob(filepath.Join("..", "plugins", "testdata", "*.wasm"))
	if err != nil || len(files) < 20 {
		t.Fatalf("fixtures: %v, %d", err, len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".wasm")
		if name == "counter" {
			continue
		}
		wasm := fixture(t, name)
		limits := map[string]any{"max_faults": 2}
		if name == "membomb" {
			limits["memory_pages"] = 64 // reached quickly, even under the race detector
		}
		_, perr := e.acme.PushPlugin(ctx, manifestOf(t, name, "1", "projection", wasm, limits), wasm, true)
		switch {
		case refused[name] != "":
			ce := wantCode(t, name+": push", perr, client.CodePluginRejected)
			if !strings.Contains(ce.Detail, refused[name]) || strings.ContainsAny(ce.Detail, "\n\x1b") {
				t.Errorf("%s: refusal %q, want it to name %q on one printable line", name, ce.Detail, refused[name])
			}
			if _, err := e.acme.PluginStatus(ctx, name); !errors.Is(err, client.ErrNotFound) {
				t.Errorf("%s: refused, yet its status answers %v", name, err)
			}
			if _, err := os.Stat(filepath.Join(e.root, "plugins", "acme", plugins.Digest(wasm)+".wasm")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: refused, yet its module is stored (%v)", name, err)
			}
			continue
		case perr != nil:
			t.Errorf("%s: push: %v", name, perr)
			continue
		case healthy[name]:
			if _, _, err := e.acmeReader.Project(ctx, name, "order:1", ""); err != nil {
				t.Errorf("%s: project: %v", name, err)
			}
			continue
		case faults[name] == "":
			t.Errorf("%s: a fixture this test does not know: classify it", name)
			continue
		}
		for i := 0; i < 2; i++ {
			_, _, err := e.acmeReader.Project(ctx, name, "order:1", "")
			if ce := wantCode(t, name+": project", err, client.CodePluginFault); ce.Fault() != faults[name] {
				t.Errorf("%s: fault %q, want %q", name, ce.Fault(), faults[name])
			}
		}
		_, _, err := e.acmeReader.Project(ctx, name, "order:1", "")
		wantCode(t, name+": after max_faults", err, client.CodePluginQuarantined)
		st, err := e.acmeReader.PluginStatus(ctx, name)
		if err != nil || !st.Quarantined || st.Stats.Faults != 2 || len(st.Faults) != 2 || st.Faults[0].Kind != faults[name] {
			t.Errorf("%s: status %+v, %v; want quarantined with 2 faults of kind %s", name, st, err, faults[name])
		}
		// The tenant's healthy plugin and the other tenant are unaffected.
		if p, _, err := e.acmeReader.Project(ctx, "healthy", "order:1", ""); err != nil || counterState(t, p) != 2 {
			t.Errorf("after %s: acme's healthy plugin: %v", name, err)
		}
		if _, _, err := e.globex.Project(ctx, "healthy", "order:1", ""); err != nil {
			t.Errorf("after %s: globex: %v", name, err)
		}
		if _, err := e.globex.PluginStatus(ctx, name); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("globex sees acme's plugin %s: %v", name, err)
		}
	}
	// Reset lifts the quarantine: the plugin is called (and faults) again.
	if st, err := e.acme.ResetPlugin(ctx, "trap"); err != nil || st.Quarantined {
		t.Fatalf("reset: %+v, %v", st, err)
	}
	_, _, err = e.acmeReader.Project(ctx, "trap", "order:1", "")
	wantCode(t, "after reset", err, client.CodePluginFault)
	// A plugin's log lines are its tenant's: logflood's show in its status.
	st, err := e.acmeReader.PluginStatus(ctx, "logflood")
	if err != nil || len(st.Logs) == 0 || st.Stats.LogLines == 0 {
		t.Fatalf("logflood status: %d log lines kept, stats %+v, %v", len(st.Logs), st.Stats, err)
	}
	if len(st.Logs) > 100 {
		t.Errorf("%d log lines kept, want at most 100 (server.plugin_log_lines)", len(st.Logs))
	}
}

// TestTenantPluginHotSwapUnderLoad swaps a plugin between two versions
// over and over while readers project through it: no request fails, and
// every state is one version's (counter: n, counter2: 2n).
func TestTenantPluginHotSwapUnderLoad(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), nil)
	ctx := context.Background()
	v1, v2 := fixture(t, "counter"), fixture(t, "counter2")
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "count", "1", "projection", v1, nil), v1, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "count", "2", "projection", v2, nil), v2, false); err != nil {
		t.Fatal(err)
	}
	const events = 5
	for i := 0; i < 4; i++ {
		appendN(t, e.acmeWriter, fmt.Sprintf("order:%d", i), events)
	}
	var requests, failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reader := e.acmeReader
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p, _, err := reader.Project(ctx, "count", fmt.Sprintf("order:%d", i%4), "")
				requests.Add(1)
				if err != nil {
					failures.Add(1)
					t.Errorf("projection during swaps: %v", err)
					continue
				}
				if n := counterState(t, p); n != events && n != 2*events {
					failures.Add(1)
					t.Errorf("state %d, want %d (v1) or %d (v2)", n, events, 2*events)
				}
			}
		}()
	}
	swaps := 0
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		v := []string{"2", "1"}[swaps%2]
		if _, err := e.acme.SwapPlugin(ctx, "count", v); err != nil {
			t.Fatalf("swap to %s: %v", v, err)
		}
		swaps++
	}
	close(stop)
	wg.Wait()
	t.Logf("%d swaps, %d projections, %d failed", swaps, requests.Load(), failures.Load())
	if swaps < 4 || requests.Load() < 20 {
		t.Fatalf("%d swaps and %d projections: too few to tell", swaps, requests.Load())
	}
	p, _, err := e.acmeReader.Project(ctx, "count", "order:0", "")
	want := map[string]uint64{"1": events, "2": 2 * events}[[]string{"2", "1"}[(swaps-1)%2]]
	if err != nil || counterState(t, p) != want {
		t.Fatalf("after the swaps: %+v, %v; want %d", p, err, want)
	}
}

// TestTenantPluginRestart: versions and the active one survive a
// restart; the active version is loaded again and serves.
func TestTenantPluginRestart(t *testing.T) {
	root := t.TempDir()
	e := startPluginEnv(t, root, nil)
	ctx := context.Background()
	v1, v2 := fixture(t, "counter"), fixture(t, "counter2")
	for _, push := range []struct {
		v    string
		wasm []byte
	}{{"1", v1}, {"2", v2}} {
		if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "count", push.v, "projection", push.wasm, nil), push.wasm, true); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.acme.SwapPlugin(ctx, "count", "1"); err != nil {
		t.Fatal(err)
	}
	appendN(t, e.acmeWriter, "order:1", 3)
	e.ps.stop()

	e2 := startPluginEnv(t, root, nil)
	st, err := e2.acme.PluginStatus(ctx, "count")
	if err != nil || st.Active != "1" || !st.Loaded || st.Digest != plugins.Digest(v1) || len(st.Versions) != 2 {
		t.Fatalf("after restart: %+v, %v; want version 1 of 2 active and loaded", st, err)
	}
	p, _, err := e2.acmeReader.Project(ctx, "count", "order:1", "")
	if err != nil || counterState(t, p) != 3 || p.Version != "1" {
		t.Fatalf("after restart: %+v, %v", p, err)
	}
	if _, err := e2.acme.SwapPlugin(ctx, "count", "2"); err != nil {
		t.Fatal(err)
	}
	if p, _, err := e2.acmeReader.Project(ctx, "count", "order:1", ""); err != nil || counterState(t, p) != 6 {
		t.Fatalf("swapped to 2 after restart: %+v, %v", p, err)
	}
}

// TestTenantPluginLimits: each limit from the tenant's quota, at its
// boundary (exactly the limit accepted, one more refused naming the
// quota), and a quota above the server's ceiling gets the ceiling.
func TestTenantPluginLimits(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), func(c *server.Config) { c.Plugins.CallTimeout = 2 * time.Second })
	ctx := context.Background()
	wasm := fixture(t, "counter")
	size := int64(len(wasm))
	if _, err := e.op.SetQuotas(ctx, "acme", client.Quotas{
		MaxModuleBytes: size, PluginMemoryBytes: 4 * 65536, PluginCallMillis: 500, PluginOutputBytes: 4096,
		PluginLogLines: 10, PluginLogBytes: 2048, MaxPlugins: 2, MaxPluginVersions: 2,
	}); err != nil {
		t.Fatal(err)
	}
	push := func(name, version string, w []byte, limits map[string]any) error {
		_, err := e.acme.PushPlugin(ctx, manifestOf(t, name, version, "projection", w, limits), w, true)
		return err
	}
	for _, c := range []struct {
		field string
		at    any
		over  any
		quota string
	}{
		{"memory_pages", 4, 5, "plugin_memory_bytes"},
		{"timeout", "500ms", "501ms", "plugin_call_ms"},
		{"max_output_bytes", 4096, 4097, "plugin_output_bytes"},
		{"log_lines", 10, 11, "plugin_log_lines"},
		{"log_bytes", 2048, 2049, "plugin_log_bytes"},
	} {
		err := push("p", "over-"+c.field, wasm, map[string]any{c.field: c.over})
		if ce := wantCode(t, c.field+" one over", err, client.CodeQuotaExceeded); ce.Status != 422 || !strings.Contains(ce.Detail, c.quota) {
			t.Errorf("%s over: %d %q, want 422 naming %s", c.field, ce.Status, ce.Detail, c.quota)
		}
	}
	// Exactly every limit: accepted (one version, so that the version
	// limit is not reached).
	if err := push("p", "1", wasm, map[string]any{"memory_pages": 4, "timeout": "500ms", "max_output_bytes": 4096, "log_lines": 10, "log_bytes": 2048}); err != nil {
		t.Fatalf("at every limit: %v", err)
	}
	st, err := e.acme.PluginStatus(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	var lim struct {
		MemoryBytes int64 `json:"memory_bytes"`
		CallTimeout int64 `json:"call_timeout"`
	}
	_ = json.Unmarshal(st.Limits, &lim)
	if lim.MemoryBytes != 4*65536 || time.Duration(lim.CallTimeout) != 500*time.Millisecond {
		t.Errorf("status limits %s", st.Limits)
	}
	// Module size: exactly max_module_bytes accepted (above), one more
	// refused with 413.
	big := append(append([]byte{}, wasm...), 0)
	if ce := wantCode(t, "module one byte over", push("q", "1", big, nil), client.CodeQuotaExceeded); ce.Status != 413 || !strings.Contains(ce.Detail, "max_module_bytes") {
		t.Errorf("module over: %d %q, want 413 naming max_module_bytes", ce.Status, ce.Detail)
	}
	// Plugins: 2 kept, a third refused; versions: 2 kept, a third refused.
	if err := push("q", "1", wasm, nil); err != nil {
		t.Fatalf("second plugin: %v", err)
	}
	if ce := wantCode(t, "third plugin", push("r", "1", wasm, nil), client.CodeQuotaExceeded); !strings.Contains(ce.Detail, "max_plugins") {
		t.Errorf("third plugin: %q", ce.Detail)
	}
	v2 := fixture(t, "counter2")
	if _, err := e.op.SetQuotas(ctx, "acme", client.Quotas{MaxModuleBytes: 1 << 20, MaxPlugins: 2, MaxPluginVersions: 2}); err != nil {
		t.Fatal(err)
	}
	if err := push("q", "2", v2, nil); err != nil {
		t.Fatalf("second version: %v", err)
	}
	slow := fixture(t, "slowok")
	if ce := wantCode(t, "third version", push("q", "3", slow, nil), client.CodeQuotaExceeded); !strings.Contains(ce.Detail, "max_plugin_versions") {
		t.Errorf("third version: %q", ce.Detail)
	}
	// After deleting an inactive version there is room again.
	if err := e.acme.DeletePlugin(ctx, "q", "1"); err != nil {
		t.Fatal(err)
	}
	if err := push("q", "3", slow, nil); err != nil {
		t.Fatalf("after deleting a version: %v", err)
	}
	// A quota above the ceiling (server.plugins.call_timeout 2s) gets the
	// ceiling.
	if _, err := e.op.SetQuotas(ctx, "acme", client.Quotas{PluginCallMillis: 60000}); err != nil {
		t.Fatal(err)
	}
	if err := push("p", "2", v2, map[string]any{"timeout": "2001ms"}); err == nil {
		t.Fatal("a manifest over the server's ceiling was accepted")
	}
	if st, err := e.acme.PluginStatus(ctx, "p"); err != nil || !strings.Contains(string(st.Limits), `"call_timeout":2000000000`) {
		t.Fatalf("limits under a quota above the ceiling: %s, %v", st.Limits, err)
	}
}

// TestTenantPluginCeilingsChecked: a server ceiling out of its range is
// refused at start, naming its key.
func TestTenantPluginCeilingsChecked(t *testing.T) {
	for _, c := range []struct {
		tune func(*server.Config)
		key  string
	}{
		{func(c *server.Config) { c.Plugins.MemoryBytes = 1 }, "server.plugins.memory_bytes"},
		{func(c *server.Config) { c.Plugins.CallTimeout = 2 * time.Minute }, "server.plugins.call_timeout"},
		{func(c *server.Config) { c.Plugins.ModuleBytes = 512 << 20 }, "server.plugins.module_bytes"},
		{func(c *server.Config) { c.PluginStateCacheBytes = 1 }, "server.plugin_state_cache_bytes"},
	} {
		cfg := server.DefaultConfig()
		cfg.Root = t.TempDir()
		c.tune(&cfg)
		if _, err := server.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), c.key) {
			t.Errorf("%s out of range: %v", c.key, err)
		}
	}
}

// TestTenantPluginBadUploads: malformed uploads are refused with a
// problem naming what is wrong, and nothing is kept.
func TestTenantPluginBadUploads(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), nil)
	ctx := context.Background()
	wasm := fixture(t, "counter")
	cases := []struct {
		what     string
		manifest string
		module   []byte
		code     string
		detail   string
	}{
		{"no pin", `{"name":"c","version":"1","kind":"projection"}`, wasm, client.CodePluginRejected, `set "sha256"`},
		{"pin of other bytes", string(manifestOf(t, "c", "1", "projection", fixture(t, "counter2"), nil)), wasm, client.CodePluginRejected, "is not the manifest's sha256"},
		{"unknown manifest member", `{"name":"c","version":"1","kind":"projection","colour":"red"}`, wasm, client.CodePluginRejected, "colour"},
		{"bad name", string(manifestOf(t, "C/../x", "1", "projection", wasm, nil)), wasm, client.CodePluginRejected, "plugin name"},
		{"bad version", string(manifestOf(t, "c", "1 0", "projection", wasm, nil)), wasm, client.CodePluginRejected, "plugin version"},
		{"bad kind", string(manifestOf(t, "c", "1", "reducer", wasm, nil)), wasm, client.CodePluginRejected, "kind"},
		{"not wasm", string(manifestOf(t, "c", "1", "projection", []byte("hello"), nil)), []byte("hello"), client.CodePluginRejected, "refused"},
		{"no module", string(manifestOf(t, "c", "1", "projection", wasm, nil)), nil, client.CodeInvalidRequest, "module"},
	}
	for _, c := range cases {
		_, err := e.acme.PushPlugin(ctx, json.RawMessage(c.manifest), c.module, true)
		if ce := wantCode(t, c.what, err, c.code); !strings.Contains(ce.Detail, c.detail) {
			t.Errorf("%s: %q, want it to say %q", c.what, ce.Detail, c.detail)
		}
	}
	if ps, err := e.acme.Plugins(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("after refused uploads: %+v, %v", ps, err)
	}
	// A kept version pushed again with another module: 409.
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "c", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatal(err)
	}
	v2 := fixture(t, "counter2")
	wantCode(t, "version reused", func() error {
		_, err := e.acme.PushPlugin(ctx, manifestOf(t, "c", "1", "projection", v2, nil), v2, true)
		return err
	}(), client.CodeConflict)
	// A handler version of a projection plugin is refused; a projection of
	// a handler plugin is refused.
	wantCode(t, "kind change", func() error {
		_, err := e.acme.PushPlugin(ctx, manifestOf(t, "c", "2", "handler", v2, nil), v2, true)
		return err
	}(), client.CodePluginRejected)
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "h", "1", "handler", wasm, nil), wasm, true); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "projection of a handler", func() error { _, _, err := e.acmeReader.Project(ctx, "h", "x", ""); return err }(), client.CodePluginRejected)
	// The active version cannot be deleted alone; an unknown one is 404.
	wantCode(t, "delete active version", e.acme.DeletePlugin(ctx, "c", "1"), client.CodeInvalidRequest)
	wantCode(t, "delete unknown version", e.acme.DeletePlugin(ctx, "c", "9"), client.CodeNotFound)
	wantCode(t, "swap unknown version", func() error { _, err := e.acme.SwapPlugin(ctx, "c", "9"); return err }(), client.CodeNotFound)
}

// TestTenantPluginTenantDeleted: deleting a tenant removes its plugins
// and modules; a tenant created again under its id starts with none.
func TestTenantPluginTenantDeleted(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), nil)
	ctx := context.Background()
	wasm := fixture(t, "counter")
	if _, err := e.globex.PushPlugin(ctx, manifestOf(t, "count", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatal(err)
	}
	if err := e.op.DeleteTenant(ctx, "globex"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.root, "plugins", "globex")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a deleted tenant's plugins are still stored: %v", err)
	}
	if _, err := e.op.CreateTenant(ctx, "globex", nil, nil); err != nil {
		t.Fatal(err)
	}
	k, err := e.op.IssueKey(ctx, "globex", "k", "admin")
	if err != nil {
		t.Fatal(err)
	}
	g := clientOf(t, e.ps, k.Key).Tenant("globex")
	if ps, err := g.Plugins(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("the new globex has plugins: %+v, %v", ps, err)
	}
	wantCode(t, "old plugin", func() error { _, _, err := g.Project(ctx, "count", "order:1", ""); return err }(), client.CodeNotFound)
}
