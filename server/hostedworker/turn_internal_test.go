package hostedworker

import (
	"context"
	"errors"
	"testing"
	"time"
)

// takeAsync takes t's turn in the background and reports it on the
// returned channel (its release, or nil when ctx ended first).
func takeAsync(ctx context.Context, t *turn) <-chan func() {
	got := make(chan func(), 1)
	go func() {
		release, err := t.take(ctx)
		if err != nil {
			release = nil
		}
		got <- release
	}()
	return got
}

// taken waits for c's turn and returns its release.
func taken(t *testing.T, c <-chan func(), what string) func() {
	t.Helper()
	select {
	case r := <-c:
		if r == nil {
			t.Fatalf("%s: the turn was not taken", what)
		}
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: still waiting for a turn", what)
	}
	return nil
}

// waiting checks that c's turn is not given within a moment.
func waiting(t *testing.T, c <-chan func(), what string) {
	t.Helper()
	select {
	case <-c:
		t.Fatalf("%s got a turn it should wait for", what)
	case <-time.After(30 * time.Millisecond):
	}
}

// TestTurnsBoundServerAndTenant: the workers in flight are bounded for
// all tenants together and per tenant (at most half of the server's), a
// worker waiting on its tenant's rates gives the server's turn up but
// keeps its tenant's, and a wait ends with its ctx.
func TestTurnsBoundServerAndTenant(t *testing.T) {
	s := &Supervisor{inFlight: make(chan struct{}, 4), tenantInFlight: map[string]chan struct{}{}}
	ctx := context.Background()

	// A tenant takes at most half of the server's four.
	a1 := taken(t, takeAsync(ctx, s.newTurn("a")), "a's first")
	a2 := taken(t, takeAsync(ctx, s.newTurn("a")), "a's second")
	a3t := s.newTurn("a")
	a3 := takeAsync(ctx, a3t)
	waiting(t, a3, "a's third (past half the server)")

	// Another tenant takes the rest; a third tenant waits for the server.
	b1 := taken(t, takeAsync(ctx, s.newTurn("b")), "b's first")
	b2t := s.newTurn("b")
	b2 := taken(t, takeAsync(ctx, b2t), "b's second")
	c1 := takeAsync(ctx, s.newTurn("c"))
	waiting(t, c1, "c's first (the server's four are taken)")
	if in, w := len(s.inFlight), s.waiting.Load(); in != 4 || w != 2 {
		t.Fatalf("metrics: %d in flight, %d waiting; want 4 and 2 (a's third, c's first)", in, w)
	}

	// b's second waits on its tenant's rates: it gives the server's
	// turn up, and c goes; b's takes it back when c is done.
	b2t.pause()
	c1r := taken(t, c1, "c's first, once b's second paused")
	resumed := make(chan error, 1)
	go func() { resumed <- b2t.resume(ctx) }()
	select {
	case <-resumed:
		t.Fatal("b's second resumed while the server's four were taken")
	case <-time.After(30 * time.Millisecond):
	}
	c1r()
	if err := <-resumed; err != nil {
		t.Fatal(err)
	}
	// b keeps its tenant's turn while paused: a third of b's waits.
	b2t.pause()
	b3 := takeAsync(ctx, s.newTurn("b"))
	waiting(t, b3, "b's third (b's two are held, one paused)")
	if err := b2t.resume(ctx); err != nil {
		t.Fatal(err)
	}

	// a's third goes once a's first is done; a wait ends with its ctx.
	a1()
	a3r := taken(t, a3, "a's third, once a's first was done")
	cctx, cancel := context.WithCancel(ctx)
	d1 := takeAsync(cctx, s.newTurn("d"))
	waiting(t, d1, "d's first")
	cancel()
	if r := <-d1; r != nil {
		t.Fatal("a wait whose ctx ended took a turn")
	}
	if _, err := s.newTurn("d").take(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("take with an ended ctx: %v", err)
	}

	// Everything given back: the server's four are free again.
	a2()
	a3r()
	b1()
	b2()
	taken(t, b3, "b's third")()
	var releases []func()
	for _, tenant := range []string{"e", "f", "g", "h"} {
		releases = append(releases, taken(t, takeAsync(ctx, s.newTurn(tenant)), tenant+"'s first"))
	}
	for _, r := range releases {
		r()
	}
}
