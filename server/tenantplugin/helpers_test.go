package tenantplugin_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/control"
)

// testBed is a control plane holding tenants (each with quotas) and a
// store holding one event of order:1, under one temporary root; ctx is
// the operator's.
type testBed struct {
	ctx   context.Context
	root  string
	plane *control.Plane
	store *core.Store
}

func newTestBed(t *testing.T, quotas control.Quotas, tenants ...string) testBed {
	t.Helper()
	b := testBed{ctx: policy.WithPrincipal(context.Background(), policy.Principal{ID: "operator"}), root: t.TempDir()}
	var err error
	if b.plane, err = control.Open(control.Options{Dir: filepath.Join(b.root, "control")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.plane.Close() })
	for _, tenant := range tenants {
		if _, err := b.plane.CreateTenant(b.ctx, tenant, quotas, control.Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	if b.store, err = core.Open(core.DefaultConfig(filepath.Join(b.root, "store"))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.store.Close() })
	b.appendOrder(t)
	return b
}

// appendOrder appends one event of order:1.
func (b testBed) appendOrder(t *testing.T) {
	t.Helper()
	c, _ := core.NewCoordinate("order:1", "s")
	if _, err := b.store.Append(b.ctx, c, core.MustKind(1, 1), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
}

// fixture reads a module of plugins/testdata.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "plugins", "testdata", name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
