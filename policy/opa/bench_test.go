package opa_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
)

// A typical tenant/kind policy: a tenant writes only entities prefixed
// with its id, each role may write some kinds.
const tenantPolicy = `package batpak.write

default allow := false

allow if {
	startswith(input.event.entity, concat("", [input.principal.tenant, ":"]))
	some role in input.principal.roles
	input.event.kind in data.roles[role].kinds
}
`

const tenantData = `{"roles": {"clerk": {"kinds": ["0x1:0x1", "0x1:0x2"]}, "admin": {"kinds": ["0x1:0x1", "0x1:0x2", "0x2:0x1"]}}}`

func writeBundle(tb testing.TB, files map[string]string) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, body := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

var benchPayload = []byte(`{"order":"order-000123","sku":"SKU-12345","qty":3,"price":19.99,"note":"gift wrap, leave at door!!"}`)

// BenchmarkGatedAppend compares appends with and without the tenant/kind
// OPA policy in one run (sync every 1000 events; 8 writers, blocking
// Append). The gated/ungated ratio is the figure to watch.
//
//	go test ./policy/opa -run '^$' -bench GatedAppend -benchtime 200000x
func BenchmarkGatedAppend(b *testing.B) {
	for _, gated := range []bool{false, true} {
		name := "ungated"
		if gated {
			name = "opa"
		}
		b.Run(name, func(b *testing.B) {
			cfg := core.DefaultConfig(b.TempDir())
			if gated {
				g, err := opa.Load(context.Background(), writeBundle(b, map[string]string{"write.rego": tenantPolicy, "data.json": tenantData}), opa.Options{})
				if err != nil {
					b.Fatal(err)
				}
				cfg.Admission = policy.NewAdmitter(g)
			}
			s, err := core.Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := policy.WithPrincipal(context.Background(), policy.Principal{ID: "u1", Tenant: "acme", Roles: []string{"clerk"}})
			kind := core.MustKind(1, 1)
			const writers = 8
			per := (b.N + writers - 1) / writers
			errs := make(chan error, writers)
			b.ResetTimer()
			for w := 0; w < writers; w++ {
				go func(w int) {
					c, _ := core.NewCoordinate(fmt.Sprintf("acme:order:%d", w), "shop")
					for i := 0; i < per; i++ {
						if _, err := s.Append(ctx, c, kind, benchPayload); err != nil {
							errs <- err
							return
						}
					}
					errs <- nil
				}(w)
			}
			for w := 0; w < writers; w++ {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(per*writers)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkDecision measures one OPA decision, from the decision cache and
// evaluated in full.
//
//	go test ./policy/opa -run '^$' -bench Decision
func BenchmarkDecision(b *testing.B) {
	dir := writeBundle(b, map[string]string{"write.rego": tenantPolicy, "data.json": tenantData})
	for _, cached := range []bool{true, false} {
		name := "uncached"
		size := -1
		if cached {
			name, size = "cached", 0
		}
		b.Run(name, func(b *testing.B) {
			g, err := opa.Load(context.Background(), dir, opa.Options{CacheSize: size})
			if err != nil {
				b.Fatal(err)
			}
			in := &policy.Input{
				Action:    core.ActionAppend,
				Principal: policy.Principal{ID: "u1", Tenant: "acme", Roles: []string{"clerk"}},
				Event:     policy.Event{Entity: "acme:order:1", Scope: "shop", Kind: "0x1:0x1", Category: 1, Type: 1, Payload: benchPayload},
			}
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d, err := g.Decide(ctx, in)
				if err != nil || !d.Allowed {
					b.Fatal(d, err)
				}
			}
		})
	}
}

// BenchmarkExampleDecision measures decisions of the example shop policy
// (examples/policies) about an order it admits: from the decision cache,
// and evaluated in full.
//
//	go test ./policy/opa -run '^$' -bench ExampleDecision
func BenchmarkExampleDecision(b *testing.B) {
	dir := filepath.Join("..", "..", "examples", "policies")
	order := []byte(`{"order":"acme:order:1","customer":"cust-1","items":[{"sku":"BAT-AA-4","qty":3,"price_cents":250},{"sku":"CHG-USB-C","qty":1,"price_cents":1999}],"total_cents":2749,"currency":"EUR","note":"leave at the door"}`)
	for _, cached := range []bool{true, false} {
		name := "uncached"
		size := -1
		if cached {
			name, size = "cached", 0
		}
		b.Run(name, func(b *testing.B) {
			g, err := opa.Load(context.Background(), dir, opa.Options{CacheSize: size})
			if err != nil {
				b.Fatal(err)
			}
			in := &policy.Input{
				Action:    core.ActionAppend,
				Principal: policy.Principal{ID: "k1", Tenant: "acme", Roles: []string{"writer", "clerk"}, KeyID: "k1"},
				Event:     policy.Event{Entity: "acme:order:1", Scope: "shop", Kind: "0x1:0x1", Category: 1, Type: 1, Payload: order},
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d, err := g.Decide(ctx, in)
				if err != nil || !d.Allowed {
					b.Fatal(d, err)
				}
			}
		})
	}
}
