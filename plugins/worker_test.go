package plugins_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/policy"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHandlerWorkerRestartsAfterTrap runs testdata/handler-flaky.wat (it
// traps on its first batch, then echoes each event) as a cursor worker's
// handler: the worker restarts once (the default RestartOnce), the batch is
// redelivered (at-least-once), and every source event gets exactly one
// echo, written through the store with causation and correlation from the
// source.
func TestHandlerWorkerRestartsAfterTrap(t *testing.T) {
	s := openStore(t)
	p := load(t, newHost(t), fixture(t, "handler-flaky"), handlerManifest("echo"))
	appendEvents(t, s, "order:1", 20, kindA, kindB)

	w, err := s.CursorWorker(context.Background(), core.All().WithCategory(1), core.WorkerConfig{BatchSize: 8}, p.Handler(s))
	if err != nil {
		t.Fatal(err)
	}
	echoes := func() []core.StoredEvent { return stream(t, s, "echo") }
	waitFor(t, "20 echoes", func() bool { return len(echoes()) >= 20 })
	appendEvents(t, s, "order:2", 5, kindA)
	waitFor(t, "25 echoes", func() bool { return len(echoes()) >= 25 })
	w.Stop()
	if err := w.Join(); err != nil {
		t.Fatalf("Join: %v", err)
	}
	if r := w.Restarts(); r != 1 {
		t.Errorf("restarts %d, want 1 (one trap)", r)
	}

	sources, err := s.Query(core.All().WithCategory(1))
	if err != nil {
		t.Fatal(err)
	}
	byID := map[core.EventID]core.StoredEvent{}
	for _, ev := range sources {
		byID[ev.Header.ID] = ev
	}
	seen := map[core.EventID]bool{}
	for _, e := range echoes() {
		src, ok := byID[e.Header.CausationID]
		if !ok {
			t.Fatalf("echo %s is caused by %s, not a source event", e.Header.ID, e.Header.CausationID)
		}
		if seen[src.Header.ID] {
			t.Fatalf("source %s echoed twice", src.Header.ID)
		}
		seen[src.Header.ID] = true
		if e.Header.CorrelationID != src.Header.CorrelationID || e.Header.Kind != kindEcho ||
			e.Coordinate.Scope != "plugin" || string(e.Payload) != "{}" {
			t.Fatalf("echo %+v of source %+v", e, src)
		}
	}
	if len(seen) != len(sources) || len(sources) != 25 {
		t.Fatalf("%d of %d sources echoed, want all 25", len(seen), len(sources))
	}
}

// TestHandlerWorkerBudgetExhausted: a handler plugin that always traps
// stops its worker once the restart budget is spent, with a
// *core.WorkerError wrapping the *PluginFault; with MaxFaults below the
// budget, the last fault is the quarantine.
func TestHandlerWorkerBudgetExhausted(t *testing.T) {
	cases := []struct {
		name      string
		maxFaults int
		want      plugins.FaultKind
	}{
		{"trap", 0, plugins.FaultTrap},
		{"quarantined", 2, plugins.FaultQuarantined},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := openStore(t)
			m := handlerManifest("trapper")
			m.Limits.MaxFaults = c.maxFaults
			p := load(t, newHost(t), fixture(t, "trap"), m)
			appendEvents(t, s, "order:1", 3, kindA)
			budget := core.RestartBounded(3, time.Minute)
			w, err := s.CursorWorker(context.Background(), core.All(), core.WorkerConfig{Restart: &budget}, p.Handler(s))
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-w.Done():
			case <-time.After(20 * time.Second):
				w.Stop()
				t.Fatal("the worker did not stop")
			}
			err = w.Join()
			var we *core.WorkerError
			if !errors.As(err, &we) {
				t.Fatalf("Join: %v (%T), want a *core.WorkerError", err, err)
			}
			if we.Restarts != 3 {
				t.Errorf("restarts %d, want 3", we.Restarts)
			}
			if f := asFault(t, err); f.Kind != c.want {
				t.Errorf("the worker's last failure is a %q fault, want %q: %v", f.Kind, c.want, err)
			}
			if st := s.Stats(); st.Events != 3 {
				t.Errorf("the store holds %d events, want the 3 sources", st.Events)
			}
		})
	}
}

// admissionRecorder is a store gate that admits everything and records
// who wrote the echoes.
type admissionRecorder struct {
	mu     sync.Mutex
	writes []string // "action principal" of each echo proposed
}

func (a *admissionRecorder) Admit(ctx context.Context, p *core.Proposal) error {
	if p.Coordinate.Entity == "echo" {
		a.mu.Lock()
		a.writes = append(a.writes, fmt.Sprintf("%s %s", p.Action, policy.PrincipalFrom(ctx).ID))
		a.mu.Unlock()
	}
	return nil
}

// TestHandlerRedeliveryWritesOnce: when the worker fails after the plugin's
// reactions were written but before the batch was committed, the batch is
// delivered again (at-least-once) and the plugin answers it again, but the
// reactions' idempotency keys keep the store from writing them twice. The
// writes go through the store's gate as action "plugin" by principal
// "plugin:echo".
func TestHandlerRedeliveryWritesOnce(t *testing.T) {
	gate := &admissionRecorder{}
	s := openStore(t, func(c *core.Config) { c.Admission = gate })
	p := load(t, newHost(t), fixture(t, "handler-flaky"), handlerManifest("echo"))
	// handler-flaky traps on the instance made at load: spend that trap.
	if _, _, err := p.Handle(context.Background(), []core.StoredEvent{oneEvent(kindA)}); err == nil {
		t.Fatal("handler-flaky did not trap on its first call")
	}
	p.Reset()
	appendEvents(t, s, "order:1", 12, kindA)

	pluginHandler := p.Handler(s)
	var calls atomic.Int32
	failAfterWrite := func(ctx context.Context, batch []core.StoredEvent) (core.WorkerAction, error) {
		a, err := pluginHandler(ctx, batch)
		if err == nil && calls.Add(1) == 2 {
			return a, errors.New("crash after the reactions were written, before the commit")
		}
		return a, err
	}
	w, err := s.CursorWorker(context.Background(), core.All().WithCategory(1), core.WorkerConfig{BatchSize: 5}, failAfterWrite)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every batch handled", func() bool { return calls.Load() >= 4 }) // 5+5 (twice) +2
	w.Stop()
	if err := w.Join(); err != nil {
		t.Fatalf("Join: %v", err)
	}
	if r := w.Restarts(); r != 1 {
		t.Errorf("restarts %d, want 1", r)
	}
	echoes, err := s.Stream("echo")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[core.EventID]int{}
	for _, e := range echoes {
		seen[e.Header.CausationID]++
	}
	if len(echoes) != 12 || len(seen) != 12 {
		t.Fatalf("%d echoes of %d sources, want 12 of 12 (no duplicates after the redelivery)", len(echoes), len(seen))
	}
	gate.mu.Lock()
	defer gate.mu.Unlock()
	if len(gate.writes) < 12 {
		t.Fatalf("the gate saw %d echo writes, want at least 12", len(gate.writes))
	}
	for _, w := range gate.writes {
		if w != "plugin plugin:echo" {
			t.Fatalf("an echo was proposed as %q, want action plugin by plugin:echo", w)
		}
	}
}

// stream is the entity's events.
func stream(t *testing.T, s *core.Store, entity string) []core.StoredEvent {
	t.Helper()
	evs, err := s.Stream(entity)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// busyGate asks the first n plugin writes to retry, as a tenant's policy
// does when its evaluations are all busy.
type busyGate struct{ refusals atomic.Int32 }

func (g *busyGate) Admit(ctx context.Context, p *core.Proposal) error {
	if p.Action == core.ActionPlugin && g.refusals.Add(-1) >= 0 {
		return &core.RetryError{After: 5 * time.Millisecond, Reason: "every policy evaluation slot is busy"}
	}
	return nil
}

// TestHandlerWaitsOutBusyGates: reactions refused with a RetryError (the
// gate busy, not the plugin wrong) are written after the wait, each once;
// the worker does not fault or restart for them.
func TestHandlerWaitsOutBusyGates(t *testing.T) {
	gate := &busyGate{}
	gate.refusals.Store(6)
	s := openStore(t, func(c *core.Config) { c.Admission = gate })
	p := load(t, newHost(t), fixture(t, "handler-flaky"), handlerManifest("echo"))
	if _, _, err := p.Handle(context.Background(), []core.StoredEvent{oneEvent(kindA)}); err == nil {
		t.Fatal("handler-flaky did not trap on its first call")
	}
	p.Reset()
	appendEvents(t, s, "order:1", 10, kindA)
	never := core.RestartNever()
	w, err := s.CursorWorker(context.Background(), core.All().WithCategory(1), core.WorkerConfig{BatchSize: 4, Restart: &never}, p.Handler(s))
	if err != nil {
		t.Fatal(err)
	}
	echoes := func() []core.StoredEvent { return stream(t, s, "echo") }
	waitFor(t, "10 echoes", func() bool { return len(echoes()) >= 10 })
	w.Stop()
	if err := w.Join(); err != nil {
		t.Fatalf("the worker failed over busy gates: %v", err)
	}
	if r := w.Restarts(); r != 0 {
		t.Errorf("restarts %d, want none", r)
	}
	if n := gate.refusals.Load(); n >= 0 {
		t.Fatalf("the gate refused %d writes fewer than asked: the test did not exercise waiting", 6-n)
	}
	seen := map[core.EventID]bool{}
	for _, e := range echoes() {
		if seen[e.Header.CausationID] {
			t.Fatalf("source %s echoed twice", e.Header.CausationID)
		}
		seen[e.Header.CausationID] = true
	}
	if len(seen) != 10 {
		t.Fatalf("%d sources echoed, want 10", len(seen))
	}
}

// TestHandlerKeepsReactionsWrittenBeforeASwap: a batch's reactions were
// written but its position never committed (the process died), and the
// plugin was swapped meanwhile for a version that answers otherwise (two
// reactions per event instead of one). The redelivered batch keeps the
// reactions written first, and the worker goes on to the events after it
// instead of failing on the idempotency keys until its budget is spent.
func TestHandlerKeepsReactionsWrittenBeforeASwap(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	p := load(t, newHost(t), fixture(t, "handler-flaky"), handlerManifest("echo"))
	appendEvents(t, s, "order:1", 4, kindA)
	batch, err := s.Query(core.All().WithCategory(1))
	if err != nil {
		t.Fatal(err)
	}
	h := p.Handler(s)
	_, _ = h(ctx, batch) // handler-flaky traps on its first call
	if _, err := h(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if n := len(stream(t, s, "echo")); n != 4 {
		t.Fatalf("first life: %d echoes, want 4", n)
	}
	if err := p.Swap(ctx, fixture(t, "handler-double"), handlerManifest("echo")); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, s, "order:2", 4, kindA)
	budget := core.RestartBounded(3, time.Minute)
	w, err := s.CursorWorker(ctx, core.All().WithCategory(1), core.WorkerConfig{Name: "shipper", Restart: &budget}, p.Handler(s))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { w.Stop(); _ = w.Join() }()
	deadline := time.Now().Add(10 * time.Second)
	for len(stream(t, s, "echo")) < 12 {
		select {
		case <-w.Done():
			t.Fatalf("the worker ended on the redelivered batch: %v", w.Join())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not get past the redelivered batch: %d echoes, want 4 + 8", len(stream(t, s, "echo")))
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(stream(t, s, "echo")); n != 12 {
		t.Fatalf("%d echoes, want 4 kept from the first version + 8 from the second", n)
	}
}
