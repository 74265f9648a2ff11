package core_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Atomic batches: AppendBatch, SubmitBatch, TrySubmitBatch.

func mustBatch(t testing.TB, s *core.Store, items []core.BatchItem) []core.Receipt {
	t.Helper()
	rs, err := s.AppendBatch(context.Background(), items)
	if err != nil {
		t.Fatalf("AppendBatch(%d items): %v", len(items), err)
	}
	if len(rs) != len(items) {
		t.Fatalf("AppendBatch(%d items): %d receipts", len(items), len(rs))
	}
	return rs
}

func bi(c core.Coordinate, payload string) core.BatchItem {
	return core.BatchItem{Coordinate: c, Kind: kindA, Payload: []byte(payload)}
}

// batchTag is what the batch payloads carry, so that events read back can
// be grouped by the batch that wrote them.
type batchTag struct {
	B int    `json:"b"` // batch number
	I int    `json:"i"` // item index
	N int    `json:"n"` // items in the batch
	P string `json:"p"` // padding
}

func taggedPayload(b, i, n, pad int) []byte {
	p, _ := json.Marshal(batchTag{B: b, I: i, N: n, P: strings.Repeat("p", pad)})
	return p
}

func tagOf(t testing.TB, e core.StoredEvent) batchTag {
	t.Helper()
	var tag batchTag
	if err := json.Unmarshal(e.Payload, &tag); err != nil {
		t.Fatalf("seq %d: payload %.80q: %v", e.GlobalSequence, e.Payload, err)
	}
	return tag
}

// checkBatchReceipts checks the receipt-level promises of a successful batch:
// consecutive global sequences, and the same receipt read back with Get.
func checkBatchReceipts(t testing.TB, s *core.Store, items []core.BatchItem, rs []core.Receipt) {
	t.Helper()
	for i, r := range rs {
		if i > 0 && r.GlobalSequence != rs[i-1].GlobalSequence+1 {
			t.Fatalf("item %d: sequence %d after %d", i, r.GlobalSequence, rs[i-1].GlobalSequence)
		}
		ev, err := s.Get(r.ID)
		if err != nil {
			t.Fatalf("item %d: Get: %v", i, err)
		}
		if ev.GlobalSequence != r.GlobalSequence || ev.Header.Clock != r.Clock || ev.Header.Timestamp != r.Timestamp ||
			ev.Header.CorrelationID != r.CorrelationID || ev.Coordinate != items[i].Coordinate ||
			ev.Header.Kind != items[i].Kind || string(ev.Payload) != string(items[i].Payload) {
			t.Fatalf("item %d read back as %+v; receipt %+v", i, ev, r)
		}
	}
}

func TestAppendBatch(t *testing.T) {
	s := openStore(t)
	order, pay := mustCoord(t, "order:1", "shop"), mustCoord(t, "payment:1", "shop")
	placed := mustAppend(t, s, order, kindA, `"placed"`)
	corr := core.NewEventID()
	items := []core.BatchItem{
		{Coordinate: order, Kind: kindB, Payload: []byte(`"confirmed"`), Causation: core.CausedBy(placed.ID)},
		{Coordinate: pay, Kind: kindA, Payload: []byte(`"charged"`), Causation: core.PriorItem(0)},
		{Coordinate: order, Kind: kindC, Payload: []byte(`"paid"`), Causation: core.PriorItem(1),
			Options: core.AppendOptions{Flags: 7}},
		{Coordinate: pay, Kind: kindB, Payload: []byte(`"receipt sent"`),
			Options: core.AppendOptions{CorrelationID: corr, CausationID: placed.ID}},
		{Coordinate: pay, Kind: kindB, Payload: []byte(`"audited"`), Causation: core.PriorItem(3),
			Options: core.AppendOptions{CausationID: core.NewEventID()}}, // Causation wins
	}
	rs := mustBatch(t, s, items)
	checkBatchReceipts(t, s, items, rs)
	wantClock := []uint64{1, 0, 2, 1, 2}
	for i, r := range rs {
		if r.GlobalSequence != uint64(1+i) || r.Clock != wantClock[i] || r.Deduplicated {
			t.Fatalf("receipt %d: %+v", i, r)
		}
	}
	check := func(s *core.Store, when string) {
		t.Helper()
		get := func(i int) core.Header {
			ev, err := s.Get(rs[i].ID)
			if err != nil {
				t.Fatalf("%s: Get item %d: %v", when, i, err)
			}
			return ev.Header
		}
		h := []core.Header{get(0), get(1), get(2), get(3), get(4)}
		switch {
		case h[0].CausationID != placed.ID || h[0].CorrelationID != rs[0].ID:
			t.Fatalf("%s: item 0: causation %s correlation %s", when, h[0].CausationID, h[0].CorrelationID)
		case h[1].CausationID != rs[0].ID || h[1].CorrelationID != rs[0].ID:
			t.Fatalf("%s: item 1 (PriorItem(0)): causation %s correlation %s", when, h[1].CausationID, h[1].CorrelationID)
		case h[2].CausationID != rs[1].ID || h[2].CorrelationID != rs[0].ID || h[2].Flags != 7:
			t.Fatalf("%s: item 2: %+v", when, h[2])
		case h[3].CausationID != placed.ID || h[3].CorrelationID != corr:
			t.Fatalf("%s: item 3 (options): %+v", when, h[3])
		case h[4].CausationID != rs[3].ID || h[4].CorrelationID != corr:
			t.Fatalf("%s: item 4: causation %s correlation %s", when, h[4].CausationID, h[4].CorrelationID)
		}
		// Same-entity items continue the entity's hash chain in order.
		st, err := s.Stream("order:1")
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{`"placed"`, `"confirmed"`, `"paid"`}; !reflect.DeepEqual(payloads(st), want) {
			t.Fatalf("%s: order stream %v", when, payloads(st))
		}
		for i := 1; i < len(st); i++ {
			if st[i].Header.PrevHash != st[i-1].Header.Hash || st[i].Header.Clock != uint64(i) {
				t.Fatalf("%s: order stream event %d does not continue the chain", when, i)
			}
		}
		if got := len(mustQuery(t, s, core.Entity("payment:1"))); got != 3 {
			t.Fatalf("%s: %d payment events", when, got)
		}
		if rep := mustVerify(t, s); rep.Events != 6 || rep.Entities != 2 || rep.Hidden != 0 {
			t.Fatalf("%s: Verify %+v", when, rep)
		}
	}
	check(s, "live")
	s = reopen(t, s)
	check(s, "reopened")
	// The entities' chains go on after the batch.
	if r := mustAppend(t, s, order, kindA, `"shipped"`); r.Clock != 3 || r.GlobalSequence != 6 {
		t.Fatalf("append after batch: %+v", r)
	}
	mustVerify(t, s)
}

// Ancestors walks back through a batch's PriorItem links into the event
// that caused the batch.
func TestBatchAncestors(t *testing.T) {
	s := openStore(t)
	c, d := mustCoord(t, "saga:1", "s"), mustCoord(t, "saga:2", "s")
	root := mustAppend(t, s, c, kindA, `"start"`)
	items := []core.BatchItem{{Coordinate: c, Kind: kindA, Payload: []byte(`0`), Causation: core.CausedBy(root.ID)}}
	for i := 1; i < 6; i++ {
		cc := c
		if i%2 == 0 {
			cc = d
		}
		items = append(items, core.BatchItem{Coordinate: cc, Kind: kindA, Payload: []byte(fmt.Sprint(i)), Causation: core.PriorItem(i - 1)})
	}
	items = append(items, core.BatchItem{Coordinate: d, Kind: kindB, Payload: []byte(`"side"`), Causation: core.PriorItem(2)})
	rs := mustBatch(t, s, items)
	check := func(s *core.Store) {
		t.Helper()
		got, err := s.Ancestors(rs[5].ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := []core.EventID{rs[5].ID, rs[4].ID, rs[3].ID, rs[2].ID, rs[1].ID, rs[0].ID, root.ID}
		if !reflect.DeepEqual(ids(got), want) {
			t.Fatalf("Ancestors(last) = %v", payloads(got))
		}
		got, err = s.Ancestors(rs[6].ID, 0)
		if err != nil || !reflect.DeepEqual(ids(got), []core.EventID{rs[6].ID, rs[2].ID, rs[1].ID, rs[0].ID, root.ID}) {
			t.Fatalf("Ancestors(side) = %v, %v", payloads(got), err)
		}
		for _, e := range got[:len(got)-1] { // the batch's items, not the root
			if e.Header.CorrelationID != rs[0].ID {
				t.Fatalf("event %s: correlation %s, want the first item's id", e.Payload, e.Header.CorrelationID)
			}
		}
	}
	check(s)
	check(reopen(t, s))
}

// Batch markers are not events: they take no global sequence.
func TestBatchMarkersTakeNoSequence(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "seq", "s")
	mustAppend(t, s, c, kindA, `0`)
	mustAppend(t, s, c, kindA, `1`)
	var items []core.BatchItem
	for i := 2; i < 7; i++ {
		items = append(items, bi(c, fmt.Sprint(i)))
	}
	rs := mustBatch(t, s, items)
	for i, r := range rs {
		if r.GlobalSequence != uint64(2+i) || r.Clock != uint64(2+i) {
			t.Fatalf("item %d: %+v", i, r)
		}
	}
	if r := mustAppend(t, s, c, kindA, `7`); r.GlobalSequence != 7 || r.Clock != 7 {
		t.Fatalf("append after the batch: %+v", r)
	}
	if st := s.Stats(); st.GlobalSequence != 8 || st.Events != 8 {
		t.Fatalf("Stats: %+v", st)
	}
	s = reopen(t, s)
	if st := s.Stats(); st.GlobalSequence != 8 || st.Events != 8 {
		t.Fatalf("Stats after reopen: %+v", st)
	}
	if r := mustAppend(t, s, c, kindA, `8`); r.GlobalSequence != 8 || r.Clock != 8 {
		t.Fatalf("append after reopen: %+v", r)
	}
	evs := mustQuery(t, s, core.All())
	for i, e := range evs {
		if e.GlobalSequence != uint64(i) || string(e.Payload) != fmt.Sprint(i) {
			t.Fatalf("event %d: seq %d payload %s", i, e.GlobalSequence, e.Payload)
		}
	}
}

func TestEmptyBatch(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	mustAppend(t, s, mustCoord(t, "e", "s"), kindA, `{}`)
	before := takeSnapshot(t, s)
	for _, items := range [][]core.BatchItem{nil, {}} {
		if rs, err := s.AppendBatch(ctx, items); rs != nil || err != nil {
			t.Fatalf("AppendBatch(%v): %v, %v", items, rs, err)
		}
		bt, err := s.SubmitBatch(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		if rs, done, err := bt.TryCheck(); !done || rs != nil || err != nil {
			t.Fatalf("empty SubmitBatch ticket: %v %v %v", rs, done, err)
		}
		select {
		case <-bt.Done():
		default:
			t.Fatal("empty batch ticket not done")
		}
		bt, err = s.TrySubmitBatch(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		if rs, err := bt.Wait(ctx); rs != nil || err != nil {
			t.Fatalf("empty TrySubmitBatch: %v, %v", rs, err)
		}
	}
	if rs, err := s.Outbox().Flush(ctx); rs != nil || err != nil {
		t.Fatalf("empty outbox Flush: %v, %v", rs, err)
	}
	before.mustEqual(t, takeSnapshot(t, s), "empty batches")
}

func TestBatchSubmitAndTrySubmit(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "sub", "s")
	var tickets []*core.BatchTicket
	for b := 0; b < 10; b++ {
		items := []core.BatchItem{bi(c, fmt.Sprint(2*b)), bi(c, fmt.Sprint(2*b+1))}
		var bt *core.BatchTicket
		var err error
		if b%2 == 0 {
			bt, err = s.SubmitBatch(ctx, items)
		} else {
			bt, err = s.TrySubmitBatch(ctx, items)
		}
		if err != nil {
			t.Fatalf("batch %d: %v", b, err)
		}
		items[0].Payload[0] = 'x' // payloads were copied
		tickets = append(tickets, bt)
	}
	for b, bt := range tickets {
		<-bt.Done()
		rs, done, err := bt.TryCheck()
		if !done || err != nil || len(rs) != 2 || rs[0].Clock != uint64(2*b) || rs[1].Clock != uint64(2*b+1) {
			t.Fatalf("batch %d: %+v %v %v", b, rs, done, err)
		}
	}
	evs, err := s.Stream("sub")
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		if string(e.Payload) != fmt.Sprint(i) {
			t.Fatalf("event %d: %s", i, e.Payload)
		}
	}
}

// A batch is synced with one fsync when every write is synced.
func TestBatchOneFsync(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.Sync.EveryNEvents = 1 })
	c := mustCoord(t, "fs", "s")
	mustAppend(t, s, c, kindA, `{}`) // the segment's first zero fill
	var items []core.BatchItem
	for i := 0; i < 50; i++ {
		items = append(items, bi(mustCoord(t, fmt.Sprintf("fs:%d", i%5), "s"), payloadN(i)))
	}
	before := s.Stats().Fsyncs
	mustBatch(t, s, items)
	if got := s.Stats().Fsyncs - before; got != 1 {
		t.Fatalf("a batch of %d items took %d fsyncs, want 1", len(items), got)
	}
}

func TestBatchCompareAndSet(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c, d := mustCoord(t, "cas:1", "s"), mustCoord(t, "cas:2", "s")
	// Each expectation sees the items before it.
	rs := mustBatch(t, s, []core.BatchItem{
		{Coordinate: c, Kind: kindA, Payload: []byte(`0`), Options: core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}},
		{Coordinate: c, Kind: kindA, Payload: []byte(`1`), Options: core.AppendOptions{ExpectedClock: core.ExpectClock(0)}},
		{Coordinate: d, Kind: kindA, Payload: []byte(`0`), Options: core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}},
		{Coordinate: c, Kind: kindA, Payload: []byte(`2`), Options: core.AppendOptions{ExpectedClock: core.ExpectClock(1)}},
	})
	if rs[3].Clock != 2 || rs[2].Clock != 0 {
		t.Fatalf("receipts %+v", rs)
	}
	before := takeSnapshot(t, s)
	beforeEvents := mustQuery(t, s, core.All())

	cases := []struct {
		name   string
		items  []core.BatchItem
		index  int
		expect core.Expectation
		actual core.Expectation
	}{
		{"stale clock on the first item", []core.BatchItem{
			{Coordinate: c, Kind: kindA, Payload: []byte(`3`), Options: core.AppendOptions{ExpectedClock: core.ExpectClock(1)}},
			bi(d, `1`),
		}, 0, core.ExpectClock(1), core.ExpectClock(2)},
		{"expectation that ignores an earlier item", []core.BatchItem{
			bi(d, `1`),
			bi(c, `3`),
			{Coordinate: c, Kind: kindA, Payload: []byte(`4`), Options: core.AppendOptions{ExpectedClock: core.ExpectClock(2)}},
		}, 2, core.ExpectClock(2), core.ExpectClock(3)},
		{"no events expected on an entity the batch starts", []core.BatchItem{
			bi(mustCoord(t, "cas:new", "s"), `0`),
			bi(d, `1`),
			{Coordinate: mustCoord(t, "cas:new", "s"), Kind: kindA, Payload: []byte(`1`), Options: core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}},
		}, 2, core.ExpectNoEvents(), core.ExpectClock(0)},
		{"events expected on a new entity", []core.BatchItem{
			bi(d, `1`),
			{Coordinate: mustCoord(t, "cas:none", "s"), Kind: kindA, Payload: []byte(`0`), Options: core.AppendOptions{ExpectedClock: core.ExpectClock(0)}},
		}, 1, core.ExpectClock(0), core.ExpectNoEvents()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, submit := range []bool{false, true} {
				var err error
				if submit {
					var bt *core.BatchTicket
					if bt, err = s.SubmitBatch(ctx, tc.items); err == nil {
						_, err = bt.Wait(ctx)
					}
				} else {
					_, err = s.AppendBatch(ctx, tc.items)
				}
				var be *core.BatchItemError
				if !errors.As(err, &be) || be.Index != tc.index {
					t.Fatalf("got %v, want a *BatchItemError for item %d", err, tc.index)
				}
				var ce *core.ConflictError
				if !errors.As(err, &ce) || !errors.Is(err, core.ErrConflict) {
					t.Fatalf("%v does not wrap a *ConflictError", err)
				}
				if ce.Expected != tc.expect || ce.Actual != tc.actual || ce.Entity != tc.items[tc.index].Coordinate.Entity {
					t.Fatalf("conflict %+v, want expected %v actual %v", ce, tc.expect, tc.actual)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("item %d", tc.index)) {
					t.Fatalf("message %q does not name item %d", err, tc.index)
				}
				before.mustEqual(t, takeSnapshot(t, s), "failed expectation")
				sameEvents(t, "after a failed expectation", beforeEvents, mustQuery(t, s, core.All()))
			}
		})
	}
	// Nothing was half-applied: the entities continue where they were.
	if r := mustAppendOpts(t, s, d, kindA, `1`, core.AppendOptions{ExpectedClock: core.ExpectClock(0)}); r.Clock != 1 || r.GlobalSequence != 4 {
		t.Fatalf("append after refused batches: %+v", r)
	}
	if got := mustQuery(t, s, core.Entity("cas:n")); len(got) != 0 {
		t.Fatalf("refused batches left %d events", len(got))
	}
	// An entity a refused batch started still has no events.
	nc := mustCoord(t, "cas:new", "s")
	if r := mustAppendOpts(t, s, nc, kindA, `0`, core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}); r.Clock != 0 || r.GlobalSequence != 5 {
		t.Fatalf("first event of cas:new: %+v", r)
	}
	s = reopen(t, s)
	if got := s.Stats(); got.Events != 6 || got.Entities != 3 {
		t.Fatalf("after reopen: %+v", got)
	}
	mustVerify(t, s)
}

// Validation happens before anything is queued and names the item.
func TestBatchValidation(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "v", "s")
	mustAppend(t, s, c, kindA, `{}`)
	before := takeSnapshot(t, s)
	ok := bi(c, `{}`)
	withCause := func(cause core.Causation) core.BatchItem {
		it := ok
		it.Causation = cause
		return it
	}
	cases := []struct {
		name   string
		items  []core.BatchItem
		index  int
		target error
	}{
		{"PriorItem of itself", []core.BatchItem{ok, withCause(core.PriorItem(1))}, 1, core.ErrInvalidOptions},
		{"PriorItem of a later item", []core.BatchItem{ok, withCause(core.PriorItem(2)), ok}, 1, core.ErrInvalidOptions},
		{"PriorItem on the first item", []core.BatchItem{withCause(core.PriorItem(0))}, 0, core.ErrInvalidOptions},
		{"negative PriorItem", []core.BatchItem{ok, ok, withCause(core.PriorItem(-1))}, 2, core.ErrInvalidOptions},
		{"duplicate idempotency key", []core.BatchItem{
			{Coordinate: c, Kind: kindA, Payload: []byte(`1`), Options: core.AppendOptions{IdempotencyKey: "k"}},
			ok,
			{Coordinate: c, Kind: kindA, Payload: []byte(`2`), Options: core.AppendOptions{IdempotencyKey: "k"}},
		}, 2, core.ErrInvalidOptions},
		{"duplicate idempotency key, same event", []core.BatchItem{
			{Coordinate: c, Kind: kindA, Payload: []byte(`1`), Options: core.AppendOptions{IdempotencyKey: "k"}},
			{Coordinate: c, Kind: kindA, Payload: []byte(`1`), Options: core.AppendOptions{IdempotencyKey: "k"}},
		}, 1, core.ErrInvalidOptions},
		{"bad coordinate", []core.BatchItem{ok, ok, {Coordinate: core.Coordinate{Entity: "x"}, Kind: kindA, Payload: []byte(`{}`)}}, 2, core.ErrInvalidCoordinate},
		{"bad payload", []core.BatchItem{ok, bi(c, `{"a":`)}, 1, core.ErrInvalidPayload},
		{"reserved kind", []core.BatchItem{{Coordinate: c, Kind: core.Kind(0), Payload: []byte(`{}`)}, ok}, 0, core.ErrInvalidKind},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(api string, err error) {
				t.Helper()
				var be *core.BatchItemError
				if !errors.As(err, &be) || be.Index != tc.index || !errors.Is(err, tc.target) {
					t.Fatalf("%s: got %v, want a *BatchItemError for item %d wrapping %v", api, err, tc.index, tc.target)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("item %d", tc.index)) {
					t.Fatalf("%s: message %q does not name item %d", api, err, tc.index)
				}
			}
			_, err := s.AppendBatch(ctx, tc.items)
			check("AppendBatch", err)
			bt, err := s.SubmitBatch(ctx, tc.items)
			if bt != nil {
				t.Fatal("SubmitBatch returned a ticket with its error")
			}
			check("SubmitBatch", err)
			_, err = s.TrySubmitBatch(ctx, tc.items)
			check("TrySubmitBatch", err)
			before.mustEqual(t, takeSnapshot(t, s), tc.name)
		})
	}
}

func TestBatchLimits(t *testing.T) {
	ctx := context.Background()
	t.Run("configured", func(t *testing.T) {
		s := openStore(t, func(c *core.Config) { c.Batch.MaxSize, c.Batch.MaxBytes = 8, 1000 })
		c := mustCoord(t, "lim", "s")
		n := func(k, size int) []core.BatchItem {
			items := make([]core.BatchItem, k)
			for i := range items {
				items[i] = bi(c, jsonString(size))
			}
			return items
		}
		refuse := func(what string, items []core.BatchItem) {
			t.Helper()
			before := takeSnapshot(t, s)
			if _, err := s.AppendBatch(ctx, items); !errors.Is(err, core.ErrBatchTooLarge) {
				t.Fatalf("%s: got %v, want ErrBatchTooLarge", what, err)
			}
			if _, err := s.SubmitBatch(ctx, items); !errors.Is(err, core.ErrBatchTooLarge) {
				t.Fatalf("%s: SubmitBatch got %v", what, err)
			}
			before.mustEqual(t, takeSnapshot(t, s), what)
		}
		mustBatch(t, s, n(8, 2)) // exactly MaxSize items
		refuse("MaxSize+1 items", n(9, 2))
		mustBatch(t, s, n(4, 250)) // exactly MaxBytes
		refuse("MaxBytes+1 bytes", append(n(3, 250), bi(c, jsonString(251))))
		mustBatch(t, s, append(n(7, 100), bi(c, jsonString(300)))) // at both limits
		refuse("MaxBytes+1 in one item", []core.BatchItem{bi(c, jsonString(1001))})
		if got := s.Stats().Events; got != 8+4+8 {
			t.Fatalf("%d events", got)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		s := openStore(t)
		c := mustCoord(t, "lim", "s")
		items := make([]core.BatchItem, core.DefaultBatchMaxSize+1)
		for i := range items {
			items[i] = bi(c, `0`)
		}
		if _, err := s.AppendBatch(ctx, items); !errors.Is(err, core.ErrBatchTooLarge) {
			t.Fatalf("%d items: %v", len(items), err)
		}
		mustBatch(t, s, items[:core.DefaultBatchMaxSize])
		big := []core.BatchItem{bi(c, jsonString(core.DefaultBatchMaxBytes/2)), bi(c, jsonString(core.DefaultBatchMaxBytes/2))}
		mustBatch(t, s, big)
		big[1].Payload = []byte(jsonString(core.DefaultBatchMaxBytes/2 + 1))
		if _, err := s.AppendBatch(ctx, big); !errors.Is(err, core.ErrBatchTooLarge) {
			t.Fatalf("%d bytes: %v", core.DefaultBatchMaxBytes+1, err)
		}
	})
	t.Run("config range", func(t *testing.T) {
		for _, tc := range []struct {
			field string
			set   func(*core.Config)
		}{
			{"Batch.MaxSize", func(c *core.Config) { c.Batch.MaxSize = 0 }},
			{"Batch.MaxSize", func(c *core.Config) { c.Batch.MaxSize = 4097 }},
			{"Batch.MaxBytes", func(c *core.Config) { c.Batch.MaxBytes = 0 }},
			{"Batch.MaxBytes", func(c *core.Config) { c.Batch.MaxBytes = 16<<20 + 1 }},
			{"Batch.GroupCommitMaxBatch", func(c *core.Config) { c.Batch.GroupCommitMaxBatch = -1 }},
		} {
			cfg := testConfig(t.TempDir())
			tc.set(&cfg)
			var ce *core.ConfigError
			if err := cfg.Validate(); !errors.As(err, &ce) || ce.Field != tc.field {
				t.Errorf("%s out of range: %v", tc.field, err)
			}
		}
		cfg := testConfig(t.TempDir())
		cfg.Batch.MaxSize, cfg.Batch.MaxBytes, cfg.Batch.GroupCommitMaxBatch = 4096, 16<<20, 1<<20
		if err := cfg.Validate(); err != nil {
			t.Errorf("upper bounds: %v", err)
		}
	})
}

func TestBatchIdempotency(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c, d := mustCoord(t, "idem:1", "s"), mustCoord(t, "idem:2", "s")
	key := func(k string) core.AppendOptions { return core.AppendOptions{IdempotencyKey: k} }
	items := []core.BatchItem{
		{Coordinate: c, Kind: kindA, Payload: []byte(`0`), Options: key("a")},
		{Coordinate: d, Kind: kindA, Payload: []byte(`1`), Options: key("b"), Causation: core.PriorItem(0)},
		{Coordinate: c, Kind: kindB, Payload: []byte(`2`), Options: key("c")},
	}
	orig := mustBatch(t, s, items)
	same := func(when string, got []core.Receipt) {
		t.Helper()
		if len(got) != len(orig) {
			t.Fatalf("%s: %d receipts", when, len(got))
		}
		for i := range got {
			want := orig[i]
			want.Deduplicated = true
			if got[i] != want {
				t.Fatalf("%s: receipt %d = %+v, want %+v", when, i, got[i], want)
			}
		}
	}
	check := func(s *core.Store, when string) {
		t.Helper()
		rs, err := s.AppendBatch(ctx, items)
		if err != nil {
			t.Fatalf("%s: retry: %v", when, err)
		}
		same(when+": retry", rs)
		bt, err := s.SubmitBatch(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		rs, err = bt.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		same(when+": SubmitBatch retry", rs)
		// A single write repeating one item's key gets that item's receipt.
		r := mustAppendOpts(t, s, d, kindA, `1`, key("b"))
		if want := orig[1]; !r.Deduplicated || r.ID != want.ID || r.GlobalSequence != want.GlobalSequence {
			t.Fatalf("%s: single retry of item 1: %+v", when, r)
		}
		// A retry that changes an item is a mismatch, named by item.
		changed := append([]core.BatchItem(nil), items...)
		changed[2].Payload = []byte(`"other"`)
		before := takeSnapshot(t, s)
		_, err = s.AppendBatch(ctx, changed)
		var be *core.BatchItemError
		if !errors.As(err, &be) || be.Index != 2 || !errors.Is(err, core.ErrIdempotencyMismatch) {
			t.Fatalf("%s: changed retry: %v", when, err)
		}
		// Known and new keys mixed: refused, nothing written, the new key
		// stays free.
		for _, mixed := range [][]core.BatchItem{
			{items[0], items[1], {Coordinate: c, Kind: kindA, Payload: []byte(`3`), Options: key("new")}},
			{{Coordinate: c, Kind: kindA, Payload: []byte(`3`), Options: key("new")}, items[2]},
			{items[0], bi(c, `4`)}, // an item without a key is new too
		} {
			if _, err := s.AppendBatch(ctx, mixed); !errors.Is(err, core.ErrBatchMixedKeys) {
				t.Fatalf("%s: mixed batch: got %v, want ErrBatchMixedKeys", when, err)
			}
		}
		before.mustEqual(t, takeSnapshot(t, s), when+": refused retries")
		if got := s.Stats().Events; got != 3 {
			t.Fatalf("%s: %d events", when, got)
		}
	}
	check(s, "live")
	s = reopen(t, s)
	check(s, "reopened")
	r := mustAppendOpts(t, s, c, kindA, `3`, key("new"))
	if r.Deduplicated || r.GlobalSequence != 3 || r.Clock != 2 {
		t.Fatalf("the new key after the refused mixed batch: %+v", r)
	}
	// A batch of keys written as single events earlier is a retry too.
	rs := mustBatch(t, s, []core.BatchItem{{Coordinate: c, Kind: kindA, Payload: []byte(`3`), Options: key("new")}, items[0]})
	if !rs[0].Deduplicated || rs[0].ID != r.ID || rs[1].ID != orig[0].ID {
		t.Fatalf("batch of stored keys: %+v", rs)
	}
}

// A key first used earlier in the same group commit (queued singles just
// before the batch) counts as stored.
func TestBatchIdempotencyWithinGroup(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "ig", "s")
	key := func(k string) core.AppendOptions { return core.AppendOptions{IdempotencyKey: k} }
	for round := 0; round < 20; round++ {
		k1, k2 := fmt.Sprintf("r%d-1", round), fmt.Sprintf("r%d-2", round)
		t1, err := s.SubmitWithOptions(ctx, c, kindA, []byte(`1`), key(k1))
		if err != nil {
			t.Fatal(err)
		}
		t2, err := s.SubmitWithOptions(ctx, c, kindA, []byte(`2`), key(k2))
		if err != nil {
			t.Fatal(err)
		}
		retry, err := s.SubmitBatch(ctx, []core.BatchItem{
			{Coordinate: c, Kind: kindA, Payload: []byte(`1`), Options: key(k1)},
			{Coordinate: c, Kind: kindA, Payload: []byte(`2`), Options: key(k2)},
		})
		if err != nil {
			t.Fatal(err)
		}
		mixed, err := s.SubmitBatch(ctx, []core.BatchItem{
			{Coordinate: c, Kind: kindA, Payload: []byte(`1`), Options: key(k1)},
			{Coordinate: c, Kind: kindA, Payload: []byte(`3`), Options: key(k1 + "x")},
		})
		if err != nil {
			t.Fatal(err)
		}
		r1, err1 := t1.Wait(ctx)
		r2, err2 := t2.Wait(ctx)
		rs, err := retry.Wait(ctx)
		if err1 != nil || err2 != nil || err != nil {
			t.Fatal(err1, err2, err)
		}
		if rs[0].ID != r1.ID || rs[1].ID != r2.ID || !rs[0].Deduplicated || !rs[1].Deduplicated {
			t.Fatalf("round %d: retry receipts %+v for %+v %+v", round, rs, r1, r2)
		}
		if _, err := mixed.Wait(ctx); !errors.Is(err, core.ErrBatchMixedKeys) {
			t.Fatalf("round %d: mixed: %v", round, err)
		}
	}
	if got := s.Stats().Events; got != 40 {
		t.Fatalf("%d events, want 40", got)
	}
	mustVerify(t, s)
}

// A batch keyed only in part cannot be recognized when it is retried —
// its unkeyed items' events cannot be told from anyone else's — so the
// retry is refused, naming the unkeyed item, and nothing is written
// twice.
func TestRetryOfPartlyKeyedBatchIsRefused(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "pk:1", "s")
	items := []core.BatchItem{
		{Coordinate: c, Kind: kindA, Payload: []byte(`1`), Options: core.AppendOptions{IdempotencyKey: "pk-1"}},
		{Coordinate: c, Kind: kindA, Payload: []byte(`2`)},
	}
	mustBatch(t, s, items)
	before := takeSnapshot(t, s)
	_, err := s.AppendBatch(ctx, items)
	if !errors.Is(err, core.ErrBatchMixedKeys) || !strings.Contains(err.Error(), "item 1 carries no key") || !strings.Contains(err.Error(), "needs a key on every item") {
		t.Fatalf("retry of a partly keyed batch: %v", err)
	}
	// A new key beside a stored one is named as such, even after an
	// unkeyed item.
	_, err = s.AppendBatch(ctx, []core.BatchItem{items[0], items[1], {Coordinate: c, Kind: kindA, Payload: []byte(`3`), Options: core.AppendOptions{IdempotencyKey: "pk-new"}}})
	if !errors.Is(err, core.ErrBatchMixedKeys) || !strings.Contains(err.Error(), `item 2's key "pk-new" is new`) {
		t.Fatalf("a new key beside a stored one: %v", err)
	}
	before.mustEqual(t, takeSnapshot(t, s), "refused retries")
}

// A committed batch that spans several segments is whole after reopen.
func TestBatchAcrossSegments(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	c, d := mustCoord(t, "span:1", "s"), mustCoord(t, "span:2", "s")
	mustAppend(t, s, c, kindA, `"before"`)
	var items []core.BatchItem
	for i := 0; i < 60; i++ {
		cc := c
		if i%3 == 0 {
			cc = d
		}
		items = append(items, core.BatchItem{Coordinate: cc, Kind: kindA, Payload: taggedPayload(1, i, 60, 3000)})
	}
	rs := mustBatch(t, s, items)
	if segs := s.Stats().Segments; segs < 3 {
		t.Fatalf("the batch spans %d segments, want at least 3", segs)
	}
	check := func(s *core.Store, when string) {
		t.Helper()
		checkBatchReceipts(t, s, items, rs)
		for _, e := range []string{"span:1", "span:2"} {
			st, err := s.Stream(e)
			if err != nil {
				t.Fatal(err)
			}
			for i, ev := range st {
				if ev.Header.Clock != uint64(i) || (i > 0 && ev.Header.PrevHash != st[i-1].Header.Hash) {
					t.Fatalf("%s: %s event %d breaks the chain", when, e, i)
				}
			}
		}
		if rep := mustVerify(t, s); rep.Events != 61 {
			t.Fatalf("%s: Verify %+v", when, rep)
		}
	}
	check(s, "live")
	s = reopen(t, s)
	check(s, "reopened")
	if r := mustAppend(t, s, d, kindA, `"after"`); r.GlobalSequence != 61 || r.Clock != 20 {
		t.Fatalf("append after: %+v", r)
	}
}

// A reader polling while batches are written sees every batch whole or not
// at all: with 3 events first and batches of 7, every count is 3 + 7k.
func TestBatchReaderSeesWholeBatches(t *testing.T) {
	const batches, size = 50, 7
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	ctx := context.Background()
	c := mustCoord(t, "poll:0", "s")
	for i := 0; i < 3; i++ {
		mustAppend(t, s, c, kindA, payloadN(i))
	}
	var done atomic.Bool
	var polls atomic.Int64
	bad := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := 0
		for !done.Load() {
			evs, err := s.Query(core.All())
			if err != nil {
				bad <- err.Error()
				return
			}
			n := len(evs)
			st := int(s.Stats().Events)
			switch {
			case (n-3)%size != 0:
				bad <- fmt.Sprintf("Query saw %d events", n)
				return
			case (st-3)%size != 0:
				bad <- fmt.Sprintf("Stats saw %d events", st)
				return
			case n < last:
				bad <- fmt.Sprintf("count went back from %d to %d", last, n)
				return
			}
			last = n
			polls.Add(1)
		}
	}()
	for b := 0; b < batches; b++ {
		items := make([]core.BatchItem, size)
		for i := range items {
			items[i] = core.BatchItem{Coordinate: mustCoord(t, fmt.Sprintf("poll:%d", i%3), "s"), Kind: kindA,
				Payload: taggedPayload(b, i, size, 500)}
		}
		if _, err := s.AppendBatch(ctx, items); err != nil {
			t.Fatal(err)
		}
	}
	done.Store(true)
	wg.Wait()
	select {
	case msg := <-bad:
		t.Fatal(msg)
	default:
	}
	if got := len(mustQuery(t, s, core.All())); got != 3+batches*size {
		t.Fatalf("%d events", got)
	}
	t.Logf("%d polls", polls.Load())
}

// Batches from several goroutines, to a shared entity and to their own:
// every item stored once, each batch's items consecutive, every entity's
// clocks dense and its chain intact.
func TestConcurrentBatches(t *testing.T) {
	const workers, perW = 4, 40
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	ctx := context.Background()
	shared := mustCoord(t, "shared", "s")
	var wg sync.WaitGroup
	receipts := make([][][]core.Receipt, workers)
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			own := mustCoord(t, fmt.Sprintf("own:%d", w), "s")
			for b := 0; b < perW; b++ {
				n := 1 + (w+b)%8
				items := make([]core.BatchItem, n)
				for i := range items {
					c := own
					if (i+b)%2 == 0 {
						c = shared
					}
					items[i] = core.BatchItem{Coordinate: c, Kind: kindA, Payload: taggedPayload(w*1000+b, i, n, 200)}
					if i > 0 && b%3 == 0 {
						items[i].Causation = core.PriorItem(i - 1)
					}
				}
				var rs []core.Receipt
				var err error
				if b%2 == 0 {
					rs, err = s.AppendBatch(ctx, items)
				} else {
					var bt *core.BatchTicket
					if bt, err = s.SubmitBatch(ctx, items); err == nil {
						// The batch was taken at submit: the caller may
						// reuse its buffers at once.
						for i := range items {
							clear(items[i].Payload)
						}
						rs, err = bt.Wait(ctx)
					}
				}
				if err != nil {
					errs <- err
					return
				}
				receipts[w] = append(receipts[w], rs)
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	check := func(s *core.Store, when string) {
		t.Helper()
		total := 0
		ids := map[core.EventID]bool{}
		for w := range receipts {
			for b, rs := range receipts[w] {
				for i, r := range rs {
					if i > 0 && r.GlobalSequence != rs[i-1].GlobalSequence+1 {
						t.Fatalf("%s: worker %d batch %d is not contiguous", when, w, b)
					}
					if ids[r.ID] || (i > 0 && bytes.Compare(r.ID[:], rs[i-1].ID[:]) <= 0) {
						t.Fatalf("%s: worker %d batch %d item %d: id %s repeated or not after the item before it", when, w, b, i, r.ID)
					}
					ids[r.ID] = true
					ev, err := s.Get(r.ID)
					if err != nil {
						t.Fatalf("%s: worker %d batch %d item %d: %v", when, w, b, i, err)
					}
					if tag := tagOf(t, ev); tag.B != w*1000+b || tag.I != i || ev.Header.Clock != r.Clock {
						t.Fatalf("%s: worker %d batch %d item %d read back as %+v", when, w, b, i, tag)
					}
					total++
				}
			}
		}
		evs := mustQuery(t, s, core.All())
		if len(evs) != total {
			t.Fatalf("%s: %d events, %d acknowledged", when, len(evs), total)
		}
		for i, e := range evs {
			if e.GlobalSequence != uint64(i) {
				t.Fatalf("%s: event %d has sequence %d", when, i, e.GlobalSequence)
			}
		}
		for _, e := range append([]string{"shared"}, "own:0", "own:1", "own:2", "own:3") {
			st, err := s.Stream(e)
			if err != nil {
				t.Fatal(err)
			}
			for i, ev := range st {
				if ev.Header.Clock != uint64(i) || (i > 0 && ev.Header.PrevHash != st[i-1].Header.Hash) {
					t.Fatalf("%s: %s event %d: clock %d", when, e, i, ev.Header.Clock)
				}
			}
		}
		if rep := mustVerify(t, s); rep.Events != total {
			t.Fatalf("%s: Verify %+v, want %d events", when, rep, total)
		}
	}
	check(s, "live")
	check(reopen(t, s), "reopened")
}

// GroupCommitMaxBatch bounds how many queued single appends share one
// write and one fsync: 1 gives every event its own, 0 takes everything
// queued.
func TestGroupCommitMaxBatch(t *testing.T) {
	const producers, each = 16, 25
	run := func(limit int) uint64 {
		s := openStore(t, func(c *core.Config) {
			c.Sync.EveryNEvents = 1
			c.Batch.GroupCommitMaxBatch = limit
		})
		ctx := context.Background()
		start := s.Stats().Fsyncs
		var wg sync.WaitGroup
		errs := make(chan error, producers)
		for p := 0; p < producers; p++ {
			wg.Add(1)
			go func(p int) {
				defer wg.Done()
				c, _ := core.NewCoordinate(fmt.Sprintf("gc:%d", p), "s")
				for i := 0; i < each; i++ {
					r, err := s.Append(ctx, c, kindA, []byte(payloadN(i)))
					if err != nil {
						errs <- err
						return
					}
					if r.Clock != uint64(i) {
						errs <- fmt.Errorf("producer %d event %d: clock %d", p, i, r.Clock)
						return
					}
				}
			}(p)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("GroupCommitMaxBatch=%d: %v", limit, err)
		}
		fsyncs := s.Stats().Fsyncs - start
		for p := 0; p < producers; p++ {
			st, err := s.Stream(fmt.Sprintf("gc:%d", p))
			if err != nil || len(st) != each {
				t.Fatalf("GroupCommitMaxBatch=%d: producer %d: %d events, %v", limit, p, len(st), err)
			}
			for i, e := range st {
				if string(e.Payload) != payloadN(i) {
					t.Fatalf("GroupCommitMaxBatch=%d: producer %d event %d: %s", limit, p, i, e.Payload)
				}
			}
		}
		if rep := mustVerify(t, s); rep.Events != producers*each {
			t.Fatalf("GroupCommitMaxBatch=%d: Verify %+v", limit, rep)
		}
		return fsyncs
	}
	const events = producers * each
	off := run(1)
	if off < events {
		t.Errorf("GroupCommitMaxBatch=1: %d fsyncs for %d events; every event should get its own", off, events)
	}
	four := run(4)
	if four < events/4 {
		t.Errorf("GroupCommitMaxBatch=4: %d fsyncs for %d events; groups hold at most 4", four, events)
	}
	all := run(0)
	if all > events/2 {
		t.Errorf("GroupCommitMaxBatch=0: %d fsyncs for %d events; want clearly fewer", all, events)
	}
	t.Logf("fsyncs for %d events: %d with limit 1, %d with limit 4, %d unlimited", events, off, four, all)
}

// Verify may run while the store is written: it checks what was published
// when it started, so batches in flight — even across a segment rotation —
// never look like damage, and its count is always whole batches. The
// batches go on until enough Verify runs overlapped a batch in flight
// and a segment rotation (failing if they never do).
func TestVerifyDuringBatches(t *testing.T) {
	const (
		minBatches, maxBatches, size = 40, 200, 9
		minOverlaps                  = 10 // Verify runs while a batch was in flight
		minRotations                 = 2  // of those, runs during which a segment was added
	)
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	ctx := context.Background()
	var done atomic.Bool
	var wg sync.WaitGroup
	bad := make(chan error, 1)
	var runs, overlaps, rotations atomic.Int64
	var steps atomic.Int64 // odd while an AppendBatch call is in flight
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !done.Load() {
			before, s0 := s.Stats(), steps.Load()
			rep, err := s.Verify()
			s1, after := steps.Load(), s.Stats()
			if err == nil && rep.Events%size != 0 {
				err = fmt.Errorf("Verify counted %d events, not whole batches of %d", rep.Events, size)
			}
			if err != nil {
				bad <- err
				return
			}
			runs.Add(1)
			if s0%2 == 1 || s1 > s0 { // a batch was in flight while Verify ran
				overlaps.Add(1)
				if after.Segments > before.Segments {
					rotations.Add(1)
				}
			}
		}
	}()
	b := 0
	for ; b < minBatches || overlaps.Load() < minOverlaps || rotations.Load() < minRotations; b++ {
		if b == maxBatches || len(bad) > 0 {
			break
		}
		items := make([]core.BatchItem, size)
		for i := range items {
			items[i] = core.BatchItem{Coordinate: mustCoord(t, fmt.Sprintf("vd:%d", i%4), "s"), Kind: kindA,
				Payload: taggedPayload(b, i, size, 2000)}
		}
		steps.Add(1)
		if _, err := s.AppendBatch(ctx, items); err != nil {
			t.Fatal(err)
		}
		steps.Add(1)
	}
	done.Store(true)
	wg.Wait()
	select {
	case err := <-bad:
		t.Fatalf("Verify during batches: %v", err)
	default:
	}
	if overlaps.Load() < minOverlaps || rotations.Load() < minRotations {
		t.Fatalf("after %d batches, %d of %d Verify runs overlapped a batch (want %d) and %d a rotation (want %d)",
			b, overlaps.Load(), runs.Load(), minOverlaps, rotations.Load(), minRotations)
	}
	if rep := mustVerify(t, s); rep.Events != b*size || rep.Segments < 5 {
		t.Fatalf("Verify: %+v after %d batches", rep, b)
	}
	t.Logf("%d batches, %d Verify runs: %d overlapped a batch, %d a rotation", b, runs.Load(), overlaps.Load(), rotations.Load())
}

func TestBatchReadOnlyAndClosed(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	c := mustCoord(t, "roc", "s")
	items := []core.BatchItem{bi(c, `1`), bi(c, `2`)}
	mustBatch(t, s, items)
	ro, err := core.OpenReadOnly(s.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got := ro.Stats().Events; got != 2 {
		t.Fatalf("read-only: %d events", got)
	}
	if _, err := ro.AppendBatch(ctx, items); !errors.Is(err, core.ErrReadOnly) {
		t.Fatalf("read-only AppendBatch: %v", err)
	}
	if _, err := ro.SubmitBatch(ctx, items); !errors.Is(err, core.ErrReadOnly) {
		t.Fatalf("read-only SubmitBatch: %v", err)
	}
	ob := ro.Outbox()
	if err := ob.Stage(c, kindA, []byte(`3`)); err != nil {
		t.Fatal(err)
	}
	if _, err := ob.Flush(ctx); !errors.Is(err, core.ErrReadOnly) || ob.Len() != 1 {
		t.Fatalf("read-only outbox Flush: %v, %d staged", err, ob.Len())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendBatch(ctx, items); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("AppendBatch after Close: %v", err)
	}
	if _, err := s.TrySubmitBatch(ctx, items); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("TrySubmitBatch after Close: %v", err)
	}
}

// A refused batch draws no ids: the ids' clock (which runs ahead of the
// wall clock by one 1/4096 ms step per id made faster than that) cannot be
// pushed into the future by batches that are refused, however many. And
// an item that causes its prior item's effect still names that item's
// final id.
func TestRefusedBatchesDrawNoIDs(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.Batch.MaxSize = 4096 })
	ctx := context.Background()
	c := mustCoord(t, "ids:refused", "s")
	items := make([]core.BatchItem, 4096)
	for i := range items {
		items[i] = core.BatchItem{Coordinate: c, Kind: kindA, Payload: []byte(`{}`)}
	}
	items[0].Payload = []byte(`{`) // refused at the first item
	for range 600 {                // 2.5M ids if each refusal drew its batch's: about 600 ms ahead
		if _, err := s.AppendBatch(ctx, items); err == nil {
			t.Fatal("a batch with invalid JSON was accepted")
		}
	}
	id := core.NewEventID()
	ahead := time.Duration(int64(binary.BigEndian.Uint64(id[:8])>>16)-time.Now().UnixMilli()) * time.Millisecond
	if ahead > 50*time.Millisecond {
		t.Fatalf("after 600 refused batches the next id is %v ahead of the wall clock", ahead)
	}

	// A batch that passes: an item caused by its prior item names the
	// prior item's id, and shares its correlation.
	ok := []core.BatchItem{
		{Coordinate: c, Kind: kindA, Payload: []byte(`{}`)},
		{Coordinate: c, Kind: kindA, Payload: []byte(`{}`), Causation: core.PriorItem(0)},
	}
	rs, err := s.AppendBatch(ctx, ok)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := s.Get(rs[1].ID)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Header.CausationID != rs[0].ID || ev.Header.CorrelationID != rs[0].ID || rs[1].CorrelationID != rs[0].ID {
		t.Fatalf("item 1: causation %s correlation %s, want item 0's id %s", ev.Header.CausationID, ev.Header.CorrelationID, rs[0].ID)
	}
}
