package shares

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Pool is a number of slots with a share per tenant. The zero value is
// not usable: use New.
type Pool struct {
	all chan struct{}
	// slow is the slots every tenant marked slow shares (Slow): half the
	// pool, at least 1, so that slow tenants together leave the rest to
	// the others.
	slow chan struct{}

	mu      sync.Mutex
	tenants map[string]*share    // made on a tenant's first take, dropped when no take holds or waits on it
	slowTo  map[string]time.Time // tenants marked slow, until when
}

// share is one tenant's slots and the takes that hold or wait on them.
type share struct {
	slots chan struct{}
	takes int // guarded by Pool.mu
}

// New is a pool of n slots (at least 1); a tenant holds at most n/2 of
// them (at least 1).
func New(n int) *Pool {
	return &Pool{all: make(chan struct{}, max(n, 1)), slow: make(chan struct{}, max(n/2, 1)),
		tenants: map[string]*share{}, slowTo: map[string]time.Time{}}
}

// Size is the pool's slots, PerTenant a tenant's share.
func (p *Pool) Size() int { return cap(p.all) }

// PerTenant is the most slots one tenant holds at once.
func (p *Pool) PerTenant() int { return max(cap(p.all)/2, 1) }

// ErrTenantShare and ErrPool say which wait ran out in Take: for one of
// the tenant's share, or (the tenant's share being free) for one of the
// pool's.
var (
	ErrTenantShare = errors.New("shares: every slot of the tenant's share is taken")
	ErrPool        = errors.New("shares: every slot of the pool is taken")
	// ErrSlowShare: the tenant is marked slow (Slow), and every slot the
	// slow tenants share is taken.
	ErrSlowShare = errors.New("shares: every slot of the slow tenants' share is taken")
)

// Slow marks tenant's work as slow for d (a take held the slot for long:
// its work ran near its time limit). While marked, each of its takes
// also takes one of the slots every slow tenant shares, half the pool
// (at least 1): tenants whose work keeps running long, however many, hold
// at most that many slots together, and the others keep the rest. A
// mark is renewed by the next, and forgotten once it ends.
func (p *Pool) Slow(tenant string, d time.Duration) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.slowTo) >= 64 {
		for t, until := range p.slowTo {
			if !until.After(now) {
				delete(p.slowTo, t)
			}
		}
	}
	p.slowTo[tenant] = now.Add(d)
}

// SlowShare is how many slots the tenants marked slow share.
func (p *Pool) SlowShare() int { return cap(p.slow) }

// Take takes one of the tenant's share, then one of the pool's, waiting
// for them while ctx lasts and, when wait > 0, at most wait in all (then
// ErrTenantShare or ErrPool); ctx's error when it ends first. The release
// gives both back (once). The pool keeps a tenant's entry only while a
// take holds or waits on it, so tenants that come and go leave nothing.
func (p *Pool) Take(ctx context.Context, tenant string, wait time.Duration) (release func(), err error) {
	sh, slow := p.enter(tenant)
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
		p.leave(tenant, sh)
		return nil, err
	}
	if slow {
		select {
		case p.slow <- struct{}{}:
			giveBack = func() { <-p.slow }
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-expired:
			return fail(ErrSlowShare)
		}
	}
	select {
	case own <- struct{}{}:
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-expired:
		return fail(ErrTenantShare)
	}
	slowBack := giveBack
	giveBack = func() { <-own; slowBack() }
	select {
	case p.all <- struct{}{}:
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-expired:
		return fail(ErrPool)
	}
	var once sync.Once
	return func() { once.Do(func() { <-p.all; giveBack(); p.leave(tenant, sh) }) }, nil
}

// enter finds or makes the tenant's share and counts one more take on
// it; slow reports that the tenant is marked slow now.
func (p *Pool) enter(tenant string) (sh *share, slow bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if until, ok := p.slowTo[tenant]; ok {
		if slow = until.After(time.Now()); !slow {
			delete(p.slowTo, tenant)
		}
	}
	sh, ok := p.tenants[tenant]
	if !ok {
		sh = &share{slots: make(chan struct{}, p.PerTenant())}
		p.tenants[tenant] = sh
	}
	sh.takes++
	return sh, slow
}

// leave counts one take fewer on the tenant's share and drops the share
// when none is left.
func (p *Pool) leave(tenant string, sh *share) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if sh.takes--; sh.takes == 0 {
		delete(p.tenants, tenant)
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
	case errors.Is(err, ErrSlowShare):
		return fmt.Sprintf("%s: this tenant's ran long lately, and the tenants whose work runs long take every slot they share (%d of %d)", what, p.SlowShare(), p.Size()), true
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
