package tenantplugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/tenantplugin"
)

// residentEnv is a testBed and the counter fixture with its code
// estimate (charged before it compiles) and what its compiled code is
// charged once loaded.
type residentEnv struct {
	testBed
	wasm      []byte
	est, code int64
}

func newResidentEnv(t *testing.T, tenants ...string) residentEnv {
	t.Helper()
	e := residentEnv{testBed: newTestBed(t, control.Quotas{}, tenants...), wasm: fixture(t, "counter")}
	var err error
	if e.est, err = plugins.CodeEstimate(e.wasm); err != nil {
		t.Fatal(err)
	}
	h, err := plugins.NewHost(plugins.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	p, err := h.Load(e.ctx, e.wasm, plugins.Manifest{Name: "c", Version: "1", Kind: plugins.KindProjection})
	if err != nil {
		t.Fatal(err)
	}
	e.code = p.CodeBytes()
	return e
}

func (e residentEnv) open(t *testing.T, code, idle int64) *tenantplugin.Manager {
	t.Helper()
	m, err := tenantplugin.Open(e.ctx, tenantplugin.Options{Dir: filepath.Join(e.root, "plugins"), Plane: e.plane,
		CacheDir: filepath.Join(e.root, "cache"), CodeBytes: code, IdleBytes: idle, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

func (e residentEnv) push(m *tenantplugin.Manager, tenant, name string) error {
	man, _ := json.Marshal(map[string]any{"name": name, "version": "1", "kind": "projection", "sha256": plugins.Digest(e.wasm)})
	_, err := m.Push(e.ctx, tenant, man, e.wasm, true)
	return err
}

// TestCompiledCodeIsBoundedAcrossTenants: the tenants' loaded modules'
// compiled code is held to Options.CodeBytes all together and a tenant to
// half of it; an upload past either is refused (naming which, the
// setting and the tenant's own figures) and leaves nothing kept; deleting
// a plugin gives its room back; and a server started with less room than
// its plugins need loads what fits and says why the rest did not.
func TestCompiledCodeIsBoundedAcrossTenants(t *testing.T) {
	e := newResidentEnv(t, "acme", "globex", "initech", "umbrella")
	room := 3*e.code + e.code/4 // three modules; a tenant's half: one
	m := e.open(t, room, 0)

	if err := e.push(m, "acme", "a1"); err != nil {
		t.Fatal(err)
	}
	err := e.push(m, "acme", "a2")
	var re *tenantplugin.RoomError
	var rj *tenantplugin.RejectedError
	if !errors.As(err, &re) || !errors.As(err, &rj) || !re.Tenant || re.Held != e.code || re.Asked != e.est || re.Setting != "server.plugin_code_bytes" {
		t.Fatalf("acme's second module past its half: %v (%+v), want a RejectedError for want of the tenant's half of the room", err, re)
	}
	if _, ok := e.plane.Plugin("acme", "a2"); ok {
		t.Fatal("a module refused for want of room was kept")
	}
	for _, tenant := range []string{"globex", "initech"} {
		if err := e.push(m, tenant, "p"); err != nil {
			t.Fatalf("%s's first module (the server's room not full): %v", tenant, err)
		}
	}
	err = e.push(m, "umbrella", "p")
	if !errors.As(err, &re) || re.Tenant || re.Limit != room {
		t.Fatalf("umbrella's module with the server's room full: %v, want a RoomError for the whole", err)
	}
	mine, all := m.Resident("acme")
	if mine.CodeBytes != e.code || all.CodeBytes != 3*e.code {
		t.Fatalf("Resident(acme) = %+v of %+v, want %d of %d", mine, all, e.code, 3*e.code)
	}

	if err := m.Delete(e.ctx, "acme", "a1", ""); err != nil {
		t.Fatal(err)
	}
	waitCode(t, m, func(_, all tenantplugin.Resident) bool { return all.CodeBytes == 2*e.code }, "after a delete, all tenants' code back to two modules")
	if err := e.push(m, "umbrella", "p"); err != nil {
		t.Fatalf("umbrella's module once acme's was deleted: %v", err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitCode(t, m, func(_, all tenantplugin.Resident) bool { return all.CodeBytes == 0 }, "a closed manager's code back to nothing")

	// Restarted with room for two: one of the three does not load, and
	// says why.
	m = e.open(t, 2*e.code+e.code/4, 0)
	if err := m.WaitStarted(e.ctx); err != nil {
		t.Fatal(err)
	}
	var notLoaded []string
	for _, tenant := range []string{"globex", "initech", "umbrella"} {
		_, err := m.Project(e.ctx, e.store, tenant, "p", "order:1")
		var nl *tenantplugin.NotLoadedError
		switch {
		case err == nil:
		case errors.As(err, &nl) && errors.As(err, &re):
			notLoaded = append(notLoaded, tenant)
		default:
			t.Fatalf("%s's projection after a restart with less room: %v", tenant, err)
		}
	}
	if len(notLoaded) != 1 {
		t.Fatalf("after a restart with room for two of three modules, %v did not load, want one", notLoaded)
	}
}

// TestIdleInstancesAreBounded: instances kept idle between calls are
// charged to Options.IdleBytes; with no room for them, calls still run
// (each instantiates its own) and nothing stays idle.
func TestIdleInstancesAreBounded(t *testing.T) {
	e := newResidentEnv(t, "acme")
	for _, c := range []struct {
		idle     int64
		wantIdle bool
	}{{0, true}, {1, false}} {
		m := e.open(t, 0, c.idle)
		if err := e.push(m, "acme", "p"); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := m.Project(e.ctx, e.store, "acme", "p", "order:1"); err != nil {
				t.Fatalf("IdleBytes %d: projection: %v", c.idle, err)
			}
			e.appendOrder(t) // the next projection calls the plugin
		}
		mine, _ := m.Resident("acme")
		if got := mine.IdleBytes > 0; got != c.wantIdle {
			t.Fatalf("IdleBytes %d: %d bytes idle after projections, want some: %v", c.idle, mine.IdleBytes, c.wantIdle)
		}
		if err := m.Delete(e.ctx, "acme", "p", ""); err != nil {
			t.Fatal(err)
		}
		if mine, _ := m.Resident("acme"); mine.IdleBytes != 0 {
			t.Fatalf("after the delete the tenant holds %+v", mine)
		}
		waitCode(t, m, func(mine, _ tenantplugin.Resident) bool { return mine.CodeBytes == 0 }, "the tenant's code after the delete")
		m.Close(context.Background())
	}
}

// waitCode waits (up to 10 s) until ok holds of acme's and all tenants'
// Resident: the charge of a module's code comes back once wazero has
// unmapped it, after a garbage collection or two.
func waitCode(t *testing.T, m *tenantplugin.Manager, ok func(mine, all tenantplugin.Resident) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mine, all := m.Resident("acme")
		if ok(mine, all) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: acme holds %+v, all %+v", what, mine, all)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
