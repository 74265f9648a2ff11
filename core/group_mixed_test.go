package core_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// holdWriter stops the writer inside a batch of its own until release is
// called, so that everything submitted meanwhile is gathered into one
// group. hook, if not nil, is the batch fault hook for that group.
func holdWriter(t *testing.T, s *core.Store, hook func(p core.FaultPoint, item int) error) (release func()) {
	t.Helper()
	ctx := context.Background()
	entered, rel := make(chan struct{}), make(chan struct{})
	holding := true
	core.SetBatchFault(s, func(p core.FaultPoint, item int) error {
		if holding {
			holding = false
			close(entered)
			<-rel
			return errors.New("holding batch")
		}
		if hook != nil {
			return hook(p, item)
		}
		return nil
	})
	hold, err := s.SubmitBatch(ctx, []core.BatchItem{{Coordinate: mustCoord(t, "group:hold", "s"), Kind: kindA, Payload: []byte(`{}`)}})
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	return func() {
		close(rel)
		if _, err := hold.Wait(ctx); err == nil {
			t.Fatal("the holding batch was written")
		}
	}
}

// waitQueued waits until n requests are queued for the writer.
func waitQueued(t *testing.T, s *core.Store, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.WriterPressure().QueueLen < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", s.WriterPressure().QueueLen, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A Sync, a Snapshot or a Close queued behind a mixed group — singles,
// batches that cross segments, a batch that fails after a rotation — ends
// that group: it acts after every write queued before it, so the synced
// store, the snapshot and the reopened store hold exactly the writes that
// succeeded, each whole.
func TestGroupEndedByControlRequest(t *testing.T) {
	for _, ctl := range []string{"sync", "snapshot", "close"} {
		for _, everyN := range []int{1, 1000} {
			t.Run(fmt.Sprintf("%s, sync every %d", ctl, everyN), func(t *testing.T) {
				ctx := context.Background()
				s := openStore(t, func(c *core.Config) {
					c.SegmentMaxBytes = 64 << 10
					c.Sync.EveryNEvents = everyN
				})
				mustAppend(t, s, mustCoord(t, "group:0", "s"), kindA, `{"pre":0}`)
				ws := mixedGroup(t, 3, 30, 3000)
				ws[3].items[29].Options.ExpectedClock = core.ExpectClock(999) // the second batch fails at its end
				release := holdWriter(t, s, nil)
				for _, w := range ws {
					w.submit(t, s)
				}
				done := make(chan error, 1)
				dest := t.TempDir() + "/snap"
				var rep core.SnapshotReport
				go func() {
					var err error
					switch ctl {
					case "sync":
						err = s.Sync(ctx)
					case "snapshot":
						rep, err = s.Snapshot(ctx, dest)
					case "close":
						err = s.Close()
					}
					done <- err
				}()
				waitQueued(t, s, len(ws)+1)
				release()
				if err := <-done; err != nil {
					t.Fatalf("%s: %v", ctl, err)
				}
				core.SetBatchFault(s, nil)
				for i, w := range ws {
					_, err := w.wait(ctx)
					if (err != nil) != (i == 3) {
						t.Fatalf("write %d: %v", i, err)
					}
				}
				want := 1 + 4 + 2*30 // before the group, the singles, the batches that succeeded
				switch ctl {
				case "snapshot":
					if rep.GlobalSequence != uint64(want) {
						t.Fatalf("snapshot at %d sequences, want %d", rep.GlobalSequence, want)
					}
					snap, err := core.Open(testConfig(dest))
					if err != nil {
						t.Fatal(err)
					}
					if st := snap.Stats(); st.Events != uint64(want) {
						t.Fatalf("the snapshot holds %d events, want %d", st.Events, want)
					}
					snap = checkGroupLog(t, snap, ws)
					if err := snap.Close(); err != nil {
						t.Fatal(err)
					}
				case "close":
					s = openWith(t, s.Config())
				}
				if st := s.Stats(); st.Events != uint64(want) {
					t.Fatalf("%d events after the group, want %d", st.Events, want)
				}
				s = checkGroupLog(t, s, ws)
				r := mustAppend(t, s, mustCoord(t, "group:after", "s"), kindA, `{}`)
				if r.GlobalSequence != uint64(want) {
					t.Fatalf("append after the group at %d, want %d", r.GlobalSequence, want)
				}
			})
		}
	}
}

// Fenced singles and batches gathered into one group with the fence's
// Commit, one batch failing after a segment rotation: Commit publishes
// exactly the writes that succeeded, whole, at consecutive sequences, and
// a subscriber is told of each of them once, in order.
func TestGroupFencedBatchesWithCommit(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	mustAppend(t, s, mustCoord(t, "group:0", "s"), kindA, `{"pre":0}`)
	sub := s.SubscribeLossy(core.All())
	defer sub.Close()
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	entered, rel := make(chan struct{}), make(chan struct{})
	holding := true
	core.SetBatchFault(s, func(core.FaultPoint, int) error {
		if holding {
			holding = false
			close(entered)
			<-rel
			return errors.New("holding batch")
		}
		return nil
	})
	hold, err := f.SubmitBatch(ctx, []core.BatchItem{{Coordinate: mustCoord(t, "group:hold", "s"), Kind: kindA, Payload: []byte(`{}`)}})
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	ws := mixedGroup(t, 3, 30, 3000)
	ws[3].items[29].Options.ExpectedClock = core.ExpectClock(999)
	for _, w := range ws {
		if w.single {
			it := w.items[0]
			w.t, err = f.SubmitWithOptions(ctx, it.Coordinate, it.Kind, it.Payload, it.Options)
		} else {
			w.bt, err = f.SubmitBatch(ctx, w.items)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- f.Commit(ctx) }()
	waitQueued(t, s, len(ws)+1)
	close(rel)
	if _, err := hold.Wait(ctx); err == nil {
		t.Fatal("the holding batch was written")
	}
	if err := <-done; err != nil {
		t.Fatalf("Commit: %v", err)
	}
	core.SetBatchFault(s, nil)
	want := 1 + 4 + 2*30
	if st := s.Stats(); st.Events != uint64(want) {
		t.Fatalf("%d events after Commit, want %d", st.Events, want)
	}
	for i, w := range ws {
		if _, err := w.wait(ctx); (err != nil) != (i == 3) {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	buf := make([]core.Notification, 256)
	var got []core.Notification
	for len(got) < want-1 {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := sub.RecvBatch(c, buf)
		cancel()
		if err != nil {
			t.Fatalf("after %d notifications: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	for i, n := range got {
		if n.GlobalSequence != uint64(1+i) {
			t.Fatalf("notification %d is of sequence %d, want %d", i, n.GlobalSequence, 1+i)
		}
	}
	if n, ok, _ := sub.TryRecv(); ok {
		t.Fatalf("a notification too many: %+v", n)
	}
	if d := sub.Dropped(); d != 0 {
		t.Fatalf("Dropped %d", d)
	}
	s = checkGroupLog(t, s, ws)
	if r := mustAppend(t, s, mustCoord(t, "group:after", "s"), kindA, `{}`); r.GlobalSequence != uint64(want) {
		t.Fatalf("append after the fence at %d, want %d", r.GlobalSequence, want)
	}
}

// Writers racing singles, keyed retries, batches across segments and
// batches that fail at their last item, with a subscriber following: every
// acknowledged write is stored whole where its receipts say, every failed
// batch is absent, retries get the original receipts, the log is gapless
// (live and reopened), and the subscriber is told of every event once, in
// sequence order. With the default GroupCommitMaxBatch (0) and with 2.
func TestMixedGroupsUnderLoad(t *testing.T) {
	for _, cfg := range []struct{ everyN, maxGroup int }{{1, 0}, {1000, 0}, {1, 2}} {
		t.Run(fmt.Sprintf("sync every %d, GroupCommitMaxBatch %d", cfg.everyN, cfg.maxGroup), func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, func(c *core.Config) {
				c.SegmentMaxBytes = 64 << 10
				c.Sync.EveryNEvents = cfg.everyN
				c.Batch.GroupCommitMaxBatch = cfg.maxGroup
				c.BroadcastCapacity = 1 << 16
			})
			sub := s.SubscribeLossy(core.All())
			var notes []core.Notification
			var target atomic.Int64 // how many to receive, once known
			target.Store(-1)
			subDone := make(chan error, 1)
			go func() {
				buf := make([]core.Notification, 100)
				deadline := time.Now().Add(30 * time.Second)
				for {
					if n := target.Load(); n >= 0 && int64(len(notes)) >= n {
						subDone <- nil
						return
					}
					c, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
					n, err := sub.RecvBatch(c, buf)
					cancel()
					notes = append(notes, buf[:n]...)
					if err != nil && !errors.Is(err, context.DeadlineExceeded) || time.Now().After(deadline) {
						subDone <- fmt.Errorf("after %d notifications: %v", len(notes), err)
						return
					}
				}
			}()
			type result struct {
				b     int
				items []core.BatchItem
				rs    []core.Receipt
				err   error
				retry bool // a retry of an acknowledged keyed write: no new events
				fail  bool // meant to fail
			}
			const writers, ops = 6, 30
			results := make([][]result, writers)
			var wg sync.WaitGroup
			for g := 0; g < writers; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					rng := rand.New(rand.NewSource(int64(g)))
					var acked []result
					for k := 0; k < ops; k++ {
						b := g*1000 + k
						var r result
						switch op := rng.Intn(10); {
						case op < 3: // a single, keyed half the time
							it := core.BatchItem{Coordinate: mustCoord(t, fmt.Sprintf("mg:%d", rng.Intn(4)), "s"), Kind: kindB, Payload: taggedPayload(b, 0, 1, rng.Intn(500))}
							if rng.Intn(2) == 0 {
								it.Options.IdempotencyKey = fmt.Sprintf("mk-%d-0", b)
							}
							rc, err := s.AppendWithOptions(ctx, it.Coordinate, it.Kind, it.Payload, it.Options)
							r = result{b: b, items: []core.BatchItem{it}, rs: []core.Receipt{rc}, err: err}
						case op < 5 && len(acked) > 0: // retry an acknowledged write, keyed or not
							prev := acked[rng.Intn(len(acked))]
							if prev.items[0].Options.IdempotencyKey == "" {
								k--
								continue
							}
							rs, err := s.AppendBatch(ctx, prev.items)
							r = result{b: prev.b, items: prev.items, rs: rs, err: err, retry: true}
							for i := range rs {
								if err == nil && (!rs[i].Deduplicated || rs[i].ID != prev.rs[i].ID || rs[i].GlobalSequence != prev.rs[i].GlobalSequence) {
									t.Errorf("retry of write %d item %d: %+v, want %+v", prev.b, i, rs[i], prev.rs[i])
								}
							}
						default: // a batch, keyed in even writes, failing in one of four
							n := 1 + rng.Intn(60)
							pad := rng.Intn(1500)
							items := make([]core.BatchItem, n)
							for i := range items {
								items[i] = core.BatchItem{Coordinate: mustCoord(t, fmt.Sprintf("mg:%d", rng.Intn(4)), "s"), Kind: kindB, Payload: taggedPayload(b, i, n, pad)}
								if b%2 == 0 {
									items[i].Options.IdempotencyKey = fmt.Sprintf("mk-%d-%d", b, i)
								}
							}
							r = result{b: b, items: items, fail: rng.Intn(4) == 0}
							if r.fail {
								items[n-1].Options.ExpectedClock = core.ExpectClock(1 << 40)
							}
							r.rs, r.err = s.AppendBatch(ctx, items)
						}
						if (r.err != nil) != r.fail {
							t.Errorf("write %d: %v (meant to fail: %v)", r.b, r.err, r.fail)
						}
						if r.err == nil && !r.retry {
							acked = append(acked, r)
						}
						results[g] = append(results[g], r)
					}
				}(g)
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			want := uint64(0)
			for _, rs := range results {
				for _, r := range rs {
					if r.err == nil && !r.retry {
						want += uint64(len(r.items))
					}
				}
			}
			if st := s.Stats(); st.Events != want {
				t.Fatalf("%d events stored, %d acknowledged", st.Events, want)
			}
			// The subscriber is told of every event once, in order.
			target.Store(int64(want))
			if err := <-subDone; err != nil {
				t.Fatalf("subscriber: %v", err)
			}
			sub.Close()
			if d := sub.Dropped(); d != 0 {
				t.Fatalf("the subscriber dropped %d", d)
			}
			if uint64(len(notes)) != want {
				t.Fatalf("%d notifications for %d events", len(notes), want)
			}
			for i, n := range notes {
				if n.GlobalSequence != uint64(i) {
					t.Fatalf("notification %d is of sequence %d", i, n.GlobalSequence)
				}
			}
			s = checkSaneLog(t, s)
			tagged := map[int][]core.StoredEvent{}
			for _, e := range mustQuery(t, s, core.All()) {
				tagged[tagOf(t, e).B] = append(tagged[tagOf(t, e).B], e)
			}
			for _, rs := range results {
				for _, r := range rs {
					got := tagged[r.b]
					if r.err != nil {
						if len(got) != 0 {
							t.Fatalf("failed write %d has %d events stored", r.b, len(got))
						}
						continue
					}
					if len(got) != len(r.items) {
						t.Fatalf("write %d: %d events stored, want %d", r.b, len(got), len(r.items))
					}
					for i, e := range got {
						if e.Header.ID != r.rs[i].ID || e.GlobalSequence != r.rs[i].GlobalSequence || e.Header.Clock != r.rs[i].Clock {
							t.Fatalf("write %d item %d stored as %s at %d clock %d; receipt %+v", r.b, i, e.Header.ID, e.GlobalSequence, e.Header.Clock, r.rs[i])
						}
					}
				}
			}
		})
	}
}

// A group's events are hashed in waves: the writer seals every frame
// placed since the last seal when an event chains to one of them, or when
// it writes, rotates or cuts its buffer. A group of singles and batches
// over many entities — batches failing part way, after entities they
// touch were placed earlier in the group, and segments rotating mid-group
// — leaves every entity's chain whole: Verify passes, a reopen reads the
// same events, and later appends chain on from the recovered heads.
func TestGroupChainsManyEntitiesInWaves(t *testing.T) {
	for _, everyN := range []int{1, 1000} {
		t.Run(fmt.Sprintf("sync every %d", everyN), func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, func(c *core.Config) {
				c.SegmentMaxBytes = 64 << 10
				c.Sync.EveryNEvents = everyN
			})
			rng := rand.New(rand.NewSource(int64(everyN)))
			const entities = 48
			coord := func(j int) core.Coordinate { return mustCoord(t, fmt.Sprintf("wave:%d", j), "s") }
			var ws []*groupWrite
			failAt := map[int]int{} // batch number (in the writer's order) -> item after which it fails
			batches := 0
			for k := 0; k < 80; k++ {
				if rng.Intn(3) == 0 {
					n := 1 + rng.Intn(70)
					items := make([]core.BatchItem, n)
					for i := range items {
						items[i] = core.BatchItem{Coordinate: coord(rng.Intn(entities)), Kind: kindB, Payload: taggedPayload(k, i, n, rng.Intn(1500))}
					}
					if batches%3 == 1 {
						failAt[batches] = rng.Intn(n)
					}
					batches++
					ws = append(ws, &groupWrite{items: items})
					continue
				}
				it := core.BatchItem{Coordinate: coord(k % entities), Kind: kindA, Payload: taggedPayload(k, 0, 1, rng.Intn(1500))}
				ws = append(ws, &groupWrite{items: []core.BatchItem{it}, single: true})
			}
			batch := -1
			submitAsOneGroup(t, s, ws, func(p core.FaultPoint, item int) error {
				switch {
				case p == core.FaultBatchStart:
					batch++
				case p == core.FaultAfterItem:
					if at, ok := failAt[batch]; ok && at == item {
						return errInjected
					}
				}
				return nil
			})
			kept, failed := 0, 0
			for i, w := range ws {
				rs, err := w.wait(ctx)
				switch {
				case errors.Is(err, errInjected):
					failed++
				case err != nil:
					t.Fatalf("write %d: %v", i, err)
				default:
					kept += len(rs)
				}
			}
			if failed == 0 || failed != len(failAt) {
				t.Fatalf("%d batches failed, %d were meant to", failed, len(failAt))
			}
			if st := s.Stats(); st.Events != uint64(kept) {
				t.Fatalf("%d events stored, %d acknowledged", st.Events, kept)
			}
			if st := s.Stats(); st.Segments < 3 {
				t.Fatalf("the group spans %d segments; the test means it to rotate", st.Segments)
			}
			s = checkSaneLog(t, s)
			for j := 0; j < entities; j++ {
				if _, err := s.Submit(ctx, coord(j), kindA, []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
			}
			mustAppend(t, s, coord(0), kindA, `{}`)
			checkSaneLog(t, s)
		})
	}
}

// A group of more frames than the writer lets wait for their seal
// (maxUnsealed) is sealed in parts, once in the middle of a batch; that
// batch failing after the seal, or the whole group rolled back after its
// fsync, leaves whole chains, with single appends (whose payload digests
// the seal takes) between the batches on the same entities.
func TestGroupLargerThanOneSeal(t *testing.T) {
	for _, mode := range []string{"a batch fails", "the group fails"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, func(c *core.Config) {
				c.Batch.MaxSize = 4096
				c.Batch.MaxBytes = 16 << 20
				c.SegmentMaxBytes = 4 << 20
				c.Sync.EveryNEvents = 1000
			})
			var ws []*groupWrite
			for b := 0; b < 6; b++ {
				items := make([]core.BatchItem, 4000)
				for i := range items {
					items[i] = core.BatchItem{Coordinate: mustCoord(t, fmt.Sprintf("big:%d", i%5), "s"), Kind: kindB, Payload: taggedPayload(b, i, len(items), i%40)}
				}
				ws = append(ws, &groupWrite{items: items})
				for j := 0; j < 5; j++ {
					ws = append(ws, &groupWrite{items: []core.BatchItem{{Coordinate: mustCoord(t, fmt.Sprintf("big:%d", j), "s"), Kind: kindA, Payload: taggedPayload(100+b, j, 1, j*400)}}, single: true})
				}
			}
			batch := -1
			submitAsOneGroup(t, s, ws, func(p core.FaultPoint, item int) error {
				switch {
				case p == core.FaultBatchStart:
					batch++
				case mode == "a batch fails" && p == core.FaultAfterItem && batch == 4 && item == 3000:
					return errInjected
				case mode == "the group fails" && p == core.FaultBeforePublish:
					return errInjected
				}
				return nil
			})
			kept := 0
			for i, w := range ws {
				rs, err := w.wait(ctx)
				if err != nil && !errors.Is(err, errInjected) {
					t.Fatalf("write %d: %v", i, err)
				}
				kept += len(rs)
			}
			want := 6*4000 + 30 - 4000
			if mode == "the group fails" {
				want = 0
			}
			if st := s.Stats(); kept != want || st.Events != uint64(want) {
				t.Fatalf("%d events acknowledged, %d stored; want %d", kept, st.Events, want)
			}
			s = checkSaneLog(t, s)
			for j := 0; j < 5; j++ {
				mustAppend(t, s, mustCoord(t, fmt.Sprintf("big:%d", j), "s"), kindA, `{}`)
			}
			checkSaneLog(t, s)
		})
	}
}
