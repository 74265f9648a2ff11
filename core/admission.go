package core

import (
	"context"
	"errors"
	"fmt"
)

// Admission is the store's write gate: every path that writes — Append,
// Submit, TrySubmit, reactions, batches (each item, then the batch as a
// whole), outbox flushes, fence writes, imports and writes made for
// plugins — asks it before anything is queued. A non-nil error refuses
// the write: nothing is written and nothing is announced, and the error is
// returned to the writer as is (so a *policy.Denial stays reachable with
// errors.As; batch items are wrapped in *BatchItemError naming the item).
// Admit runs on the writing goroutine, concurrently with other writers;
// it must be safe for concurrent use. Set it with Config.Admission.
type Admission interface {
	Admit(ctx context.Context, p *Proposal) error
}

// BatchAdmission is implemented by gates that also judge a batch as a
// whole, after each of its items was admitted.
type BatchAdmission interface {
	AdmitBatch(ctx context.Context, items []*Proposal) error
}

// Action names the write path a proposal came through.
type Action string

// The write paths.
const (
	ActionAppend   Action = "append"   // Append, Submit, TrySubmit
	ActionBatch    Action = "batch"    // AppendBatch, SubmitBatch, outbox flushes
	ActionFence    Action = "fence"    // writes through a visibility fence
	ActionImport   Action = "import"   // imports of exported events
	ActionReaction Action = "reaction" // AppendReaction, SubmitReaction, React
	ActionPlugin   Action = "plugin"   // writes a plugin emitted
)

// Proposal describes one write for admission.
type Proposal struct {
	Action     Action
	Coordinate Coordinate
	Kind       Kind
	ID         EventID // the id the event will have
	Payload    []byte  // one valid JSON value; do not modify
	Options    AppendOptions
	// BatchSize and BatchIndex place a batch item (BatchIndex is -1 and
	// BatchSize 0 outside batches).
	BatchSize  int
	BatchIndex int
	// EntityExists and EntityClock describe the entity's visible events
	// when the write was proposed (queued writes not included).
	EntityExists bool
	EntityClock  uint64
}

type actionKey struct{}

// WithAction marks writes made with ctx as coming through a path the
// store cannot see itself: ActionImport for an importer, ActionPlugin for
// a plugin host, ActionReaction for a reaction loop. Gates see it as the
// proposal's Action.
func WithAction(ctx context.Context, a Action) context.Context {
	return context.WithValue(ctx, actionKey{}, a)
}

func actionOf(ctx context.Context, def Action) Action {
	if a, ok := ctx.Value(actionKey{}).(Action); ok && a != "" {
		return a
	}
	return def
}

// admit asks the configured Admission about one prepared event. index is
// the batch position (-1 outside a batch).
func (s *Store) admit(ctx context.Context, action Action, ev *eventReq, index, size int) error {
	if s.cfg.Admission == nil {
		return nil
	}
	return s.cfg.Admission.Admit(ctx, s.proposal(ctx, action, ev, index, size))
}

func (s *Store) proposal(ctx context.Context, action Action, ev *eventReq, index, size int) *Proposal {
	p := &Proposal{
		Action: actionOf(ctx, action), Coordinate: ev.coord, Kind: ev.kind, ID: ev.id,
		Payload: ev.payload, Options: ev.opts, BatchIndex: index, BatchSize: size,
	}
	ix := s.ix
	ix.mu.RLock()
	if n, ok := ix.byEntity[ev.coord.Entity]; ok {
		if seqs := ix.entities[n].seqs; len(seqs) > 0 {
			p.EntityExists, p.EntityClock = true, ix.at(seqs[len(seqs)-1]).clock
		}
	}
	ix.mu.RUnlock()
	return p
}

// admitBatch asks about every item, then about the batch as a whole.
func (s *Store) admitBatch(ctx context.Context, action Action, evs []eventReq) error {
	if s.cfg.Admission == nil {
		return nil
	}
	ps := make([]*Proposal, len(evs))
	for i := range evs {
		ps[i] = s.proposal(ctx, action, &evs[i], i, len(evs))
		if err := s.cfg.Admission.Admit(ctx, ps[i]); err != nil {
			return &BatchItemError{Index: i, Err: err}
		}
	}
	if ba, ok := s.cfg.Admission.(BatchAdmission); ok {
		return ba.AdmitBatch(ctx, ps)
	}
	return nil
}

// SystemKind returns the kind of batpak's own records: category 0x0, type
// typ (at most 0xFFF). CustomKind refuses category 0x0.
func SystemKind(typ uint16) (Kind, error) {
	if typ > MaxKindType {
		return 0, &KindError{CategorySystem, typ, "type must be at most 0xFFF"}
	}
	return Kind(typ), nil
}

// ErrNotSystemKind: AppendSystem takes only category 0x0 kinds.
var ErrNotSystemKind = errors.New("batpak: not a system kind")

// AppendSystem writes one of batpak's own records (a kind from SystemKind)
// and waits for it, without asking the Admission gate: it is how the
// packages above core record what the gate must not be able to refuse,
// such as the audit record of a policy bypass. Applications should write
// their own kinds with Append. Durability as Append.
func (s *Store) AppendSystem(ctx context.Context, coord Coordinate, kind Kind, payload []byte, opts AppendOptions) (Receipt, error) {
	if kind.Category() != CategorySystem {
		return Receipt{}, fmt.Errorf("%w: %s", ErrNotSystemKind, kind)
	}
	ev, err := s.prepareAnyKind(coord, kind, payload, opts, false)
	if err != nil {
		return Receipt{}, err
	}
	r := &request{op: opAppend, ev: ev}
	r.t = &r.ticket
	t, err := s.enqueue(r)
	if err != nil {
		return Receipt{}, err
	}
	return t.Wait(ctx)
}
