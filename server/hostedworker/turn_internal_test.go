package hostedworker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/shares"
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
// all tenants together (a tenant at most half of the server's turns) and
// per tenant (TenantInFlight slots, kept while writing); a worker that
// pauses gives the server's turn up but keeps its tenant's slot; a wait
// ends with its ctx.
func TestTurnsBoundServerAndTenant(t *testing.T) {
	s := &Supervisor{turns: shares.NewFair(4), tenantInFlight: map[string]chan struct{}{}}
	ctx := context.Background()

	// A tenant takes at most half of the server's four.
	a1 := taken(t, takeAsync(ctx, s.newTurn("a")), "a's first")
	a2 := taken(t, takeAsync(ctx, s.newTurn("a")), "a's second")
	a3 := takeAsync(ctx, s.newTurn("a"))
	waiting(t, a3, "a's third (past half the server)")

	// Another tenant takes the rest; a third tenant waits for the server.
	b1 := taken(t, takeAsync(ctx, s.newTurn("b")), "b's first")
	b2t := s.newTurn("b")
	b2 := taken(t, takeAsync(ctx, b2t), "b's second")
	c1 := takeAsync(ctx, s.newTurn("c"))
	waiting(t, c1, "c's first (the server's four are taken)")
	if in := held(s); in != 4 || s.waiting.Load() != 2 {
		t.Fatalf("metrics: %d in flight, %d waiting; want 4 and 2 (a's third, c's first)", in, s.waiting.Load())
	}

	// b's second has its answer and writes: it gives the server's turn
	// up, and c goes.
	b2t.pause()
	c1r := taken(t, c1, "c's first, once b's second paused")
	c1r()

	// A tenant's slots bound its workers holding batches, writing ones
	// included: with four of b's holding (one writing, paused), a fifth
	// waits whatever the server has free.
	a1()
	a3r := taken(t, a3, "a's third, once a's first was done")
	b3t := s.newTurn("b")
	b3 := taken(t, takeAsync(ctx, b3t), "b's third")
	b3t.pause()
	b4t := s.newTurn("b")
	b4 := taken(t, takeAsync(ctx, b4t), "b's fourth")
	b4t.pause()
	b5 := takeAsync(ctx, s.newTurn("b"))
	waiting(t, b5, "b's fifth (b's four slots held)")

	// A wait ends with its ctx.
	cctx, cancel := context.WithCancel(ctx)
	a4 := takeAsync(cctx, s.newTurn("a"))
	waiting(t, a4, "a's fourth")
	cancel()
	if r := <-a4; r != nil {
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
	b3()
	b4()
	taken(t, b5, "b's fifth")()
	var releases []func()
	for _, tenant := range []string{"e", "f", "g", "h"} {
		releases = append(releases, taken(t, takeAsync(ctx, s.newTurn(tenant)), tenant+"'s first"))
	}
	for _, r := range releases {
		r()
	}
	if in := held(s); in != 0 || s.waiting.Load() != 0 {
		t.Fatalf("after every release: %d in flight, %d waiting", in, s.waiting.Load())
	}
}

// held is the server's turns held, all tenants' together.
func held(s *Supervisor) int {
	all, _ := s.turns.InUse("")
	return all
}
