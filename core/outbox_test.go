package core_test

import (
	"context"
	"errors"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// The outbox stages events (validating each at once) and flushes them as
// one atomic batch.

func TestOutboxStagingValidates(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.SingleAppendMaxBytes = 100 })
	c := mustCoord(t, "ob", "s")
	ob := s.Outbox()
	if !ob.IsEmpty() || ob.Len() != 0 {
		t.Fatal("a new outbox is not empty")
	}
	if err := ob.Stage(c, kindA, []byte(`{"n":0}`)); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name   string
		stage  func() error
		target error
	}{
		{"empty entity", func() error { return ob.Stage(core.Coordinate{Scope: "s"}, kindA, []byte(`{}`)) }, core.ErrInvalidCoordinate},
		{"NUL in scope", func() error { return ob.Stage(core.Coordinate{Entity: "e", Scope: "a\x00b"}, kindA, []byte(`{}`)) }, core.ErrInvalidCoordinate},
		{"bad JSON", func() error { return ob.Stage(c, kindA, []byte(`{"n":`)) }, core.ErrInvalidPayload},
		{"empty payload", func() error { return ob.Stage(c, kindA, nil) }, core.ErrInvalidPayload},
		{"reserved kind", func() error { return ob.Stage(c, core.Kind(0), []byte(`{}`)) }, core.ErrInvalidKind},
		{"payload too large", func() error { return ob.Stage(c, kindA, []byte(jsonString(101))) }, core.ErrPayloadTooLarge},
		{"over-long key", func() error {
			return ob.StageWithOptions(c, kindA, []byte(`{}`), core.AppendOptions{IdempotencyKey: string(make([]byte, core.MaxIdempotencyKeyBytes+1))})
		}, core.ErrInvalidOptions},
		{"PriorItem of itself", func() error {
			return ob.Push(core.BatchItem{Coordinate: c, Kind: kindA, Payload: []byte(`{}`), Causation: core.PriorItem(1)})
		}, core.ErrInvalidOptions},
		{"PriorItem of a later item", func() error {
			return ob.Push(core.BatchItem{Coordinate: c, Kind: kindA, Payload: []byte(`{}`), Causation: core.PriorItem(5)})
		}, core.ErrInvalidOptions},
	}
	for _, b := range bad {
		err := b.stage()
		if !errors.Is(err, b.target) {
			t.Errorf("%s: got %v, want %v", b.name, err, b.target)
		}
		if ob.Len() != 1 {
			t.Fatalf("%s: a refused event was staged (%d staged)", b.name, ob.Len())
		}
	}
	var be *core.BatchItemError
	err := ob.Push(core.BatchItem{Coordinate: c, Kind: kindA, Payload: []byte(`{}`), Causation: core.PriorItem(1)})
	if !errors.As(err, &be) || be.Index != 1 {
		t.Fatalf("PriorItem(1) pushed as item 1: %v", err)
	}
	// The payload is copied at Stage.
	buf := []byte(`{"n":1}`)
	if err := ob.StageWithOptions(c, kindB, buf, core.AppendOptions{IdempotencyKey: "ob-1"}); err != nil {
		t.Fatal(err)
	}
	copy(buf, `{"n":9}`)
	if err := ob.Push(core.BatchItem{Coordinate: c, Kind: kindA, Payload: []byte(`{"n":2}`), Causation: core.PriorItem(1)}); err != nil {
		t.Fatal(err)
	}
	if ob.Len() != 3 || ob.IsEmpty() {
		t.Fatalf("Len %d", ob.Len())
	}
	if s.Stats().Events != 0 {
		t.Fatal("staging wrote something")
	}
	rs, err := ob.Flush(context.Background())
	if err != nil || len(rs) != 3 {
		t.Fatalf("Flush: %v, %v", rs, err)
	}
	if ob.Len() != 0 || !ob.IsEmpty() {
		t.Fatalf("%d staged after Flush", ob.Len())
	}
	evs, err := s.Stream("ob")
	if err != nil {
		t.Fatal(err)
	}
	if got := payloads(evs); len(got) != 3 || got[0] != `{"n":0}` || got[1] != `{"n":1}` || got[2] != `{"n":2}` {
		t.Fatalf("flushed %v", got)
	}
	if evs[1].IdempotencyKey != "ob-1" || evs[1].Header.Kind != kindB || evs[2].Header.CausationID != rs[1].ID {
		t.Fatalf("flushed events lost their options: %+v", evs[1:])
	}
	// An emptied outbox can be used again.
	if err := ob.Stage(c, kindA, []byte(`{"n":3}`)); err != nil {
		t.Fatal(err)
	}
	if rs, err := ob.Flush(context.Background()); err != nil || rs[0].Clock != 3 {
		t.Fatalf("second Flush: %v, %v", rs, err)
	}
}

// A Flush that fails keeps the events staged; the next one can succeed.
func TestOutboxFailedFlushKeepsEvents(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.Batch.MaxSize = 3 })
	ctx := context.Background()
	c, d := mustCoord(t, "obf", "s"), mustCoord(t, "obf:2", "s")
	mustAppend(t, s, c, kindA, `0`)

	// Too many events for one batch.
	ob := s.Outbox()
	for i := 0; i < 4; i++ {
		if err := ob.Stage(d, kindA, []byte(payloadN(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ob.Flush(ctx); !errors.Is(err, core.ErrBatchTooLarge) || ob.Len() != 4 {
		t.Fatalf("oversized Flush: %v, %d staged", err, ob.Len())
	}
	if _, err := ob.SubmitFlush(ctx); !errors.Is(err, core.ErrBatchTooLarge) || ob.Len() != 4 {
		t.Fatalf("oversized SubmitFlush: %v, %d staged", err, ob.Len())
	}

	// A compare-and-set conflict: refused as a whole, kept, and flushed
	// once the entity is where the outbox expects it.
	ob = s.Outbox()
	if err := ob.Stage(d, kindA, []byte(`"x"`)); err != nil {
		t.Fatal(err)
	}
	if err := ob.StageWithOptions(c, kindA, []byte(`2`), core.AppendOptions{ExpectedClock: core.ExpectClock(1)}); err != nil {
		t.Fatal(err)
	}
	before := takeSnapshot(t, s)
	_, err := ob.Flush(ctx)
	var be *core.BatchItemError
	if !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, core.ErrConflict) || ob.Len() != 2 {
		t.Fatalf("conflicting Flush: %v, %d staged", err, ob.Len())
	}
	before.mustEqual(t, takeSnapshot(t, s), "conflicting Flush")
	mustAppend(t, s, c, kindA, `1`)
	rs, err := ob.Flush(ctx)
	if err != nil || ob.Len() != 0 || rs[1].Clock != 2 || rs[0].Clock != 0 {
		t.Fatalf("Flush after the conflict cleared: %+v, %v, %d staged", rs, err, ob.Len())
	}

	// Under a fence, an ordinary outbox cannot flush; after it, it can.
	if err := ob.Stage(c, kindA, []byte(`3`)); err != nil {
		t.Fatal(err)
	}
	f := mustBeginFence(t, s)
	if _, err := ob.Flush(ctx); !errors.Is(err, core.ErrFenceActive) || ob.Len() != 1 {
		t.Fatalf("Flush under a fence: %v, %d staged", err, ob.Len())
	}
	if _, err := ob.SubmitFlush(ctx); !errors.Is(err, core.ErrFenceActive) || ob.Len() != 1 {
		t.Fatalf("SubmitFlush under a fence: %v, %d staged", err, ob.Len())
	}
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if rs, err := ob.Flush(ctx); err != nil || rs[0].Clock != 3 {
		t.Fatalf("Flush after the fence: %+v, %v", rs, err)
	}
	mustVerify(t, s)
}

func TestOutboxSubmitFlush(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "obs", "s")
	ob := s.Outbox()
	var tickets []*core.BatchTicket
	for b := 0; b < 5; b++ {
		for i := 0; i < 3; i++ {
			if err := ob.Stage(c, kindA, []byte(payloadN(3*b+i))); err != nil {
				t.Fatal(err)
			}
		}
		bt, err := ob.SubmitFlush(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ob.Len() != 0 {
			t.Fatalf("%d staged after SubmitFlush", ob.Len())
		}
		tickets = append(tickets, bt)
	}
	for b, bt := range tickets {
		rs, err := bt.Wait(ctx)
		if err != nil || len(rs) != 3 {
			t.Fatalf("batch %d: %v, %v", b, rs, err)
		}
		for i, r := range rs {
			if r.Clock != uint64(3*b+i) {
				t.Fatalf("batch %d item %d: clock %d", b, i, r.Clock)
			}
		}
	}
	// SubmitFlush of an empty outbox resolves at once with nothing.
	bt, err := ob.SubmitFlush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rs, done, err := bt.TryCheck(); !done || rs != nil || err != nil {
		t.Fatalf("empty SubmitFlush: %v %v %v", rs, done, err)
	}
	if got := s.Stats().Events; got != 15 {
		t.Fatalf("%d events", got)
	}
}

// A fence's outbox: Flush would wait for the fence and is refused;
// SubmitFlush writes under the fence and resolves at Commit (or fails
// with ErrFenceCancelled).
func TestFenceOutbox(t *testing.T) {
	ctx := context.Background()
	for _, commit := range []bool{true, false} {
		s := openStore(t)
		c := mustCoord(t, "fob", "s")
		mustAppend(t, s, c, kindA, `0`)
		f := mustBeginFence(t, s)
		ob := f.Outbox()
		if err := ob.Stage(core.Coordinate{}, kindA, []byte(`{}`)); !errors.Is(err, core.ErrInvalidCoordinate) {
			t.Fatalf("fence outbox Stage of a bad coordinate: %v", err)
		}
		for i := 1; i <= 3; i++ {
			if err := ob.Stage(c, kindA, []byte(payloadN(i))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := ob.Flush(ctx); !errors.Is(err, core.ErrOutboxUnderFence) || ob.Len() != 3 {
			t.Fatalf("fence outbox Flush: %v, %d staged", err, ob.Len())
		}
		bt, err := ob.SubmitFlush(ctx)
		if err != nil || ob.Len() != 0 {
			t.Fatalf("fence outbox SubmitFlush: %v, %d staged", err, ob.Len())
		}
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if _, done, _ := bt.TryCheck(); done {
			t.Fatal("fence outbox ticket resolved before the fence ended")
		}
		if got := s.Stats().Events; got != 1 {
			t.Fatalf("%d events visible under the fence", got)
		}
		if commit {
			if err := f.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			rs, err := bt.Wait(ctx)
			if err != nil || len(rs) != 3 || rs[0].Clock != 1 || rs[2].GlobalSequence != 3 {
				t.Fatalf("after Commit: %+v, %v", rs, err)
			}
			if got := s.Stats().Events; got != 4 {
				t.Fatalf("%d events after Commit", got)
			}
		} else {
			if err := f.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
			if rs, err := bt.Wait(ctx); !errors.Is(err, core.ErrFenceCancelled) || rs != nil {
				t.Fatalf("after Cancel: %v, %v", rs, err)
			}
			if got := s.Stats().Events; got != 1 {
				t.Fatalf("%d events after Cancel", got)
			}
			if rep := mustVerify(t, s); rep.Hidden != 3 {
				t.Fatalf("Verify after Cancel: %+v", rep)
			}
		}
	}
}
