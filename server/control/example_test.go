package control_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"

	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/control"
)

func Example() {
	root, _ := os.MkdirTemp("", "batpak-control")
	defer os.RemoveAll(root)
	p, err := control.Open(control.Options{Dir: filepath.Join(root, "system"), Defaults: control.Quotas{EventsPerSecond: 1000}})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	// Every change records who made it: the principal of the context.
	ctx := policy.WithPrincipal(context.Background(), policy.Principal{ID: "operator"})

	t, _ := p.CreateTenant(ctx, "acme", control.Quotas{MaxCursors: 10}, control.Settings{Sync: control.SyncDurable})
	k, _ := p.IssueKey(ctx, control.Key{ID: "abcdefghijkl", Tenant: "acme", Roles: []control.Role{control.RoleWriter},
		Hash: sha256.Sum256([]byte("the token shown once"))})
	_, _ = p.SuspendTenant(ctx, "acme", "billing")

	fmt.Println(t.ID, k.Roles, p.Effective("acme").EventsPerSecond, p.Effective("acme").MaxCursors)
	now, _ := p.Tenant("acme")
	fmt.Println(now.State, now.SuspendReason)
	hist, _ := p.History(control.TenantEntity("acme"))
	for _, c := range hist {
		fmt.Println(c.Kind, "by", c.By.ID)
	}
	// Output:
	// acme [writer] 1000 10
	// suspended billing
	// tenant.created by operator
	// tenant.suspended by operator
}
