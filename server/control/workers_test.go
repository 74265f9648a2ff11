package control_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
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

// DeleteWorker forgets a worker (worker.deleted, in its history): it
// replays as gone, no longer counts towards the defined workers, and its
// name starts again as a new worker. A plugin a worker running or
// quarantined runs is not deleted (ErrExists naming the workers); a
// stopped worker does not hold it, nor does deleting one inactive
// version.
func TestWorkerDeleteAndPluginInUse(t *testing.T) {
	dir := t.TempDir()
	p := open(t, dir)
	ctx := opCtx()
	must(t)(p.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{}))
	v := func(version, content string) control.PluginVersion {
		return control.PluginVersion{Version: version, Digest: rev(content), Kind: "handler", Bytes: 10, Manifest: json.RawMessage(`{"name":"echo"}`)}
	}
	must(t)(p.AddPluginVersion(ctx, "acme", v("1", "one"), "echo", true, 4, 4))
	must(t)(p.AddPluginVersion(ctx, "acme", v("2", "two"), "echo", false, 4, 4))
	start := func(name string) error {
		_, err := p.StartWorkerMax(ctx, control.WorkerDef{Tenant: "acme", Name: name, Plugin: "echo"}, -1, 2)
		return err
	}
	check(t, start("a"))
	check(t, start("b"))
	if err := start("c"); !errors.Is(err, control.ErrDefinedLimit) {
		t.Fatalf("a third definition: %v, want ErrDefinedLimit", err)
	}
	var inUse *control.InUseError
	if err := p.DeletePlugin(ctx, "acme", "echo", ""); !errors.As(err, &inUse) || !errors.Is(err, control.ErrExists) ||
		!strings.Contains(err.Error(), `hosted workers "a", "b"`) {
		t.Fatalf("deleting a plugin two workers run: %v, want ErrExists naming them", err)
	}
	check(t, p.DeletePlugin(ctx, "acme", "echo", "2")) // an inactive version: no worker runs it
	gone := must(t)(p.DeleteWorker(ctx, "acme", "a")).(control.WorkerDef)
	if gone.Name != "a" || gone.Cursor != "a" {
		t.Fatalf("deleted %+v", gone)
	}
	if _, ok := p.Worker("acme", "a"); ok {
		t.Fatal("a deleted worker is still defined")
	}
	if _, err := p.DeleteWorker(ctx, "acme", "a"); !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("deleting it again: %v, want ErrNotFound", err)
	}
	check(t, start("c")) // its definition no longer counts
	_, err := p.StopWorker(ctx, "acme", "b")
	check(t, err)
	if err := p.DeletePlugin(ctx, "acme", "echo", ""); err == nil || !strings.Contains(err.Error(), `hosted worker "c";`) {
		t.Fatalf("deleting a plugin one running worker runs: %v", err)
	}
	check(t, p.Close())
	p = open(t, dir)
	if ws := p.Workers("acme"); len(ws) != 2 || ws[0].Name != "b" || ws[1].Name != "c" {
		t.Fatalf("replayed workers %+v, want b and c", ws)
	}
	must(t)(p.DeleteWorker(ctx, "acme", "c"))
	check(t, start("a")) // the name again: a new worker, continuing its entity
	h, err := p.History(control.WorkerEntity("acme", "a"))
	check(t, err)
	var kinds []string
	for _, c := range h {
		kinds = append(kinds, c.Kind)
	}
	if !reflect.DeepEqual(kinds, []string{"worker.started", "worker.deleted", "worker.started"}) {
		t.Fatalf("history %v", kinds)
	}
	must(t)(p.DeleteWorker(ctx, "acme", "a"))
	check(t, p.DeletePlugin(ctx, "acme", "echo", "")) // only a stopped worker names it
	check(t, p.Close())
}
