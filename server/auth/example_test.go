package auth_test

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/control"
)

func Example() {
	dir, _ := os.MkdirTemp("", "batpak-auth")
	defer os.RemoveAll(dir)
	p, _ := control.Open(control.Options{Dir: dir})
	defer p.Close()
	ctx := context.Background()
	_, _ = p.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{})

	// Issue a key: show token once, store only the hash.
	token, id, hash, _ := auth.NewKey()
	_, _ = p.IssueKey(ctx, control.Key{ID: id, Tenant: "acme", Roles: []control.Role{control.RoleWriter}, Hash: hash})

	a, _ := auth.New(auth.Config{Plane: p})
	r, _ := http.NewRequest("POST", "http://127.0.0.1:7070/v1/tenants/acme/events", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	who, err := a.Authenticate(r)
	fmt.Println(who.Tenant, who.Has(control.RoleReader), who.Has(control.RoleAdmin), err)

	_ = p.RevokeKey(ctx, "acme", id)
	_, err = a.Authenticate(r)
	fmt.Println(err)
	// Output:
	// acme true false <nil>
	// auth: unauthenticated
}
