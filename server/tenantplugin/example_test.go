package tenantplugin_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/tenantplugin"
)

// A tenant uploads a projection plugin (a module and its manifest) and
// folds an entity's events through it; the state is what the plugin
// made of them (here a count, as a little-endian u64).
func Example() {
	dir, _ := os.MkdirTemp("", "batpak-tenantplugin")
	defer os.RemoveAll(dir)
	ctx := policy.WithPrincipal(context.Background(), policy.Principal{ID: "operator"})
	plane, _ := control.Open(control.Options{Dir: filepath.Join(dir, "control")})
	defer plane.Close()
	_, _ = plane.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{})
	store, _ := core.Open(core.DefaultConfig(filepath.Join(dir, "acme")))
	defer store.Close()
	order, _ := core.NewCoordinate("order:1", "shop")
	for range 3 {
		_, _ = store.Append(ctx, order, core.MustKind(1, 1), []byte(`{}`))
	}

	m, err := tenantplugin.Open(ctx, tenantplugin.Options{Dir: filepath.Join(dir, "plugins"), Plane: plane})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close(context.Background())
	wasm, _ := os.ReadFile(filepath.Join("..", "..", "plugins", "testdata", "counter.wasm"))
	manifest, _ := json.Marshal(map[string]any{"name": "count", "version": "1", "kind": "projection",
		"sha256": plugins.Digest(wasm)})
	if _, err := m.Push(ctx, "acme", manifest, wasm, true); err != nil {
		fmt.Println(err)
		return
	}
	p, err := m.Project(ctx, store, "acme", "count", "order:1")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("events:", binary.LittleEndian.Uint64(p.State), "version:", p.Version)
	// Output: events: 3 version: 1
}
