package policy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// The admission seam: every write path asks the gate, a refusal comes
// back as a *policy.Denial with every reason, writes no byte and
// announces nothing; and the input the gate sees describes the write.

// writePath is one way of writing a single event.
type writePath struct {
	name   string
	action core.Action
	batch  bool // the event goes as item 0 of a one-item batch
	fenced bool // the write goes through a fence, committed after
	write  func(ctx context.Context, s *core.Store, f *core.Fence, c core.Coordinate, payload []byte) error
}

func waitTicket(ctx context.Context, t *core.Ticket, err error) error {
	if err != nil {
		return err
	}
	_, err = t.Wait(ctx)
	return err
}

func waitBatch(ctx context.Context, t *core.BatchTicket, err error) error {
	if err != nil {
		return err
	}
	_, err = t.Wait(ctx)
	return err
}

func item(c core.Coordinate, payload []byte) []core.BatchItem {
	return []core.BatchItem{{Coordinate: c, Kind: kindA, Payload: payload}}
}

var writePaths = []writePath{
	{name: "Append", action: core.ActionAppend, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		_, err := s.Append(ctx, c, kindA, p)
		return err
	}},
	{name: "AppendWithOptions", action: core.ActionAppend, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		_, err := s.AppendWithOptions(ctx, c, kindA, p, core.AppendOptions{IdempotencyKey: "k-" + c.Entity})
		return err
	}},
	{name: "Submit", action: core.ActionAppend, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		t, err := s.Submit(ctx, c, kindA, p)
		return waitTicket(ctx, t, err)
	}},
	{name: "SubmitWithOptions", action: core.ActionAppend, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		t, err := s.SubmitWithOptions(ctx, c, kindA, p, core.AppendOptions{Flags: 3})
		return waitTicket(ctx, t, err)
	}},
	{name: "TrySubmit", action: core.ActionAppend, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		t, err := s.TrySubmit(ctx, c, kindA, p)
		return waitTicket(ctx, t, err)
	}},
	{name: "TrySubmitWithOptions", action: core.ActionAppend, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		t, err := s.TrySubmitWithOptions(ctx, c, kindA, p, core.AppendOptions{Flags: 1})
		return waitTicket(ctx, t, err)
	}},
	{name: "AppendReaction", action: core.ActionReaction, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		_, err := s.AppendReaction(ctx, c, kindA, p, core.NewEventID(), core.NewEventID())
		return err
	}},
	{name: "SubmitReaction", action: core.ActionReaction, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		t, err := s.SubmitReaction(ctx, c, kindA, p, core.NewEventID(), core.NewEventID())
		return waitTicket(ctx, t, err)
	}},
	{name: "AppendBatch", action: core.ActionBatch, batch: true, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		_, err := s.AppendBatch(ctx, item(c, p))
		return err
	}},
	{name: "SubmitBatch", action: core.ActionBatch, batch: true, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		t, err := s.SubmitBatch(ctx, item(c, p))
		return waitBatch(ctx, t, err)
	}},
	{name: "TrySubmitBatch", action: core.ActionBatch, batch: true, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		t, err := s.TrySubmitBatch(ctx, item(c, p))
		return waitBatch(ctx, t, err)
	}},
	{name: "Outbox.Flush", action: core.ActionBatch, batch: true, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		o := s.Outbox()
		if err := o.Stage(c, kindA, p); err != nil {
			return fmt.Errorf("Stage: %w", err)
		}
		_, err := o.Flush(ctx)
		if err != nil && o.Len() != 1 {
			return fmt.Errorf("a refused flush dropped the staged events: %w", err)
		}
		return err
	}},
	{name: "Outbox.SubmitFlush", action: core.ActionBatch, batch: true, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		o := s.Outbox()
		if err := o.Stage(c, kindA, p); err != nil {
			return fmt.Errorf("Stage: %w", err)
		}
		t, err := o.SubmitFlush(ctx)
		if err != nil && o.Len() != 1 {
			return fmt.Errorf("a refused flush dropped the staged events: %w", err)
		}
		return waitBatch(ctx, t, err)
	}},
	{name: "Fence.Submit", action: core.ActionFence, fenced: true, write: func(ctx context.Context, _ *core.Store, f *core.Fence, c core.Coordinate, p []byte) error {
		_, err := f.Submit(ctx, c, kindA, p)
		return err
	}},
	{name: "Fence.SubmitWithOptions", action: core.ActionFence, fenced: true, write: func(ctx context.Context, _ *core.Store, f *core.Fence, c core.Coordinate, p []byte) error {
		_, err := f.SubmitWithOptions(ctx, c, kindA, p, core.AppendOptions{Flags: 2})
		return err
	}},
	{name: "Fence.SubmitReaction", action: core.ActionFence, fenced: true, write: func(ctx context.Context, _ *core.Store, f *core.Fence, c core.Coordinate, p []byte) error {
		_, err := f.SubmitReaction(ctx, c, kindA, p, core.NewEventID(), core.NewEventID())
		return err
	}},
	{name: "Fence.SubmitBatch", action: core.ActionFence, batch: true, fenced: true, write: func(ctx context.Context, _ *core.Store, f *core.Fence, c core.Coordinate, p []byte) error {
		_, err := f.SubmitBatch(ctx, item(c, p))
		return err
	}},
	{name: "Fence.Outbox", action: core.ActionFence, batch: true, fenced: true, write: func(ctx context.Context, _ *core.Store, f *core.Fence, c core.Coordinate, p []byte) error {
		o := f.Outbox()
		if err := o.Stage(c, kindA, p); err != nil {
			return fmt.Errorf("Stage: %w", err)
		}
		_, err := o.SubmitFlush(ctx)
		return err
	}},
	{name: "WithAction(import).Append", action: core.ActionImport, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		_, err := s.Append(core.WithAction(ctx, core.ActionImport), c, kindA, p)
		return err
	}},
	{name: "WithAction(plugin).Submit", action: core.ActionPlugin, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		t, err := s.Submit(core.WithAction(ctx, core.ActionPlugin), c, kindA, p)
		return waitTicket(ctx, t, err)
	}},
	{name: "WithAction(import).AppendBatch", action: core.ActionImport, batch: true, write: func(ctx context.Context, s *core.Store, _ *core.Fence, c core.Coordinate, p []byte) error {
		_, err := s.AppendBatch(core.WithAction(ctx, core.ActionImport), item(c, p))
		return err
	}},
	{name: "WithAction(plugin).Fence.Submit", action: core.ActionPlugin, fenced: true, write: func(ctx context.Context, _ *core.Store, f *core.Fence, c core.Coordinate, p []byte) error {
		_, err := f.Submit(core.WithAction(ctx, core.ActionPlugin), c, kindA, p)
		return err
	}},
}

// TestEveryWritePathIsGated: on every path an admitted write is judged
// with the path's action and written; a refused one returns the denial
// with every reason, writes no byte and announces nothing.
func TestEveryWritePathIsGated(t *testing.T) {
	for _, wp := range writePaths {
		t.Run(wp.name, func(t *testing.T) {
			rec := &recorder{}
			s := openGated(t, rec)
			ctx := clerkCtx
			// An admitted write.
			ok := mustCoord(t, "acme:ok", "shop")
			var f *core.Fence
			if wp.fenced {
				var err error
				if f, err = s.BeginFence(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := wp.write(ctx, s, f, ok, []byte(`{"n":1}`)); err != nil {
				t.Fatalf("admitted write: %v", err)
			}
			if f != nil {
				if err := f.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if evs, err := s.Stream(ok.Entity); err != nil || len(evs) != 1 {
				t.Fatalf("admitted write: %d events (%v)", len(evs), err)
			}
			in := rec.last(t)
			if in.Action != wp.action || in.Event.Entity != ok.Entity || in.Principal.ID != "u1" {
				t.Fatalf("gate saw action %q entity %q principal %+v; want %q", in.Action, in.Event.Entity, in.Principal, wp.action)
			}
			if wp.batch != (in.Batch != nil) || (in.Batch != nil && *in.Batch != (policy.Batch{Size: 1, Index: 0})) {
				t.Fatalf("gate saw batch %+v", in.Batch)
			}

			// A refused write (under a fence: the fence's own markers are
			// not the write's).
			if wp.fenced {
				var err error
				if f, err = s.BeginFence(ctx); err != nil {
					t.Fatal(err)
				}
			}
			w := watchStore(t, s)
			rec.reset()
			err := wp.write(ctx, s, f, mustCoord(t, "deny:1", "shop"), []byte(`{"n":2}`))
			d := asDenial(t, err)
			if d.Gate != "recorder" || strings.Join(reasonCodes(d), ",") != "ENTITY_REFUSED,SECOND_REASON" {
				t.Fatalf("denial %+v", d)
			}
			if d.Reasons[0].Context["entity"] != "deny:1" {
				t.Fatalf("reason context %+v", d.Reasons[0].Context)
			}
			if wp.batch {
				var bie *core.BatchItemError
				if !errors.As(err, &bie) || bie.Index != 0 {
					t.Fatalf("batch error %v, want a *core.BatchItemError for item 0", err)
				}
			}
			if in := rec.inputs(); len(in) != 1 || in[0].Action != wp.action {
				t.Fatalf("gate saw %+v", in)
			}
			w.SameDisk(t)
			if f != nil {
				if err := f.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if evs, _ := s.Stream("deny:1"); len(evs) != 0 {
				t.Fatal("the refused event is readable")
			}
			w.Silent(t)
		})
	}
}

// One denied item refuses the whole batch, names the item, and nothing of
// the batch is written; the gate is asked about items in order and stops
// at the refused one.
func TestBatchDeniedItemRefusesTheBatch(t *testing.T) {
	items := func(t *testing.T) []core.BatchItem {
		return []core.BatchItem{
			{Coordinate: mustCoord(t, "acme:a", "shop"), Kind: kindA, Payload: []byte(`{"i":0}`)},
			{Coordinate: mustCoord(t, "acme:b", "shop"), Kind: kindB, Payload: []byte(`{"i":1}`), Causation: core.PriorItem(0)},
			{Coordinate: mustCoord(t, "deny:c", "shop"), Kind: kindA, Payload: []byte(`{"i":2}`)},
			{Coordinate: mustCoord(t, "acme:d", "shop"), Kind: kindA, Payload: []byte(`{"i":3}`)},
		}
	}
	type batchPath struct {
		name   string
		fenced bool
		write  func(ctx context.Context, s *core.Store, f *core.Fence, its []core.BatchItem) error
	}
	paths := []batchPath{
		{"AppendBatch", false, func(ctx context.Context, s *core.Store, _ *core.Fence, its []core.BatchItem) error {
			_, err := s.AppendBatch(ctx, its)
			return err
		}},
		{"SubmitBatch", false, func(ctx context.Context, s *core.Store, _ *core.Fence, its []core.BatchItem) error {
			_, err := s.SubmitBatch(ctx, its)
			return err
		}},
		{"TrySubmitBatch", false, func(ctx context.Context, s *core.Store, _ *core.Fence, its []core.BatchItem) error {
			_, err := s.TrySubmitBatch(ctx, its)
			return err
		}},
		{"Outbox.Flush", false, func(ctx context.Context, s *core.Store, _ *core.Fence, its []core.BatchItem) error {
			o := s.Outbox()
			for _, it := range its {
				if err := o.Push(it); err != nil {
					return err
				}
			}
			_, err := o.Flush(ctx)
			return err
		}},
		{"Fence.SubmitBatch", true, func(ctx context.Context, _ *core.Store, f *core.Fence, its []core.BatchItem) error {
			_, err := f.SubmitBatch(ctx, its)
			return err
		}},
		{"Fence.Outbox", true, func(ctx context.Context, _ *core.Store, f *core.Fence, its []core.BatchItem) error {
			o := f.Outbox()
			for _, it := range its {
				if err := o.Push(it); err != nil {
					return err
				}
			}
			_, err := o.SubmitFlush(ctx)
			return err
		}},
	}
	for _, bp := range paths {
		t.Run(bp.name, func(t *testing.T) {
			rec := &recorder{}
			s := openGated(t, rec)
			mustWrite(t, s, "acme:b") // so that item 1 sees an existing entity
			var f *core.Fence
			if bp.fenced {
				var err error
				if f, err = s.BeginFence(clerkCtx); err != nil {
					t.Fatal(err)
				}
			}
			w := watchStore(t, s)
			rec.reset()
			err := bp.write(clerkCtx, s, f, items(t))
			var bie *core.BatchItemError
			if !errors.As(err, &bie) || bie.Index != 2 {
				t.Fatalf("error %v, want a *core.BatchItemError naming item 2", err)
			}
			if !strings.Contains(err.Error(), "item 2") {
				t.Errorf("error %q does not name the item", err)
			}
			d := asDenial(t, err)
			if d.Code != "ENTITY_REFUSED" || len(d.Reasons) != 2 {
				t.Fatalf("denial %+v", d)
			}
			seen := rec.inputs()
			if len(seen) != 3 {
				t.Fatalf("the gate was asked about %d items, want 3 (it stops at the refused one)", len(seen))
			}
			for i, in := range seen {
				if in.Batch == nil || in.Batch.Size != 4 || in.Batch.Index != i {
					t.Fatalf("item %d: batch %+v", i, in.Batch)
				}
			}
			if !seen[1].Entity.Exists || seen[1].Entity.Clock != 0 || seen[0].Entity.Exists {
				t.Fatalf("entity state: item 0 %+v, item 1 %+v", seen[0].Entity, seen[1].Entity)
			}
			// Item 1 is caused by item 0 and shares its correlation.
			if seen[1].Event.CausationID == "" || seen[1].Event.CausationID != seen[0].Event.CorrelationID || seen[1].Event.CorrelationID != seen[0].Event.CorrelationID {
				t.Fatalf("item 1 causation %q correlation %q; item 0 correlation %q", seen[1].Event.CausationID, seen[1].Event.CorrelationID, seen[0].Event.CorrelationID)
			}
			if seen[1].Event.Kind != "0x2:0x2a" || seen[1].Event.Category != 2 || seen[1].Event.Type != 0x2a {
				t.Fatalf("item 1 kind %q %d %d", seen[1].Event.Kind, seen[1].Event.Category, seen[1].Event.Type)
			}
			w.SameDisk(t)
			if f != nil {
				if err := f.Commit(clerkCtx); err != nil {
					t.Fatal(err)
				}
			}
			for _, e := range []string{"acme:a", "acme:d", "deny:c"} {
				if evs, _ := s.Stream(e); len(evs) != 0 {
					t.Fatalf("%s was written by a refused batch", e)
				}
			}
			w.Silent(t)
		})
	}
}

func mustWrite(t testing.TB, s *core.Store, entity string) core.Receipt {
	t.Helper()
	r, err := s.Append(clerkCtx, mustCoord(t, entity, "shop"), kindA, []byte(`{}`))
	if err != nil {
		t.Fatalf("Append(%s): %v", entity, err)
	}
	return r
}

// TestInputDescribesTheWrite checks every field of the input a native gate
// sees.
func TestInputDescribesTheWrite(t *testing.T) {
	rec := &recorder{}
	s := openGated(t, rec)
	c := mustCoord(t, "acme:order:1", "shop")

	// A first, plain write: no entity yet, defaults everywhere.
	r1, err := s.Append(clerkCtx, c, kindA, []byte(`{"amount":5}`))
	if err != nil {
		t.Fatal(err)
	}
	in := rec.last(t)
	want := policy.Input{
		Action:    core.ActionAppend,
		Principal: clerk,
		Event: policy.Event{
			Entity: "acme:order:1", Scope: "shop", Kind: "0x1:0x1", Category: 1, Type: 1,
			Payload: json.RawMessage(`{"amount":5}`), CorrelationID: r1.ID.String(),
		},
	}
	if got, _ := json.Marshal(in); string(got) != mustJSON(t, want) {
		t.Fatalf("input\n got %s\nwant %s", got, mustJSON(t, want))
	}

	// With every option, on an entity that now exists.
	corr, cause := core.NewEventID(), core.NewEventID()
	mustWrite(t, s, c.Entity)
	_, err = s.AppendWithOptions(clerkCtx, c, kindB, []byte(`[1,2]`), core.AppendOptions{
		ExpectedClock: core.ExpectClock(1), IdempotencyKey: "idem-1", CorrelationID: corr, CausationID: cause,
	})
	if err != nil {
		t.Fatal(err)
	}
	in = rec.last(t)
	want = policy.Input{
		Action:    core.ActionAppend,
		Principal: clerk,
		Event: policy.Event{
			Entity: "acme:order:1", Scope: "shop", Kind: "0x2:0x2a", Category: 2, Type: 0x2a,
			Payload: json.RawMessage(`[1,2]`), CorrelationID: corr.String(), CausationID: cause.String(),
			IdempotencyKey: "idem-1", ExpectedClock: uint64(1),
		},
		Entity: policy.Entity{Exists: true, Clock: 1},
	}
	if got, _ := json.Marshal(in); string(got) != mustJSON(t, want) {
		t.Fatalf("input\n got %s\nwant %s", got, mustJSON(t, want))
	}
	if in.Event.ExpectedClock != uint64(1) {
		t.Fatalf("expected clock %#v", in.Event.ExpectedClock)
	}

	// ExpectNoEvents, no principal.
	_, err = s.AppendWithOptions(context.Background(), mustCoord(t, "acme:new", "shop"), kindA, []byte(`null`), core.AppendOptions{ExpectedClock: core.ExpectNoEvents()})
	if err != nil {
		t.Fatal(err)
	}
	in = rec.last(t)
	if in.Event.ExpectedClock != "no_events" || in.Principal.ID != "" || in.Principal.Tenant != "" || in.Entity.Exists {
		t.Fatalf("input %+v", in)
	}

	// A refused write: the gate saw it with the correlation of the id it
	// would have had (nothing to compare with), and the store state.
	if _, err := s.Append(clerkCtx, mustCoord(t, "deny:x", "shop"), kindA, []byte(`{}`)); err == nil {
		t.Fatal("admitted")
	}
	if id := rec.last(t).Event.CorrelationID; len(id) != 36 {
		t.Fatalf("correlation id %q", id)
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// React writes its reactions through the gate: an admitted reaction is
// judged as action "reaction" and written; a refused one fails the
// worker's handler with the denial.
func TestReactIsGated(t *testing.T) {
	rec := &recorder{}
	s := openGated(t, rec)
	ctx, cancel := context.WithTimeout(clerkCtx, 20*time.Second)
	defer cancel()
	never := core.RestartNever()
	src := mustWrite(t, s, "src:1")
	w, err := s.React(ctx, core.Entity("src:"), core.WorkerConfig{IdleSleep: time.Millisecond, Restart: &never},
		func(_ context.Context, ev core.StoredEvent) ([]core.Reaction, error) {
			target := "acme:reaction:" + ev.Coordinate.Entity
			if ev.Header.Clock == 1 {
				target = "deny:reaction"
			}
			return []core.Reaction{{Coordinate: mustCoord(t, target, "shop"), Kind: kindA, Payload: []byte(`{"r":1}`)}}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	// The admitted reaction.
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, _ := s.Stream("acme:reaction:src:1")
		if len(evs) == 1 {
			if evs[0].Header.CausationID != src.ID {
				t.Fatalf("reaction causation %s, want %s", evs[0].Header.CausationID, src.ID)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the admitted reaction was not written")
		}
		time.Sleep(2 * time.Millisecond)
	}
	var react *policy.Input
	for _, in := range rec.inputs() {
		if in.Event.Entity == "acme:reaction:src:1" {
			react = &in
		}
	}
	if react == nil || react.Action != core.ActionReaction || react.Batch == nil || *react.Batch != (policy.Batch{Size: 1, Index: 0}) ||
		react.Event.CausationID != src.ID.String() || react.Principal.ID != "u1" {
		t.Fatalf("the gate saw the reaction as %+v", react)
	}
	// The refused reaction stops the worker with the denial.
	mustWrite(t, s, "src:1")
	select {
	case <-w.Done():
	case <-ctx.Done():
		t.Fatal("the worker did not fail")
	}
	err = w.Join()
	var we *core.WorkerError
	if !errors.As(err, &we) {
		t.Fatalf("Join = %v, want a *core.WorkerError", err)
	}
	if d := asDenial(t, err); d.Code != "ENTITY_REFUSED" {
		t.Fatalf("denial %+v", d)
	}
	if evs, _ := s.Stream("deny:reaction"); len(evs) != 0 {
		t.Fatal("the refused reaction was written")
	}
}

// Application code cannot write a system record around the gate: with an
// Admission, AppendSystem is proposed to it as action "system". Only
// batpak's own audit records (a bypass's, written by the pipeline) skip it.
func TestAppendSystemIsAdmitted(t *testing.T) {
	refuseAll := policy.GateFunc("closed", func(_ context.Context, in *policy.Input) *policy.Denial {
		return policy.Deny("CLOSED", "closed "+string(in.Action), nil)
	})
	s := openGated(t, refuseAll)
	if _, err := s.Append(clerkCtx, mustCoord(t, "acme:1", "shop"), kindA, []byte(`{}`)); asDenial(t, err).Code != "CLOSED" {
		t.Fatal("admitted")
	}
	// The store's own entities are reserved: a forged bypass record is
	// refused before any gate.
	if _, err := s.AppendSystem(clerkCtx, mustCoord(t, policy.AuditEntity, "policy"), policy.KindBypassAudit, []byte(`{"forged":true}`), core.AppendOptions{}); !errors.Is(err, core.ErrInvalidCoordinate) {
		t.Fatalf("a forged bypass record: %v, want a reserved-entity refusal", err)
	}
	_, err := s.AppendSystem(clerkCtx, mustCoord(t, "acme:sys", "policy"), policy.KindBypassAudit, []byte(`{"forged":true}`), core.AppendOptions{})
	if d := asDenial(t, err); d.Message != "closed system" {
		t.Fatalf("AppendSystem through a closed gate: %+v", d)
	}
	if evs, _ := s.Stream(policy.AuditEntity); len(evs) != 0 {
		t.Fatalf("a refused system record was written: %d", len(evs))
	}
	// A user kind cannot be smuggled in as a system record.
	if _, err := s.AppendSystem(clerkCtx, mustCoord(t, "acme:1", "shop"), kindA, []byte(`{}`), core.AppendOptions{}); !errors.Is(err, core.ErrNotSystemKind) {
		t.Fatalf("AppendSystem with a user kind: %v", err)
	}
	// The pipeline's own audit record of a bypass goes through the closed gate.
	p := admitterOf(t, s).Pipeline(s)
	r, err := p.Bypass(clerkCtx, sampleInput("acme:1"), "repair")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(clerkCtx, r, func(context.Context) error { return nil }); err != nil {
		t.Fatalf("bypass audit through a closed gate: %v", err)
	}
	if evs, _ := s.Stream(policy.AuditEntity); len(evs) != 1 {
		t.Fatalf("%d bypass audit records, want 1", len(evs))
	}
}
