package hostedworker

import (
	"context"
	"sync"
)

// fairTurns are the server's turns (Options.InFlight), handed out fairly
// between tenants: a tenant holds at most perTenant of them, and a turn
// that frees goes to the waiting tenant holding the fewest (among those
// holding as few, the one served longest ago, a tenant coming back
// counted as served when it came), decided when the turn is handed
// over. So a tenant holding none
// gets a turn within one hand-over per tenant waiting, however many
// workers they keep waiting. Safe for concurrent use.
type fairTurns struct {
	mu        sync.Mutex
	size      int
	perTenant int
	inUse     int
	seq       uint64                  // orders the waiters by arrival
	grants    uint64                  // counts the turns handed over
	tenants   map[string]*tenantTurns // tenants holding or waiting for a turn
}

// tenantTurns is one tenant's turns held and its waiters, first come
// first served.
type tenantTurns struct {
	held      int
	lastGrant uint64 // grants when it was last handed a turn (or its entry made)
	waiters   []*turnWaiter
}

// turnWaiter is one take waiting for a turn; granted is closed when it
// has one.
type turnWaiter struct {
	seq     uint64
	granted chan struct{}
}

// newFairTurns makes size turns (at least 1), a tenant holding at most
// half (at least 1).
func newFairTurns(size int) *fairTurns {
	size = max(size, 1)
	return &fairTurns{size: size, perTenant: max(size/2, 1), tenants: map[string]*tenantTurns{}}
}

// take waits, within ctx, for one of the turns for tenant; release gives
// it back (once).
func (f *fairTurns) take(ctx context.Context, tenant string) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	t := f.tenants[tenant]
	if t == nil {
		// At the back of the rotation: a tenant whose entry went (it held
		// and waited for nothing) is not served before those waiting on.
		t = &tenantTurns{lastGrant: f.grants}
		f.tenants[tenant] = t
	}
	f.seq++
	w := &turnWaiter{seq: f.seq, granted: make(chan struct{})}
	t.waiters = append(t.waiters, w)
	f.dispatchLocked()
	f.mu.Unlock()
	select {
	case <-w.granted:
	case <-ctx.Done():
		f.mu.Lock()
		select {
		case <-w.granted: // granted meanwhile: give it back
			f.mu.Unlock()
			f.release(tenant)
		default:
			for i, o := range t.waiters {
				if o == w {
					t.waiters = append(t.waiters[:i], t.waiters[i+1:]...)
					break
				}
			}
			f.forgetLocked(tenant, t)
			f.mu.Unlock()
		}
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() { once.Do(func() { f.release(tenant) }) }, nil
}

// release gives one of tenant's turns back and hands the free turn on.
func (f *fairTurns) release(tenant string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tenants[tenant]
	t.held--
	f.inUse--
	f.forgetLocked(tenant, t)
	f.dispatchLocked()
}

// dispatchLocked hands the free turns to the waiters, fairly.
func (f *fairTurns) dispatchLocked() {
	for f.inUse < f.size {
		var next *tenantTurns
		for _, t := range f.tenants {
			if len(t.waiters) == 0 || t.held >= f.perTenant {
				continue
			}
			if next == nil || fairer(t, next) {
				next = t
			}
		}
		if next == nil {
			return
		}
		w := next.waiters[0]
		next.waiters = next.waiters[1:]
		next.held++
		f.inUse++
		f.grants++
		next.lastGrant = f.grants
		close(w.granted)
	}
}

// fairer reports whether a is to be served before b: it holds fewer
// turns, or as many and was served longer ago, or as long ago and its
// first waiter came first.
func fairer(a, b *tenantTurns) bool {
	switch {
	case a.held != b.held:
		return a.held < b.held
	case a.lastGrant != b.lastGrant:
		return a.lastGrant < b.lastGrant
	}
	return a.waiters[0].seq < b.waiters[0].seq
}

// forgetLocked drops tenant's entry once it holds and waits for nothing.
func (f *fairTurns) forgetLocked(tenant string, t *tenantTurns) {
	if t.held == 0 && len(t.waiters) == 0 {
		delete(f.tenants, tenant)
	}
}

// held reports the turns held, all tenants' together.
func (f *fairTurns) held() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inUse
}
