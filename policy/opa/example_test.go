package opa_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
)

// exampleBundle writes a one-module bundle to a temporary directory.
func exampleBundle(files map[string]string) string {
	dir, err := os.MkdirTemp("", "opa-example")
	if err != nil {
		panic(err)
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			panic(err)
		}
	}
	return dir
}

const exampleRego = `package batpak.write

default allow := false

allow if startswith(input.event.entity, concat("", [input.principal.tenant, ":"]))

deny contains {"code": "TOO_LARGE", "message": "amount over 100"} if input.event.payload.amount > 100
`

// A store gated by a Rego policy: a write is admitted or comes back as a
// *policy.Denial naming the gate and every reason.
func ExampleLoad() {
	dir := exampleBundle(map[string]string{"write.rego": exampleRego})
	defer os.RemoveAll(dir)
	ctx := context.Background()
	gate, err := opa.Load(ctx, dir, opa.Options{Name: "tenancy"})
	if err != nil {
		panic(err)
	}
	storeDir, _ := os.MkdirTemp("", "opa-example-store")
	defer os.RemoveAll(storeDir)
	cfg := core.DefaultConfig(storeDir)
	cfg.Admission = policy.NewAdmitter(gate)
	store, err := core.Open(cfg)
	if err != nil {
		panic(err)
	}
	defer store.Close()

	ctx = policy.WithPrincipal(ctx, policy.Principal{ID: "u1", Tenant: "acme", Roles: []string{"clerk"}})
	coord, _ := core.NewCoordinate("acme:order:1", "shop")
	kind := core.MustKind(1, 1)
	_, err = store.Append(ctx, coord, kind, []byte(`{"amount": 10}`))
	fmt.Println("amount 10:", err)
	_, err = store.Append(ctx, coord, kind, []byte(`{"amount": 1000}`))
	var d *policy.Denial
	if errors.As(err, &d) {
		fmt.Println("amount 1000:", d.Gate, d.Code)
	}
	fmt.Println("reads:", gate.InputPaths())
	// Output:
	// amount 10: <nil>
	// amount 1000: tenancy TOO_LARGE
	// reads: [event.entity principal.tenant event.payload.amount]
}

// Decide asks the policy about one input document without a store, as
// `batpak policy eval` does.
func ExampleGate_Decide() {
	dir := exampleBundle(map[string]string{"write.rego": exampleRego, ".manifest": `{"revision": "r7"}`})
	defer os.RemoveAll(dir)
	gate, err := opa.Load(context.Background(), dir, opa.Options{})
	if err != nil {
		panic(err)
	}
	in := &policy.Input{
		Action:    core.ActionAppend,
		Principal: policy.Principal{ID: "u2", Tenant: "globex"},
		Event:     policy.Event{Entity: "acme:order:1", Kind: "0x1:0x1", Payload: json.RawMessage(`{"amount": 5}`)},
	}
	d, err := gate.Decide(context.Background(), in)
	fmt.Println(d.Allowed, d.Revision, d.Reasons[0].Code, err)
	// Output: false r7 NOT_ALLOWED <nil>
}

// RunTests runs a bundle's Rego unit tests, in source order.
func ExampleRunTests() {
	dir := exampleBundle(map[string]string{
		"write.rego": exampleRego,
		"write_test.rego": `package batpak.write_test

import data.batpak.write

test_own_tenant if write.allow with input as {"principal": {"tenant": "acme"}, "event": {"entity": "acme:order:1", "payload": {}}}

test_other_tenant if write.allow with input as {"principal": {"tenant": "globex"}, "event": {"entity": "acme:order:1", "payload": {}}}
`,
	})
	defer os.RemoveAll(dir)
	results, err := opa.RunTests(context.Background(), dir, opa.TestOptions{})
	if err != nil {
		panic(err)
	}
	for _, r := range results {
		fmt.Println(r.Name, r.Passed, r.Row)
	}
	// Output:
	// test_own_tenant true 5
	// test_other_tenant false 7
}
