package tenantpolicy

import (
	"context"
	"sync"
)

// tenantLocks holds one lock per tenant, waited for within a context:
// a tenant's uploads, rollbacks and removal run one at a time without
// holding up any other tenant's. A tenant's entry lives while its lock is
// held or waited for.
type tenantLocks struct {
	mu sync.Mutex
	m  map[string]*tenantLock
}

type tenantLock struct {
	ch   chan struct{} // holds a token while the lock is held
	refs int           // holders and waiters
}

// lock takes tenant's lock, waiting while ctx lasts (else ctx's error).
// The release is safe to call more than once.
func (l *tenantLocks) lock(ctx context.Context, tenant string) (release func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*tenantLock{}
	}
	tl := l.m[tenant]
	if tl == nil {
		tl = &tenantLock{ch: make(chan struct{}, 1)}
		l.m[tenant] = tl
	}
	tl.refs++
	l.mu.Unlock()
	drop := func() {
		l.mu.Lock()
		if tl.refs--; tl.refs == 0 {
			delete(l.m, tenant)
		}
		l.mu.Unlock()
	}
	select {
	case tl.ch <- struct{}{}:
	case <-ctx.Done():
		drop()
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-tl.ch
			drop()
		})
	}, nil
}
