package core_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// Group commits that mix single appends and atomic batches: every write
// queued while the writer is busy shares one write call and one fsync, and
// each batch stays all-or-nothing on its own — a batch that fails leaves no
// hole and no trace, and the writes around it in the group succeed.

// groupWrite is one write queued into a held group: a batch, or a single
// append when items has one element and single is set.
type groupWrite struct {
	items  []core.BatchItem
	single bool
	bt     *core.BatchTicket
	t      *core.Ticket
}

// submit queues the write without waiting.
func (g *groupWrite) submit(t *testing.T, s *core.Store) {
	t.Helper()
	var err error
	if it := g.items[0]; g.single {
		g.t, err = s.SubmitWithOptions(context.Background(), it.Coordinate, it.Kind, it.Payload, it.Options)
	} else {
		g.bt, err = s.SubmitBatch(context.Background(), g.items)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// wait returns the write's receipts or its error.
func (g *groupWrite) wait(ctx context.Context) ([]core.Receipt, error) {
	if g.single {
		r, err := g.t.Wait(ctx)
		if err != nil {
			return nil, err
		}
		return []core.Receipt{r}, nil
	}
	return g.bt.Wait(ctx)
}

// submitAsOneGroup queues writes while the writer is held inside an
// earlier batch, so that it finds all of them queued and gathers them into
// one group. hook, if not nil, is the batch fault hook while the group is
// written; it sees only the group's batches (the holding batch is not
// passed to it). It returns the Stats before and after the group.
func submitAsOneGroup(t *testing.T, s *core.Store, writes []*groupWrite, hook func(p core.FaultPoint, item int) error) (before, after core.Stats) {
	t.Helper()
	ctx := context.Background()
	release := holdWriter(t, s, hook)
	before = s.Stats()
	for _, w := range writes {
		w.submit(t, s)
	}
	release()
	for _, w := range writes {
		_, _ = w.wait(ctx)
	}
	after = s.Stats()
	core.SetBatchFault(s, nil)
	return before, after
}

// groupItems is a batch of n items tagged b over a few entities, chained by
// causation.
func groupItems(t *testing.T, b, n, pad int) []core.BatchItem {
	items := make([]core.BatchItem, n)
	for i := range items {
		items[i] = core.BatchItem{Coordinate: mustCoord(t, fmt.Sprintf("group:%d", (b+i)%3), "s"), Kind: kindB,
			Payload: taggedPayload(b, i, n, pad)}
		if i > 0 {
			items[i].Causation = core.PriorItem(i - 1)
		}
	}
	return items
}

// mixedGroup is singles and batches alternating: 2·batches+1 writes.
func mixedGroup(t *testing.T, batches, n, pad int) []*groupWrite {
	var ws []*groupWrite
	b := 0
	for k := 0; k < batches; k++ {
		ws = append(ws, &groupWrite{items: groupItems(t, b, 1, pad), single: true})
		ws = append(ws, &groupWrite{items: groupItems(t, b+1, n, pad)})
		b += 2
	}
	return append(ws, &groupWrite{items: groupItems(t, b, 1, pad), single: true})
}

// checkGroupLog checks what every test here promises: the log is gapless
// (sequence i at position i), each tagged write is whole, at consecutive
// sequences, and present exactly when it succeeded; entity clocks are
// consecutive; Verify passes — live and after a reopen, with the same
// events.
func checkGroupLog(t *testing.T, s *core.Store, writes []*groupWrite) *core.Store {
	t.Helper()
	ctx := context.Background()
	check := func(s *core.Store, when string) []core.StoredEvent {
		all := mustQuery(t, s, core.All())
		for i, e := range all {
			if e.GlobalSequence != uint64(i) {
				t.Fatalf("%s: event %d has sequence %d", when, i, e.GlobalSequence)
			}
		}
		clocks := map[string]uint64{}
		for _, e := range all {
			if e.Header.Clock != clocks[e.Coordinate.Entity] {
				t.Fatalf("%s: %s clock %d, want %d", when, e.Coordinate.Entity, e.Header.Clock, clocks[e.Coordinate.Entity])
			}
			clocks[e.Coordinate.Entity]++
		}
		tagged := map[int][]core.StoredEvent{}
		for _, e := range mustQuery(t, s, core.All().WithKind(kindB)) {
			tagged[tagOf(t, e).B] = append(tagged[tagOf(t, e).B], e)
		}
		for _, w := range writes {
			b := tagOf(t, core.StoredEvent{Payload: w.items[0].Payload}).B
			rs, err := w.wait(ctx)
			got := tagged[b]
			if err != nil {
				if len(got) != 0 {
					t.Fatalf("%s: write %d failed (%v) but %d of its events are stored", when, b, err, len(got))
				}
				continue
			}
			if len(got) != len(w.items) {
				t.Fatalf("%s: write %d succeeded with %d events, %d stored", when, b, len(w.items), len(got))
			}
			for i, e := range got {
				if e.Header.ID != rs[i].ID || e.GlobalSequence != rs[0].GlobalSequence+uint64(i) || tagOf(t, e).I != i {
					t.Fatalf("%s: write %d item %d read back as %s at %d", when, b, i, e.Header.ID, e.GlobalSequence)
				}
			}
		}
		if rep := mustVerify(t, s); rep.Events != len(all) || rep.Hidden != 0 {
			t.Fatalf("%s: Verify %+v with %d events", when, rep, len(all))
		}
		return all
	}
	live := check(s, "live")
	s = reopen(t, s)
	sameEvents(t, "reopened", live, check(s, "reopened"))
	return s
}

// Eight batches of 100 and nine singles queued together are written with
// one write call and synced with one fsync.
func TestGroupSharesOneSyncAcrossBatches(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.Sync.EveryNEvents = 1 })
	ws := mixedGroup(t, 8, 100, 20)
	before, after := submitAsOneGroup(t, s, ws, nil)
	for i, w := range ws {
		if _, err := w.wait(context.Background()); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	// One group: one data fsync, and at most one more that zero-fills the
	// segment ahead of the group's 100 KB.
	if n := after.GroupCommits - before.GroupCommits; n != 1 {
		t.Fatalf("the %d writes (%d events) took %d group commits, want 1", len(ws), after.Events-before.Events, n)
	}
	if n := after.Fsyncs - before.Fsyncs; n < 1 || n > 2 {
		t.Fatalf("the group of %d writes (%d events) took %d fsyncs, want 1 (and 1 to zero-fill ahead)", len(ws), after.Events-before.Events, n)
	}
	if got := after.Events - before.Events; got != 8*100+9 {
		t.Fatalf("%d events written, want %d", got, 8*100+9)
	}
	checkGroupLog(t, s, ws)
}

// A batch in the middle of a group fails — a compare-and-set miss, a mixed
// idempotent retry, an injected fault at any point before the fsync, with
// and without a segment rotation inside the batch — and only it fails: the
// singles and batches queued before and after it in the same group are
// written, with no hole where it was.
func TestGroupFailedBatchFailsOnlyItself(t *testing.T) {
	type failure struct {
		name string
		// spoil makes the batch at index k of ws fail without a hook.
		spoil func(t *testing.T, s *core.Store, ws []*groupWrite, k int) error
		// point and item: an injected fault in the group's second batch.
		point core.FaultPoint
		item  int
	}
	cases := []failure{
		{name: "expectation", spoil: func(t *testing.T, s *core.Store, ws []*groupWrite, k int) error {
			ws[k].items[3].Options.ExpectedClock = core.ExpectClock(999)
			return &core.ConflictError{}
		}},
		{name: "mixed idempotent retry", spoil: func(t *testing.T, s *core.Store, ws []*groupWrite, k int) error {
			ws[k].items[0].Options.IdempotencyKey = "group-stored-key"
			mustAppendOpts(t, s, ws[k].items[0].Coordinate, kindA, `{"stored":true}`,
				core.AppendOptions{IdempotencyKey: "group-stored-key"})
			return core.ErrBatchMixedKeys
		}},
		{name: "fault at batch start", point: core.FaultBatchStart, item: -1},
		{name: "fault after begin", point: core.FaultAfterBegin, item: -1},
		{name: "fault after item 0", point: core.FaultAfterItem, item: 0},
		{name: "fault after last item", point: core.FaultAfterItem, item: 49},
		{name: "fault after items", point: core.FaultAfterItems, item: -1},
		{name: "fault after commit record", point: core.FaultAfterCommit, item: -1},
	}
	for _, fc := range cases {
		for _, layout := range []struct {
			big    bool
			everyN int
		}{{false, 1}, {true, 1}, {false, 1000}, {true, 1000}} {
			name := fmt.Sprintf("%s, sync every %d", fc.name, layout.everyN)
			pad := 20
			if layout.big {
				name += ", batch crosses segments"
				pad = 3000 // 50 items of ~3 KB: a 64 KiB segment rotates twice inside the batch
			}
			t.Run(name, func(t *testing.T) {
				s := openStore(t, func(c *core.Config) {
					c.SegmentMaxBytes = 64 << 10
					c.Sync.EveryNEvents = layout.everyN
				})
				mustAppend(t, s, mustCoord(t, "group:0", "s"), kindA, `{"pre":0}`) // the spoiled batch's entity has a clock
				ws := mixedGroup(t, 3, 50, pad)
				const k = 3 // the second batch
				var want error = errInjected
				var hook func(core.FaultPoint, int) error
				if fc.spoil != nil {
					want = fc.spoil(t, s, ws, k)
				} else {
					batches := 0
					hook = func(p core.FaultPoint, item int) error {
						if p == core.FaultBatchStart {
							batches++
						}
						if batches == 2 && p == fc.point && (p != core.FaultAfterItem || item == fc.item) {
							return errInjected
						}
						return nil
					}
				}
				submitAsOneGroup(t, s, ws, hook)
				for i, w := range ws {
					_, err := w.wait(context.Background())
					switch {
					case i != k && err != nil:
						t.Fatalf("write %d of the group failed with the batch: %v", i, err)
					case i == k && err == nil:
						t.Fatalf("the spoiled batch was written")
					case i == k && !errorLike(err, want):
						t.Fatalf("the spoiled batch failed with %v, want %v", err, want)
					}
				}
				s = checkGroupLog(t, s, ws)
				// The store writes on after the group.
				r := mustAppend(t, s, mustCoord(t, "group:after", "s"), kindA, `{}`)
				if st := s.Stats(); r.GlobalSequence != st.Events-1 {
					t.Fatalf("append after the group at %d with %d events", r.GlobalSequence, st.Events)
				}
			})
		}
	}
}

// errorLike matches err against want by errors.Is, or by type for a
// *core.ConflictError (wrapped in a *core.BatchItemError).
func errorLike(err, want error) bool {
	var ce *core.ConflictError
	if _, ok := want.(*core.ConflictError); ok {
		return errors.As(err, &ce)
	}
	return errors.Is(err, want)
}

// A fault after the group's fsync, before it is published, fails the whole
// group — the later writes of the group follow the batch on disk — and
// leaves nothing behind: the store reads and reopens as before the group
// and writes on with no gap.
func TestGroupFaultAfterSyncFailsTheGroup(t *testing.T) {
	for _, pad := range []int{20, 3000} {
		t.Run(fmt.Sprintf("pad %d", pad), func(t *testing.T) {
			s := openStore(t, func(c *core.Config) {
				c.SegmentMaxBytes = 64 << 10
				c.Sync.EveryNEvents = 1
			})
			mustAppend(t, s, mustCoord(t, "group:1", "s"), kindA, `{"pre":0}`)
			before := viewOf(t, s)
			ws := mixedGroup(t, 3, 50, pad)
			batches := 0
			submitAsOneGroup(t, s, ws, func(p core.FaultPoint, _ int) error {
				if p == core.FaultBeforePublish {
					if batches++; batches == 2 {
						return errInjected
					}
				}
				return nil
			})
			for i, w := range ws {
				if _, err := w.wait(context.Background()); !errors.Is(err, errInjected) {
					t.Fatalf("write %d: %v, want the injected fault", i, err)
				}
			}
			viewOf(t, s).mustEqual(t, before, "after the failed group")
			s = checkGroupLog(t, s, ws)
			viewOf(t, s).mustEqual(t, before, "reopened after the failed group")
			r := mustAppend(t, s, mustCoord(t, "group:1", "s"), kindA, `{"post":0}`)
			if r.GlobalSequence != 1 || r.Clock != 1 {
				t.Fatalf("append after the failed group: %+v", r)
			}
			if rep := mustVerify(t, s); rep.Events != 2 {
				t.Fatalf("Verify after the failed group: %+v", rep)
			}
		})
	}
}
