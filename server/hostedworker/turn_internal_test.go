package hostedworker

import (
	"context"
	"errors"
	"fmt"
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
// all tenants together (a tenant at most half of the server's turns) and
// per tenant (TenantInFlight slots, kept while writing); a worker that
// pauses gives the server's turn up but keeps its tenant's slot; a wait
// ends with its ctx.
func TestTurnsBoundServerAndTenant(t *testing.T) {
	s := &Supervisor{turns: newFairTurns(4), tenantInFlight: map[string]chan struct{}{}}
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
	if in := s.turns.held(); in != 4 || s.waiting.Load() != 2 {
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
	if in := s.turns.held(); in != 0 || s.waiting.Load() != 0 {
		t.Fatalf("after every release: %d in flight, %d waiting", in, s.waiting.Load())
	}
}

// TestFairTurnsServeAQuietTenant: with twelve tenants each keeping four
// workers waiting for the server's eight turns (slow plugins), a quiet
// tenant's worker gets a turn within as many hand-overs as there are
// tenants, not behind every waiting worker (forty of them), and each
// tenant holds at most half.
func TestFairTurnsServeAQuietTenant(t *testing.T) {
	f := newFairTurns(8)
	type grant struct {
		tenant  string
		release func()
	}
	granted := make(chan grant, 64)
	take := func(tenant string) {
		go func() {
			r, err := f.take(context.Background(), tenant)
			if err != nil {
				t.Error(err)
				return
			}
			granted <- grant{tenant, r}
		}()
	}
	var held []grant
	for i := 0; i < 12; i++ {
		for j := 0; j < 4; j++ {
			take(fmt.Sprint("busy", i))
		}
	}
	for len(held) < 8 {
		select {
		case g := <-granted:
			held = append(held, g)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d turns given, want 8", len(held))
		}
	}
	time.Sleep(20 * time.Millisecond) // every busy take is waiting now
	take("quiet")
	time.Sleep(20 * time.Millisecond)
	for handovers := 1; ; handovers++ {
		if handovers > 13 {
			t.Fatal("the quiet tenant waited past 13 hand-overs (one per waiting tenant)")
		}
		held[0].release()
		held = held[1:]
		var g grant
		select {
		case g = <-granted:
		case <-time.After(5 * time.Second):
			t.Fatal("a released turn was not handed over")
		}
		if g.tenant == "quiet" {
			t.Logf("the quiet tenant got a turn at hand-over %d", handovers)
			break
		}
		held = append(held, g)
		per := map[string]int{}
		for _, h := range held {
			if per[h.tenant]++; per[h.tenant] > 4 {
				t.Fatalf("%s holds %d of 8 turns", h.tenant, per[h.tenant])
			}
		}
	}
}

// TestFairTurnsServeATenantThatKeepsWaiting: a tenant with two workers,
// holding none of the turns with one waiting, is served before tenants
// whose single worker gives its turn back and asks again (their entries
// go and come back at the back of the rotation), not after every one of
// them for ever.
func TestFairTurnsServeATenantThatKeepsWaiting(t *testing.T) {
	f := newFairTurns(8)
	ctx := context.Background()
	type grant struct {
		tenant  string
		release func()
	}
	granted := make(chan grant, 256)
	take := func(tenant string) {
		go func() {
			if r, err := f.take(ctx, tenant); err == nil {
				granted <- grant{tenant, r}
			}
		}()
	}
	first, err := f.take(ctx, "two-workers")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 12; i++ {
		take(fmt.Sprint("one-worker", i))
	}
	var held []grant
	for len(held) < 7 {
		held = append(held, <-granted)
	}
	time.Sleep(20 * time.Millisecond)
	take("two-workers") // its second worker waits
	time.Sleep(20 * time.Millisecond)
	first() // its first is done: it holds none, one waiting
	for i := 1; i <= 20; i++ {
		h := held[0]
		held = held[1:]
		h.release()
		g := <-granted
		if g.tenant == "two-workers" {
			return
		}
		held = append(held, g)
		take(h.tenant) // the released tenant asks again, its entry made anew
		time.Sleep(time.Millisecond)
	}
	t.Fatal("a tenant holding none with a worker waiting was not served in 20 hand-overs")
}
