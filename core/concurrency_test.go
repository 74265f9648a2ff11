package core_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

func TestConcurrentAppends(t *testing.T) {
	const goroutines, perG = 8, 500
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	ctx := context.Background()
	shared := mustCoord(t, "shared", "s")
	var wg sync.WaitGroup
	receipts := make([][]core.Receipt, goroutines)
	errs := make(chan error, goroutines)
	start := make(chan struct{})
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			own, _ := core.NewCoordinate(fmt.Sprintf("own:%d", g), "s")
			<-start
			for i := 0; i < perG; i++ {
				c := own
				if i%2 == 0 {
					c = shared
				}
				r, err := s.Append(ctx, c, kindA, []byte(fmt.Sprintf(`{"g":%d,"i":%d}`, g, i)))
				if err != nil {
					errs <- err
					return
				}
				receipts[g] = append(receipts[g], r)
			}
		}(g)
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	check := func(s *core.Store) {
		seqs := map[uint64]bool{}
		idsSeen := map[core.EventID]bool{}
		for g, rs := range receipts {
			var lastShared int64 = -1
			for i, r := range rs {
				if seqs[r.GlobalSequence] || idsSeen[r.ID] {
					t.Fatalf("duplicate sequence %d or id %s", r.GlobalSequence, r.ID)
				}
				seqs[r.GlobalSequence], idsSeen[r.ID] = true, true
				if i%2 == 0 { // one goroutine's writes to the shared entity keep their order
					if int64(r.Clock) <= lastShared {
						t.Fatalf("goroutine %d: shared clock %d after %d", g, r.Clock, lastShared)
					}
					lastShared = int64(r.Clock)
				}
				ev, err := s.Get(r.ID)
				if err != nil {
					t.Fatalf("acknowledged event missing: %v", err)
				}
				if string(ev.Payload) != fmt.Sprintf(`{"g":%d,"i":%d}`, g, i) || ev.Header.Clock != r.Clock || ev.GlobalSequence != r.GlobalSequence {
					t.Fatalf("event %d/%d read back as %+v", g, i, ev)
				}
			}
		}
		for seq := uint64(0); seq < goroutines*perG; seq++ {
			if !seqs[seq] {
				t.Fatalf("global sequence %d never handed out", seq)
			}
		}
		if n := s.Stats().Events; n != goroutines*perG {
			t.Fatalf("%d events, want %d", n, goroutines*perG)
		}
		streams := map[string]int{"shared": goroutines * perG / 2}
		for g := 0; g < goroutines; g++ {
			streams[fmt.Sprintf("own:%d", g)] = perG / 2
		}
		for ent, n := range streams {
			evs, err := s.Stream(ent)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != n {
				t.Fatalf("Stream(%s): %d events, want %d", ent, len(evs), n)
			}
			for i, e := range evs {
				if e.Header.Clock != uint64(i) {
					t.Fatalf("Stream(%s): clock %d at position %d: clocks must be dense", ent, e.Header.Clock, i)
				}
			}
		}
		if rep := mustVerify(t, s); rep.Events != goroutines*perG || rep.Entities != goroutines+1 {
			t.Fatalf("Verify report %+v", rep)
		}
	}
	check(s)
	check(reopen(t, s))
}

func TestCompareAndSetRace(t *testing.T) {
	const racers, rounds = 8, 25
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "cas", "s")
	for round := 0; round < rounds; round++ {
		// Round 0 races on ExpectNoEvents; later rounds on ExpectClock(round-1).
		exp := core.ExpectNoEvents()
		actualAfter := core.ExpectClock(uint64(round))
		if round > 0 {
			exp = core.ExpectClock(uint64(round - 1))
		}
		var (
			wg        sync.WaitGroup
			wins      atomic.Int32
			conflicts atomic.Int32
			other     atomic.Value
		)
		start := make(chan struct{})
		for g := 0; g < racers; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				<-start
				r, err := s.AppendWithOptions(ctx, c, kindA, []byte(fmt.Sprintf(`{"round":%d,"g":%d}`, round, g)), core.AppendOptions{ExpectedClock: exp})
				var ce *core.ConflictError
				switch {
				case err == nil:
					if r.Clock != uint64(round) {
						other.Store(fmt.Sprintf("winner got clock %d", r.Clock))
					}
					wins.Add(1)
				case errors.As(err, &ce) && errors.Is(err, core.ErrConflict):
					if ce.Expected != exp || ce.Actual != actualAfter {
						other.Store(fmt.Sprintf("conflict expected %v actual %v", ce.Expected, ce.Actual))
					}
					conflicts.Add(1)
				default:
					other.Store(err.Error())
				}
			}(g)
		}
		close(start)
		wg.Wait()
		if v := other.Load(); v != nil {
			t.Fatalf("round %d: %v", round, v)
		}
		if wins.Load() != 1 || conflicts.Load() != racers-1 {
			t.Fatalf("round %d: %d winners and %d conflicts, want 1 and %d", round, wins.Load(), conflicts.Load(), racers-1)
		}
	}
	evs, err := s.Stream("cas")
	if err != nil || len(evs) != rounds {
		t.Fatalf("%d events (%v), want one per round", len(evs), err)
	}
	mustVerify(t, s)
}

func TestIdempotencyRace(t *testing.T) {
	const racers, rounds = 8, 25
	s := openStore(t)
	ctx := context.Background()
	for round := 0; round < rounds; round++ {
		key := fmt.Sprintf("race-%d", round)
		rs := make([]core.Receipt, racers)
		errs := make([]error, racers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < racers; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				// Every racer retries the same event (a retry storm).
				c, _ := core.NewCoordinate("idem", "s")
				payload := []byte(fmt.Sprintf(`{"round":%d}`, round))
				<-start
				if g%2 == 0 {
					rs[g], errs[g] = s.AppendWithOptions(ctx, c, kindA, payload, core.AppendOptions{IdempotencyKey: key})
					return
				}
				tk, err := s.SubmitWithOptions(ctx, c, kindA, payload, core.AppendOptions{IdempotencyKey: key})
				if err != nil {
					errs[g] = err
					return
				}
				rs[g], errs[g] = tk.Wait(ctx)
			}(g)
		}
		close(start)
		wg.Wait()
		originals := 0
		for g := range rs {
			if errs[g] != nil {
				t.Fatalf("round %d racer %d: %v", round, g, errs[g])
			}
			if !rs[g].Deduplicated {
				originals++
			}
			a, b := rs[g], rs[0]
			a.Deduplicated, b.Deduplicated = false, false
			if a != b {
				t.Fatalf("round %d: receipts differ: %+v vs %+v", round, rs[g], rs[0])
			}
		}
		if originals != 1 {
			t.Fatalf("round %d: %d receipts not marked deduplicated, want exactly 1", round, originals)
		}
		ev, err := s.Get(rs[0].ID)
		if err != nil || ev.IdempotencyKey != key {
			t.Fatalf("round %d: stored event %+v, %v", round, ev, err)
		}
	}
	if n := s.Stats().Events; n != rounds {
		t.Fatalf("%d events stored, want %d (one per key)", n, rounds)
	}
	mustVerify(t, s)
}

// Readers running while writers append never see a torn or partial state:
// every query answer is a prefix of the log (global sequences 0..n-1, each
// entity's clocks 0..k-1), every event is intact, and every write
// acknowledged before a read started is in its answer.
func TestReadersDuringWrites(t *testing.T) {
	const writers, perW, readers = 4, 400, 3
	s := openStore(t, func(c *core.Config) {
		c.SegmentMaxBytes = 64 << 10 // rotate under the readers' feet
		c.FDBudget = 2
	})
	ctx := context.Background()
	pad := strings.Repeat("r", 300)
	lastAck := make([]atomic.Int64, writers) // global sequence of each writer's latest receipt, -1 none
	lastID := make([]atomic.Value, writers)
	for i := range lastAck {
		lastAck[i].Store(-1)
	}
	var writersDone atomic.Bool
	var wg, rwg sync.WaitGroup
	fail := make(chan string, writers+readers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, _ := core.NewCoordinate(fmt.Sprintf("rw:%d", w%3), fmt.Sprintf("sc%d", w%2))
			for i := 0; i < perW; i++ {
				r, err := s.Append(ctx, c, kindA, []byte(fmt.Sprintf(`{"entity":%q,"w":%d,"i":%d,"pad":%q}`, c.Entity, w, i, pad)))
				if err != nil {
					fail <- err.Error()
					return
				}
				lastID[w].Store(r.ID)
				lastAck[w].Store(int64(r.GlobalSequence))
			}
		}(w)
	}
	type body struct {
		Entity string `json:"entity"`
		W, I   int
	}
	intact := func(e core.StoredEvent) string {
		var b body
		if err := json.Unmarshal(e.Payload, &b); err != nil {
			return fmt.Sprintf("seq %d: payload %q: %v", e.GlobalSequence, e.Payload, err)
		}
		if b.Entity != e.Coordinate.Entity {
			return fmt.Sprintf("seq %d: payload of %s under %s", e.GlobalSequence, b.Entity, e.Coordinate.Entity)
		}
		return ""
	}
	var queries atomic.Int64
	for r := 0; r < readers; r++ {
		rwg.Add(1)
		go func(r int) {
			defer rwg.Done()
			for !writersDone.Load() {
				var acked []int64
				for w := range lastAck {
					acked = append(acked, lastAck[w].Load())
				}
				var ackedIDs []core.EventID
				for w := range lastID {
					if v := lastID[w].Load(); v != nil {
						ackedIDs = append(ackedIDs, v.(core.EventID))
					}
				}
				switch r {
				case 0: // whole log
					evs, err := s.Query(core.All())
					if err != nil {
						fail <- "Query: " + err.Error()
						return
					}
					for i, e := range evs {
						if e.GlobalSequence != uint64(i) {
							fail <- fmt.Sprintf("Query(All) position %d holds sequence %d: not a prefix", i, e.GlobalSequence)
							return
						}
						if msg := intact(e); msg != "" {
							fail <- msg
							return
						}
					}
					for _, a := range acked {
						if a >= int64(len(evs)) {
							fail <- fmt.Sprintf("acknowledged sequence %d missing from a later Query of %d events", a, len(evs))
							return
						}
					}
				case 1: // streams
					for k := 0; k < 3; k++ {
						evs, err := s.Stream(fmt.Sprintf("rw:%d", k))
						if err != nil {
							fail <- "Stream: " + err.Error()
							return
						}
						for i, e := range evs {
							if e.Header.Clock != uint64(i) {
								fail <- fmt.Sprintf("Stream(rw:%d) position %d has clock %d", k, i, e.Header.Clock)
								return
							}
							if msg := intact(e); msg != "" {
								fail <- msg
								return
							}
						}
					}
				default: // point reads of what was just acknowledged, and a scoped query
					for _, id := range ackedIDs {
						if _, err := s.Get(id); err != nil {
							fail <- fmt.Sprintf("Get of an acknowledged event: %v", err)
							return
						}
					}
					evs, err := s.Query(core.Scope("sc1").WithClockRange(0, 1<<62))
					if err != nil {
						fail <- "Query(scope): " + err.Error()
						return
					}
					for i, e := range evs {
						if e.Coordinate.Scope != "sc1" || (i > 0 && e.GlobalSequence <= evs[i-1].GlobalSequence) {
							fail <- "Query(scope) answer out of scope or order"
							return
						}
					}
				}
				queries.Add(1)
			}
		}(r)
	}
	wg.Wait()
	writersDone.Store(true)
	rwg.Wait()
	close(fail)
	for msg := range fail {
		t.Fatal(msg)
	}
	if queries.Load() < readers {
		t.Fatalf("readers ran only %d queries", queries.Load())
	}
	if n := s.Stats().Events; n != writers*perW {
		t.Fatalf("%d events, want %d", n, writers*perW)
	}
	if segs := s.Stats().Segments; segs < 3 {
		t.Errorf("only %d segments: the test meant to rotate under the readers", segs)
	}
	t.Logf("%d queries during %d writes", queries.Load(), writers*perW)
	mustVerify(t, s)
}

// Close while writers and readers are busy: every write either returns a
// receipt (and is on disk after reopen) or ErrClosed (and is not), and
// reads either answer or return ErrClosed.
func TestCloseDuringWrites(t *testing.T) {
	for round := 0; round < 3; round++ {
		s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10; c.ChannelCapacity = 64 })
		cfg := s.Config()
		ctx := context.Background()
		var (
			mu    sync.Mutex
			acked []core.Receipt
			wg    sync.WaitGroup
			bad   = make(chan string, 16)
		)
		for g := 0; g < 6; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				c, _ := core.NewCoordinate(fmt.Sprintf("cd:%d", g%3), "s")
				for i := 0; ; i++ {
					var r core.Receipt
					var err error
					if g%2 == 0 {
						r, err = s.Append(ctx, c, kindA, []byte(fmt.Sprintf(`{"g":%d,"i":%d,"pad":"%s"}`, g, i, strings.Repeat("c", 200))))
					} else {
						var tk *core.Ticket
						tk, err = s.Submit(ctx, c, kindA, []byte(fmt.Sprintf(`{"g":%d,"i":%d}`, g, i)))
						if err == nil {
							r, err = tk.Wait(ctx)
						}
					}
					if errors.Is(err, core.ErrClosed) {
						return
					}
					if err != nil {
						bad <- fmt.Sprintf("write during Close: %v", err)
						return
					}
					mu.Lock()
					acked = append(acked, r)
					mu.Unlock()
				}
			}(g)
		}
		for g := 0; g < 2; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					_, err := s.Query(core.Entity("cd:").WithClockRange(0, 50))
					if errors.Is(err, core.ErrClosed) {
						return
					}
					if err != nil {
						bad <- fmt.Sprintf("read during Close: %v", err)
						return
					}
					time.Sleep(50 * time.Microsecond)
				}
			}()
		}
		for {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n >= 200*(round+1) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close during writes: %v", err)
		}
		wg.Wait()
		close(bad)
		for msg := range bad {
			t.Fatal(msg)
		}
		s2, err := core.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range acked {
			if ev, err := s2.Get(r.ID); err != nil || ev.GlobalSequence != r.GlobalSequence {
				t.Fatalf("acknowledged write lost by Close: %v", err)
			}
		}
		if n := s2.Stats().Events; n != uint64(len(acked)) {
			t.Fatalf("%d events on disk, %d acknowledged: a write that returned ErrClosed was stored, or one was lost", n, len(acked))
		}
		mustVerify(t, s2)
		s2.Close()
	}
}
