package plugins_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/batpak-go/batpak/plugins"
)

// A host that bounds what its plugins hold between calls: each module's
// compiled code is charged its estimate before it is compiled, and a
// charge the budget refuses refuses the load.
func ExampleHostOptions_charge() {
	wasm, err := os.ReadFile(filepath.Join("testdata", "counter.wasm"))
	if err != nil {
		panic(err)
	}
	est, _ := plugins.CodeEstimate(wasm)
	var mu sync.Mutex
	var held int64
	room := est + est/2 // one module's code (what it compiles to is less)
	charge := func(kind plugins.MemoryKind, n int64) (func(), error) {
		if kind != plugins.MemoryCode {
			return func() {}, nil // idle instances: not bounded here
		}
		mu.Lock()
		defer mu.Unlock()
		if held+n > room {
			return nil, errors.New("no room left for compiled code")
		}
		held += n
		return func() { mu.Lock(); held -= n; mu.Unlock() }, nil
	}
	h, err := plugins.NewHost(plugins.HostOptions{Charge: charge})
	if err != nil {
		panic(err)
	}
	defer h.Close(context.Background())

	manifest := func(name string) plugins.Manifest {
		return plugins.Manifest{Name: name, Version: "1.0.0", Kind: plugins.KindProjection}
	}
	if _, err := h.Load(context.Background(), wasm, manifest("first")); err != nil {
		panic(err)
	}
	_, err = h.Load(context.Background(), wasm, manifest("second"))
	fmt.Println(err)
	_ = h.Unload(context.Background(), "first")
	_, err = h.Load(context.Background(), wasm, manifest("second"))
	fmt.Println("after unloading the first:", err)
	// Output:
	// batpak: plugin second refused: no room for its compiled code (about 1 MiB): no room left for compiled code
	// after unloading the first: <nil>
}
