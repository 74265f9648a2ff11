package hostedworker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/hostedworker"
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

// TestWorkerFaultsShowNoHostPaths: a tenant's uploaded plugin whose stored
// module is gone at a restart cannot run; the worker's fault, its log
// and the refusal of a new worker say so without showing the server's
// directories.
func TestWorkerFaultsShowNoHostPaths(t *testing.T) {
	root := t.TempDir()
	ts := startServer(t, root, nil, nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	wasm, err := os.ReadFile(filepath.Join("..", "..", "plugins", "testdata", "handler-flaky.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(wasm)
	digest := hex.EncodeToString(sum[:])
	m := fmt.Sprintf(`{"name":"echo","version":"1.0.0","kind":"handler","sha256":%q}`, digest)
	if _, err := acme.PushPlugin(ctx, json.RawMessage(m), wasm, true); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs,
		Restart: client.WorkerRestart{BackoffMinMs: 5, MaxRestarts: intp(1)}}); err != nil {
		t.Fatal(err)
	}
	ts.stop()
	if err := os.Remove(filepath.Join(root, "plugins", "acme", digest+".wasm")); err != nil {
		t.Fatal(err)
	}
	ts = startServer(t, root, nil, nil)
	acme = ts.key(t, "acme", "admin")

	_, err = acme.StartWorker(ctx, "w2", client.WorkerSpec{Plugin: "echo", Region: inputs, Cursor: "w2"})
	if p := problem(t, err); p.Status/100 != 4 || strings.Contains(p.Detail, root) || !strings.Contains(p.Detail, "echo") {
		t.Fatalf("a worker of a plugin that did not load: %d %q, want a refusal naming the plugin and no host path", p.Status, p.Detail)
	}
	waitFor(t, "the worker quarantined", func() bool { return worker(t, acme, "echoer").State == "quarantined" })
	st := worker(t, acme, "echoer")
	raw, _ := json.Marshal(st)
	if st.LastFault == nil || st.LastFault.Kind != "unavailable" || strings.Contains(string(raw), root) {
		t.Fatalf("status %s: want an unavailable fault showing no host path (%s)", raw, root)
	}
}

// TestWorkerDefinitionsBounded: stopped workers keep their definitions,
// so a tenant cycling start/stop under new names would grow the control
// plane without end; past server.WorkersMaxDefined definitions a new name
// is refused (exactly the limit is accepted) with 409 CONFLICT naming
// server.workers_max_defined and the way out, deleting workers — not a
// 429, which would invite retrying what never clears by itself — while a
// stopped worker's name starts again, with another configuration, and
// once one is deleted a new name is accepted.
func TestWorkerDefinitionsBounded(t *testing.T) {
	const limit = 4
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), func(c *server.Config) { c.WorkersMaxDefined = limit })
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	if _, err := ts.op.Admin().SetQuotas(ctx, "acme", client.Quotas{MaxWorkers: 1}); err != nil {
		t.Fatal(err)
	}
	spec := client.WorkerSpec{Plugin: "echo", Region: inputs}
	for i := range limit {
		name := fmt.Sprintf("w%d", i)
		if _, err := acme.StartWorker(ctx, name, spec); err != nil {
			t.Fatalf("worker %d of %d: %v", i+1, limit, err)
		}
		if _, err := acme.StopWorker(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	_, err := acme.StartWorker(ctx, "one-more", spec)
	if p := problem(t, err); p.Status != http.StatusConflict || p.Code != client.CodeConflict || p.RetryAfter != 0 ||
		!strings.Contains(p.Detail, fmt.Sprintf("server.workers_max_defined %d", limit)) || !strings.Contains(p.Detail, "delete the workers no longer needed") ||
		string(p.Extensions["limit"]) != fmt.Sprint(limit) {
		t.Fatalf("worker %d: %+v, want 409 CONFLICT naming server.workers_max_defined %d and deleting workers", limit+1, p, limit)
	}
	if ws, err := acme.Workers(ctx); err != nil || len(ws) != limit {
		t.Fatalf("%d workers defined (%v), want %d", len(ws), err, limit)
	}
	if _, err := acme.StartWorker(ctx, "w0", client.WorkerSpec{Plugin: "echo-b", Region: inputs}); err != nil {
		t.Fatalf("starting a stopped worker again with another plugin: %v", err)
	}
	if _, err := acme.StopWorker(ctx, "w0"); err != nil {
		t.Fatal(err)
	}
	if err := acme.DeleteWorker(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.StartWorker(ctx, "one-more", spec); err != nil {
		t.Fatalf("a new name once a worker is deleted: %v", err)
	}
	if ws, err := acme.Workers(ctx); err != nil || len(ws) != limit {
		t.Fatalf("%d workers defined (%v), want %d", len(ws), err, limit)
	}
	if _, err := server.New(ctx, server.Config{Root: t.TempDir(), WorkersMaxDefined: hostedworker.MaxDefinedLimit + 1}); err == nil || !strings.Contains(err.Error(), "WorkersMaxDefined") {
		t.Fatalf("a limit past the range: %v, want refused naming it", err)
	}
}

// TestWorkerStartsFromTheBeginningOnAFreshCursor: a worker whose cursor
// name was used before by a deleted API cursor starts from the log's
// beginning, not from the position the old cursor left behind (deleting
// a cursor through the API takes its position with it).
func TestWorkerStartsFromTheBeginningOnAFreshCursor(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 20)
	if err := acme.DefineCursor(ctx, "reused", inputs); err != nil {
		t.Fatal(err)
	}
	if err := acme.CommitCursor(ctx, "reused", srcs[len(srcs)-1].GlobalSequence+1); err != nil {
		t.Fatal(err)
	}
	if err := acme.DeleteCursor(ctx, "reused"); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs, Cursor: "reused",
		Restart: client.WorkerRestart{BackoffMinMs: 5}}); err != nil {
		t.Fatal(err)
	}
	more := appendOrders(t, acme, "order:2", 1)
	waitFor(t, "the worker past the last input", func() bool { return worker(t, acme, "echoer").Position > more[0].GlobalSequence })
	checkOnce(t, append(srcs, more...), echoes(t, acme))
}

// TestWorkerReactionBatchesHeldToMaxBatchEvents: the reactions to one
// event are written as one batch, so the tenant's max_batch_events holds
// them like an API batch: a plugin answering two reactions per event
// faults (kind quota, naming max_batch_events) when the limit is 1 and
// writes nothing; at exactly 2 they are written.
func TestWorkerReactionBatchesHeldToMaxBatchEvents(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	appendOrders(t, acme, "order:1", 3)
	if _, err := ts.op.Admin().SetQuotas(ctx, "acme", client.Quotas{MaxBatchEvents: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.StartWorker(ctx, "doubler", client.WorkerSpec{Plugin: "double", Region: inputs,
		Restart: client.WorkerRestart{MaxRestarts: intp(0)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the quarantine", func() bool { return worker(t, acme, "doubler").State == "quarantined" })
	st := worker(t, acme, "doubler")
	if st.LastFault == nil || st.LastFault.Kind != "quota" || !strings.Contains(st.LastFault.Message, "max_batch_events") {
		t.Fatalf("last fault %+v, want a quota fault naming max_batch_events", st.LastFault)
	}
	if n := len(echoes(t, acme)); n != 0 {
		t.Fatalf("%d reactions past max_batch_events were written", n)
	}
	if _, err := ts.op.Admin().SetQuotas(ctx, "acme", client.Quotas{MaxBatchEvents: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.ResetWorker(ctx, "doubler"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "6 reactions", func() bool { return len(echoes(t, acme)) >= 6 })
}
