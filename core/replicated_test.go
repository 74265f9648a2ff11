package core_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// replicatedWrite is one write as a leader would propose it: id and
// timestamp fixed, batch or single.
type replicatedWrite struct {
	batch bool
	items []core.BatchItem
}

// fixedItem is a batch item with its id and timestamp fixed.
func fixedItem(entity string, kind core.Kind, payload string, ts int64, opts core.AppendOptions) core.BatchItem {
	opts.ID = core.NewEventID()
	opts.Timestamp = ts
	return core.BatchItem{Coordinate: core.Coordinate{Entity: entity, Scope: "s"}, Kind: kind, Payload: []byte(payload), Options: opts}
}

// replicatedScript is a write history with every outcome a replica must
// reproduce: plain appends, timestamps that run backwards, batches with
// PriorItem causation, compare-and-set hits and misses (single and in a
// batch), idempotent retries under a new id, a key reused for another event
// and a fixed id written twice.
func replicatedScript() []replicatedWrite {
	const t0 = 1_700_000_000_000_000
	one := func(it core.BatchItem) replicatedWrite { return replicatedWrite{items: []core.BatchItem{it}} }
	first := fixedItem("acct-1", kindA, `{"n":1}`, t0, core.AppendOptions{ExpectedClock: core.ExpectNoEvents()})
	retried := fixedItem("acct-2", kindA, `{"n":2}`, t0+5, core.AppendOptions{IdempotencyKey: "k-2"})
	retry := retried
	retry.Options.ID = core.NewEventID() // a retry proposed anew gets a new id
	b1 := fixedItem("acct-3", kindB, `{"n":3}`, t0+7, core.AppendOptions{IdempotencyKey: "b-1"})
	b2 := fixedItem("acct-1", kindB, `{"n":4}`, t0+7, core.AppendOptions{})
	b2.Causation = core.PriorItem(0)
	batchRetry := []core.BatchItem{b1, b2}
	batchRetry[0].Options.ID = core.NewEventID()
	batchRetry[1].Options.ID = core.NewEventID()
	batchRetry[1].Options.IdempotencyKey = "b-2"
	b2k := b2
	b2k.Options.IdempotencyKey = "b-2"
	dupID := fixedItem("acct-4", kindA, `{"n":9}`, t0+9, core.AppendOptions{})
	dupID.Options.ID = first.Options.ID
	return []replicatedWrite{
		one(first),
		one(fixedItem("acct-1", kindA, `{"n":2}`, t0-1000, core.AppendOptions{ExpectedClock: core.ExpectClock(0)})), // hit; ts raised
		one(fixedItem("acct-1", kindA, `{"n":3}`, t0+1, core.AppendOptions{ExpectedClock: core.ExpectClock(0)})),    // miss
		one(retried),
		one(retry), // deduplicated
		one(fixedItem("acct-2", kindC, `{"other":true}`, t0+6, core.AppendOptions{IdempotencyKey: "k-2"})), // key reused: refused
		{batch: true, items: []core.BatchItem{b1, b2k}},
		{batch: true, items: batchRetry}, // deduplicated as a whole
		{batch: true, items: []core.BatchItem{
			fixedItem("acct-5", kindA, `{}`, t0+8, core.AppendOptions{}),
			fixedItem("acct-1", kindA, `{}`, t0+8, core.AppendOptions{ExpectedClock: core.ExpectClock(0)}), // miss: nothing written
		}},
		{batch: true, items: []core.BatchItem{
			fixedItem("acct-5", kindA, `{}`, t0+8, core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}),
			fixedItem("acct-5", kindA, `{}`, t0+8, core.AppendOptions{ExpectedClock: core.ExpectClock(0)}), // sees item 0
		}},
		one(dupID), // refused: the id is held
		one(fixedItem("acct-1", kindA, `{"n":5}`, t0+10, core.AppendOptions{ExpectedClock: core.ExpectClock(2)})),
	}
}

// outcome renders one write's result so two replicas' results compare.
func outcome(rs []core.Receipt, err error) string {
	if err != nil {
		var ce *core.ConflictError
		switch {
		case errors.As(err, &ce):
			return fmt.Sprintf("conflict %s want %s have %s", ce.Entity, ce.Expected, ce.Actual)
		case errors.Is(err, core.ErrDuplicateID):
			return "duplicate id"
		case errors.Is(err, core.ErrIdempotencyMismatch):
			return "idempotency conflict"
		}
		return "error: " + err.Error()
	}
	return fmt.Sprintf("%+v", rs)
}

// applyOneByOne applies the script waiting for each write.
func applyOneByOne(t *testing.T, s *core.Store, script []replicatedWrite) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for _, w := range script {
		if w.batch {
			out = append(out, outcome(s.AppendBatch(ctx, w.items)))
			continue
		}
		it := w.items[0]
		rc, err := s.AppendWithOptions(ctx, it.Coordinate, it.Kind, it.Payload, it.Options)
		if err != nil {
			out = append(out, outcome(nil, err))
		} else {
			out = append(out, outcome([]core.Receipt{rc}, nil))
		}
	}
	return out
}

// applyQueued queues the whole script from one goroutine before waiting,
// so the writer covers it with group commits.
func applyQueued(t *testing.T, s *core.Store, script []replicatedWrite) []string {
	t.Helper()
	ctx := context.Background()
	type pendingWrite struct {
		bt *core.BatchTicket
		t  *core.Ticket
	}
	ps := make([]pendingWrite, len(script))
	for i, w := range script {
		var err error
		if w.batch {
			ps[i].bt, err = s.SubmitBatch(ctx, w.items)
		} else {
			it := w.items[0]
			ps[i].t, err = s.SubmitWithOptions(ctx, it.Coordinate, it.Kind, it.Payload, it.Options)
		}
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	var out []string
	for _, p := range ps {
		if p.bt != nil {
			out = append(out, outcome(p.bt.Wait(ctx)))
			continue
		}
		rc, err := p.t.Wait(ctx)
		if err != nil {
			out = append(out, outcome(nil, err))
		} else {
			out = append(out, outcome([]core.Receipt{rc}, nil))
		}
	}
	return out
}

// storeImage is everything that must be equal between replicas: every
// event's coordinate, sequence, idempotency key and full header (id,
// timestamp, clock, correlation, causation, previous and own chain hash).
func storeImage(t *testing.T, s *core.Store) []string {
	t.Helper()
	evs, err := s.Query(core.All())
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = fmt.Sprintf("%d %s %q %+v", ev.GlobalSequence, ev.Coordinate, ev.IdempotencyKey, ev.Header)
	}
	return out
}

func TestReplicatedApplyIsDeterministic(t *testing.T) {
	script := replicatedScript()
	a := openStore(t)
	b := openStore(t)
	ra := applyOneByOne(t, a, script)
	rb := applyQueued(t, b, script)
	for i := range ra {
		if ra[i] != rb[i] {
			t.Errorf("write %d: replica a %s, replica b %s", i, ra[i], rb[i])
		}
	}
	// The outcomes are the ones the script was written to produce.
	want := []string{"", "", "conflict", "", "Deduplicated:true", "idempotency conflict", "", "Deduplicated:true", "conflict", "", "duplicate id", ""}
	for i, w := range want {
		if w == "" {
			if len(ra[i]) < 2 || ra[i][0] != '[' {
				t.Errorf("write %d: %s, want receipts", i, ra[i])
			}
		} else if !strings.Contains(ra[i], w) {
			t.Errorf("write %d: %s, want %s", i, ra[i], w)
		}
	}
	ia, ib := storeImage(t, a), storeImage(t, b)
	if len(ia) != 8 {
		t.Errorf("%d events written, want 8", len(ia))
	}
	if fmt.Sprint(ia) != fmt.Sprint(ib) {
		t.Fatalf("replicas differ:\n%s\n%s", ia, ib)
	}
	// The fixed ids and timestamps are the stored ones (raised to the
	// entity's last when earlier).
	st, err := a.Stream("acct-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 4 || st[0].Header.ID != script[0].items[0].Options.ID || st[0].Header.Timestamp != script[0].items[0].Options.Timestamp {
		t.Fatalf("acct-1 = %+v, want the fixed id and timestamp first", st)
	}
	if st[1].Header.Timestamp != st[0].Header.Timestamp {
		t.Errorf("an earlier fixed timestamp was stored as %d, want it raised to %d", st[1].Header.Timestamp, st[0].Header.Timestamp)
	}
	if st[0].Header.CorrelationID != st[0].Header.ID {
		t.Errorf("correlation defaults to %s, want the fixed id %s", st[0].Header.CorrelationID, st[0].Header.ID)
	}
	if st[2].Header.CausationID != script[6].items[0].Options.ID {
		t.Errorf("PriorItem causation is %s, want the fixed id of item 0", st[2].Header.CausationID)
	}
	for name, s := range map[string]*core.Store{"a": a, "b": b} {
		if _, err := s.Verify(); err != nil {
			t.Errorf("replica %s: Verify: %v", name, err)
		}
	}
}

func TestFixedIDAndTimestampRefusals(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	coord := mustCoord(t, "e", "s")
	id := core.NewEventID()
	if _, err := s.AppendWithOptions(ctx, coord, kindA, []byte(`1`), core.AppendOptions{Timestamp: -1}); !errors.Is(err, core.ErrInvalidOptions) {
		t.Fatalf("negative timestamp: %v, want ErrInvalidOptions", err)
	}
	if _, err := s.AppendWithOptions(ctx, coord, kindA, []byte(`1`), core.AppendOptions{ID: id, Timestamp: 1}); err != nil {
		t.Fatal(err)
	}
	// The same id twice in one batch, and an id already stored: nothing written.
	other := core.NewEventID()
	items := []core.BatchItem{
		{Coordinate: coord, Kind: kindA, Payload: []byte(`2`), Options: core.AppendOptions{ID: other}},
		{Coordinate: coord, Kind: kindA, Payload: []byte(`3`), Options: core.AppendOptions{ID: other}},
	}
	if _, err := s.AppendBatch(ctx, items); !errors.Is(err, core.ErrDuplicateID) {
		t.Fatalf("an id twice in a batch: %v, want ErrDuplicateID", err)
	}
	if _, err := s.AppendWithOptions(ctx, coord, kindA, []byte(`4`), core.AppendOptions{ID: id}); !errors.Is(err, core.ErrDuplicateID) {
		t.Fatalf("a stored id: %v, want ErrDuplicateID", err)
	}
	if evs, _ := s.Stream("e"); len(evs) != 1 {
		t.Fatalf("%d events, want only the first", len(evs))
	}
}

func TestCausationAccessors(t *testing.T) {
	id := core.NewEventID()
	if got, ok := core.CausedBy(id).Event(); !ok || got != id {
		t.Errorf("CausedBy(id).Event() = %s, %v", got, ok)
	}
	if _, ok := core.CausedBy(id).Prior(); ok {
		t.Error("CausedBy reports a prior item")
	}
	if i, ok := core.PriorItem(3).Prior(); !ok || i != 3 {
		t.Errorf("PriorItem(3).Prior() = %d, %v", i, ok)
	}
	if _, ok := core.NoCausation().Event(); ok {
		t.Error("NoCausation reports an event")
	}
	if _, ok := core.NoCausation().Prior(); ok {
		t.Error("NoCausation reports a prior item")
	}
}
