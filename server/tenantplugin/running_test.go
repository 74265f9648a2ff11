package tenantplugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/tenantplugin"
)

// TestBusyTenantCannotTimeOutAnother: with two plugin calls running at
// once (Options.Running 2), a tenant whose projections spin until their
// timeout runs them one at a time — each has its full timeout once it
// runs — while another tenant's projection runs beside them at once
// instead of queueing behind them or sharing the processors with all of
// them: it answers while the busy tenant's calls are still going.
func TestBusyTenantCannotTimeOutAnother(t *testing.T) {
	ctx, store, m := runningHost(t, control.Quotas{}, "acme", "rival")
	push := func(tenant, name, fixture string, timeout time.Duration) {
		t.Helper()
		pushProjection(ctx, t, m, tenant, name, fixture, timeout)
	}
	const spin = 300 * time.Millisecond
	push("rival", "spin", "loop", spin)
	push("acme", "count", "counter", time.Second)

	const calls = 3 // within tenantplugin.TenantCalls
	var running atomic.Int32
	var wg sync.WaitGroup
	start := time.Now()
	ends := make([]time.Duration, calls)
	for i := range calls {
		wg.Add(1)
		running.Add(1)
		go func() {
			defer wg.Done()
			defer running.Add(-1)
			_, err := m.Project(ctx, store, "rival", "spin", "order:1")
			ends[i] = time.Since(start)
			var f *plugins.PluginFault
			if !asFault(err, &f) || f.Kind != plugins.FaultTimeout {
				t.Errorf("rival's spinning call %d: %v, want its own timeout", i, err)
			}
		}()
	}
	time.Sleep(spin / 3) // the rival's calls have started or queued
	if _, err := m.Project(ctx, store, "acme", "count", "order:1"); err != nil {
		t.Fatalf("acme's projection beside the rival's spinning calls: %v", err)
	}
	if running.Load() == 0 {
		t.Fatal("acme's projection answered only after all the rival's calls ended: it waited behind them")
	}
	wg.Wait()
	last := max(ends[0], ends[1], ends[2])
	if last < calls*spin*9/10 {
		t.Fatalf("the rival's %d spinning calls all ended within %v (timeout %v each): they ran at once, beside the other tenant's, not one at a time", calls, last, spin)
	}
}

func asFault(err error, f **plugins.PluginFault) bool { return err != nil && errors.As(err, f) }

// TestTenantsThatKeepSlotsBusyShareHalf: the tenants whose plugin calls
// kept the slots busy lately share half of them: two tenants whose
// plugins spin to their timeout cannot hold both slots of a pool of 2 —
// their next calls run one at a time, and a third tenant's projection
// answers while both are still pending.
func TestTenantsThatKeepSlotsBusyShareHalf(t *testing.T) {
	const spin = 400 * time.Millisecond
	ctx, store, m := runningHost(t, control.Quotas{PluginCallMillis: int(spin / time.Millisecond)}, "acme", "rival1", "rival2")
	push := func(tenant, name, fixture string) {
		t.Helper()
		pushProjection(ctx, t, m, tenant, name, fixture, spin)
	}
	push("rival1", "spin", "loop")
	push("rival2", "spin", "loop")
	push("acme", "count", "counter")
	spinAll := func() (pending *atomic.Int32, wait func()) {
		pending = new(atomic.Int32)
		var wg sync.WaitGroup
		for _, rival := range []string{"rival1", "rival2"} {
			wg.Add(1)
			pending.Add(1)
			go func() {
				defer wg.Done()
				defer pending.Add(-1)
				if _, err := m.Project(ctx, store, rival, "spin", "order:1"); err == nil {
					t.Errorf("%s's spinning call answered", rival)
				}
			}()
		}
		return pending, wg.Wait
	}
	for range 6 { // each rival keeps a slot busy for 2.4 s: both are busy
		_, wait := spinAll()
		wait()
	}
	pending, wait := spinAll()
	time.Sleep(spin / 4) // the rivals' calls have started or queued
	if _, err := m.Project(ctx, store, "acme", "count", "order:1"); err != nil {
		t.Fatalf("acme's projection beside the rivals' spinning calls: %v", err)
	}
	if n := pending.Load(); n != 2 {
		t.Errorf("acme's projection answered with %d of the rivals' 2 calls pending: they held both slots, and acme waited for one to end", n)
	}
	wait()
}

// runningHost is a plugin manager running 2 plugin calls at once, over a
// control plane holding tenants (each with quotas), and a store holding
// one event of order:1.
func runningHost(t *testing.T, quotas control.Quotas, tenants ...string) (context.Context, *core.Store, *tenantplugin.Manager) {
	t.Helper()
	b := newTestBed(t, quotas, tenants...)
	m, err := tenantplugin.Open(b.ctx, tenantplugin.Options{Dir: filepath.Join(b.root, "plugins"), Plane: b.plane, Running: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return b.ctx, b.store, m
}

// pushProjection uploads and activates the plugins/testdata fixture as
// tenant's projection name, with a call timeout and room for 100 faults.
func pushProjection(ctx context.Context, t *testing.T, m *tenantplugin.Manager, tenant, name, module string, timeout time.Duration) {
	t.Helper()
	wasm := fixture(t, module)
	man, _ := json.Marshal(map[string]any{"name": name, "version": "1", "kind": "projection",
		"sha256": plugins.Digest(wasm), "limits": map[string]any{"timeout": timeout.String(), "max_faults": 100}})
	if _, err := m.Push(ctx, tenant, man, wasm, true); err != nil {
		t.Fatal(err)
	}
}

// TestQuickReadServedAtTheNextHandOver: with one plugin call slot and
// eight tenants keeping four projection reads each waiting (more than
// the server's Calls folds in flight), each read spinning its plugin to
// its timeout, another tenant's quick projection runs at the next
// hand-over of the call slot: it waits for one of the spinning reads to
// end, not two (once for a place among the folds in flight, held by
// reads waiting for the call slot, then again for the slot).
func TestQuickReadServedAtTheNextHandOver(t *testing.T) {
	const spin = 200 * time.Millisecond
	rivals := []string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"}
	b := newTestBed(t, control.Quotas{}, append([]string{"acme"}, rivals...)...)
	m, err := tenantplugin.Open(b.ctx, tenantplugin.Options{Dir: filepath.Join(b.root, "plugins"), Plane: b.plane, Running: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	ctx, store := b.ctx, b.store
	for _, r := range rivals {
		pushProjection(ctx, t, m, r, "spin", "loop", spin)
	}
	pushProjection(ctx, t, m, "acme", "count", "counter", time.Second)

	rctx, stop := context.WithCancel(ctx)
	var ended atomic.Int64 // spinning reads that ran to their timeout
	var wg sync.WaitGroup
	for _, r := range rivals {
		for range tenantplugin.TenantCalls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for rctx.Err() == nil {
					_, err := m.Project(rctx, store, r, "spin", "order:1")
					var f *plugins.PluginFault
					if asFault(err, &f) && f.Kind == plugins.FaultTimeout {
						ended.Add(1)
					}
				}
			}()
		}
	}
	defer func() { stop(); wg.Wait() }()
	// Every rival has had the slot once (unserved tenants come first), so
	// acme, which has used none, is the next served.
	for ended.Load() < int64(len(rivals))+1 {
		time.Sleep(10 * time.Millisecond)
	}
	before := ended.Load()
	if _, err := m.Project(ctx, store, "acme", "count", "order:1"); err != nil {
		t.Fatalf("acme's projection beside the rivals' spinning reads: %v", err)
	}
	if n := ended.Load() - before; n > 1 {
		t.Fatalf("acme's projection answered after %d of the rivals' reads ended: it waited for more than the next hand-over of the call slot", n)
	}
}

// TestLongFoldTakesTurnsWithOthers: a fold of many plugin calls takes a
// call slot per call, not for the whole fold nor for a whole batch: with
// one slot, another tenant's projection runs between two calls of a long
// fold instead of after all of them — a fold of many batches, and a
// batch the plugin's one page of memory splits in many calls.
func TestLongFoldTakesTurnsWithOthers(t *testing.T) {
	for _, c := range []struct {
		name, fixture string
		pages         int
		events        int
		payload       []byte
	}{
		{"many batches", "slowok", 512, 6 * core.ProjectBatchSize, []byte(`{}`)},
		{"a batch split by memory", "slowsmall", 1, 40, []byte(`{"pad":"` + strings.Repeat("x", 6000) + `"}`)},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newTestBed(t, control.Quotas{}, "acme", "rival")
			m, err := tenantplugin.Open(b.ctx, tenantplugin.Options{Dir: filepath.Join(b.root, "plugins"), Plane: b.plane, Running: 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Close(context.Background()) })
			ctx, store := b.ctx, b.store
			coord, _ := core.NewCoordinate("doc:long", "s")
			for range c.events {
				if _, err := store.Append(ctx, coord, core.MustKind(1, 1), c.payload); err != nil {
					t.Fatal(err)
				}
			}
			wasm := fixture(t, c.fixture)
			man, _ := json.Marshal(map[string]any{"name": "slow", "version": "1", "kind": "projection",
				"sha256": plugins.Digest(wasm), "limits": map[string]any{"timeout": "1s", "memory_pages": c.pages}})
			if _, err := m.Push(ctx, "rival", man, wasm, true); err != nil {
				t.Fatal(err)
			}
			pushProjection(ctx, t, m, "acme", "count", "counter", time.Second)
			done := make(chan error, 1)
			go func() {
				_, err := m.Project(ctx, store, "rival", "slow", "doc:long")
				done <- err
			}()
			for m.CallsRunning() == 0 { // the rival's fold has begun its first call
				time.Sleep(time.Millisecond)
			}
			if _, err := m.Project(ctx, store, "acme", "count", "order:1"); err != nil {
				t.Fatalf("acme's projection beside the rival's long fold: %v", err)
			}
			select {
			case err := <-done:
				t.Fatalf("acme's projection answered only after the rival's fold ended (%v): the fold held the slot throughout", err)
			default:
			}
			if err := <-done; err != nil {
				t.Fatalf("the rival's fold: %v", err)
			}
		})
	}
}
