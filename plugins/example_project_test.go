package plugins_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins"
)

// Load a projection plugin and fold an entity's events through it with
// core.Project. The counter module (plugins/testdata/counter.wat) keeps a
// little-endian count of the events it was handed.
func ExampleProjection() {
	dir, err := os.MkdirTemp("", "batpak-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	store, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	order, _ := core.NewCoordinate("order:1", "shop")
	for _, p := range []string{`{"sku":"a"}`, `{"sku":"b"}`, `{"sku":"c"}`} {
		if _, err := store.Append(context.Background(), order, core.MustKind(1, 1), []byte(p)); err != nil {
			panic(err)
		}
	}

	wasm, err := os.ReadFile(filepath.Join("testdata", "counter.wasm"))
	if err != nil {
		panic(err)
	}
	host, err := plugins.NewHost(plugins.HostOptions{})
	if err != nil {
		panic(err)
	}
	defer host.Close(context.Background())
	p, err := host.Load(context.Background(), wasm, plugins.Manifest{Name: "counter", Version: "1.0.0", Kind: plugins.KindProjection})
	if err != nil {
		panic(err) // a *plugins.LoadError says why a module is refused
	}

	state, found, err := core.Project(store, "order:1", plugins.Projection{P: p}, core.Consistent())
	if err != nil {
		panic(err) // a plugin fault is a *plugins.PluginFault
	}
	fmt.Println(found, binary.LittleEndian.Uint64(state))
	// Output: true 3
}
