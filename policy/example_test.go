package policy_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// A store whose every write passes a native gate: a tenant writes only its
// own entities.
func ExampleNewAdmitter() {
	ownEntities := policy.GateFunc("tenant-entities", func(_ context.Context, in *policy.Input) *policy.Denial {
		if !strings.HasPrefix(in.Event.Entity, in.Principal.Tenant+":") {
			return policy.Deny("TENANT_MISMATCH", "a tenant writes only its own entities", map[string]any{"entity": in.Event.Entity})
		}
		return nil
	})
	dir, _ := os.MkdirTemp("", "policy-example-")
	defer os.RemoveAll(dir)
	cfg := core.DefaultConfig(dir)
	cfg.Admission = policy.NewAdmitter(ownEntities)
	s, err := core.Open(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	ctx := policy.WithPrincipal(context.Background(), policy.Principal{ID: "u1", Tenant: "acme"})
	kind := core.MustKind(1, 1)
	own, _ := core.NewCoordinate("acme:order:1", "shop")
	other, _ := core.NewCoordinate("globex:order:1", "shop")
	_, err = s.Append(ctx, own, kind, []byte(`{}`))
	fmt.Println("acme:order:1:", err)
	_, err = s.Append(ctx, other, kind, []byte(`{}`))
	var d *policy.Denial
	fmt.Println("globex:order:1:", errors.As(err, &d), d.Code)
	// Output:
	// acme:order:1: <nil>
	// globex:order:1: true TENANT_MISMATCH
}
