package server

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/control"
)

// TestEffectsOfOneTenantDoNotHoldOthers: while one tenant's effects take
// long (a bundle whose load runs to the check timeout), the effects of
// the tenants noted after it are applied; one tenant's are never applied
// twice at once, and a change noted while they run is applied after.
func TestEffectsOfOneTenantDoNotHoldOthers(t *testing.T) {
	e := newEffects(nil)
	release := make(chan struct{})
	var mu sync.Mutex
	applied := map[string]int{}
	var slowAtOnce, slowMax atomic.Int32
	fastDone := make(chan struct{}, 8)
	e.applyFn = func(ctx context.Context, tenant string) {
		if tenant == "slow" {
			n := slowAtOnce.Add(1)
			for m := slowMax.Load(); n > m && !slowMax.CompareAndSwap(m, n); m = slowMax.Load() {
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
			slowAtOnce.Add(-1)
		}
		mu.Lock()
		applied[tenant]++
		mu.Unlock()
		if tenant != "slow" {
			fastDone <- struct{}{}
		}
	}
	go e.run()
	defer e.close()
	note := func(tenant string) { e.note(control.Change{Kind: "policy.activated", Entity: "tenant:" + tenant}) }
	note("slow")
	time.Sleep(50 * time.Millisecond) // it runs
	note("slow")                      // again, while it runs
	for _, tenant := range []string{"a", "b", "c"} {
		note(tenant)
	}
	for range 3 {
		select {
		case <-fastDone:
		case <-time.After(10 * time.Second):
			t.Fatalf("other tenants' effects waited behind a slow one: applied %v", applied)
		}
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := applied["slow"]
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slow tenant's effects applied %d times, want 2 (the change noted while they ran applied after)", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m := slowMax.Load(); m != 1 {
		t.Fatalf("one tenant's effects ran %d at once", m)
	}
}
