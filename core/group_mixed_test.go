package core_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// Mixed group commits where the writes of one group depend on each other:
// idempotency keys and compare-and-set expectations shared between singles
// and batches of the same group, with batches of the group failing. A
// write decided against an earlier write of its group sees that write
// exactly when it is kept: never a batch that was cut out of the group.

// checkSaneLog checks what every group promises whatever its writes: the
// log is gapless, entity clocks are consecutive, Verify passes, and a
// reopen reads the same events. It returns the reopened store.
func checkSaneLog(t *testing.T, s *core.Store) *core.Store {
	t.Helper()
	check := func(s *core.Store, when string) []core.StoredEvent {
		all := mustQuery(t, s, core.All())
		clocks := map[string]uint64{}
		for i, e := range all {
			if e.GlobalSequence != uint64(i) {
				t.Fatalf("%s: event %d has sequence %d", when, i, e.GlobalSequence)
			}
			if e.Header.Clock != clocks[e.Coordinate.Entity] {
				t.Fatalf("%s: %s clock %d, want %d", when, e.Coordinate.Entity, e.Header.Clock, clocks[e.Coordinate.Entity])
			}
			clocks[e.Coordinate.Entity]++
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

// keyed is a one-item write of payload p to entity e with key k.
func keyed(t *testing.T, e, k, p string) core.BatchItem {
	return core.BatchItem{Coordinate: mustCoord(t, e, "s"), Kind: kindA, Payload: []byte(p),
		Options: core.AppendOptions{IdempotencyKey: k}}
}

// Idempotency keys shared between the singles and batches of one group:
// a write repeating a key written earlier in the group gets that write's
// receipt; a key of a batch that failed in the group was never written, so
// a later write with it is new; a batch mixing a key of the group with a
// new one is refused.
func TestGroupIdempotencyAcrossSinglesAndBatches(t *testing.T) {
	for _, everyN := range []int{1, 1000} {
		t.Run(fmt.Sprintf("sync every %d", everyN), func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, func(c *core.Config) { c.Sync.EveryNEvents = everyN })
			mustAppend(t, s, mustCoord(t, "idg:x", "s"), kindA, `{"pre":0}`) // idg:x at clock 0
			conflict := keyed(t, "idg:x", "", `{"cas":1}`)
			conflict.Options.ExpectedClock = core.ExpectClock(7)
			ws := []*groupWrite{
				// 0: a single with key s0
				{items: []core.BatchItem{keyed(t, "idg:a", "s0", `{"w":0}`)}, single: true},
				// 1: a retry of the single, as a batch: the single's receipt
				{items: []core.BatchItem{keyed(t, "idg:a", "s0", `{"w":0}`)}},
				// 2: keys b2a, b2b, then a compare-and-set miss: fails
				{items: []core.BatchItem{keyed(t, "idg:b", "b2a", `{"w":2}`), keyed(t, "idg:b", "b2b", `{"w":2.1}`), conflict}},
				// 3: b2a again: the failed batch never wrote it, so this is new
				{items: []core.BatchItem{keyed(t, "idg:b", "b2a", `{"w":2}`)}, single: true},
				// 4: a group key (s0) beside a new one (b4a): refused as mixed
				{items: []core.BatchItem{keyed(t, "idg:c", "b4a", `{"w":4}`), keyed(t, "idg:a", "s0", `{"w":0}`)}},
				// 5: b4a: never written, so new
				{items: []core.BatchItem{keyed(t, "idg:c", "b4a", `{"w":4}`)}, single: true},
				// 6: a batch with keys b6a, b6b
				{items: []core.BatchItem{keyed(t, "idg:d", "b6a", `{"w":6}`), keyed(t, "idg:d", "b6b", `{"w":6.1}`)}},
				// 7: b6b as a single: item 1 of batch 6
				{items: []core.BatchItem{keyed(t, "idg:d", "b6b", `{"w":6.1}`)}, single: true},
				// 8: batch 6 again: its receipts
				{items: []core.BatchItem{keyed(t, "idg:d", "b6a", `{"w":6}`), keyed(t, "idg:d", "b6b", `{"w":6.1}`)}},
				// 9: b2b as a batch: new (batch 2 failed)
				{items: []core.BatchItem{keyed(t, "idg:b", "b2b", `{"w":2.1}`)}},
			}
			submitAsOneGroup(t, s, ws, nil)
			res := make([][]core.Receipt, len(ws))
			errs := make([]error, len(ws))
			for i, w := range ws {
				res[i], errs[i] = w.wait(ctx)
			}
			for i, err := range errs {
				switch i {
				case 2:
					var ce *core.ConflictError
					if !errors.As(err, &ce) {
						t.Fatalf("write 2: %v, want a conflict", err)
					}
				case 4:
					if !errors.Is(err, core.ErrBatchMixedKeys) {
						t.Fatalf("write 4: %v, want ErrBatchMixedKeys", err)
					}
				default:
					if err != nil {
						t.Fatalf("write %d: %v", i, err)
					}
				}
			}
			same := func(a, b core.Receipt, what string) {
				t.Helper()
				if !a.Deduplicated || a.ID != b.ID || a.GlobalSequence != b.GlobalSequence || a.Clock != b.Clock {
					t.Fatalf("%s: %+v, want the receipt of %+v", what, a, b)
				}
			}
			fresh := func(r core.Receipt, what string) {
				t.Helper()
				if r.Deduplicated {
					t.Fatalf("%s was answered as a duplicate: %+v", what, r)
				}
				if _, err := s.Get(r.ID); err != nil {
					t.Fatalf("%s: %+v not stored: %v", what, r, err)
				}
			}
			fresh(res[0][0], "the single with key s0")
			same(res[1][0], res[0][0], "the batch retrying s0")
			fresh(res[3][0], "the single with b2a after batch 2 failed")
			fresh(res[5][0], "the single with b4a after batch 4 was refused")
			fresh(res[6][0], "batch 6 item 0")
			fresh(res[6][1], "batch 6 item 1")
			same(res[7][0], res[6][1], "the single retrying b6b")
			same(res[8][0], res[6][0], "batch 6 retried, item 0")
			same(res[8][1], res[6][1], "batch 6 retried, item 1")
			fresh(res[9][0], "the batch with b2b after batch 2 failed")
			// Six new events after the one before the group, at 1..6.
			if st := s.Stats(); st.Events != 7 {
				t.Fatalf("%d events, want 7", st.Events)
			}
			s = checkSaneLog(t, s)
			// After a reopen every key names the event written for it.
			for _, c := range []struct {
				it   core.BatchItem
				want core.Receipt
			}{
				{keyed(t, "idg:a", "s0", `{"w":0}`), res[0][0]},
				{keyed(t, "idg:b", "b2a", `{"w":2}`), res[3][0]},
				{keyed(t, "idg:b", "b2b", `{"w":2.1}`), res[9][0]},
				{keyed(t, "idg:c", "b4a", `{"w":4}`), res[5][0]},
				{keyed(t, "idg:d", "b6b", `{"w":6.1}`), res[6][1]},
			} {
				r := mustAppendOpts(t, s, c.it.Coordinate, c.it.Kind, string(c.it.Payload), c.it.Options)
				same(r, c.want, "retry of key "+c.it.Options.IdempotencyKey+" after reopen")
			}
		})
	}
}

// Compare-and-set expectations decided against the writes before them in
// the group: a batch that fails in the middle of the group restores the
// entity clocks it moved, so a later write expecting the clock the failed
// batch would have left conflicts, and one expecting the clock from before
// the batch succeeds.
func TestGroupExpectationsAfterAFailedBatch(t *testing.T) {
	for _, pad := range []int{10, 3000} {
		t.Run(fmt.Sprintf("pad %d", pad), func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
			x := mustCoord(t, "casg:x", "s")
			y := mustCoord(t, "casg:y", "s")
			item := func(c core.Coordinate, exp core.Expectation, tag int) core.BatchItem {
				return core.BatchItem{Coordinate: c, Kind: kindA, Payload: taggedPayload(tag, 0, 1, pad),
					Options: core.AppendOptions{ExpectedClock: exp}}
			}
			// A batch moving x from clock 0 through 20 items, then failing on y.
			doomed := []core.BatchItem{item(x, core.ExpectClock(0), 100)}
			for i := 1; i < 20; i++ {
				doomed = append(doomed, core.BatchItem{Coordinate: x, Kind: kindA, Payload: taggedPayload(100, i, 21, pad)})
			}
			doomed = append(doomed, item(y, core.ExpectClock(5), 100))
			ws := []*groupWrite{
				{items: []core.BatchItem{item(x, core.ExpectNoEvents(), 0)}, single: true}, // x at 0
				{items: doomed}, // fails at its last item
				{items: []core.BatchItem{item(x, core.ExpectClock(20), 2)}, single: true}, // as if the batch stayed: conflict
				{items: []core.BatchItem{item(y, core.ExpectClock(0), 3)}, single: true},  // y has no events: conflict
				{items: []core.BatchItem{item(y, core.ExpectNoEvents(), 4)}},              // y at 0
				{items: []core.BatchItem{item(x, core.ExpectClock(0), 5)}, single: true},  // x at 1
				{items: []core.BatchItem{item(x, core.ExpectClock(1), 6), item(y, core.ExpectClock(0), 6)}},
			}
			submitAsOneGroup(t, s, ws, nil)
			want := []struct {
				fail  bool
				clock uint64
			}{{false, 0}, {true, 0}, {true, 0}, {true, 0}, {false, 0}, {false, 1}, {false, 2}}
			for i, w := range ws {
				rs, err := w.wait(ctx)
				if want[i].fail {
					var ce *core.ConflictError
					if !errors.As(err, &ce) {
						t.Fatalf("write %d: %v, want a conflict", i, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
				if rs[0].Clock != want[i].clock {
					t.Fatalf("write %d at clock %d, want %d", i, rs[0].Clock, want[i].clock)
				}
			}
			if st := s.Stats(); st.Events != 5 {
				t.Fatalf("%d events, want 5", st.Events)
			}
			s = checkSaneLog(t, s)
			r := mustAppendOpts(t, s, x, kindA, `{}`, core.AppendOptions{ExpectedClock: core.ExpectClock(2)})
			if r.GlobalSequence != 5 || r.Clock != 3 {
				t.Fatalf("append after the group: %+v", r)
			}
		})
	}
}
