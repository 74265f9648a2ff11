package core_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
)

// Injected failures in the batch write path (core.SetBatchFault). Whatever
// the point — before anything is written, after the begin record, after
// any item, after the commit record but before the fsync, after the fsync
// but before publication — a failed batch must leave no trace: nothing
// visible now, nothing after reopen, no extra segment, and the store keeps
// writing with no gap in sequences or clocks.

var errInjected = errors.New("injected fault")

// storeView is what a failed batch must leave unchanged.
type storeView struct {
	stats  core.Stats // without Fsyncs, IndexBytes and GroupCommits
	segs   []string   // segment file names
	events []core.StoredEvent
}

func viewOf(t testing.TB, s *core.Store) storeView {
	t.Helper()
	st := s.Stats()
	st.Fsyncs, st.IndexBytes, st.GroupCommits, st.SyncTime = 0, 0, 0, 0
	var names []string
	for _, p := range segmentFiles(t, s.Dir()) {
		names = append(names, filepath.Base(p))
	}
	return storeView{stats: st, segs: names, events: mustQuery(t, s, core.All())}
}

func (a storeView) mustEqual(t testing.TB, b storeView, what string) {
	t.Helper()
	if a.stats != b.stats {
		t.Fatalf("%s: Stats differ:\n %+v\n %+v", what, a.stats, b.stats)
	}
	if !reflect.DeepEqual(a.segs, b.segs) {
		t.Fatalf("%s: segment files differ:\n %v\n %v", what, a.segs, b.segs)
	}
	sameEvents(t, what, a.events, b.events)
}

type faultCase struct {
	name  string
	point core.FaultPoint
	item  int // for FaultAfterItem
}

func faultCases(items int) []faultCase {
	cs := []faultCase{
		{"batch start", core.FaultBatchStart, -1},
		{"after begin record", core.FaultAfterBegin, -1},
	}
	for _, k := range []int{0, 1, items / 2, items - 2, items - 1} {
		cs = append(cs, faultCase{fmt.Sprintf("after item %d", k), core.FaultAfterItem, k})
	}
	return append(cs,
		faultCase{"after all items", core.FaultAfterItems, -1},
		faultCase{"after commit record", core.FaultAfterCommit, -1},
		faultCase{"before publish", core.FaultBeforePublish, -1},
	)
}

// faultItems is the batch the fault tests write: items alternate between
// an entity with history and a new one, chained by causation, some with
// idempotency keys. pad sets the payload size.
func faultItems(t *testing.T, n, pad int) []core.BatchItem {
	old, fresh := mustCoord(t, "fault:old", "s"), mustCoord(t, "fault:new", "s")
	items := make([]core.BatchItem, n)
	for i := range items {
		c := old
		if i%2 == 1 {
			c = fresh
		}
		items[i] = core.BatchItem{Coordinate: c, Kind: kindB,
			Payload: []byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("f", pad)))}
		if i > 0 {
			items[i].Causation = core.PriorItem(i - 1)
		}
		if i%3 == 0 {
			items[i].Options.IdempotencyKey = fmt.Sprintf("fault-key-%d", i)
		}
	}
	return items
}

func TestBatchFaults(t *testing.T) {
	layouts := []struct {
		name      string
		items     int
		pad       int
		everyN    int
		reopenNow bool // close and reopen right after the fault, before writing on
	}{
		{"small batch", 6, 10, 1000, false},
		{"small batch synced", 6, 10, 1, true},
		// 40 items of ~4 KiB: the batch crosses into a new 64 KiB segment
		// (and a third) before its commit record.
		{"batch across segments", 40, 4000, 1000, false},
		{"batch across segments synced", 40, 4000, 1, true},
		// EveryNEvents = 2: the group's fsync runs in the background while
		// the fault before publication rolls the batch back.
		{"batch across segments background sync", 40, 4000, 2, false},
	}
	for _, l := range layouts {
		for _, fc := range faultCases(l.items) {
			t.Run(l.name+"/"+fc.name, func(t *testing.T) {
				testBatchFault(t, fc, l.items, l.pad, l.everyN, l.reopenNow)
			})
		}
	}
}

func testBatchFault(t *testing.T, fc faultCase, n, pad, everyN int, reopenNow bool) {
	ctx := context.Background()
	s := openStore(t, func(c *core.Config) {
		c.SegmentMaxBytes = 64 << 10
		c.Sync.EveryNEvents = everyN
	})
	old, other := mustCoord(t, "fault:old", "s"), mustCoord(t, "fault:other", "s")
	mustAppend(t, s, old, kindA, `{"pre":0}`)
	mustAppend(t, s, other, kindA, `{"pre":1}`)
	mustAppend(t, s, old, kindA, `{"pre":2}`)
	before := viewOf(t, s)
	if before.stats.Segments != 1 {
		t.Fatalf("fixture: %d segments", before.stats.Segments)
	}

	calls, segsAtFault := 0, 0
	core.SetBatchFault(s, func(p core.FaultPoint, item int) error {
		calls++
		if p == fc.point && (p != core.FaultAfterItem || item == fc.item) {
			segsAtFault = len(segmentFiles(t, s.Dir()))
			return errInjected
		}
		return nil
	})
	items := faultItems(t, n, pad)
	rs, err := s.AppendBatch(ctx, items)
	if !errors.Is(err, errInjected) || rs != nil {
		t.Fatalf("AppendBatch with a fault %s: %v, %v", fc.name, rs, err)
	}
	if calls == 0 {
		t.Fatal("the fault hook was never called")
	}
	// A large batch has crossed into a second segment by its middle item
	// and into a third by its last.
	if n*pad > 128<<10 {
		want := 1
		switch {
		case fc.point > core.FaultAfterItem || fc.item == n-1:
			want = 3
		case fc.point == core.FaultAfterItem && fc.item >= n/2:
			want = 2
		}
		if segsAtFault < want {
			t.Fatalf("the batch spans %d segments at the fault, want %d", segsAtFault, want)
		}
	}
	core.SetBatchFault(s, nil)
	viewOf(t, s).mustEqual(t, before, "live, after the fault")
	if rep := mustVerify(t, s); rep.Events != 3 || rep.Hidden != 0 {
		t.Fatalf("Verify after the fault: %+v", rep)
	}
	for _, e := range []string{"fault:new", "fault:old"} {
		if got := mustQuery(t, s, core.Entity(e).WithKind(kindB)); len(got) != 0 {
			t.Fatalf("%d items of the failed batch visible in %s", len(got), e)
		}
	}
	// What is on disk now is what a reopen would see.
	ro, err := core.OpenReadOnly(s.Config())
	if err != nil {
		t.Fatal(err)
	}
	viewOf(t, ro).mustEqual(t, before, "read-only open after the fault")
	ro.Close()
	if reopenNow {
		s = reopen(t, s)
		viewOf(t, s).mustEqual(t, before, "reopened after the fault")
	}

	// The store writes on: no gap in sequences or clocks, and the batch's
	// idempotency keys were not kept.
	r := mustAppend(t, s, old, kindA, `{"post":0}`)
	if r.GlobalSequence != 3 || r.Clock != 2 {
		t.Fatalf("append after the fault: seq %d clock %d, want 3 and 2", r.GlobalSequence, r.Clock)
	}
	rs, err = s.AppendBatch(ctx, items)
	if err != nil {
		t.Fatalf("the same batch without the fault: %v", err)
	}
	oldClock, newClock := uint64(3), uint64(0)
	for i, rc := range rs {
		if rc.Deduplicated || rc.GlobalSequence != uint64(4+i) {
			t.Fatalf("retry item %d: %+v", i, rc)
		}
		want := &oldClock
		if i%2 == 1 {
			want = &newClock
		}
		if rc.Clock != *want {
			t.Fatalf("retry item %d: clock %d, want %d", i, rc.Clock, *want)
		}
		*want++
	}
	r = mustAppend(t, s, other, kindA, `{"post":1}`)
	if r.GlobalSequence != uint64(4+n) || r.Clock != 1 {
		t.Fatalf("append after the batch: seq %d clock %d", r.GlobalSequence, r.Clock)
	}
	live := viewOf(t, s)
	if len(live.events) != 5+n {
		t.Fatalf("%d events, want %d", len(live.events), 5+n)
	}
	for i, e := range live.events {
		if e.GlobalSequence != uint64(i) {
			t.Fatalf("event %d has sequence %d", i, e.GlobalSequence)
		}
	}
	rep := mustVerify(t, s)
	s = reopen(t, s)
	viewOf(t, s).mustEqual(t, live, "reopened")
	if rep2 := mustVerify(t, s); rep2 != rep || rep.Events != 5+n || rep.Hidden != 0 {
		t.Fatalf("Verify: %+v live, %+v after reopen", rep, rep2)
	}
}

// Single appends queued just before a batch share its group; a fault that
// rolls the batch back keeps them.
func TestBatchFaultKeepsSinglesOfItsGroup(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	c := mustCoord(t, "group", "s")
	core.SetBatchFault(s, func(p core.FaultPoint, _ int) error {
		if p == core.FaultAfterCommit {
			return errInjected
		}
		return nil
	})
	var tickets []*core.Ticket
	for i := 0; i < 20; i++ {
		tk, err := s.Submit(ctx, c, kindA, []byte(payloadN(i)))
		if err != nil {
			t.Fatal(err)
		}
		tickets = append(tickets, tk)
	}
	bt, err := s.SubmitBatch(ctx, faultItems(t, 5, 10))
	if err != nil {
		t.Fatal(err)
	}
	for i, tk := range tickets {
		if r, err := tk.Wait(ctx); err != nil || r.GlobalSequence != uint64(i) {
			t.Fatalf("single %d: %+v, %v", i, r, err)
		}
	}
	if _, err := bt.Wait(ctx); !errors.Is(err, errInjected) {
		t.Fatalf("batch: %v", err)
	}
	core.SetBatchFault(s, nil)
	check := func(s *core.Store, when string, n int) {
		t.Helper()
		evs := mustQuery(t, s, core.All())
		if len(evs) != n {
			t.Fatalf("%s: %d events, want %d", when, len(evs), n)
		}
		if r := mustAppend(t, s, c, kindA, `{}`); r.Clock != uint64(n) || r.GlobalSequence != uint64(n) {
			t.Fatalf("%s: next append %+v", when, r)
		}
	}
	check(s, "live", 20)
	check(reopen(t, s), "reopened", 21)
}

// A batch that starts a new segment with its very first record — the
// begin record, or its first item — leaves no segment behind when it
// fails there.
func TestBatchFaultAtSegmentStart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		room  int // bytes left in the first segment before the batch
		point core.FaultPoint
	}{
		{"begin record rotates", 10, core.FaultAfterBegin},
		{"first item rotates", 30, core.FaultAfterItem},
		{"first item rotates, fault before publish", 30, core.FaultBeforePublish},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const segMax = 64 << 10
			s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = segMax })
			c := mustCoord(t, "fill", "s")
			mustAppend(t, s, c, kindA, `{}`)
			// One event that leaves exactly tc.room bytes in the segment.
			frame := segMax - tc.room - int(s.Stats().Bytes)
			mustAppend(t, s, c, kindA, jsonString(frame-format.FrameHeaderSize-format.EventFixedSize-len("fill")-len("s")))
			if st := s.Stats(); st.Bytes != segMax-int64(tc.room) || st.Segments != 1 {
				t.Fatalf("fixture: %+v", st)
			}
			before := viewOf(t, s)
			segsAtFault := 0
			core.SetBatchFault(s, func(p core.FaultPoint, _ int) error {
				if p == tc.point {
					segsAtFault = len(segmentFiles(t, s.Dir()))
					return errInjected
				}
				return nil
			})
			items := []core.BatchItem{bi(c, `"a"`), bi(c, `"b"`)}
			if _, err := s.AppendBatch(context.Background(), items); !errors.Is(err, errInjected) {
				t.Fatalf("got %v", err)
			}
			if segsAtFault != 2 {
				t.Fatalf("%d segments at the fault, want 2", segsAtFault)
			}
			core.SetBatchFault(s, nil)
			viewOf(t, s).mustEqual(t, before, "after the fault")
			rs := mustBatch(t, s, items)
			if rs[0].GlobalSequence != 2 || rs[0].Clock != 2 {
				t.Fatalf("batch after the fault: %+v", rs)
			}
			if st := s.Stats(); st.Segments != 2 {
				t.Fatalf("after the batch: %+v", st)
			}
			s = reopen(t, s)
			if got := payloads(mustQuery(t, s, core.All())); len(got) != 4 || got[2] != `"a"` || got[3] != `"b"` {
				t.Fatalf("reopened: %d events", len(got))
			}
			mustVerify(t, s)
		})
	}
}

// A batch written under a fence that fails is rolled back like any other:
// the fence's other writes commit (or stay hidden) around it.
func TestBatchFaultUnderFence(t *testing.T) {
	ctx := context.Background()
	for _, fc := range []faultCase{
		{"after item 30", core.FaultAfterItem, 30},
		{"after commit record", core.FaultAfterCommit, -1},
		{"before publish", core.FaultBeforePublish, -1},
	} {
		for _, commit := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s, fence commits %v", fc.name, commit), func(t *testing.T) {
				s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
				c := mustCoord(t, "fault:old", "s")
				mustAppend(t, s, c, kindA, `{"pre":0}`)
				f := mustBeginFence(t, s)
				t1, err := f.Submit(ctx, c, kindA, []byte(`{"fenced":1}`))
				if err != nil {
					t.Fatal(err)
				}
				core.SetBatchFault(s, func(p core.FaultPoint, item int) error {
					if p == fc.point && (p != core.FaultAfterItem || item == fc.item) {
						return errInjected
					}
					return nil
				})
				bt, err := f.SubmitBatch(ctx, faultItems(t, 40, 4000)) // crosses two segment boundaries
				if err != nil {
					t.Fatal(err)
				}
				// A failed fenced batch is answered at once: there is nothing
				// to wait for.
				if _, err := bt.Wait(ctx); !errors.Is(err, errInjected) {
					t.Fatalf("fenced batch: %v", err)
				}
				core.SetBatchFault(s, nil)
				t2, err := f.Submit(ctx, c, kindA, []byte(`{"fenced":2}`))
				if err != nil {
					t.Fatal(err)
				}
				if st := s.Stats(); st.Segments != 1 || st.Events != 1 {
					t.Fatalf("after the fault: %+v", st)
				}
				end := f.Commit
				if !commit {
					end = f.Cancel
				}
				if err := end(ctx); err != nil {
					t.Fatal(err)
				}
				r1, err1 := t1.Wait(ctx)
				r2, err2 := t2.Wait(ctx)
				check := func(s *core.Store, when string) {
					t.Helper()
					if commit {
						if err1 != nil || err2 != nil || r1.Clock != 1 || r2.Clock != 2 || r2.GlobalSequence != 2 {
							t.Fatalf("%s: fenced writes %+v %v, %+v %v", when, r1, err1, r2, err2)
						}
						if got := payloads(mustQuery(t, s, core.All())); len(got) != 3 || got[2] != `{"fenced":2}` {
							t.Fatalf("%s: %v", when, got)
						}
					} else if !errors.Is(err1, core.ErrFenceCancelled) || !errors.Is(err2, core.ErrFenceCancelled) {
						t.Fatalf("%s: cancelled fenced writes: %v, %v", when, err1, err2)
					}
					hidden := 0
					if !commit {
						hidden = 2
					}
					if rep := mustVerify(t, s); rep.Events != 3 || rep.Hidden != hidden {
						t.Fatalf("%s: Verify %+v", when, rep)
					}
				}
				check(s, "live")
				s = reopen(t, s)
				check(s, "reopened")
				if r := mustAppend(t, s, c, kindA, `{"post":0}`); r.Clock != 3 || r.GlobalSequence != 3 {
					t.Fatalf("append after: %+v", r)
				}
				mustVerify(t, s)
			})
		}
	}
}

// A group rolled back after its background sync started gives its
// sequences back; the store must then not count them as on stable storage
// when they are reused by later writes that no sync has covered yet, or
// Cursor.Commit would skip the sync it needs.
func TestGroupRollbackLeavesNothingCountedDurable(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, func(c *core.Config) { c.Sync.EveryNEvents = 2; c.Sync.Interval = 0 })
	c := mustCoord(t, "e", "s")
	boom := errors.New("boom")
	fired := false
	core.SetBatchFault(s, func(p core.FaultPoint, _ int) error {
		if p == core.FaultBeforePublish && !fired {
			fired = true
			return boom
		}
		return nil
	})
	items := []core.BatchItem{
		{Coordinate: c, Kind: kindA, Payload: []byte(`1`)},
		{Coordinate: c, Kind: kindA, Payload: []byte(`2`)},
		{Coordinate: c, Kind: kindA, Payload: []byte(`3`)},
	}
	if _, err := s.AppendBatch(ctx, items); !errors.Is(err, boom) {
		t.Fatalf("batch: %v, want the injected fault", err)
	}
	if _, err := s.Append(ctx, c, kindA, []byte(`4`)); err != nil {
		t.Fatal(err)
	}
	if d, n := core.DurableSequence(s), s.Stats().GlobalSequence; d >= n {
		t.Fatalf("durable through sequence %d of %d, but the last event was never synced", d, n)
	}
}
