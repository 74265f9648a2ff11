package core_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// submitWithID queues an append of payload to coord whose id is fixed by
// the caller, without waiting for it.
func submitWithID(t *testing.T, s *core.Store, coord core.Coordinate, payload string, id core.EventID) *core.Ticket {
	t.Helper()
	tk, err := s.SubmitWithOptions(context.Background(), coord, kindA, []byte(payload), core.AppendOptions{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// A caller-fixed id is refused when an earlier write of the same group
// holds it, and accepted again once the write that held it was rolled
// back (its batch failed its compare-and-set): the writes are queued from
// one goroutine before any is waited for, so they share group commits.
func TestFixedIDsWithinOneGroupAfterARollback(t *testing.T) {
	ctx := context.Background()
	for round := range 20 {
		s := openStore(t)
		coord := mustCoord(t, fmt.Sprintf("e%d", round), "s")
		x := core.NewEventID()
		// A batch that places x, then fails: x is rolled back.
		b1, err := s.SubmitBatch(ctx, []core.BatchItem{
			{Coordinate: coord, Kind: kindA, Payload: []byte(`1`), Options: core.AppendOptions{ID: x}},
			{Coordinate: mustCoord(t, "other", "s"), Kind: kindA, Payload: []byte(`2`), Options: core.AppendOptions{ID: core.NewEventID(), ExpectedClock: core.ExpectClock(7)}},
		})
		if err != nil {
			t.Fatal(err)
		}
		filler := submitWithID(t, s, coord, `3`, core.NewEventID())
		again := submitWithID(t, s, coord, `4`, x)
		twice := submitWithID(t, s, coord, `5`, x)
		var ce *core.ConflictError
		if _, err := b1.Wait(ctx); !errors.As(err, &ce) {
			t.Fatalf("round %d: batch with a stale expectation: %v, want a ConflictError", round, err)
		}
		if _, err := filler.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if r, err := again.Wait(ctx); err != nil || r.ID != x {
			t.Fatalf("round %d: id of a rolled-back batch reused: %+v %v, want it written", round, r, err)
		}
		if _, err := twice.Wait(ctx); !errors.Is(err, core.ErrDuplicateID) {
			t.Fatalf("round %d: id held by an earlier write: %v, want ErrDuplicateID", round, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A caller-fixed id written where a rolled-back batch's events were, in
// the same group, is still refused when given a second time: the ids of
// the events that replace a rollback's are looked up, not those it undid.
func TestFixedIDTwiceWhereARollbackWas(t *testing.T) {
	ctx := context.Background()
	for round := range 20 {
		s := openStore(t)
		coord := mustCoord(t, fmt.Sprintf("e%d", round), "s")
		b1, err := s.SubmitBatch(ctx, []core.BatchItem{
			{Coordinate: coord, Kind: kindA, Payload: []byte(`1`), Options: core.AppendOptions{ID: core.NewEventID()}},
			{Coordinate: coord, Kind: kindA, Payload: []byte(`2`), Options: core.AppendOptions{ID: core.NewEventID()}},
			{Coordinate: mustCoord(t, "other", "s"), Kind: kindA, Payload: []byte(`3`), Options: core.AppendOptions{ID: core.NewEventID(), ExpectedClock: core.ExpectClock(7)}},
		})
		if err != nil {
			t.Fatal(err)
		}
		y := core.NewEventID()
		first := submitWithID(t, s, coord, `4`, y)
		second := submitWithID(t, s, coord, `5`, y)
		var ce *core.ConflictError
		if _, err := b1.Wait(ctx); !errors.As(err, &ce) {
			t.Fatalf("round %d: batch with a stale expectation: %v, want a ConflictError", round, err)
		}
		if r, err := first.Wait(ctx); err != nil || r.ID != y {
			t.Fatalf("round %d: first write of a fixed id: %+v %v", round, r, err)
		}
		if _, err := second.Wait(ctx); !errors.Is(err, core.ErrDuplicateID) {
			t.Fatalf("round %d: id written twice where a rollback was: %v, want ErrDuplicateID", round, err)
		}
		if n := s.Stats().Events; n != 1 {
			t.Fatalf("round %d: %d events, want 1", round, n)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// An imported id is refused when an event written under the same open
// fence, in an earlier group, already holds it: fenced events are in
// neither the index nor the later group.
func TestFixedIDTwiceUnderAnOpenFence(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	c := mustCoord(t, "e", "s")
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	y := core.NewEventID()
	t1, err := f.SubmitWithOptions(ctx, c, kindA, []byte(`1`), core.AppendOptions{ID: y})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil { // ends the first write's group
		t.Fatal(err)
	}
	t2, err := f.SubmitWithOptions(ctx, c, kindA, []byte(`2`), core.AppendOptions{ID: y})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := t1.Wait(ctx); err != nil || r.ID != y {
		t.Fatalf("first write: %+v %v", r, err)
	}
	if _, err := t2.Wait(ctx); !errors.Is(err, core.ErrDuplicateID) {
		t.Fatalf("an id written twice under one fence: %v, want ErrDuplicateID", err)
	}
	if n := s.Stats().Events; n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
}

// BenchmarkFixedIDBatchesQueued: 128 batches of 1,000 events with
// caller-fixed ids (a raft follower's apply) queued before any is waited
// for, so groups hold up to 128k events; duplicate-id checks must not
// grow with the group.
func BenchmarkFixedIDBatchesQueued(b *testing.B) {
	s := openStore(b, func(c *core.Config) { c.Sync.EveryNEvents, c.Sync.Interval, c.Batch.MaxSize = 0, 0, 1000 })
	ctx := context.Background()
	payload := []byte(`{"amount":1234,"currency":"EUR","note":"benchmark event"}`)
	b.ResetTimer()
	for range b.N {
		var ts []*core.BatchTicket
		for i := range 128 {
			items := make([]core.BatchItem, 1000)
			for j := range items {
				items[j] = core.BatchItem{Coordinate: core.Coordinate{Entity: fmt.Sprintf("w%d", i%8), Scope: "s"}, Kind: kindA, Payload: payload,
					Options: core.AppendOptions{ID: core.NewEventID(), Timestamp: 1}}
			}
			bt, err := s.SubmitBatch(ctx, items)
			if err != nil {
				b.Fatal(err)
			}
			ts = append(ts, bt)
		}
		for _, bt := range ts {
			if _, err := bt.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N)*128000/b.Elapsed().Seconds(), "events/s")
}
