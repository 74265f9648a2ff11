package hostedworker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
)

// TestWorkerDelete: DELETE …/workers/{name} (admin) stops a running
// worker and forgets it — definition, status, and its cursor's position,
// rewound to the log's beginning (a worker's cursor is its own) — so a
// worker taking the cursor up later starts from the beginning; the
// reactions written stay, and a worker of the same name and cursor
// defined again writes none twice (the same idempotency keys). Deleting
// a quarantined worker works too; an unknown one is 404, a reader 403.
func TestWorkerDelete(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	reader := ts.key(t, "acme", "reader")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 20)
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs, Restart: client.WorkerRestart{BackoffMinMs: 1}}); err != nil {
		t.Fatal(err)
	}
	last := srcs[len(srcs)-1].GlobalSequence
	waitFor(t, "the worker past the last input", func() bool { return worker(t, acme, "echoer").Position > last })
	checkOnce(t, srcs, echoes(t, acme))

	if p := problem(t, reader.DeleteWorker(ctx, "echoer")); p.Status != http.StatusForbidden {
		t.Fatalf("a reader deleting a worker: %+v", p)
	}
	if p := problem(t, acme.DeleteWorker(ctx, "nosuch")); p.Status != http.StatusNotFound || p.Code != client.CodeNotFound {
		t.Fatalf("deleting an unknown worker: %+v", p)
	}
	if err := acme.DeleteWorker(ctx, "echoer"); err != nil {
		t.Fatal(err)
	}
	if p := problem(t, func() error { _, err := acme.Worker(ctx, "echoer"); return err }()); p.Status != http.StatusNotFound {
		t.Fatalf("a deleted worker's status: %+v", p)
	}
	if ws, err := acme.Workers(ctx); err != nil || len(ws) != 0 {
		t.Fatalf("workers after the deletion: %+v %v", ws, err)
	}
	// It no longer runs: new inputs get no reactions.
	more := appendOrders(t, acme, "order:2", 5)
	time.Sleep(300 * time.Millisecond)
	if n := len(echoes(t, acme)); n != len(srcs) {
		t.Fatalf("%d echoes after the deletion, want %d: the deleted worker still runs", n, len(srcs))
	}

	// Its cursor is free, at the log's beginning: a worker over it that
	// faults at its first batch (committing nothing) shows position 0.
	if _, err := acme.StartWorker(ctx, "trap", client.WorkerSpec{Plugin: "trapper", Region: inputs, Cursor: "echoer",
		Restart: client.WorkerRestart{MaxRestarts: intp(0)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the quarantine", func() bool { return worker(t, acme, "trap").State == "quarantined" })
	if st := worker(t, acme, "trap"); st.Position != 0 {
		t.Fatalf("a worker over a deleted worker's cursor starts at %d, want 0 (the log's beginning)", st.Position)
	}
	if err := acme.DeleteWorker(ctx, "trap"); err != nil {
		t.Fatalf("deleting a quarantined worker: %v", err)
	}

	// The name again: a new worker (no restarts, no old log) from the
	// beginning, writing exactly one reaction per input all told.
	st, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs, Restart: client.WorkerRestart{BackoffMinMs: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range st.Log {
		if strings.Contains(l.Message, "trap") || strings.Contains(l.Message, "fault") {
			t.Fatalf("the new worker carries the deleted one's log: %+v", st.Log)
		}
	}
	if st.Restarts != 0 {
		t.Fatalf("the new worker carries the deleted one's restarts: %+v", st)
	}
	all := append(srcs, more...)
	waitFor(t, "the new worker past the last input", func() bool { return worker(t, acme, "echoer").Position > more[len(more)-1].GlobalSequence })
	checkOnce(t, all, echoes(t, acme))
}

// TestWorkerRemadeWithAnotherPlugin: a worker deleted and defined again
// over the same cursor with a plugin that answers otherwise (two
// reactions per event where the first answered one) goes through the
// events the first one handled — keeping the reactions written then,
// writing none twice — instead of faulting on the first of them until
// quarantined; it handles new events with its new plugin.
func TestWorkerRemadeWithAnotherPlugin(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 10)
	spec := client.WorkerSpec{Plugin: "echo", Region: inputs, Restart: client.WorkerRestart{BackoffMinMs: 1, MaxRestarts: intp(3)}}
	if _, err := acme.StartWorker(ctx, "w", spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first worker past the inputs", func() bool { return worker(t, acme, "w").Position > srcs[len(srcs)-1].GlobalSequence })
	checkOnce(t, srcs, echoes(t, acme))
	if err := acme.DeleteWorker(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	spec.Plugin = "double"
	if _, err := acme.StartWorker(ctx, "w", spec); err != nil {
		t.Fatal(err)
	}
	more := appendOrders(t, acme, "order:2", 3)
	waitFor(t, "the remade worker past the new inputs", func() bool {
		st := worker(t, acme, "w")
		if st.State == "quarantined" {
			t.Fatalf("the remade worker was quarantined: %+v", st.Log)
		}
		return st.Position > more[len(more)-1].GlobalSequence
	})
	if n, want := len(echoes(t, acme)), len(srcs)+2*len(more); n != want {
		t.Fatalf("%d reactions, want %d: one per event the first worker handled, two per new event", n, want)
	}
}

// TestWorkerGivesUpItsCursor: a worker started again over another cursor
// gives its old one up rewound to the log's beginning, as deleting it
// would: a worker taking the old cursor up later starts there, not where
// the first one left it (skipping every event before).
func TestWorkerGivesUpItsCursor(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 10)
	if _, err := acme.StartWorker(ctx, "ca", client.WorkerSpec{Plugin: "echo", Region: inputs, Cursor: "c1", Restart: client.WorkerRestart{BackoffMinMs: 1}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the worker past the inputs", func() bool { return worker(t, acme, "ca").Position > srcs[len(srcs)-1].GlobalSequence })
	if _, err := acme.StartWorker(ctx, "ca", client.WorkerSpec{Plugin: "echo", Region: inputs, Cursor: "c2", Restart: client.WorkerRestart{BackoffMinMs: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.StartWorker(ctx, "cb", client.WorkerSpec{Plugin: "trapper", Region: inputs, Cursor: "c1",
		Restart: client.WorkerRestart{MaxRestarts: intp(0)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the quarantine", func() bool { return worker(t, acme, "cb").State == "quarantined" })
	if st := worker(t, acme, "cb"); st.Position != 0 {
		t.Fatalf("a worker over a cursor another gave up starts at %d, want 0 (the log's beginning)", st.Position)
	}
}

// TestWorkerKeysAreReserved: a writer cannot write an event under a key
// a worker's reaction would have ("worker:<cursor>:<source>:<n>"), single
// or in a batch — such a key written first made the worker take its
// reaction to that source for written and drop it — so the worker writes
// its reaction to every source.
func TestWorkerKeysAreReserved(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	writer := ts.key(t, "acme", "writer")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 3)
	for i, src := range srcs {
		poison := client.AppendRequest{Entity: "echo", Scope: "plugin", Kind: "2:1", Payload: json.RawMessage(`{}`),
			CausationID: src.ID, IdempotencyKey: fmt.Sprintf("worker:w:%s:0", src.ID)}
		var err error
		if i%2 == 0 {
			_, err = writer.Append(ctx, poison)
		} else {
			_, err = writer.AppendBatch(ctx, []client.AppendRequest{poison})
		}
		if p := problem(t, err); p.Status != http.StatusBadRequest || !strings.Contains(p.Detail, "worker:") {
			t.Fatalf("a writer's event under a worker's key: %+v, want 400 naming the reserved prefix", p)
		}
	}
	if _, err := acme.StartWorker(ctx, "w", client.WorkerSpec{Plugin: "echo", Region: inputs, Restart: client.WorkerRestart{BackoffMinMs: 1}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the worker past the inputs", func() bool { return worker(t, acme, "w").Position > srcs[len(srcs)-1].GlobalSequence })
	checkOnce(t, srcs, echoes(t, acme))
}
