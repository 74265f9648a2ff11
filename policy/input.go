package policy

import (
	"context"
	"encoding/json"

	"github.com/batpak-go/batpak/core"
)

// Principal is who asks for a write. The CLI and the server put it in the
// context (WithPrincipal); embedded callers can too.
type Principal struct {
	ID     string   `json:"id"`
	Tenant string   `json:"tenant"`
	Roles  []string `json:"roles"`
	// KeyID names the credential the principal authenticated with (an API
	// key's id on a server); empty when there was none.
	KeyID string `json:"key_id"`
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
	// Plugin names the plugin that emitted the write (action "plugin");
	// nil otherwise.
	Plugin *Plugin `json:"plugin"`
	// Maintenance describes a destructive operation (action "redact",
	// "erase" or "compact"; Event, Batch and Entity are then empty); nil
	// for writes.
	Maintenance *Maintenance `json:"maintenance"`
}

// Plugin identifies the plugin behind a write: the principal is the one
// it was loaded for, this says which plugin of theirs wrote.
type Plugin struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Digest  string `json:"digest"` // the module's sha256, hex
}

// Maintenance is what a destructive operation would erase or remove,
// worked out before anything is done (see core.MaintenanceProposal).
type Maintenance struct {
	Reason string   `json:"reason"` // core.WithReason; "" when none was given
	IDs    []string `json:"ids"`    // redact, erase: the events whose payloads go
	Entity string   `json:"entity"` // erase: the entity; redact: the event's
	// Entities maps each entity whose events are erased or removed to how
	// many: a tenant policy checks that they are all the tenant's.
	Entities map[string]int `json:"entities"`
	// Compact is what compact was asked to do; nil for the others.
	Compact       *Compaction `json:"compact"`
	EventsErased  int         `json:"events_erased"`  // payloads erased (tombstones included)
	EventsRemoved int         `json:"events_removed"` // events removed (compact)
	Segments      int         `json:"segments"`       // sealed segments rewritten (compact)
}

// Compaction is a compaction's strategy; keep and tombstone say whether a
// Go predicate was given (what it picked is in the counts and entities).
type Compaction struct {
	Merge         bool    `json:"merge"`
	MaxAgeSeconds float64 `json:"max_age_seconds"`
	MaxPerEntity  int     `json:"max_per_entity"`
	Keep          bool    `json:"keep"`
	Tombstone     bool    `json:"tombstone"`
}

// InputFromMaintenance builds the input for a proposed destructive
// operation, taking the principal from ctx.
func InputFromMaintenance(ctx context.Context, p *core.MaintenanceProposal) *Input {
	m := &Maintenance{
		Reason: p.Reason, Entity: p.Entity, Entities: p.Entities, IDs: make([]string, len(p.IDs)),
		EventsErased: p.EventsErased, EventsRemoved: p.EventsRemoved, Segments: p.Segments,
	}
	if m.Entities == nil {
		m.Entities = map[string]int{}
	}
	for i, id := range p.IDs {
		m.IDs[i] = id.String()
	}
	if c := p.Compact; c != nil {
		m.Compact = &Compaction{Merge: c.Merge, MaxAgeSeconds: c.MaxAge.Seconds(), MaxPerEntity: c.MaxPerEntity, Keep: c.Keep, Tombstone: c.Tombstone}
	}
	return &Input{Action: p.Action, Principal: PrincipalFrom(ctx), Maintenance: m}
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
	if pl := p.Plugin; pl != nil {
		in.Plugin = &Plugin{Name: pl.Name, Version: pl.Version, Digest: pl.Digest}
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
