package hostedworker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
)

// TestReactionLoopQuarantined: a worker over every event whose plugin
// answers each with two reactions reacts to its own reactions, doubling
// the log at every generation. It writes reactions down to
// server.workers_max_reaction_depth generations (here 4: 1+2+4+8+16
// events), then faults with kind "loop" naming the setting and is
// quarantined past its restart policy, instead of filling its tenant's
// storage; the generations within the bound are written.
func TestReactionLoopQuarantined(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), func(c *server.Config) { c.WorkersMaxReactionDepth = 4 })
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	appendOrders(t, acme, "order:1", 1)
	if _, err := acme.StartWorker(ctx, "loop", client.WorkerSpec{Plugin: "double", // region: every event, its own reactions too
		Restart: client.WorkerRestart{BackoffMinMs: 1, MaxRestarts: intp(2)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the looping worker quarantined", func() bool { return worker(t, acme, "loop").State == "quarantined" })
	w := worker(t, acme, "loop")
	if w.LastFault == nil || w.LastFault.Kind != "loop" || !strings.Contains(w.LastFault.Message, "server.workers_max_reaction_depth") {
		t.Fatalf("last fault: %+v, want kind loop naming server.workers_max_reaction_depth", w.LastFault)
	}
	st, err := acme.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := st["global_sequence"]; n != float64(1+2+4+8+16) {
		t.Fatalf("the tenant's log holds %v events, want 31: the order and four generations of reactions", n)
	}

}
