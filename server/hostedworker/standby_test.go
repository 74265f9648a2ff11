package hostedworker_test

import (
	"context"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
)

// TestStandbyStopsAndResumeContinues: Standby (a cluster node that stops
// leading) stops a running worker without recording anything — the
// worker stays desired running, and events written meanwhile get no
// reactions —; a worker started while on standby is recorded but not run;
// Resume (the node leads again) runs both from their cursors, and every
// input gets exactly one reaction.
func TestStandbyStopsAndResumeContinues(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 20)
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first echoes", func() bool { return len(echoes(t, acme)) == len(srcs) })

	sup := ts.srv.Workers()
	if err := sup.Standby(ctx); err != nil {
		t.Fatal(err)
	}
	if w := worker(t, acme, "echoer"); w.Desired != "running" || w.State == "running" {
		t.Fatalf("after Standby: desired %q state %q, want desired running and not running", w.Desired, w.State)
	}
	srcs = append(srcs, appendOrders(t, acme, "order:2", 30)...)
	// A second worker on its own cursor, started on standby: recorded only.
	if _, err := acme.StartWorker(ctx, "late", client.WorkerSpec{Plugin: "echo", Region: client.CursorRegion{Entity: "order:3"}}); err != nil {
		t.Fatal(err)
	}
	late := appendOrders(t, acme, "order:3", 5)
	time.Sleep(300 * time.Millisecond)
	if n := len(echoes(t, acme)); n != 20 {
		t.Fatalf("%d echoes while on standby, want the 20 from before", n)
	}

	sup.Resume()
	waitFor(t, "every input echoed after Resume", func() bool { return len(echoes(t, acme)) == len(srcs)+len(late)*2 })
	time.Sleep(200 * time.Millisecond)
	evs := echoes(t, acme)
	if len(evs) != len(srcs)+len(late)*2 {
		t.Fatalf("%d echoes, want %d", len(evs), len(srcs)+len(late)*2)
	}
	if w := worker(t, acme, "late"); w.State != "running" {
		t.Fatalf("the worker started on standby: state %q after Resume", w.State)
	}
}
