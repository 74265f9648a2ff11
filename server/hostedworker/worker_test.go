package hostedworker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
)

// inputs is the region of the fixtures' inputs: category 1 (the echoes are
// category 2, so a worker never sees its own reactions).
var inputs = client.CursorRegion{Category: category(1)}

// TestWorkerReactsOncePerEvent starts a worker running handler-flaky (it
// traps on its first batch, then echoes each event): the worker restarts
// once after the trap, every input event gets exactly one echo with the
// input as causation, and the status shows it running with one restart,
// the trap as its last fault, its plugin's identity and its position.
func TestWorkerReactsOncePerEvent(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 150)

	w, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs,
		Restart: client.WorkerRestart{BackoffMinMs: 5}})
	if err != nil {
		t.Fatal(err)
	}
	if w.Name != "echoer" || w.Cursor != "echoer" || w.Desired != "running" || w.Plugin != "echo" {
		t.Fatalf("started worker %+v", w)
	}
	if *w.Restart.MaxRestarts != 5 || w.Restart.WindowMs != 600000 || w.Restart.BackoffMaxMs != 30000 {
		t.Fatalf("restart policy %+v, want the defaults filled in", w.Restart)
	}
	waitFor(t, "150 echoes", func() bool { return len(echoes(t, acme)) >= 150 })
	srcs = append(srcs, appendOrders(t, acme, "order:2", 50)...)
	waitFor(t, "200 echoes", func() bool { return len(echoes(t, acme)) >= 200 })
	last := srcs[len(srcs)-1].GlobalSequence
	waitFor(t, "the cursor past the last input", func() bool { return worker(t, acme, "echoer").Position > last })
	checkOnce(t, srcs, echoes(t, acme))

	st := worker(t, acme, "echoer")
	if st.State != "running" || st.Restarts != 1 || st.LastFault == nil || st.LastFault.Kind != "trap" {
		t.Fatalf("status %+v: want running, 1 restart, last fault a trap", st)
	}
	if st.Running == nil || st.Running.Name != "echo" || st.Running.Version != "1.0.0" || len(st.Running.Digest) != 64 {
		t.Fatalf("running plugin %+v", st.Running)
	}
	if st.Head < st.Position || st.Lag != st.Head-st.Position || st.Head < last+1 {
		t.Fatalf("position %d head %d lag %d (last input at %d)", st.Position, st.Head, st.Lag, last)
	}
	if len(st.Log) == 0 || !strings.Contains(st.Log[len(st.Log)-1].Message, "running plugin echo") {
		t.Fatalf("log %+v", st.Log)
	}

	// Stop: nothing more is echoed; start again: it resumes from its cursor.
	if st, err = acme.StopWorker(ctx, "echoer"); err != nil || st.State != "stopped" || st.Desired != "stopped" {
		t.Fatalf("stop: %+v %v", st, err)
	}
	more := appendOrders(t, acme, "order:3", 20)
	if w, err = acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs,
		Restart: client.WorkerRestart{BackoffMinMs: 5}}); err != nil || w.Desired != "running" {
		t.Fatalf("start again: %+v %v", w, err)
	}
	waitFor(t, "220 echoes", func() bool { return len(echoes(t, acme)) >= 220 })
	checkOnce(t, append(srcs, more...), echoes(t, acme))

	ws, err := acme.Workers(ctx)
	if err != nil || len(ws) != 1 || ws[0].Name != "echoer" {
		t.Fatalf("workers: %+v %v", ws, err)
	}
}

// TestWorkerQuarantineAndReset: a plugin that always traps is restarted
// max_restarts times with backoff, then quarantined — visible in its
// status with the reason, recorded so that a restarted server keeps it
// quarantined — until reset, which clears the quarantine and the fault
// count and runs it again.
func TestWorkerQuarantineAndReset(t *testing.T) {
	root := t.TempDir()
	src := newSource(t, standardFixtures())
	ts := startServer(t, root, src, nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	appendOrders(t, acme, "order:1", 3)
	spec := client.WorkerSpec{Plugin: "trapper", Region: inputs,
		Restart: client.WorkerRestart{MaxRestarts: intp(2), BackoffMinMs: 1, BackoffMaxMs: 20}}
	if _, err := acme.StartWorker(ctx, "trap", spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the quarantine", func() bool { return worker(t, acme, "trap").State == "quarantined" })
	st := worker(t, acme, "trap")
	if st.Desired != "quarantined" || st.Restarts != 2 || st.RecentFaults != 3 || st.LastFault == nil || st.LastFault.Kind != "trap" ||
		st.Quarantine == nil || !strings.Contains(st.Quarantine.Reason, "max_restarts 2") || st.ChangedBy != "hostedworker" {
		t.Fatalf("quarantined status %+v", st)
	}
	if st.Position != 0 {
		t.Fatalf("position %d: a batch that faulted is not committed", st.Position)
	}
	if n := len(echoes(t, acme)); n != 0 {
		t.Fatalf("%d reactions of a trapping plugin", n)
	}

	// The quarantine is recorded: a restarted server does not run it.
	ts.stop()
	ts = startServer(t, root, src, nil)
	acme = ts.key(t, "acme", "admin")
	st = worker(t, acme, "trap")
	if st.State != "quarantined" || st.Quarantine == nil {
		t.Fatalf("after a restart: %+v, want still quarantined", st)
	}

	st, err := acme.ResetWorker(ctx, "trap")
	if err != nil {
		t.Fatal(err)
	}
	if st.Desired != "running" || st.Quarantine != nil || st.Restarts != 0 {
		t.Fatalf("after reset: %+v", st)
	}
	waitFor(t, "the quarantine again", func() bool { return worker(t, acme, "trap").State == "quarantined" })
	if st, err = acme.StopWorker(ctx, "trap"); err != nil || st.State != "stopped" || st.Quarantine != nil {
		t.Fatalf("stop of a quarantined worker: %+v %v", st, err)
	}
}

// TestWorkerRunsAnUploadedPlugin: on a server with no source of its own,
// a worker runs the tenant's uploaded handler plugin (the active
// version); a projection plugin or another tenant's plugin is refused.
// The plugin is not deleted while the worker runs it (409 naming the
// worker); once the worker is stopped it is, and starting the worker
// again is refused for want of it.
func TestWorkerRunsAnUploadedPlugin(t *testing.T) {
	ts := startServer(t, t.TempDir(), nil, nil)
	acme, other := ts.tenant(t, "acme"), ts.tenant(t, "other")
	ctx := context.Background()
	push := func(c *client.Tenant, name, fixture, kind string) {
		t.Helper()
		wasm, err := os.ReadFile(filepath.Join("..", "..", "plugins", "testdata", fixture+".wasm"))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(wasm)
		m := fmt.Sprintf(`{"name":%q,"version":"1.0.0","kind":%q,"sha256":%q}`, name, kind, hex.EncodeToString(sum[:]))
		if _, err := c.PushPlugin(ctx, json.RawMessage(m), wasm, true); err != nil {
			t.Fatalf("push %s: %v", name, err)
		}
	}
	push(acme, "echo", "handler-flaky", "handler")
	push(acme, "count", "counter", "projection")
	push(other, "theirs", "handler-flaky", "handler")

	srcs := appendOrders(t, acme, "order:1", 40)
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs,
		Restart: client.WorkerRestart{BackoffMinMs: 5}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "40 echoes", func() bool { return len(echoes(t, acme)) >= 40 })
	checkOnce(t, srcs, echoes(t, acme))
	if st := worker(t, acme, "echoer"); st.Running == nil || st.Running.Name != "echo" || len(st.Running.Digest) != 64 {
		t.Fatalf("status %+v: want the uploaded plugin running", st)
	}

	_, err := acme.StartWorker(ctx, "w2", client.WorkerSpec{Plugin: "count", Region: inputs})
	if p := problem(t, err); p.Status/100 != 4 || !strings.Contains(p.Detail, "not a handler") {
		t.Fatalf("a projection plugin as a worker: %+v", p)
	}
	_, err = acme.StartWorker(ctx, "w3", client.WorkerSpec{Plugin: "theirs", Region: inputs})
	if p := problem(t, err); p.Status != http.StatusNotFound {
		t.Fatalf("another tenant's plugin as a worker: %+v", p)
	}

	if p := problem(t, acme.DeletePlugin(ctx, "echo", "")); p.Status != http.StatusConflict || p.Code != client.CodeConflict ||
		!strings.Contains(p.Detail, `plugin "echo" is in use by hosted worker "echoer"`) || !strings.Contains(p.Detail, "stop or delete") {
		t.Fatalf("deleting a plugin a worker runs: %+v", p)
	}
	if st := worker(t, acme, "echoer"); st.State != "running" {
		t.Fatalf("after the refused deletion: %+v", st)
	}
	if _, err := acme.StopWorker(ctx, "echoer"); err != nil {
		t.Fatal(err)
	}
	if err := acme.DeletePlugin(ctx, "echo", ""); err != nil {
		t.Fatalf("deleting a plugin only a stopped worker names: %v", err)
	}
	_, err = acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs})
	if p := problem(t, err); p.Status != http.StatusNotFound {
		t.Fatalf("starting a worker whose plugin is deleted: %+v", p)
	}
}
