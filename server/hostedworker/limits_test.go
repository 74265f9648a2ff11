package hostedworker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/hostedworker"
)

// TestWorkerLimitIsTheQuota: a tenant may have exactly max_workers
// workers running or quarantined; one more is refused with 429
// QUOTA_EXCEEDED naming max_workers and its limit, and nothing is
// recorded; a stopped worker does not count, and restarting a running
// worker with the same spec is not a new one.
func TestWorkerLimitIsTheQuota(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	if _, err := ts.op.Admin().SetQuotas(ctx, "acme", client.Quotas{MaxWorkers: 2}); err != nil {
		t.Fatal(err)
	}
	spec := client.WorkerSpec{Plugin: "echo", Region: inputs}
	for _, n := range []string{"w1", "w2"} {
		if _, err := acme.StartWorker(ctx, n, spec); err != nil {
			t.Fatalf("worker %s of 2: %v", n, err)
		}
	}
	if _, err := acme.StartWorker(ctx, "w1", spec); err != nil {
		t.Fatalf("the same start again: %v", err)
	}
	_, err := acme.StartWorker(ctx, "w3", spec)
	p := problem(t, err)
	var limit float64
	_ = json.Unmarshal(p.Extensions["limit"], &limit)
	if p.Status != http.StatusTooManyRequests || p.Code != client.CodeQuotaExceeded || string(p.Extensions["quota"]) != `"max_workers"` || limit != 2 {
		t.Fatalf("a third worker: %d %s %s %v", p.Status, p.Code, p.Extensions["quota"], limit)
	}
	if _, err := acme.Worker(ctx, "w3"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("the refused worker: %v, want not found", err)
	}
	if _, err := acme.StopWorker(ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.StartWorker(ctx, "w3", spec); err != nil {
		t.Fatalf("a worker after one stopped: %v", err)
	}
	// Starting the stopped one again would make three.
	if _, err := acme.StartWorker(ctx, "w2", spec); !errors.Is(err, client.ErrQuotaExceeded) {
		t.Fatalf("restarting a stopped worker past the limit: %v", err)
	}
}

// TestWorkerIsolation: another tenant's key sees none of a tenant's
// workers, their faults or their log (403 under the tenant's routes, an
// empty list under its own), and a reader key of the tenant may look but
// not start or stop.
func TestWorkerIsolation(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	globex := ts.tenant(t, "globex")
	ctx := context.Background()
	appendOrders(t, acme, "order:1", 2)
	if _, err := acme.StartWorker(ctx, "trap", client.WorkerSpec{Plugin: "trapper", Region: inputs,
		Restart: client.WorkerRestart{MaxRestarts: intp(0)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the quarantine", func() bool { return worker(t, acme, "trap").State == "quarantined" })

	k, err := ts.op.Admin().IssueKey(ctx, "globex", "g", "admin")
	if err != nil {
		t.Fatal(err)
	}
	gc, _ := client.New(ts.base, k.Key)
	intruder := gc.Tenant("acme") // globex's key on acme's routes
	_, err1 := intruder.Workers(ctx)
	_, err2 := intruder.Worker(ctx, "trap")
	_, err3 := intruder.StopWorker(ctx, "trap")
	_, err4 := intruder.ResetWorker(ctx, "trap")
	_, err5 := intruder.StartWorker(ctx, "x", client.WorkerSpec{Plugin: "echo"})
	for i, err := range []error{err1, err2, err3, err4, err5} {
		p := problem(t, err)
		if p.Status != http.StatusForbidden && p.Status != http.StatusNotFound {
			t.Fatalf("call %d with another tenant's key: %d %s, want 403 or 404", i, p.Status, p.Code)
		}
		if strings.Contains(p.Detail, "trap") {
			t.Fatalf("call %d: the refusal shows the worker: %q", i, p.Detail)
		}
	}
	if ws, err := globex.Workers(ctx); err != nil || len(ws) != 0 {
		t.Fatalf("globex's own workers: %+v %v, want none", ws, err)
	}
	if _, err := globex.Worker(ctx, "trap"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("acme's worker under globex: %v, want not found", err)
	}
	if st := worker(t, acme, "trap"); st.LastFault == nil || st.Quarantine == nil {
		t.Fatalf("acme sees its own worker's fault: %+v", st)
	}

	reader := ts.key(t, "acme", "reader")
	if _, err := reader.Worker(ctx, "trap"); err != nil {
		t.Fatalf("a reader's status: %v", err)
	}
	if _, err := reader.StopWorker(ctx, "trap"); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("a reader stopping a worker: %v, want forbidden", err)
	}
}

// TestWorkerStartRefusals: a start the server cannot honour is refused
// with the reason and records nothing.
func TestWorkerStartRefusals(t *testing.T) {
	src := newSource(t, standardFixtures())
	src.kinds["counter"] = "projection"
	ts := startServer(t, t.TempDir(), src, nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	if err := acme.DefineCursor(ctx, "shared", inputs); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.StartWorker(ctx, "owner", client.WorkerSpec{Plugin: "echo", Region: inputs, Cursor: "mine"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		spec   client.WorkerSpec
		status int
		field  string
		detail string
	}{
		{"w", client.WorkerSpec{Plugin: "nosuch"}, 404, "plugin", "no such plugin"},
		{"w", client.WorkerSpec{Plugin: "counter"}, 400, "plugin", "not a handler"},
		{"w", client.WorkerSpec{Plugin: ""}, 400, "", "plugin"},
		{"bad name!", client.WorkerSpec{Plugin: "echo"}, 400, "", "worker name"},
		{"w", client.WorkerSpec{Plugin: "echo", Region: client.CursorRegion{Category: category(16)}}, 400, "region.category", "category"},
		{"w", client.WorkerSpec{Plugin: "echo", Restart: client.WorkerRestart{MaxRestarts: intp(1001)}}, 400, "", "restart.max_restarts 1001: want 0..1000"},
		{"w", client.WorkerSpec{Plugin: "echo", Restart: client.WorkerRestart{WindowMs: 999}}, 400, "", "restart.window_ms 999"},
		{"w", client.WorkerSpec{Plugin: "echo", Restart: client.WorkerRestart{BackoffMinMs: 50, BackoffMaxMs: 10}}, 400, "", "restart.backoff_max_ms 10"},
		{"w", client.WorkerSpec{Plugin: "echo", Cursor: "shared"}, 409, "", "defined through the API"},
		{"w", client.WorkerSpec{Plugin: "echo", Cursor: "mine"}, 409, "", `worker "owner"`},
	} {
		_, err := acme.StartWorker(ctx, c.name, c.spec)
		p := problem(t, err)
		var field string
		_ = json.Unmarshal(p.Extensions["field"], &field)
		if p.Status != c.status || field != c.field || !strings.Contains(p.Detail, c.detail) {
			t.Errorf("start %q %+v: %d field %q %q; want %d field %q mentioning %q", c.name, c.spec, p.Status, field, p.Detail, c.status, c.field, c.detail)
		}
	}
	if ws, err := acme.Workers(ctx); err != nil || len(ws) != 1 {
		t.Fatalf("workers after the refusals: %+v %v, want only the first", ws, err)
	}
	// The limits of the restart policy are accepted at their ends, as
	// long as a worker failing every time still reaches quarantine within
	// its window; a policy under which it never would is refused.
	if _, err := acme.StartWorker(ctx, "ends", client.WorkerSpec{Plugin: "echo", Region: inputs, Cursor: "ends",
		Restart: client.WorkerRestart{MaxRestarts: intp(1000), WindowMs: 86400000, BackoffMinMs: 1, BackoffMaxMs: 43200}}); err != nil {
		t.Fatalf("the policy's upper ends: %v", err)
	}
	if _, err := acme.StartWorker(ctx, "longest", client.WorkerSpec{Plugin: "echo", Region: inputs, Cursor: "longest",
		Restart: client.WorkerRestart{MaxRestarts: intp(12), WindowMs: 86400000, BackoffMinMs: 3600000, BackoffMaxMs: 3600000}}); err != nil {
		t.Fatalf("the longest backoff: %v", err)
	}
	// No restart at all: the first fault quarantines, whatever the window.
	if _, err := acme.StartWorker(ctx, "once", client.WorkerSpec{Plugin: "echo", Region: inputs, Cursor: "once",
		Restart: client.WorkerRestart{MaxRestarts: intp(0), WindowMs: 1000}}); err != nil {
		t.Fatalf("max_restarts 0 with a short window: %v", err)
	}
	for _, r := range []client.WorkerRestart{
		{MaxRestarts: intp(1000), WindowMs: 1000, BackoffMinMs: 1, BackoffMaxMs: 1}, // the trap loop of a review: 1,000 restarts a second
		{MaxRestarts: intp(1000), WindowMs: 86400000, BackoffMinMs: 3600000, BackoffMaxMs: 3600000},
	} {
		_, err := acme.StartWorker(ctx, "never", client.WorkerSpec{Plugin: "echo", Region: inputs, Restart: r})
		if p := problem(t, err); p.Status != 400 || !strings.Contains(p.Detail, "reaches quarantine only if") {
			t.Fatalf("a policy that never quarantines %+v: %d %q, want 400 saying why", r, p.Status, p.Detail)
		}
	}
	if _, err := acme.StartWorker(ctx, "lows", client.WorkerSpec{Plugin: "echo", Region: inputs,
		Restart: client.WorkerRestart{MaxRestarts: intp(0), WindowMs: 1000, BackoffMinMs: 1, BackoffMaxMs: 1}}); err != nil {
		t.Fatalf("the policy's lower ends: %v", err)
	}
}

// TestWorkerReactionsJudgedByPolicy: a platform policy rule refusing the
// reactions of plugin "echo" stops its worker's writes (a "denied" fault,
// nothing written, quarantined past its restarts) while the same module
// under another name is admitted; the rule also sees the worker's
// principal (id worker:<name>, the tenant) and the plugin's digest.
func TestWorkerReactionsJudgedByPolicy(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "policy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rego := `package batpak.write

deny contains {"code": "PLUGIN_BANNED", "message": "plugin echo may not write"} if {
	input.action == "plugin"
	input.plugin.name == "echo"
}

deny contains {"code": "NOT_A_WORKER", "message": "plugin writes come from hosted workers of the tenant"} if {
	input.action == "plugin"
	not worker_identity
}

worker_identity if {
	startswith(input.principal.id, "worker:")
	input.principal.tenant == "acme"
	input.principal.roles[_] == "plugin"
	count(input.plugin.digest) == 64
}
`
	if err := os.WriteFile(filepath.Join(dir, "write.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, filepath.Join(root, "srv"), newSource(t, standardFixtures()), func(c *server.Config) { c.PolicyDir = dir })
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 10)
	restart := client.WorkerRestart{MaxRestarts: intp(2), BackoffMinMs: 1, BackoffMaxMs: 5}
	if _, err := acme.StartWorker(ctx, "banned", client.WorkerSpec{Plugin: "echo", Region: inputs, Restart: restart}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the banned worker's quarantine", func() bool { return worker(t, acme, "banned").State == "quarantined" })
	st := worker(t, acme, "banned")
	if st.LastFault == nil || st.LastFault.Kind != "denied" || !strings.Contains(st.LastFault.Message, "plugin echo may not write") {
		t.Fatalf("banned worker's last fault %+v", st.LastFault)
	}
	if n := len(echoes(t, acme)); n != 0 {
		t.Fatalf("%d reactions of a banned plugin were written", n)
	}

	if _, err := acme.StartWorker(ctx, "allowed", client.WorkerSpec{Plugin: "echo-ok", Region: inputs, Restart: restart}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "10 echoes", func() bool { return len(echoes(t, acme)) >= 10 })
	checkOnce(t, srcs, echoes(t, acme))
	if st := worker(t, acme, "allowed"); st.State != "running" || (st.LastFault != nil && st.LastFault.Kind == "denied") {
		t.Fatalf("allowed worker %+v", st)
	}
}

// TestWorkerReactionsHeldToQuotas: reactions count against the tenant's
// quotas like its API writes: with max_payload_bytes below the echo's
// payload, each reaction is refused (a "quota" fault) and nothing is
// written; with the quota back, the worker (reset) echoes every input.
func TestWorkerReactionsHeldToQuotas(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 5)
	if _, err := ts.op.Admin().SetQuotas(ctx, "acme", client.Quotas{MaxPayloadBytes: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs,
		Restart: client.WorkerRestart{MaxRestarts: intp(1), BackoffMinMs: 1}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the quarantine", func() bool { return worker(t, acme, "echoer").State == "quarantined" })
	st := worker(t, acme, "echoer")
	if st.LastFault == nil || st.LastFault.Kind != "quota" || !strings.Contains(st.LastFault.Message, "max_payload_bytes") {
		t.Fatalf("last fault %+v, want a quota fault naming max_payload_bytes", st.LastFault)
	}
	if n := len(echoes(t, acme)); n != 0 {
		t.Fatalf("%d reactions over the payload quota were written", n)
	}
	if _, err := ts.op.Admin().SetQuotas(ctx, "acme", client.Quotas{MaxPayloadBytes: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.ResetWorker(ctx, "echoer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "5 echoes", func() bool { return len(echoes(t, acme)) >= 5 })
	checkOnce(t, srcs, echoes(t, acme))
}

// TestWorkerBatchesFitThePlugin: a worker over large events hands its
// plugin batches within a quarter of the plugin's memory (32 MiB by
// default), however many events its batch size would take: 40 events of
// 900 KB (64 of them made a 36 MB batch, which no call could take, and
// the worker faulted until quarantined) are each echoed once.
func TestWorkerBatchesFitThePlugin(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	payload := json.RawMessage(`{"pad":"` + strings.Repeat("x", 900_000) + `"}`)
	var srcs []client.Receipt
	for range 40 {
		r, err := acme.Append(ctx, client.AppendRequest{Entity: "order:big", Scope: "shop", Kind: "1:1", Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, r)
	}
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo-ok", Region: inputs}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "40 echoes", func() bool {
		if st := worker(t, acme, "echoer"); st.State == "quarantined" {
			t.Fatalf("quarantined: %+v", st.LastFault)
		}
		return len(echoes(t, acme)) >= 40
	})
	checkOnce(t, srcs, echoes(t, acme))
}

// TestWorkersInFlightShared: with one worker in flight for the whole
// server, a tenant whose reactions wait for its rates writes them in its
// own turn, not the server's, so another tenant's worker is not held
// behind it (a tenant's slow writes, from its policy or a gate asking to
// retry, hold the server's turns no more than its rates); both tenants'
// sources are each echoed once.
func TestWorkersInFlightShared(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), func(c *server.Config) { c.WorkersInFlight = 1 })
	acme, globex := ts.tenant(t, "acme"), ts.tenant(t, "globex")
	ctx := context.Background()
	slow := appendOrders(t, acme, "order:1", 60)
	// One reaction a second: acme's worker is paced for a minute.
	if _, err := ts.op.Admin().SetQuotas(ctx, "acme", client.Quotas{EventsPerSecond: 1, EventsBurst: 1}); err != nil {
		t.Fatal(err)
	}
	spec := client.WorkerSpec{Plugin: "echo", Region: inputs, Restart: client.WorkerRestart{MaxRestarts: intp(3), BackoffMinMs: 1}}
	if _, err := acme.StartWorker(ctx, "echoer", spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "acme's first echo", func() bool { return len(echoes(t, acme)) >= 1 })

	fast := appendOrders(t, globex, "order:1", 5)
	start := time.Now()
	if _, err := globex.StartWorker(ctx, "echoer", spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "globex's 5 echoes while acme's worker is paced", func() bool { return len(echoes(t, globex)) >= 5 })
	t.Logf("globex's worker went through in %v beside acme's paced one", time.Since(start).Round(time.Millisecond))
	checkOnce(t, fast, echoes(t, globex))
	if n := len(echoes(t, acme)); n >= len(slow) {
		t.Fatalf("acme's paced worker already wrote %d of %d", n, len(slow))
	}
	// The operator sees the workers in flight and waiting.
	req, _ := http.NewRequest("GET", ts.base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+operatorToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"batpak_hosted_workers_in_flight ", "batpak_hosted_workers_waiting "} {
		if !strings.Contains(string(metrics), want) {
			t.Fatalf("/metrics has no %s", want)
		}
	}
	for _, n := range []int{-1, hostedworker.MaxInFlight + 1} {
		if _, err := server.New(ctx, server.Config{Root: t.TempDir(), WorkersInFlight: n}); err == nil || !strings.Contains(err.Error(), "WorkersInFlight") {
			t.Fatalf("WorkersInFlight %d: %v, want refused naming it", n, err)
		}
	}
}
