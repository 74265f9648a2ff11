package shares

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// DefaultWindow is the span over which New's pools weigh each tenant's
// recent use of their slots (see Pool).
const DefaultWindow = 2 * time.Second

// Pool is a number of slots with a share per tenant. The zero value is
// not usable: use New.
//
// A tenant holds at most half the slots (at least 1). The pool also keeps
// each tenant's recent use of its slots: the seconds its takes held them,
// decaying with the window (a use W ago counts e⁻¹ of its length), the
// takes still holding one counted as they run. A tenant whose use passes
// an eighth of the pool's capacity over the window (Size × W / 8
// slot-seconds: with 2 slots and 2 s, half a second) is busy, and each of
// its takes also needs one of the slots the busy tenants share, half the
// pool (at least 1). So tenants that keep the slots busy, with long calls
// or many short ones, hold at most half between them, and the others keep
// the rest — unless more than eight tenants each stay just under an
// eighth.
type Pool struct {
	all chan struct{}
	// busy is the slots the busy tenants share.
	busy   chan struct{}
	window time.Duration

	mu      sync.Mutex
	tenants map[string]*share // made on a tenant's first take, dropped when no take holds or waits on it
	use     map[string]*usage // tenants' recent use, dropped once it has decayed away
	// forgetAt is the size of use at which hold next forgets decayed use.
	forgetAt int
}

// share is one tenant's slots and the takes that hold or wait on them.
type share struct {
	slots chan struct{}
	takes int // guarded by Pool.mu
}

// usage is a tenant's decaying slot-seconds, as of at, and the start of
// each of its takes holding a slot now.
type usage struct {
	seconds float64
	at      time.Time
	holding map[*time.Time]struct{}
}

// decayed is the use of the takes that returned their slots, as of now.
func (u *usage) decayed(now time.Time, window time.Duration) float64 {
	return u.seconds * math.Exp(-now.Sub(u.at).Seconds()/window.Seconds())
}

// now is the use as of now, the takes holding a slot counted so far.
func (u *usage) now(now time.Time, window time.Duration) float64 {
	use := u.decayed(now, window)
	for start := range u.holding {
		use += now.Sub(*start).Seconds()
	}
	return use
}

// New is a pool of n slots (at least 1) weighing use over DefaultWindow;
// a tenant holds at most n/2 of them (at least 1).
func New(n int) *Pool { return NewWindow(n, DefaultWindow) }

// NewWindow is New weighing each tenant's use over window (at least 1 ms).
func NewWindow(n int, window time.Duration) *Pool {
	return &Pool{all: make(chan struct{}, max(n, 1)), busy: make(chan struct{}, max(n/2, 1)),
		window: max(window, time.Millisecond), tenants: map[string]*share{}, use: map[string]*usage{}, forgetAt: 64}
}

// Size is the pool's slots, PerTenant a tenant's share.
func (p *Pool) Size() int { return cap(p.all) }

// PerTenant is the most slots one tenant holds at once.
func (p *Pool) PerTenant() int { return max(cap(p.all)/2, 1) }

// BusyShare is how many slots the busy tenants share.
func (p *Pool) BusyShare() int { return cap(p.busy) }

// busyAt is the slot-seconds of use over the window past which a tenant
// is busy: an eighth of the pool's capacity.
func (p *Pool) busyAt() float64 { return p.window.Seconds() * float64(cap(p.all)) / 8 }

// ErrTenantShare, ErrPool and ErrBusyShare say which wait ran out in Take:
// for one of the tenant's share, for one of the pool's, or (the tenant
// being busy) for one of the busy tenants' share.
var (
	ErrTenantShare = errors.New("shares: every slot of the tenant's share is taken")
	ErrPool        = errors.New("shares: every slot of the pool is taken")
	ErrBusyShare   = errors.New("shares: every slot the busy tenants share is taken")
)

// Take takes one of the tenant's share, then, when the tenant is busy,
// one of the busy tenants' share, then one of the pool's, waiting for
// them while ctx lasts and, when wait > 0, at most wait in all (then
// ErrBusyShare, ErrTenantShare or ErrPool); ctx's error when it ends
// first. The release gives them back (once) and counts the time the slot
// was held as the tenant's use. The pool keeps a tenant's entry only
// while a take holds or waits on it, and its use until it decays away,
// so tenants that come and go leave nothing.
func (p *Pool) Take(ctx context.Context, tenant string, wait time.Duration) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err // not a coin's toss against a free slot
	}
	sh, busy := p.enter(tenant)
	own := sh.slots
	var expired <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		expired = t.C
	}
	giveBack := func() {} // what is taken so far
	fail := func(err error) (func(), error) {
		giveBack()
		p.leave(tenant, sh, nil)
		return nil, err
	}
	// The tenant's own slot first: a busy tenant's takes waiting for its
	// own share do not hold the busy tenants' slots meanwhile.
	select {
	case own <- struct{}{}:
		giveBack = func() { <-own }
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-expired:
		return fail(ErrTenantShare)
	}
	if busy {
		select {
		case p.busy <- struct{}{}:
			giveBack = func() { <-p.busy; <-own }
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-expired:
			return fail(ErrBusyShare)
		}
	}
	select {
	case p.all <- struct{}{}:
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-expired:
		return fail(ErrPool)
	}
	start := p.hold(tenant)
	var once sync.Once
	return func() {
		once.Do(func() {
			<-p.all
			giveBack()
			p.leave(tenant, sh, start)
		})
	}, nil
}

// hold records that one of tenant's takes holds a slot from now on: its
// use counts it as it runs.
func (p *Pool) hold(tenant string) *time.Time {
	start := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.use[tenant]
	if u == nil {
		if len(p.use) >= p.forgetAt {
			p.forgetLocked(start)
			// Amortized: the next look waits until the map has doubled,
			// so many tenants active at once cost a scan per doubling,
			// not one per new tenant.
			p.forgetAt = max(64, 2*len(p.use))
		}
		u = &usage{at: start}
		p.use[tenant] = u
	}
	if u.holding == nil {
		u.holding = map[*time.Time]struct{}{}
	}
	u.holding[&start] = struct{}{}
	return &start
}

// enter finds or makes the tenant's share and counts one more take on
// it; busy reports that the tenant's recent use makes it busy.
func (p *Pool) enter(tenant string) (sh *share, busy bool) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if u := p.use[tenant]; u != nil {
		busy = u.now(now, p.window) >= p.busyAt()
	}
	sh, ok := p.tenants[tenant]
	if !ok {
		sh = &share{slots: make(chan struct{}, p.PerTenant())}
		p.tenants[tenant] = sh
	}
	sh.takes++
	return sh, busy
}

// leave counts one take fewer on the tenant's share, dropping the share
// when none is left, and, for a take that held a slot since start, moves
// the time it held into the tenant's use.
func (p *Pool) leave(tenant string, sh *share, start *time.Time) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if sh.takes--; sh.takes == 0 {
		delete(p.tenants, tenant)
	}
	if start == nil {
		return
	}
	u := p.use[tenant]
	delete(u.holding, start)
	u.seconds, u.at = u.decayed(now, p.window)+now.Sub(*start).Seconds(), now
}

// forgetLocked drops the use that has decayed below a millisecond, of
// tenants holding no slot.
func (p *Pool) forgetLocked(now time.Time) {
	for t, u := range p.use {
		if len(u.holding) == 0 && u.now(now, p.window) < 0.001 {
			delete(p.use, t)
		}
	}
}

// Refusal is what Take's err says of the pool, for a refusal of what
// (the work the pool bounds): whose slots ran out, and the bounds; false
// when err is not a wait that ran out (nil, or ctx's error).
func (p *Pool) Refusal(err error, what string) (string, bool) {
	whose := "this tenant's"
	switch {
	case errors.Is(err, ErrPool):
		whose = "the server's"
	case errors.Is(err, ErrBusyShare):
		return fmt.Sprintf("%s: this tenant's kept the slots busy lately, and the tenants that do take every slot they share (%d of %d)", what, p.BusyShare(), p.Size()), true
	case !errors.Is(err, ErrTenantShare):
		return "", false
	}
	return fmt.Sprintf("%s: %s take every slot they may (%d per tenant, %d in all)", what, whose, p.PerTenant(), p.Size()), true
}

// InUse is the slots taken now, in all and by tenant.
func (p *Pool) InUse(tenant string) (all, byTenant int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if sh := p.tenants[tenant]; sh != nil {
		byTenant = len(sh.slots)
	}
	return len(p.all), byTenant
}

// Tenants is how many tenants' shares the pool keeps now: those with a
// take that holds or waits on a slot.
func (p *Pool) Tenants() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.tenants)
}

// Busy reports whether tenant's recent use makes it busy now.
func (p *Pool) Busy(tenant string) bool {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.use[tenant]
	return u != nil && u.now(now, p.window) >= p.busyAt()
}
