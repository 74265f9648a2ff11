package opa

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/batpak-go/batpak/policy"
)

// inputValue builds the OPA input document for in as an ast.Value
// directly (no JSON round trip for the fixed fields), with the parts of
// the payload the policy reads (see payload.go), within ctx.
func inputValue(ctx context.Context, in *policy.Input, reads *payloadReads, maxValues int) (ast.Value, error) {
	payload, err := payloadTerm(ctx, in.Event.Payload, reads, maxValues)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	roles := make([]*ast.Term, len(in.Principal.Roles))
	for i, r := range in.Principal.Roles {
		roles[i] = ast.StringTerm(r)
	}
	opt := func(s string) *ast.Term {
		if s == "" {
			return ast.NullTerm()
		}
		return ast.StringTerm(s)
	}
	expected := ast.NullTerm()
	switch x := in.Event.ExpectedClock.(type) {
	case nil:
	case string:
		expected = ast.StringTerm(x)
	case uint64:
		expected = ast.UIntNumberTerm(x)
	case int:
		expected = ast.IntNumberTerm(x)
	case float64:
		expected = ast.FloatNumberTerm(x)
	case json.Number:
		expected = ast.NumberTerm(x)
	default:
		return nil, fmt.Errorf("event.expected_clock is %T, want null, \"no_events\" or a number", x)
	}
	plugin, maint := ast.NullTerm(), ast.NullTerm()
	if in.Plugin != nil {
		t, err := jsonTerm(in.Plugin)
		if err != nil {
			return nil, fmt.Errorf("plugin: %w", err)
		}
		plugin = t
	}
	if in.Maintenance != nil {
		t, err := jsonTerm(in.Maintenance)
		if err != nil {
			return nil, fmt.Errorf("maintenance: %w", err)
		}
		maint = t
	}
	batch := ast.NullTerm()
	if in.Batch != nil {
		batch = ast.ObjectTerm(
			ast.Item(ast.StringTerm("size"), ast.IntNumberTerm(in.Batch.Size)),
			ast.Item(ast.StringTerm("index"), ast.IntNumberTerm(in.Batch.Index)),
		)
	}
	return ast.NewObject(
		ast.Item(ast.StringTerm("action"), ast.StringTerm(string(in.Action))),
		ast.Item(ast.StringTerm("principal"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("id"), ast.StringTerm(in.Principal.ID)),
			ast.Item(ast.StringTerm("tenant"), ast.StringTerm(in.Principal.Tenant)),
			ast.Item(ast.StringTerm("roles"), ast.ArrayTerm(roles...)),
			ast.Item(ast.StringTerm("key_id"), ast.StringTerm(in.Principal.KeyID)),
		)),
		ast.Item(ast.StringTerm("event"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("entity"), ast.StringTerm(in.Event.Entity)),
			ast.Item(ast.StringTerm("scope"), ast.StringTerm(in.Event.Scope)),
			ast.Item(ast.StringTerm("kind"), ast.StringTerm(in.Event.Kind)),
			ast.Item(ast.StringTerm("category"), ast.IntNumberTerm(int(in.Event.Category))),
			ast.Item(ast.StringTerm("type"), ast.IntNumberTerm(int(in.Event.Type))),
			ast.Item(ast.StringTerm("payload"), payload),
			ast.Item(ast.StringTerm("correlation_id"), opt(in.Event.CorrelationID)),
			ast.Item(ast.StringTerm("causation_id"), opt(in.Event.CausationID)),
			ast.Item(ast.StringTerm("idempotency_key"), opt(in.Event.IdempotencyKey)),
			ast.Item(ast.StringTerm("expected_clock"), expected),
		)),
		ast.Item(ast.StringTerm("batch"), batch),
		ast.Item(ast.StringTerm("entity"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("exists"), ast.BooleanTerm(in.Entity.Exists)),
			ast.Item(ast.StringTerm("clock"), ast.UIntNumberTerm(in.Entity.Clock)),
		)),
		ast.Item(ast.StringTerm("plugin"), plugin),
		ast.Item(ast.StringTerm("maintenance"), maint),
	), nil
}

// jsonTerm renders x (a *Plugin or *Maintenance) as a term through its
// JSON, the same JSON the decision cache keys on (see appendPath).
func jsonTerm(x any) (*ast.Term, error) {
	b, err := json.Marshal(x)
	if err != nil {
		return nil, err
	}
	v, err := ast.ValueFromReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return ast.NewTerm(v), nil
}
