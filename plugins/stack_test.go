package plugins_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins"
)

// TestLoadRefusesModuleInvalidAsWritten: a module that is not valid
// WebAssembly as written (it writes global 0 and declares no global) is
// refused at Load with a *LoadError, although it would be valid once the
// host had added its own globals: the host validates what the plugin
// author wrote, never only its rewrite.
func TestLoadRefusesModuleInvalidAsWritten(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	good := load(t, h, fixture(t, "counter"), projManifest("good"))
	m := projManifest("depthreset")
	m.Limits.Timeout = plugins.Duration(10 * time.Second)
	p, err := h.Load(ctx, fixture(t, "depthreset"), m)
	if err == nil {
		st, ferr := p.Fold(ctx, u32s(20000), []core.StoredEvent{oneEvent(kindA)})
		t.Fatalf("Load accepted a module that is not valid as written; nesting 20000 calls against call_depth %d then gave %x, %v",
			p.Manifest().Limits.CallDepth, st, ferr)
	}
	t.Logf("Load: %v", err)
	le := asLoadError(t, err)
	if le.Plugin != "depthreset" || !strings.Contains(le.Error(), "not valid WebAssembly") || !strings.Contains(le.Error(), "global") {
		t.Fatalf("Load: %v, want a load error saying the module is not valid WebAssembly (its global index)", err)
	}
	if _, ok := h.Plugin("depthreset"); ok {
		t.Fatal("the refused plugin is registered")
	}
	stillServes(t, good)
}

// TestStackBudgetBoundsHostHeap: legal calls whose frames are large (600
// live i64 values each), nested 9,999 deep — inside the default
// call_depth — on 8 goroutines at once, fault with FaultStack against the
// default limits.stack_bytes instead of growing the host's heap by
// hundreds of MiB; the instances are discarded, repeated faults
// quarantine, the host heap stays within 64 MiB of where it was (the 8
// calls together may hold at most 8 × 2 × the default budget of 4 MiB
// while they run) and the host goes on serving another plugin.
func TestStackBudgetBoundsHostHeap(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	good := load(t, h, fixture(t, "counter"), projManifest("good"))
	m := projManifest("fatframes")
	m.Limits.Timeout = plugins.Duration(20 * time.Second) // not what is tested
	m.Limits.MaxFaults = 16
	p := load(t, h, fixture(t, "fatframes"), m)
	ev := []core.StoredEvent{oneEvent(kindA)}
	guard := newHeapGuard()
	const calls = 8
	errs := make([]error, calls)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = p.Fold(ctx, u32s(9999), ev)
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d concurrent calls 9999 deep with fat frames: %v", calls, time.Since(began))
	guard.check(t, "8 concurrent calls with fat frames 9999 deep", 64<<20)
	for i, err := range errs {
		f := asFault(t, err)
		if f.Kind != plugins.FaultStack || !strings.Contains(err.Error(), "stack_bytes") {
			t.Fatalf("call %d: %v, want a stack fault naming limits.stack_bytes", i, err)
		}
	}
	stillServes(t, good)
	// The same calls again, until the plugin is quarantined: each faults at
	// once on a fresh instance.
	for i := calls; i < m.Limits.MaxFaults; i++ {
		if _, err := p.Fold(ctx, u32s(9999), ev); asFault(t, err).Kind != plugins.FaultStack {
			t.Fatalf("call %d: %v, want a stack fault", i, err)
		}
	}
	if _, err := p.Fold(ctx, u32s(2), ev); asFault(t, err).Kind != plugins.FaultQuarantined {
		t.Fatalf("after %d stack faults: %v, want quarantined", m.Limits.MaxFaults, err)
	}
	guard.check(t, "16 calls with fat frames 9999 deep", 64<<20)
	stillServes(t, good)
}

// TestStackBytesExact: limits.stack_bytes at the boundary. Each call
// charges 8 × (4 + parameters + results + locals + body bytes): in
// testdata/recurse.wat, batpak_fold (4 parameters, 1 result, 1 local, a
// body of 51 bytes) charges 488 and $to (1 parameter, a body of 17
// bytes) 176, so nesting D calls charges 488 + (D-1) × 176. With exactly
// that limit the call returns; one byte less, or one call more, faults
// naming the limit; an instance goes on returning after the fault.
func TestStackBytesExact(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	ev := []core.StoredEvent{oneEvent(kindA)}
	for _, d := range []uint32{2, 300} {
		need := uint32(488 + (d-1)*176)
		for _, limit := range []uint32{need, need - 1} {
			m := projManifest(fmt.Sprintf("stack-%d-%d", d, limit))
			m.Limits.StackBytes = limit
			m.Limits.Timeout = plugins.Duration(10 * time.Second)
			p := load(t, h, fixture(t, "recurse"), m)
			st, err := p.Fold(ctx, u32s(d), ev)
			if limit == need {
				if err != nil || u64(t, st) != uint64(d) {
					t.Fatalf("nesting %d calls with stack_bytes %d: %x, %v", d, limit, st, err)
				}
				_, err = p.Fold(ctx, u32s(d+1), ev)
			}
			f := asFault(t, err)
			if f.Kind != plugins.FaultStack || !strings.Contains(err.Error(), fmt.Sprintf("limit of %d bytes (limits.stack_bytes", limit)) {
				t.Fatalf("over stack_bytes %d: %v, want a stack fault naming the limit", limit, err)
			}
			if limit == need {
				if st, err := p.Fold(ctx, u32s(d), ev); err != nil || u64(t, st) != uint64(d) {
					t.Fatalf("nesting %d calls after the fault: %x, %v", d, st, err)
				}
			}
		}
	}
}

// TestDeepStackNotKeptIdle: calls within a raised limits.stack_bytes that
// grow a large call stack (fat frames 2,000 deep, tens of MiB each) return
// normally, and the pooled instances do not keep those stacks: the heap
// the host holds after the calls is within 16 MiB of what it held before.
func TestDeepStackNotKeptIdle(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	m := projManifest("fatframes-deep")
	m.Limits.StackBytes = 256 << 20
	m.Limits.Timeout = plugins.Duration(20 * time.Second) // not what is tested
	p := load(t, h, fixture(t, "fatframes"), m)
	ev := []core.StoredEvent{oneEvent(kindA)}
	guard := newHeapGuard()
	const calls = 4
	var wg sync.WaitGroup
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := p.Fold(ctx, u32s(2000), ev); err != nil || u64(t, st) != 2000 {
				t.Errorf("nesting 2000 fat frames within stack_bytes: %x, %v", st, err)
			}
		}()
	}
	wg.Wait()
	guard.checkInUse(t, "4 pooled instances after calls 2000 fat frames deep", 16<<20)
	if st, err := p.Fold(ctx, u32s(3), ev); err != nil || u64(t, st) != 3 {
		t.Fatalf("a pooled instance after the deep calls: %x, %v", st, err)
	}
}
