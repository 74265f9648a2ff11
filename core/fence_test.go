package core_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Visibility fences: writes made through a fence are durable but hidden
// until Commit publishes all of them at once; Cancel (or Close on an open
// fence, or a crash) hides them for ever.

func mustBeginFence(t testing.TB, s *core.Store) *core.Fence {
	t.Helper()
	f, err := s.BeginFence(context.Background())
	if err != nil {
		t.Fatalf("BeginFence: %v", err)
	}
	return f
}

// fencedTickets are the tickets of writes made under a fence and the
// number of events they write.
type fencedTickets struct {
	singles []*core.Ticket
	batches []*core.BatchTicket
	events  int
}

// fencedWrites makes one write of every kind through f — Submit,
// SubmitWithOptions (with an idempotency key), SubmitReaction, SubmitBatch
// and the fence's outbox — to the entities "fenced" (payloads "f0", "f1",
// "f3", "f5") and "fenced:other" ("f2", "f4", "f6").
func fencedWrites(t testing.TB, f *core.Fence, cause core.EventID) fencedTickets {
	t.Helper()
	ctx := context.Background()
	c, d := mustCoord(t, "fenced", "s"), mustCoord(t, "fenced:other", "s")
	var ft fencedTickets
	single := func(tk *core.Ticket, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("fenced write: %v", err)
		}
		ft.singles = append(ft.singles, tk)
		ft.events++
	}
	single(f.Submit(ctx, c, kindA, []byte(`"f0"`)))
	single(f.SubmitWithOptions(ctx, c, kindB, []byte(`"f1"`), core.AppendOptions{IdempotencyKey: "fence-key"}))
	single(f.SubmitReaction(ctx, d, kindA, []byte(`"f2"`), cause, cause))
	bt, err := f.SubmitBatch(ctx, []core.BatchItem{
		bi(c, `"f3"`),
		{Coordinate: d, Kind: kindC, Payload: []byte(`"f4"`), Causation: core.PriorItem(0)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ft.batches = append(ft.batches, bt)
	ft.events += 2
	ob := f.Outbox()
	if err := ob.Stage(c, kindA, []byte(`"f5"`)); err != nil {
		t.Fatal(err)
	}
	if err := ob.Push(core.BatchItem{Coordinate: d, Kind: kindA, Payload: []byte(`"f6"`), Causation: core.PriorItem(0)}); err != nil {
		t.Fatal(err)
	}
	bt, err = ob.SubmitFlush(ctx)
	if err != nil || ob.Len() != 0 {
		t.Fatalf("fence outbox SubmitFlush: %v, %d left", err, ob.Len())
	}
	ft.batches = append(ft.batches, bt)
	ft.events += 2
	return ft
}

func (ft fencedTickets) pending(t testing.TB) {
	t.Helper()
	for i, tk := range ft.singles {
		if _, done, _ := tk.TryCheck(); done {
			t.Fatalf("fenced ticket %d resolved before the fence ended", i)
		}
	}
	for i, bt := range ft.batches {
		if _, done, _ := bt.TryCheck(); done {
			t.Fatalf("fenced batch ticket %d resolved before the fence ended", i)
		}
	}
}

func (ft fencedTickets) receipts(t testing.TB) []core.Receipt {
	t.Helper()
	ctx := context.Background()
	var out []core.Receipt
	for i, tk := range ft.singles {
		r, err := tk.Wait(ctx)
		if err != nil {
			t.Fatalf("fenced ticket %d: %v", i, err)
		}
		out = append(out, r)
	}
	for i, bt := range ft.batches {
		rs, err := bt.Wait(ctx)
		if err != nil {
			t.Fatalf("fenced batch ticket %d: %v", i, err)
		}
		out = append(out, rs...)
	}
	return out
}

func (ft fencedTickets) failWith(t testing.TB, target error) {
	t.Helper()
	ctx := context.Background()
	for i, tk := range ft.singles {
		if _, err := tk.Wait(ctx); !errors.Is(err, target) {
			t.Fatalf("fenced ticket %d: got %v, want %v", i, err, target)
		}
	}
	for i, bt := range ft.batches {
		if rs, err := bt.Wait(ctx); !errors.Is(err, target) || rs != nil {
			t.Fatalf("fenced batch ticket %d: got %v, %v, want %v", i, rs, err, target)
		}
	}
}

// diskEventIDs reads the ids of every event record in the store's
// segments, visible or not.
func diskEventIDs(t testing.TB, dir string) []core.EventID {
	t.Helper()
	var out []core.EventID
	for _, path := range segmentFiles(t, dir) {
		data, fs := readFrames(t, path)
		for _, f := range fs {
			if data[f.recStart()] == 1 { // an event record
				out = append(out, recordID(data, f))
			}
		}
	}
	return out
}

// nothingFenced checks that no fenced event (payloads "f0", "f1", …) can
// be read any way, and that Get finds no hidden event. It returns the
// number of event records on disk that are not visible.
func nothingFenced(t testing.TB, s *core.Store) int {
	t.Helper()
	visible := map[core.EventID]bool{}
	for _, e := range mustQuery(t, s, core.All()) {
		visible[e.Header.ID] = true
	}
	hidden := 0
	for _, id := range diskEventIDs(t, s.Dir()) {
		if visible[id] {
			continue
		}
		hidden++
		if _, err := s.Get(id); !errors.Is(err, core.ErrNotFound) {
			t.Fatalf("Get(hidden %s): %v, want ErrNotFound", id, err)
		}
		if got, err := s.Ancestors(id, 0); !errors.Is(err, core.ErrNotFound) {
			t.Fatalf("Ancestors(hidden %s): %v, %v", id, payloads(got), err)
		}
	}
	var seen []string
	look := func(evs []core.StoredEvent, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if p := string(e.Payload); len(p) > 2 && p[1] == 'f' {
				seen = append(seen, p)
			}
		}
	}
	look(s.Query(core.All()))
	look(s.Stream("fenced"))
	look(s.Stream("fenced:other"))
	look(s.ByScope("s"))
	look(s.ByFact(kindA))
	look(s.ByFact(kindB))
	look(s.ByFact(kindC))
	look(s.Query(core.Entity("fenced")))
	for e, err := range s.Events(core.All()) {
		look([]core.StoredEvent{e}, err)
	}
	if len(seen) > 0 {
		t.Fatalf("fenced events visible: %v", seen)
	}
	return hidden
}

// ordinaryWritesRefused checks every ordinary write path while a fence is
// open.
func ordinaryWritesRefused(t testing.TB, s *core.Store) {
	t.Helper()
	ctx := context.Background()
	c := mustCoord(t, "fenced", "s")
	if _, err := s.Append(ctx, c, kindA, []byte(`{}`)); !errors.Is(err, core.ErrFenceActive) {
		t.Fatalf("Append under a fence: %v", err)
	}
	if _, err := s.Submit(ctx, c, kindA, []byte(`{}`)); !errors.Is(err, core.ErrFenceActive) {
		t.Fatalf("Submit under a fence: %v", err)
	}
	if _, err := s.AppendBatch(ctx, []core.BatchItem{bi(c, `{}`)}); !errors.Is(err, core.ErrFenceActive) {
		t.Fatalf("AppendBatch under a fence: %v", err)
	}
	for name, try := range map[string]func() error{
		"TrySubmit": func() error { _, err := s.TrySubmit(ctx, c, kindA, []byte(`{}`)); return err },
		"TrySubmitBatch": func() error {
			_, err := s.TrySubmitBatch(ctx, []core.BatchItem{bi(c, `{}`)})
			return err
		},
	} {
		err := try()
		var ce *core.CancelledError
		if !errors.As(err, &ce) || !errors.Is(err, core.ErrCancelled) || !errors.Is(err, core.ErrFenceActive) || errors.Is(err, core.ErrRetry) {
			t.Fatalf("%s under a fence: got %v, want a *CancelledError (ErrCancelled, ErrFenceActive)", name, err)
		}
	}
	if _, err := s.BeginFence(ctx); !errors.Is(err, core.ErrFenceActive) {
		t.Fatalf("second BeginFence: %v", err)
	}
	ob := s.Outbox()
	if err := ob.Stage(c, kindA, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := ob.Flush(ctx); !errors.Is(err, core.ErrFenceActive) || ob.Len() != 1 {
		t.Fatalf("ordinary outbox Flush under a fence: %v, %d staged", err, ob.Len())
	}
}

func TestFenceCommit(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "fenced", "s")
	pre := []core.Receipt{mustAppend(t, s, c, kindA, `"p0"`), mustAppend(t, s, mustCoord(t, "plain", "s"), kindA, `"p1"`)}
	f := mustBeginFence(t, s)
	defer f.Close()
	before := s.Stats()
	ft := fencedWrites(t, f, pre[1].ID)
	// Compare-and-set under the fence sees the fenced writes: "fenced" has
	// its clock 0 before the fence and 4 fenced events (f0 f1 f3 f5).
	single := func(tk *core.Ticket, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		ft.singles, ft.events = append(ft.singles, tk), ft.events+1
	}
	single(f.SubmitWithOptions(ctx, c, kindA, []byte(`"f7"`), core.AppendOptions{ExpectedClock: core.ExpectClock(4)}))
	// A fenced retry of a fenced idempotent write is deduplicated.
	single(f.SubmitWithOptions(ctx, c, kindB, []byte(`"f1"`), core.AppendOptions{IdempotencyKey: "fence-key"}))
	ft.events-- // the retry writes nothing
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	ft.pending(t)
	ordinaryWritesRefused(t, s)
	if n := nothingFenced(t, s); n != ft.events {
		t.Fatalf("%d hidden events on disk, want %d", n, ft.events)
	}
	if got := s.Stats(); got.Events != before.Events || got.GlobalSequence != before.GlobalSequence || got.Entities != before.Entities {
		t.Fatalf("Stats under a fence: %+v, before %+v", got, before)
	}
	// Written and durable: on disk, checked, hidden while the fence is open.
	if rep := mustVerify(t, s); rep.Events != 2+ft.events || rep.Hidden != ft.events {
		t.Fatalf("Verify under the fence: %+v (%d fenced)", rep, ft.events)
	}
	ro, err := core.OpenReadOnly(s.Config())
	if err != nil {
		t.Fatal(err)
	}
	nothingFenced(t, ro)
	if got := ro.Stats(); got.Events != 2 {
		t.Fatalf("read-only beside the fence: %+v", got)
	}
	ro.Close()

	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rs := ft.receipts(t)
	// rs: the singles f0 f1 f2 f7 and the retry of f1, then the batches'
	// f3 f4 and f5 f6.
	if !rs[4].Deduplicated || rs[4].ID != rs[1].ID {
		t.Fatalf("fenced retry: %+v, original %+v", rs[4], rs[1])
	}
	if rs[3].Clock != 5 {
		t.Fatalf("fenced compare-and-set write: %+v", rs[3])
	}
	check := func(s *core.Store, when string) {
		t.Helper()
		evs := mustQuery(t, s, core.All())
		if len(evs) != 2+ft.events {
			t.Fatalf("%s: %d events visible, want %d", when, len(evs), 2+ft.events)
		}
		for i, e := range evs {
			if e.GlobalSequence != uint64(i) {
				t.Fatalf("%s: event %d has sequence %d", when, i, e.GlobalSequence)
			}
		}
		for _, r := range rs {
			ev, err := s.Get(r.ID)
			if err != nil || ev.GlobalSequence != r.GlobalSequence || ev.Header.Clock != r.Clock {
				t.Fatalf("%s: fenced receipt %+v read back as %+v, %v", when, r, ev, err)
			}
		}
		st, err := s.Stream("fenced")
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{`"p0"`, `"f0"`, `"f1"`, `"f3"`, `"f5"`, `"f7"`}; fmt.Sprint(payloads(st)) != fmt.Sprint(want) {
			t.Fatalf("%s: stream %v", when, payloads(st))
		}
		got, err := s.Ancestors(rs[8].ID, 0) // f6 ← f5 (the outbox's PriorItem)
		if err != nil || len(got) != 2 || string(got[1].Payload) != `"f5"` {
			t.Fatalf("%s: Ancestors(f6) = %v, %v", when, payloads(got), err)
		}
		if rep := mustVerify(t, s); rep.Hidden != 0 || rep.Events != 2+ft.events {
			t.Fatalf("%s: Verify %+v", when, rep)
		}
	}
	check(s, "live")

	// The fence has ended: its writes are refused, ordinary ones accepted.
	if _, err := f.Submit(ctx, c, kindA, []byte(`{}`)); !errors.Is(err, core.ErrFenceEnded) {
		t.Fatalf("Submit after Commit: %v", err)
	}
	if _, err := f.SubmitBatch(ctx, []core.BatchItem{bi(c, `{}`)}); !errors.Is(err, core.ErrFenceEnded) {
		t.Fatalf("SubmitBatch after Commit: %v", err)
	}
	ob := f.Outbox()
	if err := ob.Stage(c, kindA, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := ob.SubmitFlush(ctx); !errors.Is(err, core.ErrFenceEnded) || ob.Len() != 1 {
		t.Fatalf("fence outbox after Commit: %v, %d staged", err, ob.Len())
	}
	if err := f.Commit(ctx); !errors.Is(err, core.ErrFenceEnded) {
		t.Fatalf("second Commit: %v", err)
	}
	if err := f.Cancel(ctx); !errors.Is(err, core.ErrFenceEnded) {
		t.Fatalf("Cancel after Commit: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close after Commit: %v", err)
	}
	if r := mustAppend(t, s, c, kindA, `"after"`); r.Clock != 6 || r.GlobalSequence != uint64(2+ft.events) {
		t.Fatalf("append after Commit: %+v", r)
	}
	s = reopen(t, s)
	if r := mustAppendOpts(t, s, c, kindB, `"f1"`, core.AppendOptions{IdempotencyKey: "fence-key"}); !r.Deduplicated || r.ID != rs[1].ID {
		t.Fatalf("committed fenced key after reopen: %+v", r)
	}
	f2 := mustBeginFence(t, s) // a new fence after the old one ended
	if err := f2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// Cancel, fence.Close and Store.Close on an open fence keep its writes
// hidden for ever: durable and chained, never shown, also after reopen
// and to read-only opens. The entities go on after them.
func TestFenceCancelled(t *testing.T) {
	ctx := context.Background()
	for _, how := range []string{"Cancel", "fence Close", "store Close"} {
		t.Run(how, func(t *testing.T) {
			s := openStore(t)
			c := mustCoord(t, "fenced", "s")
			p0 := mustAppend(t, s, c, kindA, `"p0"`)
			mustAppend(t, s, mustCoord(t, "fenced:other", "s"), kindA, `"p1"`)
			f := mustBeginFence(t, s)
			ft := fencedWrites(t, f, p0.ID)
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			ft.pending(t)
			cfg := s.Config()
			switch how {
			case "Cancel":
				if err := f.Cancel(ctx); err != nil {
					t.Fatal(err)
				}
				if err := f.Close(); err != nil {
					t.Fatalf("Close after Cancel: %v", err)
				}
			case "fence Close":
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
				if err := f.Cancel(ctx); !errors.Is(err, core.ErrFenceEnded) {
					t.Fatalf("Cancel after Close: %v", err)
				}
			case "store Close":
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if err := f.Close(); err != nil {
					t.Fatalf("fence Close after store Close: %v", err)
				}
				s = openWith(t, cfg)
			}
			ft.failWith(t, core.ErrFenceCancelled)
			if err := f.Commit(ctx); !errors.Is(err, core.ErrFenceEnded) {
				t.Fatalf("Commit after the fence ended: %v", err)
			}
			if _, err := f.Submit(ctx, c, kindA, []byte(`{}`)); !errors.Is(err, core.ErrFenceEnded) {
				t.Fatalf("Submit after the fence ended: %v", err)
			}
			hidden := ft.events
			check := func(s *core.Store, when string, visible int) {
				t.Helper()
				if n := nothingFenced(t, s); n != hidden {
					t.Fatalf("%s: %d hidden events on disk, want %d", when, n, hidden)
				}
				if got := s.Stats(); got.Events != uint64(visible) {
					t.Fatalf("%s: %d events visible, want %d", when, got.Events, visible)
				}
				st, err := s.Stream("fenced")
				if err != nil {
					t.Fatal(err)
				}
				if len(st) == 0 || st[0].Header.ID != p0.ID {
					t.Fatalf("%s: stream %v", when, payloads(st))
				}
			}
			check(s, "after the fence", 2)
			if rep := mustVerify(t, s); rep.Hidden != hidden || rep.Events != 2+hidden {
				t.Fatalf("Verify: %+v, want %d hidden", rep, hidden)
			}
			// The entity continues after its hidden events (p0, then f0 f1
			// f3 f5 hidden: clock 5), and so does the global sequence.
			r := mustAppend(t, s, c, kindA, `"after"`)
			if r.Clock != 5 || r.GlobalSequence != uint64(2+hidden) {
				t.Fatalf("append after the fence: %+v", r)
			}
			r2 := mustAppend(t, s, mustCoord(t, "fenced:other", "s"), kindA, `"after2"`)
			if r2.Clock != 4 {
				t.Fatalf("other entity after the fence: %+v", r2)
			}
			// The hidden write's idempotency key is free again.
			r3 := mustAppendOpts(t, s, c, kindB, `"k1"`, core.AppendOptions{IdempotencyKey: "fence-key"})
			if r3.Deduplicated || r3.Clock != 6 {
				t.Fatalf("key of a hidden write: %+v", r3)
			}
			check(s, "live", 5)
			rep := mustVerify(t, s)
			if rep.Hidden != hidden || rep.Events != 5+hidden {
				t.Fatalf("Verify after writing on: %+v", rep)
			}
			st, _ := s.Stream("fenced")
			if clocks := fmt.Sprint(st[0].Header.Clock, st[1].Header.Clock, st[2].Header.Clock); clocks != "0 5 6" {
				t.Fatalf("clocks of the visible stream: %s", clocks)
			}
			s = reopen(t, s)
			check(s, "reopened", 5)
			if rep2 := mustVerify(t, s); rep2 != rep {
				t.Fatalf("Verify after reopen: %+v, before %+v", rep2, rep)
			}
			ro, err := core.OpenReadOnly(s.Config())
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			check(ro, "read-only", 5)
			if rep2 := mustVerify(t, ro); rep2 != rep {
				t.Fatalf("Verify read-only: %+v", rep2)
			}
			if r := mustAppend(t, s, c, kindA, `"later"`); r.Clock != 7 || r.GlobalSequence != uint64(5+hidden) {
				t.Fatalf("append after reopen: %+v", r)
			}
			mustVerify(t, s)
		})
	}
}

// A reader polling while a fence commits sees all of the fence's events
// or none, even when they span segments and were written by many writes.
// Each round waits until the reader has looked several times while the
// fence's writes were durable and hidden; rounds go on until a reader was
// reading while at least two commits published (failing if never).
func TestFenceCommitIsAtomicForReaders(t *testing.T) {
	const (
		minRounds, maxRounds = 6, 40
		minHiddenLooks       = 3 // observations per round while the fence's writes are hidden
		minCommitsSeen       = 2 // commits during which a reader was reading
		waitLooks            = 20 * time.Second
	)
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		mustAppend(t, s, mustCoord(t, fmt.Sprintf("ra:%d", i), "s"), kindA, payloadN(i))
	}
	// phase counts the fence's steps, three per round r: 3r+1 its writes
	// are durable and hidden, 3r+2 Commit (or Cancel, every third round)
	// is running, 3r+3 it has ended. totals[p] is the number of visible
	// events in phase p.
	var phase atomic.Int64
	totals := []int{5}
	committing := func(p int64) bool { return p%3 == 2 && (p/3)%3 != 2 }
	type look struct {
		from, to int64 // the phases when the observation began and ended
		n        int
	}
	var done atomic.Bool
	var hiddenLooks, commitsSeen atomic.Int64
	var wg sync.WaitGroup
	looks := make(chan look, 1<<16)
	wg.Add(1)
	go func() {
		defer wg.Done()
		counted := int64(0) // the last commit phase counted in commitsSeen
		for !done.Load() {
			from := phase.Load()
			n := int(s.Stats().Events)
			evs, err := s.Query(core.All())
			if err != nil {
				return
			}
			to := phase.Load()
			if from == to && from%3 == 1 {
				hiddenLooks.Add(1)
			}
			for p := max(from, counted+1); p <= to; p++ {
				if committing(p) {
					commitsSeen.Add(1)
					counted = p
				}
			}
			select {
			case looks <- look{from, to, n}:
			default:
			}
			select {
			case looks <- look{from, to, len(evs)}:
			default:
			}
		}
	}()
	step := func(visible int) {
		totals = append(totals, visible)
		phase.Add(1)
	}
	total, cancelled := 5, 0
	round := 0
	for ; round < minRounds || commitsSeen.Load() < minCommitsSeen; round++ {
		if round == maxRounds {
			t.Fatalf("in %d rounds, readers were reading during only %d commits; want %d", round, commitsSeen.Load(), minCommitsSeen)
		}
		f := mustBeginFence(t, s)
		var tickets []*core.Ticket
		var bts []*core.BatchTicket
		n := 0
		for i := 0; i < 40; i++ {
			c := mustCoord(t, fmt.Sprintf("ra:%d", i%5), "s")
			if i%4 == 0 {
				items := make([]core.BatchItem, 5)
				for k := range items {
					items[k] = core.BatchItem{Coordinate: c, Kind: kindA, Payload: taggedPayload(round, k, 5, 600)}
				}
				bt, err := f.SubmitBatch(ctx, items)
				if err != nil {
					t.Fatal(err)
				}
				bts = append(bts, bt)
				n += 5
				continue
			}
			tk, err := f.Submit(ctx, c, kindA, taggedPayload(round, i, 1, 600))
			if err != nil {
				t.Fatal(err)
			}
			tickets = append(tickets, tk)
			n++
		}
		if err := s.Sync(ctx); err != nil { // the fenced writes are on disk, hidden
			t.Fatal(err)
		}
		before := hiddenLooks.Load()
		step(total) // 3r+1
		for deadline := time.Now().Add(waitLooks); hiddenLooks.Load() < before+minHiddenLooks; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: readers looked %d times in %v while the fence's writes were hidden; want %d",
					round, hiddenLooks.Load()-before, waitLooks, minHiddenLooks)
			}
		}
		step(total) // 3r+2
		if round%3 == 2 {
			if err := f.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
			cancelled++
			step(total) // 3r+3
			continue
		}
		if err := f.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		total += n
		step(total) // 3r+3
		for _, tk := range tickets {
			if _, err := tk.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, bt := range bts {
			if _, err := bt.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	done.Store(true)
	wg.Wait()
	close(looks)
	seen := 0
	for l := range looks {
		// What a reader saw is the total of one of the phases it looked
		// through: all of a fence's events or none. (While Commit runs,
		// the total after it may already be visible.)
		ok := false
		for p := l.from; p <= l.to; p++ {
			ok = ok || totals[p] == l.n || p%3 == 2 && totals[p+1] == l.n
		}
		if !ok {
			t.Fatalf("a reader saw %d events between phases %d and %d; the totals were %v", l.n, l.from, l.to, totals[l.from:l.to+1])
		}
		seen++
	}
	if got := int(s.Stats().Events); got != total {
		t.Fatalf("%d events, want %d", got, total)
	}
	if rep := mustVerify(t, s); rep.Hidden != cancelled*(10*5+30) {
		t.Fatalf("Verify: %+v; %d fences cancelled", rep, cancelled)
	}
	t.Logf("%d rounds, %d observations: %d while fenced writes were hidden, readers reading during %d commits",
		round, seen, hiddenLooks.Load(), commitsSeen.Load())
}

// A BeginFence whose context ends before the writer answers leaves no
// fence open behind it: the writer may still open it (as a write may still
// happen after its context ended), but closes it again, so ordinary writes
// are accepted once the writer has caught up.
func TestBeginFenceContextEnded(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "bf", "s")
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		f, err := s.BeginFence(ctx)
		if err == nil {
			if err := f.Cancel(context.Background()); err != nil {
				t.Fatal(err)
			}
		} else if !errors.Is(err, context.Canceled) {
			t.Fatalf("BeginFence with a cancelled context: %v", err)
		}
		if err := s.Sync(context.Background()); err != nil { // the writer caught up
			t.Fatal(err)
		}
		if _, err := s.Append(context.Background(), c, kindA, []byte(payloadN(i))); err != nil {
			t.Fatalf("round %d: Append after the abandoned BeginFence: %v", i, err)
		}
		f = mustBeginFence(t, s)
		if err := f.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Stats().Events; got != 20 {
		t.Fatalf("%d events", got)
	}
	mustVerify(t, reopen(t, s))
}

func TestFenceReadOnlyAndClosed(t *testing.T) {
	s := openStore(t)
	mustAppend(t, s, mustCoord(t, "x", "s"), kindA, `{}`)
	ro, err := core.OpenReadOnly(s.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.BeginFence(context.Background()); !errors.Is(err, core.ErrReadOnly) {
		t.Fatalf("BeginFence on a read-only store: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BeginFence(context.Background()); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("BeginFence on a closed store: %v", err)
	}
}
