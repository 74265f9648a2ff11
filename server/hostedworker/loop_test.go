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
// kind "loop" the first time it fans out on its own reaction; one
// answering with one reaction (a chain) writes reactions down to
// server.workers_max_reaction_depth generations (here 4), then faults
// naming the setting. Either is quarantined past its restart policy
// instead of filling its tenant's storage.
func TestReactionLoopQuarantined(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), func(c *server.Config) { c.WorkersMaxReactionDepth = 4 })
	ctx := context.Background()
	for _, c := range []struct {
		tenant, plugin string
		events         float64 // the order and the reactions written
		says           string
	}{
		{"fan", "double", 1 + 2, "not fan out"},
		{"chain", "echo-ok", 1 + 4, "server.workers_max_reaction_depth"},
	} {
		tc := ts.tenant(t, c.tenant)
		appendOrders(t, tc, "order:1", 1)
		if _, err := tc.StartWorker(ctx, "loop", client.WorkerSpec{Plugin: c.plugin, // region: every event, its own reactions too
			Restart: client.WorkerRestart{BackoffMinMs: 1, MaxRestarts: intp(3)}}); err != nil {
			t.Fatal(err)
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
