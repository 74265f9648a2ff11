package control_test

import (
	"context"
	"fmt"
	"os"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/control"
)

// A plane following a store it does not own (in a cluster, the node's
// raft-replicated system store): it applies whatever the store receives,
// whoever wrote it, and tells the server through OnChange.
func Example_following() {
	dir, _ := os.MkdirTemp("", "batpak-system")
	defer os.RemoveAll(dir)
	store, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		panic(err)
	}
	defer store.Close() // after the plane's Close: the plane leaves it open

	changes := make(chan control.Change, 16)
	p, err := control.Open(control.Options{Store: store, OnChange: func(c control.Change) {
		changes <- c // the server would end streams, evict the tenant's store, …
	}})
	if err != nil {
		panic(err)
	}
	defer p.Close()

	ctx := context.Background()
	if _, err := p.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{}); err != nil {
		panic(err)
	}
	if _, err := p.SuspendTenant(ctx, "acme", "billing"); err != nil {
		panic(err)
	}
	for range 2 {
		c := <-changes
		fmt.Println(c.Sequence, c.Kind, c.TenantID())
	}
	// Another replica's reader waits for a receipt's sequence before reading.
	_ = p.WaitApplied(ctx, 2)
	t, _ := p.Tenant("acme")
	fmt.Println(t.State, p.Applied(), p.Err())
	// Output:
	// 0 tenant.created acme
	// 1 tenant.suspended acme
	// suspended 2 <nil>
}
