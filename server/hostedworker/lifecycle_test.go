package hostedworker_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
)

// TestWorkerFollowsTenantState: a suspended tenant's workers stop (their
// leases released) and run again on resume, from their cursors; a
// deleted tenant's workers end, so the deletion is not held up by their
// leases, and a tenant of the same id created again has none.
func TestWorkerFollowsTenantState(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 5)
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs, Restart: client.WorkerRestart{BackoffMinMs: 1}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "5 echoes", func() bool { return len(echoes(t, acme)) >= 5 })

	if _, err := ts.op.Admin().Suspend(ctx, "acme", "billing"); err != nil {
		t.Fatal(err)
	}
	// The tenant's keys are refused while it is suspended: look through
	// the server's supervisor.
	if st, err := ts.srv.Workers().Status(ctx, "acme", "echoer"); err != nil || st.State != "suspended" || st.Desired != "running" {
		t.Fatalf("while suspended: %+v %v", st, err)
	}
	if _, err := ts.op.Admin().Resume(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	srcs = append(srcs, appendOrders(t, acme, "order:2", 5)...)
	waitFor(t, "10 echoes", func() bool { return len(echoes(t, acme)) >= 10 })
	checkOnce(t, srcs, echoes(t, acme))
	if st := worker(t, acme, "echoer"); st.State != "running" {
		t.Fatalf("after resume: %+v", st)
	}

	done := make(chan error, 1)
	go func() { done <- ts.op.Admin().DeleteTenant(ctx, "acme") }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("deleting a tenant with a running worker did not finish: its lease was kept")
	}
	acme = ts.tenant(t, "acme")
	if ws, err := acme.Workers(ctx); err != nil || len(ws) != 0 {
		t.Fatalf("a new tenant of the same id has workers: %+v %v", ws, err)
	}
}

// TestWorkerStartsOnResumeAfterRestart: a server started while a tenant is
// suspended does not run its workers; resuming the tenant starts them.
func TestWorkerStartsOnResumeAfterRestart(t *testing.T) {
	root := t.TempDir()
	src := newSource(t, standardFixtures())
	ts := startServer(t, root, src, nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs, Restart: client.WorkerRestart{BackoffMinMs: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.op.Admin().Suspend(ctx, "acme", "billing"); err != nil {
		t.Fatal(err)
	}
	// A restart while suspended: the worker is not started.
	ts.stop()
	ts = startServer(t, root, src, nil)
	if _, err := ts.op.Admin().Resume(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	acme = ts.key(t, "acme", "admin")
	srcs := appendOrders(t, acme, "order:1", 5)
	waitFor(t, "5 echoes", func() bool { return len(echoes(t, acme)) >= 5 })
	checkOnce(t, srcs, echoes(t, acme))
}

// TestWorkerLeaseKeepsTenantOpen: with room for one open tenant, a tenant
// whose worker runs is never closed to make room for another (the other
// is refused 503 BUSY); once the worker stops, the other tenant opens.
func TestWorkerLeaseKeepsTenantOpen(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), func(c *server.Config) { c.MaxOpenTenants = 1 })
	acme := ts.tenant(t, "acme")
	globex := ts.tenant(t, "globex")
	ctx := context.Background()
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the worker running", func() bool { return worker(t, acme, "echoer").State == "running" })
	if _, err := globex.Stats(ctx); !errors.Is(err, client.ErrBusy) {
		t.Fatalf("another tenant while the worker holds the only slot: %v, want BUSY", err)
	}
	if _, err := acme.StopWorker(ctx, "echoer"); err != nil {
		t.Fatal(err)
	}
	if _, err := globex.Stats(ctx); err != nil {
		t.Fatalf("another tenant once the worker stopped: %v", err)
	}
}

// TestWorkerConcurrentStartsKeepTheLimit: many starts at once never pass
// max_workers: exactly the limit succeed, the others are refused with
// QUOTA_EXCEEDED.
func TestWorkerConcurrentStartsKeepTheLimit(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	if _, err := ts.op.Admin().SetQuotas(ctx, "acme", client.Quotas{MaxWorkers: 3}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 12)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = acme.StartWorker(ctx, "w"+string(rune('a'+i)), client.WorkerSpec{Plugin: "echo", Region: inputs})
		}()
	}
	wg.Wait()
	started := 0
	for _, err := range errs {
		switch {
		case err == nil:
			started++
		case !errors.Is(err, client.ErrQuotaExceeded):
			t.Fatalf("a start: %v", err)
		}
	}
	if ws, _ := acme.Workers(ctx); started != 3 || len(ws) != 3 {
		t.Fatalf("%d starts succeeded, %d workers recorded; want 3 of 3", started, len(ws))
	}
}

// TestWorkerReconfigured: starting a running worker with another region
// restarts it with the new one, from the same cursor.
func TestWorkerReconfigured(t *testing.T) {
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	a := appendOrders(t, acme, "a:1", 4)
	b := appendOrders(t, acme, "b:1", 4)
	spec := client.WorkerSpec{Plugin: "echo", Region: client.CursorRegion{Entity: "a:", Category: category(1)}, Restart: client.WorkerRestart{BackoffMinMs: 1}}
	if _, err := acme.StartWorker(ctx, "echoer", spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "4 echoes", func() bool { return len(echoes(t, acme)) >= 4 })
	checkOnce(t, a, echoes(t, acme))
	spec.Region.Entity = "b:"
	w, err := acme.StartWorker(ctx, "echoer", spec)
	if err != nil || w.Region.Entity != "b:" {
		t.Fatalf("reconfigure: %+v %v", w, err)
	}
	b2 := appendOrders(t, acme, "b:2", 3)
	waitFor(t, "the b:2 echoes", func() bool { return len(echoes(t, acme)) >= 7 })
	// Whether b:1's events (written before the change, when they were
	// outside the region) are reacted to depends on where the cursor had
	// committed; a's and b:2's are, each exactly once.
	count := map[string]int{}
	for _, e := range echoes(t, acme) {
		count[*e.CausationID]++
	}
	for _, r := range append(append(a, b2...), b...) {
		if n := count[r.ID]; n > 1 {
			t.Fatalf("source %s echoed %d times", r.ID, n)
		}
	}
	for _, r := range append(a, b2...) {
		if count[r.ID] != 1 {
			t.Fatalf("source %s not echoed", r.ID)
		}
	}
	if st := worker(t, acme, "echoer"); st.Region.Entity != "b:" || st.State != "running" {
		t.Fatalf("reconfigured status %+v", st)
	}
}
