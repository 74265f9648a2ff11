package control_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/batpak-go/batpak/server/control"
)

// Worker definitions are recorded changes: start (defaults filled in),
// stop, quarantine, reset and a tenant's deletion replay to the same
// state, and each worker's history lists them in order.
func TestWorkerDefinitionsReplay(t *testing.T) {
	dir := t.TempDir()
	p := open(t, dir)
	ctx := opCtx()
	for _, id := range []string{"acme", "globex"} {
		if _, err := p.CreateTenant(ctx, id, control.Quotas{}, control.Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	cat := 1
	w, err := p.StartWorker(ctx, control.WorkerDef{Tenant: "acme", Name: "echo", Plugin: "echo", Region: control.Region{Category: &cat}}, -1)
	check(t, err)
	if w.Cursor != "echo" || w.State != control.WorkerRunning || *w.Restart.MaxRestarts != control.DefaultWorkerMaxRestarts ||
		w.Restart.WindowMs != control.DefaultWorkerWindowMs || w.Restart.BackoffMinMs != 200 || w.Restart.BackoffMaxMs != 30000 || w.By.ID != "operator" {
		t.Fatalf("started %+v", w)
	}
	_, err = p.StartWorker(ctx, control.WorkerDef{Tenant: "acme", Name: "trap", Plugin: "trapper", Cursor: "trap-cursor"}, -1)
	check(t, err)
	_, err = p.StartWorker(ctx, control.WorkerDef{Tenant: "globex", Name: "gone", Plugin: "echo"}, -1)
	check(t, err)
	trap, _ := p.Worker("acme", "trap")
	// A run of an older revision quarantines nothing.
	if w, err := p.QuarantineWorker(ctx, "acme", "trap", trap.Revision-1, "stale"); err != nil || w.State != control.WorkerRunning {
		t.Fatalf("a stale quarantine: %+v %v", w, err)
	}
	_, err = p.QuarantineWorker(ctx, "acme", "trap", trap.Revision, "3 faults")
	check(t, err)
	_, err = p.StopWorker(ctx, "acme", "echo")
	check(t, err)
	// Stopping a stopped worker, quarantining a stopped one, resetting one
	// not quarantined: nothing recorded.
	_, err = p.StopWorker(ctx, "acme", "echo")
	check(t, err)
	echo, _ := p.Worker("acme", "echo")
	_, err = p.QuarantineWorker(ctx, "acme", "echo", echo.Revision, "x")
	check(t, err)
	check(t, p.DeleteTenant(ctx, "globex"))
	if _, err := p.StopWorker(ctx, "acme", "nosuch"); !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("stopping an unknown worker: %v", err)
	}

	before := p.Workers("")
	if len(before) != 2 || before[0].Name != "echo" || before[0].State != control.WorkerStopped ||
		before[1].Name != "trap" || before[1].State != control.WorkerQuarantined || before[1].Reason != "3 faults" {
		t.Fatalf("workers %+v", before)
	}
	check(t, p.Close())
	p = open(t, dir)
	if after := p.Workers(""); !reflect.DeepEqual(before, after) {
		t.Fatalf("replayed workers differ:\n%+v\n%+v", before, after)
	}
	h, err := p.History(control.WorkerEntity("acme", "echo"))
	check(t, err)
	var kinds []string
	for _, c := range h {
		kinds = append(kinds, c.Kind)
	}
	if !reflect.DeepEqual(kinds, []string{"worker.started", "worker.stopped"}) {
		t.Fatalf("history %v", kinds)
	}
	_, err = p.ResetWorker(ctx, "acme", "trap")
	check(t, err)
	if w, _ := p.Worker("acme", "trap"); w.State != control.WorkerRunning || w.Reason != "" {
		t.Fatalf("after reset %+v", w)
	}
	check(t, p.Close())
}

// StartWorker's count: exactly max workers not stopped are accepted, one
// more is ErrLimit; a stopped one does not count; a cursor is one
// worker's (or one API cursor's).
func TestWorkerLimitAndCursorClash(t *testing.T) {
	p := open(t, t.TempDir())
	ctx := opCtx()
	_, err := p.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{})
	check(t, err)
	start := func(name, cursor string) error {
		_, err := p.StartWorker(ctx, control.WorkerDef{Tenant: "acme", Name: name, Plugin: "echo", Cursor: cursor}, 2)
		return err
	}
	check(t, start("a", ""))
	check(t, start("b", ""))
	if err := start("c", ""); !errors.Is(err, control.ErrLimit) {
		t.Fatalf("a third worker: %v, want ErrLimit", err)
	}
	_, err = p.StopWorker(ctx, "acme", "b")
	check(t, err)
	check(t, start("c", ""))
	if err := start("d", "a"); !errors.Is(err, control.ErrExists) {
		t.Fatalf("a worker on another worker's cursor: %v, want ErrExists", err)
	}
	check(t, p.DefineCursor(ctx, control.CursorDef{Name: "api", Tenant: "acme"}))
	if err := start("e", "api"); !errors.Is(err, control.ErrExists) {
		t.Fatalf("a worker on an API cursor: %v, want ErrExists", err)
	}
	if err := start("f", ""); !errors.Is(err, control.ErrLimit) {
		t.Fatalf("still at the limit: %v", err)
	}
	if _, err := p.StartWorker(ctx, control.WorkerDef{Tenant: "nosuch", Name: "x", Plugin: "echo"}, -1); !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("a worker of an unknown tenant: %v", err)
	}
	check(t, p.Close())
}
