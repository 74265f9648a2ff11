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

	mu      sync.Mutex
	tenants map[string]chan struct{} // each tenant's share, made on first use
}

// New is a pool of n slots (at least 1); a tenant holds at most n/2 of
// them (at least 1).
func New(n int) *Pool {
	return &Pool{all: make(chan struct{}, max(n, 1)), tenants: map[string]chan struct{}{}}
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
)

// Take takes one of the tenant's share, then one of the pool's, waiting
// for them while ctx lasts and, when wait > 0, at most wait in all (then
// ErrTenantShare or ErrPool); ctx's error when it ends first. The release
// gives both back (once).
func (p *Pool) Take(ctx context.Context, tenant string, wait time.Duration) (release func(), err error) {
	p.mu.Lock()
	own, ok := p.tenants[tenant]
	if !ok {
		own = make(chan struct{}, p.PerTenant())
		p.tenants[tenant] = own
	}
	p.mu.Unlock()
	var expired <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		expired = t.C
	}
	select {
	case own <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-expired:
		return nil, ErrTenantShare
	}
	select {
	case p.all <- struct{}{}:
	case <-ctx.Done():
		<-own
		return nil, ctx.Err()
	case <-expired:
		<-own
		return nil, ErrPool
	}
	var once sync.Once
	return func() { once.Do(func() { <-p.all; <-own }) }, nil
}

// Refusal is what Take's err says of the pool, for a refusal of what
// (the work the pool bounds): whose slots ran out, and the bounds; false
// when err is not a wait that ran out (nil, or ctx's error).
func (p *Pool) Refusal(err error, what string) (string, bool) {
	whose := "this tenant's"
	switch {
	case errors.Is(err, ErrPool):
		whose = "the server's"
	case !errors.Is(err, ErrTenantShare):
		return "", false
	}
	return fmt.Sprintf("%s: %s take every slot they may (%d per tenant, %d in all)", what, whose, p.PerTenant(), p.Size()), true
}

// InUse is the slots taken now, in all and by tenant.
func (p *Pool) InUse(tenant string) (all, byTenant int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.all), len(p.tenants[tenant])
}
