package hostedworker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
)

// TestReactionLoopQuarantined: a worker whose region takes in what its
// plugin writes reacts to its own reactions. One answering each event
// with two reactions (doubling the log at every generation) faults with
// kind "loop" when two of its own reactions to one cause fan out; one
// answering with one reaction (a chain) writes reactions
// down to server.workers_max_reaction_depth generations (here 4), then
// faults naming the setting. Either is quarantined past its restart
// policy instead of filling its tenant's storage. Finite workflows run:
// one that fans out on its own step (an order, one step-1 reaction, two
// step-2 reactions to it), and a chain answering each step with a
// notification beside the next step, whichever it writes first.
func TestReactionLoopQuarantined(t *testing.T) {
	fixtures := standardFixtures()
	fixtures["steps"] = "handler-steps"
	fixtures["notify-steps"] = "handler-notify-steps"
	ts := startServer(t, t.TempDir(), newSource(t, fixtures), func(c *server.Config) { c.WorkersMaxReactionDepth = 4 })
	ctx := context.Background()
	for _, c := range []struct {
		tenant, plugin string
		events         float64 // the order and the reactions written
		says           string  // in the loop fault ("": none)
	}{
		{"fan", "double", 1 + 2 + 4, "fanned out too"},
		{"chain", "echo-ok", 1 + 4, "server.workers_max_reaction_depth"},
		{"steps", "steps", 1 + 1 + 2, ""},
		{"notified", "notify-steps", 1 + 3 + 3, ""}, // a chain of three steps, a notification beside each
	} {
		tc := ts.tenant(t, c.tenant)
		appendOrders(t, tc, "order:1", 1)
		if _, err := tc.StartWorker(ctx, "loop", client.WorkerSpec{Plugin: c.plugin, // region: every event, its own reactions too
			Restart: client.WorkerRestart{BackoffMinMs: 1, MaxRestarts: intp(3)}}); err != nil {
			t.Fatal(err)
		}
		if c.says == "" {
			waitFor(t, c.tenant+"'s reactions", func() bool {
				st, err := tc.Stats(ctx)
				return err == nil && st["global_sequence"] == c.events && worker(t, tc, "loop").Lag == 0
			})
			if w := worker(t, tc, "loop"); w.State != "running" || (w.LastFault != nil && w.LastFault.Kind == "loop") {
				t.Fatalf("%s: a finite workflow: state %s, last fault %+v", c.tenant, w.State, w.LastFault)
			}
			continue
		}
		waitFor(t, c.tenant+"'s looping worker quarantined", func() bool { return worker(t, tc, "loop").State == "quarantined" })
		w := worker(t, tc, "loop")
		if w.LastFault == nil || w.LastFault.Kind != "loop" || !strings.Contains(w.LastFault.Message, c.says) {
			t.Fatalf("%s: last fault %+v, want kind loop saying %q", c.tenant, w.LastFault, c.says)
		}
		st, err := tc.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := st["global_sequence"]; n != c.events {
			t.Fatalf("%s: the tenant's log holds %v events, want %v", c.tenant, n, c.events)
		}
	}
}

// TestReactionLoopBoundedUnderLoad: the doubling worker over many orders
// at once — thousands of sources between a reaction and its own
// reactions' turn — is caught as with one: at most two generations per
// order are written before it faults with kind "loop" (the judgement
// reads the store, not a cache of what the worker handled lately).
func TestReactionLoopBoundedUnderLoad(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	ctx := context.Background()
	tc := ts.tenant(t, "many")
	const orders = 3000
	appendOrders(t, tc, "order:", orders)
	if _, err := tc.StartWorker(ctx, "loop", client.WorkerSpec{Plugin: "double",
		Restart: client.WorkerRestart{BackoffMinMs: 1, MaxRestarts: intp(3)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the looping worker quarantined", func() bool { return worker(t, tc, "loop").State == "quarantined" })
	if w := worker(t, tc, "loop"); w.LastFault == nil || w.LastFault.Kind != "loop" {
		t.Fatalf("last fault %+v, want kind loop", w.LastFault)
	}
	st, err := tc.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := st["global_sequence"].(float64); n > (1+2+4)*orders {
		t.Fatalf("the tenant's log holds %v events for %d orders: more than two generations each", n, orders)
	}
}

// TestReactionLoopSeenHoweverWideTheSiblings: a plugin that answers one
// event of each call with 300 reactions — so a cause's reactions number
// more than any read of its descendants would take in, and never two fan
// out in one batch — is still caught: the siblings are judged by their
// idempotency keys, not by reading the tree.
func TestReactionLoopSeenHoweverWideTheSiblings(t *testing.T) {
	fixtures := standardFixtures()
	fixtures["fan-first"] = "handler-fan-first"
	ts := startServer(t, t.TempDir(), newSource(t, fixtures), func(c *server.Config) { c.WorkersMaxReactionDepth = 3 })
	ctx := context.Background()
	tc := ts.tenant(t, "wide")
	appendOrders(t, tc, "order:1", 1)
	if _, err := tc.StartWorker(ctx, "loop", client.WorkerSpec{Plugin: "fan-first",
		Restart: client.WorkerRestart{BackoffMinMs: 1, MaxRestarts: intp(0)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the wide worker quarantined", func() bool { return worker(t, tc, "loop").State == "quarantined" })
	w := worker(t, tc, "loop")
	if w.LastFault == nil || w.LastFault.Kind != "loop" || !strings.Contains(w.LastFault.Message, "fanned out too") {
		t.Fatalf("last fault %+v, want kind loop: two siblings fanned out", w.LastFault)
	}
	st, err := tc.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The order's 300 reactions, the 300 each of those the first of a
	// batch got (the worker's first fan-out on its own reactions to an
	// outside event is a step, not yet a loop), and one batch more before
	// two siblings are seen fanning out — not 9,000 as when the check read
	// the tree and missed them.
	if n := st["global_sequence"].(float64); n > 1+300+300*5+300*2 {
		t.Fatalf("the tenant's log holds %v events from one order", n)
	}
}
