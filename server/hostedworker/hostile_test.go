package hostedworker_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
)

// TestWorkerCursorNotTakenByAPICursor: a cursor defined through the API
// with the name of a worker's cursor is refused with a conflict naming
// the worker, and the worker's committed position stays where it was (a
// definition would otherwise rewind it to the log's beginning, or let the
// API move it).
func TestWorkerCursorNotTakenByAPICursor(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 20)
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs, Cursor: "shared",
		Restart: client.WorkerRestart{BackoffMinMs: 5}}); err != nil {
		t.Fatal(err)
	}
	last := srcs[len(srcs)-1].GlobalSequence
	waitFor(t, "the worker past the last input", func() bool { return worker(t, acme, "echoer").Position > last })
	before := worker(t, acme, "echoer").Position

	err := acme.DefineCursor(ctx, "shared", inputs)
	if !errors.Is(err, client.ErrConflict) {
		t.Fatalf("defining the worker's cursor through the API: %v, want a conflict", err)
	}
	if p := problem(t, err); !strings.Contains(p.Detail, "echoer") {
		t.Fatalf("conflict %q does not name the worker", p.Detail)
	}
	if got := worker(t, acme, "echoer").Position; got != before {
		t.Fatalf("the worker's position moved from %d to %d", before, got)
	}
	if cs, err := acme.Cursors(ctx); err != nil || len(cs) != 0 {
		t.Fatalf("cursors %+v %v, want none defined", cs, err)
	}
	if err := acme.CommitCursor(ctx, "shared", last+1); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("committing the worker's cursor through the API: %v, want not found", err)
	}
	// Another name is fine.
	if err := acme.DefineCursor(ctx, "mine", inputs); err != nil {
		t.Fatal(err)
	}
}
