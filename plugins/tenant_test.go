package plugins_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
)

// A handler plugin loaded for tenant acme writes as acme (its loader's
// principal) and names itself in the policy input: with the shipped
// tenant policy its reactions are admitted into acme and refused in
// globex, and the same module loaded for globex is told apart from acme's.
func TestPluginWritesCarryTheLoadersTenant(t *testing.T) {
	ctx := context.Background()
	tenancy, err := opa.Load(ctx, filepath.Join(moduleRoot, "examples", "policies"), opa.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// seen records what the policy is shown about each plugin write.
	var mu sync.Mutex
	var seen []policy.Input
	spy := policy.GateFunc("spy", func(_ context.Context, in *policy.Input) *policy.Denial {
		if in.Action == core.ActionPlugin {
			mu.Lock()
			seen = append(seen, *in)
			mu.Unlock()
		}
		return nil
	})
	s := openStore(t, func(c *core.Config) { c.Admission = policy.NewAdmitter(spy, tenancy) })

	acmeClerk := policy.Principal{ID: "u-ada", Tenant: "acme", Roles: []string{"clerk"}}
	globexClerk := policy.Principal{ID: "u-bob", Tenant: "globex", Roles: []string{"clerk"}}
	order := []byte(`{"items":[{"sku":"BAT-AA-4","qty":2,"price_cents":499}],"total_cents":998,"currency":"EUR"}`)
	place := func(who policy.Principal, entity string) core.StoredEvent {
		t.Helper()
		c, err := core.NewCoordinate(entity, "shop")
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Append(policy.WithPrincipal(ctx, who), c, core.MustKind(1, 1), order)
		if err != nil {
			t.Fatalf("placing %s: %v", entity, err)
		}
		ev, err := s.Get(r.ID)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	acmeOrder := place(acmeClerk, "acme:order:1")
	globexOrder := place(globexClerk, "globex:order:1")
	shipped := func(entity string) int {
		t.Helper()
		evs, err := s.Stream(entity)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range evs {
			if e.Header.Kind == core.MustKind(1, 2) {
				n++
			}
		}
		return n
	}
	denial := func(err error) string {
		t.Helper()
		var d *policy.Denial
		if !errors.As(err, &d) {
			t.Fatalf("error %v, want a *policy.Denial", err)
		}
		codes := ""
		for _, r := range d.Reasons {
			codes += r.Code + " "
		}
		return codes
	}

	wasm := buildGoGuest(t, "plugins/testdata/autoship")
	acmeShip, err := newHost(t).LoadFor(ctx, acmeClerk, wasm, generous(handlerManifest("auto-ship")))
	if err != nil {
		t.Fatal(err)
	}
	handle := acmeShip.Handler(s)

	// Into acme: admitted, as acme's clerk, naming the plugin.
	if _, err := handle(ctx, []core.StoredEvent{acmeOrder}); err != nil {
		t.Fatalf("acme's plugin writing into acme: %v", err)
	}
	if n := shipped("acme:order:1"); n != 1 {
		t.Fatalf("%d shipments in acme, want 1", n)
	}
	mu.Lock()
	in := seen[len(seen)-1]
	mu.Unlock()
	if in.Principal.Tenant != "acme" || in.Principal.ID != "u-ada" || in.Plugin == nil ||
		in.Plugin.Name != "auto-ship" || in.Plugin.Version != "1.0.0" || in.Plugin.Digest != plugins.Digest(wasm) {
		t.Fatalf("the policy saw principal %+v plugin %+v", in.Principal, in.Plugin)
	}

	// Into globex: refused, nothing written.
	_, err = handle(ctx, []core.StoredEvent{globexOrder})
	if codes := denial(err); codes != "TENANT_MISMATCH " {
		t.Fatalf("acme's plugin writing into globex: %s", codes)
	}
	if n := shipped("globex:order:1"); n != 0 {
		t.Fatalf("%d shipments in globex from acme's plugin", n)
	}

	// The same module loaded for globex is globex's plugin, which globex
	// has not taken on (data.json lists its plugins) ...
	globexShip, err := newHost(t).LoadFor(ctx, globexClerk, wasm, handlerManifest("auto-ship"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = globexShip.Handler(s)(ctx, []core.StoredEvent{globexOrder})
	if codes := denial(err); codes != "PLUGIN_NOT_ALLOWED " {
		t.Fatalf("globex's auto-ship: %s", codes)
	}
	// ... while under a name globex lists it writes into globex.
	globexShipper, err := newHost(t).LoadFor(ctx, globexClerk, wasm, handlerManifest("shipper"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := globexShipper.Handler(s)(ctx, []core.StoredEvent{globexOrder}); err != nil {
		t.Fatalf("globex's shipper into globex: %v", err)
	}
	if n := shipped("globex:order:1"); n != 1 {
		t.Fatalf("%d shipments in globex, want 1", n)
	}

	// A plugin loaded for nobody writes as plugin:NAME with no tenant.
	anon := load(t, newHost(t), wasm, handlerManifest("auto-ship"))
	if p := anon.Principal(); p.Tenant != "" || p.ID != "plugin:auto-ship" {
		t.Fatalf("Load's principal %+v", p)
	}
	_, err = anon.Handler(s)(ctx, []core.StoredEvent{place(acmeClerk, "acme:order:2")})
	if codes := denial(err); !strings.Contains(codes, "NO_PRINCIPAL ") {
		t.Fatalf("a tenantless plugin: %s", codes)
	}
}
