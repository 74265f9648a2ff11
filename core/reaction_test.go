package core_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// TestReactionSurface mirrors batpak 0.4.1's control-plane smoke test:
// submit (sequence 0), a submitted reaction (1), a TrySubmit (2) and a
// TrySubmitReaction, each reaction carrying the correlation and causation
// it was given.
func TestReactionSurface(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.Sync.EveryNEvents = 1; c.PressureRetryPct = 60 })
	ctx := context.Background()
	coord := mustCoord(t, "entity:control", "scope:test")
	counter := core.MustKind(0xF, 1)
	wait := func(tk *core.Ticket, err error) core.Receipt {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		r, err := tk.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	first := wait(s.Submit(ctx, coord, counter, []byte(`{"n":1}`)))
	if first.GlobalSequence != 0 {
		t.Fatalf("submit sequence %d", first.GlobalSequence)
	}
	reaction := wait(s.SubmitReaction(ctx, coord, counter, []byte(`{"n":2}`), first.ID, first.ID))
	if reaction.GlobalSequence != 1 {
		t.Fatalf("submit_reaction sequence %d", reaction.GlobalSequence)
	}
	tried := wait(s.TrySubmit(ctx, coord, counter, []byte(`{"n":3}`)))
	if tried.GlobalSequence != 2 {
		t.Fatalf("try_submit sequence %d", tried.GlobalSequence)
	}
	tr := wait(s.TrySubmitReaction(ctx, coord, counter, []byte(`{"n":3.5}`), tried.ID, tried.ID))
	if tr.GlobalSequence != 3 || tr.CorrelationID != tried.ID {
		t.Fatalf("try_submit_reaction receipt %+v", tr)
	}
	ev, err := s.Get(tr.ID)
	if err != nil || ev.Header.CausationID != tried.ID || ev.Header.CorrelationID != tried.ID {
		t.Fatalf("try_submit_reaction event %+v, %v", ev.Header, err)
	}
	// Causal browsing sees the reactions.
	if d := mustDescendants(t, s, tried.ID, core.CausalLimits{}); len(d.Events) != 2 {
		t.Fatalf("descendants of the try_submit event: %d", len(d.Events))
	}
	// Validation on the caller's goroutine, nothing queued.
	if _, err := s.TrySubmitReaction(ctx, coord, core.Kind(0x0001), []byte(`{}`), first.ID, first.ID); !errors.Is(err, core.ErrInvalidKind) {
		t.Fatalf("a system kind: %v", err)
	}
	// While a fence is active it refuses, as TrySubmit does.
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TrySubmitReaction(ctx, coord, counter, []byte(`{}`), first.ID, first.ID); !errors.Is(err, core.ErrFenceActive) {
		t.Fatalf("with a fence active: %v", err)
	}
	if err := f.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Events != 4 {
		t.Fatalf("%d events stored; want 4", st.Events)
	}
}

// TestTrySubmitReactionUnderPressure: with the mailbox past
// PressureRetryPct, TrySubmitReaction refuses with a *RetryError and
// writes nothing; every accepted reaction is written.
func TestTrySubmitReactionUnderPressure(t *testing.T) {
	s := openStore(t, func(c *core.Config) {
		c.ChannelCapacity = 4
		c.Sync.EveryNEvents = 1
		c.Sync.Mode = core.SyncAll
	})
	ctx := context.Background()
	cause := mustAppend(t, s, mustCoord(t, "cause", "s"), kindA, `{}`)
	var (
		retries, accepted atomic.Int64
		wg                sync.WaitGroup
		mu                sync.Mutex
		tickets           []*core.Ticket
		bad               atomic.Value
	)
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _ := core.NewCoordinate(fmt.Sprintf("r:%d", g), "s")
			for got, attempt := 0, 0; got < 30 && attempt < 200000; attempt++ {
				tk, err := s.TrySubmitReaction(ctx, c, kindB, []byte(payloadN(got)), cause.CorrelationID, cause.ID)
				if err != nil {
					var re *core.RetryError
					if !errors.As(err, &re) || !errors.Is(err, core.ErrRetry) {
						bad.Store(err.Error())
						return
					}
					retries.Add(1)
					continue
				}
				got++
				accepted.Add(1)
				mu.Lock()
				tickets = append(tickets, tk)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if v := bad.Load(); v != nil {
		t.Fatalf("TrySubmitReaction failed with %v; want only *RetryError", v)
	}
	for _, tk := range tickets {
		if _, err := tk.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if retries.Load() == 0 {
		t.Fatal("no TrySubmitReaction was refused under pressure")
	}
	d := mustDescendants(t, s, cause.ID, core.CausalLimits{MaxEvents: 1 << 20})
	if int64(len(d.Events)) != accepted.Load()+1 || d.Truncated {
		t.Fatalf("%d reactions stored; %d accepted", len(d.Events)-1, accepted.Load())
	}
}

// TestAppendReactionBatch: every item joins the given conversation; items
// without a cause of their own are caused by the given event, PriorItem
// and CausedBy items keep theirs; all or nothing.
func TestAppendReactionBatch(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	trigger := mustAppend(t, s, mustCoord(t, "order:1", "s"), kindA, `{}`)
	other := mustAppend(t, s, mustCoord(t, "order:2", "s"), kindA, `{}`)
	items := []core.BatchItem{
		{Coordinate: mustCoord(t, "pay:1", "s"), Kind: kindB, Payload: []byte(`{"i":0}`), Options: core.AppendOptions{IdempotencyKey: "rb-0"}},
		{Coordinate: mustCoord(t, "pay:1", "s"), Kind: kindB, Payload: []byte(`{"i":1}`), Causation: core.PriorItem(0)},
		{Coordinate: mustCoord(t, "ship:1", "s"), Kind: kindB, Payload: []byte(`{"i":2}`), Causation: core.CausedBy(other.ID)},
		{Coordinate: mustCoord(t, "ship:1", "s"), Kind: kindB, Payload: []byte(`{"i":3}`), Options: core.AppendOptions{CorrelationID: other.ID}},
	}
	orig := slices.Clone(items)
	rs, err := s.AppendReactionBatch(ctx, trigger.CorrelationID, trigger.ID, items)
	if err != nil || len(rs) != 4 {
		t.Fatalf("AppendReactionBatch: %d receipts, %v", len(rs), err)
	}
	if !slices.EqualFunc(items, orig, func(a, b core.BatchItem) bool { return a.Options == b.Options && a.Causation == b.Causation }) {
		t.Fatal("AppendReactionBatch changed the caller's items")
	}
	wantCause := []core.EventID{trigger.ID, rs[0].ID, other.ID, trigger.ID}
	for i, r := range rs {
		ev, err := s.Get(r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Header.CorrelationID != trigger.CorrelationID || ev.Header.CausationID != wantCause[i] {
			t.Errorf("item %d: correlation %s cause %s; want %s, %s", i, ev.Header.CorrelationID, ev.Header.CausationID, trigger.CorrelationID, wantCause[i])
		}
	}
	if c := mustCorrelation(t, s, trigger.ID, core.CausalLimits{}); len(c.Events) != 5 {
		t.Fatalf("conversation holds %d events; want the trigger and 4 reactions", len(c.Events))
	}
	// The retry of the whole batch returns the original receipts.
	again, err := s.AppendReactionBatch(ctx, trigger.CorrelationID, trigger.ID, items[:1])
	if err != nil || again[0].ID != rs[0].ID || !again[0].Deduplicated {
		t.Fatalf("retry: %+v, %v", again, err)
	}
	// One bad item: nothing written.
	before := s.Stats().Events
	bad := []core.BatchItem{items[3], {Coordinate: mustCoord(t, "x", "s"), Kind: kindB, Payload: []byte(`{`)}}
	var bie *core.BatchItemError
	if _, err := s.AppendReactionBatch(ctx, trigger.CorrelationID, trigger.ID, bad); !errors.As(err, &bie) || bie.Index != 1 {
		t.Fatalf("bad item: %v", err)
	}
	if s.Stats().Events != before {
		t.Fatal("a failed reaction batch wrote events")
	}
	if rs, err := s.AppendReactionBatch(ctx, trigger.CorrelationID, trigger.ID, nil); err != nil || len(rs) != 0 {
		t.Fatalf("empty: %v, %v", rs, err)
	}
}

// TestEffectKinds: the named effect kinds (batpak 0.4.1's values) are
// written as reactions with a cause, and refused everywhere else; other
// 0xD kinds and system kinds are refused on every application path.
func TestEffectKinds(t *testing.T) {
	for k, want := range map[core.Kind]uint16{
		core.KindEffectError: 0xD001, core.KindEffectRetry: 0xD002, core.KindEffectAck: 0xD004,
		core.KindEffectBackpressure: 0xD005, core.KindEffectCancel: 0xD006, core.KindEffectConflict: 0xD007,
	} {
		if uint16(k) != want || !k.IsEffect() || k.IsSystem() {
			t.Errorf("effect kind %s: %#x effect %v system %v", k, uint16(k), k.IsEffect(), k.IsSystem())
		}
	}
	for k, want := range map[core.Kind]uint16{
		core.KindSystemInit: 0x0001, core.KindSystemShutdown: 0x0002, core.KindSystemHeartbeat: 0x0003,
		core.KindSystemConfigChange: 0x0004, core.KindSystemCheckpoint: 0x0005, core.KindSystemBatchBegin: 0x0006,
		core.KindSystemBatchCommit: 0x0007, core.KindTombstone: 0x0FFE,
	} {
		if uint16(k) != want || !k.IsSystem() || k.IsEffect() {
			t.Errorf("system kind %s: %#x system %v effect %v", k, uint16(k), k.IsSystem(), k.IsEffect())
		}
	}
	if core.KindData != core.MustKind(1, 0) || core.KindData.IsSystem() || core.MustKind(0xF, 1).IsEffect() {
		t.Error("DATA or a custom kind is in a reserved category")
	}

	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "job:1", "s")
	cause := mustAppend(t, s, c, kindA, `{}`)
	var ids []core.EventID
	for _, k := range []core.Kind{core.KindEffectError, core.KindEffectRetry, core.KindEffectAck} {
		r, err := s.AppendReaction(ctx, c, k, []byte(`{"why":"x"}`), cause.CorrelationID, cause.ID)
		if err != nil {
			t.Fatalf("AppendReaction(%s): %v", k, err)
		}
		ids = append(ids, r.ID)
	}
	tk, err := s.SubmitReaction(ctx, c, core.KindEffectBackpressure, []byte(`{}`), cause.CorrelationID, cause.ID)
	if err != nil {
		t.Fatal(err)
	}
	r, err := tk.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, r.ID)
	tk, err = s.TrySubmitReaction(ctx, c, core.KindEffectCancel, []byte(`{}`), cause.CorrelationID, cause.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r, err = tk.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, r.ID)
	rs, err := s.AppendReactionBatch(ctx, cause.CorrelationID, cause.ID, []core.BatchItem{{Coordinate: c, Kind: core.KindEffectConflict, Payload: []byte(`{}`)}})
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, rs[0].ID)

	refused := map[string]error{}
	try := func(name string, err error) { refused[name] = err }
	_, err = s.Append(ctx, c, core.KindEffectAck, []byte(`{}`))
	try("Append", err)
	_, err = s.AppendWithOptions(ctx, c, core.KindEffectAck, []byte(`{}`), core.AppendOptions{CausationID: cause.ID})
	try("AppendWithOptions with a cause", err)
	_, err = s.AppendBatch(ctx, []core.BatchItem{{Coordinate: c, Kind: core.KindEffectAck, Payload: []byte(`{}`), Causation: core.CausedBy(cause.ID)}})
	try("AppendBatch", err)
	_, err = s.AppendReaction(ctx, c, core.KindEffectAck, []byte(`{}`), cause.CorrelationID, core.EventID{})
	try("AppendReaction without a cause", err)
	_, err = s.AppendReaction(ctx, c, core.Kind(0xD003), []byte(`{}`), cause.CorrelationID, cause.ID)
	try("AppendReaction of an unnamed effect kind", err)
	_, err = s.AppendReaction(ctx, c, core.KindSystemHeartbeat, []byte(`{}`), cause.CorrelationID, cause.ID)
	try("AppendReaction of a system kind", err)
	_, err = s.AppendReactionBatch(ctx, cause.CorrelationID, cause.ID, []core.BatchItem{{Coordinate: c, Kind: core.Kind(0xDFFF), Payload: []byte(`{}`)}})
	try("AppendReactionBatch of an unnamed effect kind", err)
	_, err = core.ParseKind("0xD:0x1")
	try("ParseKind", err)
	for name, err := range refused {
		var ke *core.KindError
		if !errors.Is(err, core.ErrInvalidKind) || !errors.As(err, &ke) {
			t.Errorf("%s: %v; want a *KindError", name, err)
		}
	}
	// They read back with their kind, also after a reopen.
	s = reopen(t, s)
	want := []core.Kind{core.KindEffectError, core.KindEffectRetry, core.KindEffectAck, core.KindEffectBackpressure, core.KindEffectCancel, core.KindEffectConflict}
	for i, id := range ids {
		ev, err := s.Get(id)
		if err != nil || ev.Header.Kind != want[i] || ev.Header.CausationID != cause.ID {
			t.Errorf("effect %d: %s caused by %s, %v", i, ev.Header.Kind, ev.Header.CausationID, err)
		}
	}
	if got := mustQuery(t, s, core.All().WithCategory(core.CategoryEffect)); len(got) != 6 {
		t.Errorf("%d events in the effect category; want 6", len(got))
	}
}

// TestCompactMinSegments: with fewer sealed segments than MinSegments,
// Compact reports Skipped and changes nothing; with exactly that many it
// compacts, reporting its progress over the segments it reads.
func TestCompactMinSegments(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, smallSegments)
	old := mustAppend(t, s, mustCoord(t, "old", "s"), kindA, `{}`)
	for range 2 {
		rotate(t, s)
	}
	sealed := len(segmentFiles(t, s.Dir())) - 1
	drop := core.Retention(func(ev core.StoredEvent) bool { return ev.Header.ID != old.ID })
	drop.MinSegments = sealed + 1
	// Footers written first, so the background sealer changes nothing below.
	if err := s.SealSegments(ctx); err != nil {
		t.Fatal(err)
	}
	files := dirSizes(t, s.Dir())
	rep, err := s.Compact(ctx, drop)
	if err != nil || !rep.Skipped || rep.SegmentsRewritten != 0 || rep.EventsRemoved != 0 {
		t.Fatalf("MinSegments %d with %d sealed: %+v, %v; want skipped", drop.MinSegments, sealed, rep, err)
	}
	if _, err := s.Get(old.ID); err != nil {
		t.Fatalf("a skipped compaction removed an event: %v", err)
	}
	if after := dirSizes(t, s.Dir()); !maps.Equal(after, files) {
		t.Fatalf("a skipped compaction changed the directory: %v → %v", files, after)
	}
	drop.MinSegments = -1
	if _, err := s.Compact(ctx, drop); !errors.Is(err, core.ErrInvalidOptions) {
		t.Fatalf("MinSegments -1: %v; want ErrInvalidOptions", err)
	}
	drop.MinSegments = sealed
	var progress [][2]int
	drop.Progress = func(done, total int) { progress = append(progress, [2]int{done, total}) }
	rep, err = s.Compact(ctx, drop)
	if err != nil || rep.Skipped || rep.SegmentsRewritten != sealed || rep.EventsRemoved != 1 {
		t.Fatalf("MinSegments %d with %d sealed: %+v, %v; want a compaction", drop.MinSegments, sealed, rep, err)
	}
	// Progress: (0, n), (1, n), …, (n, n) over the sealed segments read.
	if len(progress) != sealed+1 {
		t.Fatalf("progress %v over %d sealed segments", progress, sealed)
	}
	for i, p := range progress {
		if p != [2]int{i, sealed} {
			t.Fatalf("progress %v over %d sealed segments", progress, sealed)
		}
	}
	if _, err := s.Get(old.ID); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("the compaction kept the event it was to remove: %v", err)
	}
}
