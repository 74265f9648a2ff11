package policy

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/batpak-go/batpak/core"
)

// Principal is who asks for a write. The CLI and the server put it in the
// context (WithPrincipal); embedded callers can too.
type Principal struct {
	ID     string   `json:"id"`
	Tenant string   `json:"tenant"`
	Roles  []string `json:"roles"`
}

type principalKey struct{}

// WithPrincipal attaches p to ctx; gates read it with PrincipalFrom.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal in ctx (the zero Principal if none).
func PrincipalFrom(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// Input is what a gate judges: one proposed write, in the shape of the
// policy input document (see the package documentation).
type Input struct {
	Action    core.Action `json:"action"`
	Principal Principal   `json:"principal"`
	Event     Event       `json:"event"`
	Batch     *Batch      `json:"batch"`
	Entity    Entity      `json:"entity"`
}

// Event is the proposed event.
type Event struct {
	Entity         string          `json:"entity"`
	Scope          string          `json:"scope"`
	Kind           string          `json:"kind"` // "0xC:0xTTT"
	Category       uint16          `json:"category"`
	Type           uint16          `json:"type"`
	Payload        json.RawMessage `json:"payload"`
	CorrelationID  string          `json:"correlation_id"`
	CausationID    string          `json:"causation_id"`
	IdempotencyKey string          `json:"idempotency_key"`
	// ExpectedClock is nil when the write carries no expectation, the
	// string "no_events" for core.ExpectNoEvents(), else the expected clock.
	ExpectedClock any `json:"expected_clock"`
}

// Batch places a batch item; nil outside batches.
type Batch struct {
	Size  int `json:"size"`
	Index int `json:"index"`
}

// Entity is the entity's state when the write was proposed.
type Entity struct {
	Exists bool   `json:"exists"`
	Clock  uint64 `json:"clock"`
}

// InputFromProposal builds the input for a proposed write, taking the
// principal from ctx.
func InputFromProposal(ctx context.Context, p *core.Proposal) *Input {
	in := &Input{
		Action:    p.Action,
		Principal: PrincipalFrom(ctx),
		Event: Event{
			Entity:         p.Coordinate.Entity,
			Scope:          p.Coordinate.Scope,
			Kind:           p.Kind.String(),
			Category:       p.Kind.Category(),
			Type:           p.Kind.Type(),
			Payload:        p.Payload,
			IdempotencyKey: p.Options.IdempotencyKey,
		},
		Entity: Entity{Exists: p.EntityExists, Clock: p.EntityClock},
	}
	if id := p.Options.CorrelationID; !id.IsZero() {
		in.Event.CorrelationID = id.String()
	} else {
		in.Event.CorrelationID = p.ID.String() // the default: the event's own id
	}
	if id := p.Options.CausationID; !id.IsZero() {
		in.Event.CausationID = id.String()
	}
	if e := p.Options.ExpectedClock; e.NoEvents() {
		in.Event.ExpectedClock = "no_events"
	} else if c, ok := e.Clock(); ok {
		in.Event.ExpectedClock = c
	}
	if p.BatchIndex >= 0 {
		in.Batch = &Batch{Size: p.BatchSize, Index: p.BatchIndex}
	}
	return in
}

// inputValue builds the OPA input document for in as an ast.Value
// directly (no JSON round trip for the fixed fields), with the parts of
// the payload the policy reads (see payload.go), within ctx.
func inputValue(ctx context.Context, in *Input, reads *payloadReads, maxValues int) (ast.Value, error) {
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
	), nil
}
