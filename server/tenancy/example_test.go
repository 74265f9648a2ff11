package tenancy_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/tenancy"
)

func ExampleRegistry() {
	root, _ := os.MkdirTemp("", "tenants")
	defer os.RemoveAll(root)
	tenants := map[string]bool{"acme": true} // the control plane's answer
	r, err := tenancy.New(tenancy.Config{
		Root:        filepath.Join(root, "tenants"),
		MaxOpen:     1000,
		StoreConfig: func(id string) core.Config { return tenancy.StoreConfig("", true) },
		Exists:      func(id string) bool { return tenants[id] },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close(context.Background())

	ctx := context.Background()
	lease, err := r.Acquire(ctx, "acme") // opens acme's store
	if err != nil {
		log.Fatal(err)
	}
	coord, _ := core.NewCoordinate("order:1", "shop")
	rc, err := lease.Store().Append(ctx, coord, core.MustKind(1, 1), []byte(`{"total":10}`))
	if err != nil {
		log.Fatal(err)
	}
	lease.Release()
	fmt.Println("sequence", rc.GlobalSequence, "open", r.OpenCount())

	_, err = r.Acquire(ctx, "globex")
	fmt.Println(err)
	// Output:
	// sequence 0 open 1
	// tenancy: unknown tenant: globex
}
