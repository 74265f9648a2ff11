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

// Pool is a number of slots with a share per tenant, handed out fairly.
// The zero value is not usable: use New or NewFair.
//
// A tenant holds at most half the slots (at least 1). A slot that frees
// goes to the waiting tenant holding the fewest; among those holding as
// few, to the one whose takes held the slots least lately (its use:
// the seconds its takes held them, decaying with the window — a use W
// ago counts e⁻¹ of its length — the takes still holding one counted as
// they run); then to the one served longest ago (the pool remembers
// that past a tenant's last take, so coming back gains nothing); then to
// the one whose take came first. A tenant's own takes are served in the
// order they came. So a tenant holding none whose calls are quick is
// served at the next hand-over however many tenants with slow calls keep
// takes waiting, as long as it used the slots less lately than they did
// (tenants that rested meanwhile come first; one asking so often that
// its use grows past theirs waits its turn); a tenant holding none waits
// for at most one hand-over per waiting tenant that used the slots less
// lately than it; a tenant already holding a slot waits while tenants
// holding none keep coming (it is making progress).
//
// New's pools also hold busy tenants back: a tenant whose use passes an
// eighth of the pool's capacity over the window (Size × W / 8
// slot-seconds: with 2 slots and 2 s, half a second) is busy, and its
// takes also need one of the slots the busy tenants share, half the pool
// (at least 1). So tenants that keep the slots busy, with long calls or
// many short ones, hold at most half between them and the others find
// the rest free. That half stays idle when only busy tenants wait: for
// work that must not idle, NewFair keeps no share back (its order is the
// same).
type Pool struct {
	size, perTenant int
	busyShare       int           // slots the busy tenants share; size when nothing is kept back
	window          time.Duration // the span over which use is weighed (NewFair: for the order only)
	keepBack        bool          // busy tenants are held to busyShare (New)

	mu        sync.Mutex
	inUse     int               // slots held, all tenants'
	busyInUse int               // slots held by takes that were busy
	seq       uint64            // orders the waiters by arrival
	grants    uint64            // counts the slots handed over
	tenants   map[string]*share // made on a tenant's take, dropped when no take holds or waits on it
	waiting   map[*share]struct{}
	use       map[string]*usage // tenants' recent use, dropped once it has decayed away
	// forgetAt is the size of use at which hold next forgets decayed use.
	forgetAt int
	// served is grants when each tenant was last handed a slot, kept
	// past its share so that a tenant coming back takes its place in the
	// rotation; forgotten at least servedHorizon grants on (when the map
	// has doubled since it was last swept, at servedForgetAt), when it
	// counts as never served.
	served         map[string]uint64
	servedForgetAt int
}

// servedHorizon is how many hand-overs on, at least, a pool forgets when
// a tenant holding and waiting for nothing was last served.
const servedHorizon = 1 << 16

// share is one tenant's slots held and its takes waiting, first come
// first served.
type share struct {
	name      string
	use       *usage // the tenant's entry of Pool.use as of its last grant or its coming (nil: none)
	held      int
	lastGrant uint64 // the pool's grants when it was last handed a slot (served: 0 when never)
	waiters   []*waiter
}

// waiter is one take waiting for a slot; granted is closed when it has
// one, from start.
type waiter struct {
	seq     uint64
	busy    bool // the tenant was busy when the take came
	granted chan struct{}
	start   *time.Time // set with granted
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
	p := NewFair(n)
	p.busyShare, p.window, p.keepBack = max(p.size/2, 1), max(window, time.Millisecond), true
	return p
}

// NewFair is a pool of n slots (at least 1), a tenant holding at most
// n/2 (at least 1), handed out fairly, that keeps no slots back from
// busy tenants: a slot idles only when no tenant that may take it waits.
func NewFair(n int) *Pool {
	n = max(n, 1)
	return &Pool{size: n, perTenant: max(n/2, 1), busyShare: n, window: DefaultWindow, tenants: map[string]*share{},
		waiting: map[*share]struct{}{}, use: map[string]*usage{}, forgetAt: 64,
		served: map[string]uint64{}, servedForgetAt: 64}
}

// Size is the pool's slots.
func (p *Pool) Size() int { return p.size }

// PerTenant is the most slots one tenant holds at once.
func (p *Pool) PerTenant() int { return p.perTenant }

// BusyShare is how many slots the busy tenants share (Size for NewFair's
// pools).
func (p *Pool) BusyShare() int { return p.busyShare }

// busyAt is the slot-seconds of use over the window past which a tenant
// is busy: an eighth of the pool's capacity.
func (p *Pool) busyAt() float64 { return p.window.Seconds() * float64(p.size) / 8 }

// ErrTenantShare, ErrPool and ErrBusyShare say which wait ran out in Take:
// for one of the tenant's share, for one of the pool's, or (the tenant
// being busy) for one of the busy tenants' share.
var (
	ErrTenantShare = errors.New("shares: every slot of the tenant's share is taken")
	ErrPool        = errors.New("shares: every slot of the pool is taken")
	ErrBusyShare   = errors.New("shares: every slot the busy tenants share is taken")
)

// Take waits for a slot for tenant while ctx lasts and, when wait > 0,
// at most wait (then ErrTenantShare, ErrBusyShare or ErrPool, naming
// what was full when it ran out); ctx's error when ctx ends first. The
// release gives the slot back (once) and counts the time it was held as
// the tenant's use. The pool keeps a tenant's entry only while a take
// holds or waits on it, and its use until it decays away, so tenants
// that come and go leave nothing.
func (p *Pool) Take(ctx context.Context, tenant string, wait time.Duration) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err // not a coin's toss against a free slot
	}
	sh, w := p.enqueue(tenant)
	var expired <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-w.granted:
	case <-ctx.Done():
		if p.abandon(sh, w, nil) {
			return nil, ctx.Err()
		}
		p.release(sh, w) // granted meanwhile: give it back
		return nil, ctx.Err()
	case <-expired:
		var full error
		if p.abandon(sh, w, &full) {
			return nil, full
		}
		// granted meanwhile: keep it
	}
	var once sync.Once
	return func() { once.Do(func() { p.release(sh, w) }) }, nil
}

// TryTake takes a slot for tenant only if the pool hands it one at once
// (a slot is free and this tenant comes first for it); otherwise ok is
// false and nothing is held or waiting. The release is Take's.
func (p *Pool) TryTake(tenant string) (release func(), ok bool) {
	sh, w := p.enqueue(tenant)
	select {
	case <-w.granted:
	default:
		if p.abandon(sh, w, nil) {
			return nil, false
		}
	}
	var once sync.Once
	return func() { once.Do(func() { p.release(sh, w) }) }, true
}

// enqueue makes a take of tenant wait for a slot, and hands out what is
// free: w.granted is closed once it has one.
func (p *Pool) enqueue(tenant string) (*share, *waiter) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	sh := p.tenants[tenant]
	if sh == nil {
		// In its place in the rotation: a tenant whose entry went (it held
		// and waited for nothing) and comes back is not served before
		// those waiting on, and one served long ago (or never) is.
		sh = &share{name: tenant, use: p.use[tenant], lastGrant: p.served[tenant]}
		p.tenants[tenant] = sh
	}
	p.seq++
	w := &waiter{seq: p.seq, granted: make(chan struct{})}
	if u := p.use[tenant]; u != nil && p.keepBack {
		w.busy = u.now(now, p.window) >= p.busyAt()
	}
	sh.waiters = append(sh.waiters, w)
	p.waiting[sh] = struct{}{}
	p.dispatchLocked()
	return sh, w
}

// abandon takes w out of sh's waiters, reporting true, unless it has
// been granted a slot meanwhile; full, when not nil, is set to what was
// full.
func (p *Pool) abandon(sh *share, w *waiter, full *error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-w.granted:
		return false
	default:
	}
	if full != nil {
		switch {
		case sh.held >= p.perTenant:
			*full = ErrTenantShare
		case w.busy && p.busyInUse >= p.busyShare:
			*full = ErrBusyShare
		default:
			*full = ErrPool
		}
	}
	for i, o := range sh.waiters {
		if o == w {
			sh.waiters = append(sh.waiters[:i], sh.waiters[i+1:]...)
			break
		}
	}
	if len(sh.waiters) == 0 {
		delete(p.waiting, sh)
	}
	p.forgetLocked(sh)
	// A waiter ahead of others of its tenant may have kept them back
	// (waiting for the busy share): they may go now.
	p.dispatchLocked()
	return true
}

// release gives w's slot back, counting the time it held as its
// tenant's use, and hands the free slot on.
func (p *Pool) release(sh *share, w *waiter) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	sh.held--
	p.inUse--
	if w.busy {
		p.busyInUse--
	}
	if w.start != nil {
		u := p.use[sh.name]
		delete(u.holding, w.start)
		u.seconds, u.at = u.decayed(now, p.window)+now.Sub(*w.start).Seconds(), now
	}
	p.forgetLocked(sh)
	p.dispatchLocked()
}

// dispatchLocked hands the free slots to the waiting takes, fairly.
func (p *Pool) dispatchLocked() {
	now := time.Now()
	for p.inUse < p.size && len(p.waiting) > 0 {
		var next *share
		var nextUse float64
		for sh := range p.waiting {
			if sh.held >= p.perTenant || (sh.waiters[0].busy && p.busyInUse >= p.busyShare) {
				continue
			}
			if next != nil && sh.held > next.held {
				continue // cannot come first: its use need not be weighed
			}
			// The slot time each used lately, not the hand-overs: a tenant
			// whose calls are quick is served before those whose calls are
			// slow.
			var use float64
			if sh.use != nil {
				use = sh.use.now(now, p.window)
			}
			if next == nil || fairer(sh, next, use, nextUse) {
				next, nextUse = sh, use
			}
		}
		if next == nil {
			return
		}
		w := next.waiters[0]
		if next.waiters = next.waiters[1:]; len(next.waiters) == 0 {
			delete(p.waiting, next)
		}
		next.held++
		p.inUse++
		if w.busy {
			p.busyInUse++
		}
		p.grants++
		next.lastGrant = p.grants
		p.rememberLocked(next.name)
		w.start = p.holdLocked(next)
		close(w.granted)
	}
}

// fairer reports whether a (whose use is aUse) is to be served before b
// (bUse): it holds fewer slots, or as many and used them less lately, or
// as much and was served longer ago, or as long ago and its first take
// came first.
func fairer(a, b *share, aUse, bUse float64) bool {
	switch {
	case a.held != b.held:
		return a.held < b.held
	case aUse != bUse:
		return aUse < bUse
	case a.lastGrant != b.lastGrant:
		return a.lastGrant < b.lastGrant
	}
	return a.waiters[0].seq < b.waiters[0].seq
}

// holdLocked records that one of sh's tenant's takes holds a slot from
// now on: its use counts it as it runs.
func (p *Pool) holdLocked(sh *share) *time.Time {
	tenant := sh.name
	start := time.Now()
	u := p.use[tenant]
	if u == nil {
		if len(p.use) >= p.forgetAt {
			p.forgetUseLocked(start)
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
	sh.use = u
	return &start
}

// rememberLocked records that tenant was served now, forgetting, once
// the record has doubled, the tenants served servedHorizon hand-overs
// ago or more.
func (p *Pool) rememberLocked(tenant string) {
	if _, ok := p.served[tenant]; !ok && len(p.served) >= p.servedForgetAt {
		for t, at := range p.served {
			if at+servedHorizon < p.grants && p.tenants[t] == nil {
				delete(p.served, t)
			}
		}
		p.servedForgetAt = max(64, 2*len(p.served))
	}
	p.served[tenant] = p.grants
}

// forgetLocked drops sh once it holds and waits for nothing.
func (p *Pool) forgetLocked(sh *share) {
	if sh.held == 0 && len(sh.waiters) == 0 && p.tenants[sh.name] == sh {
		delete(p.tenants, sh.name)
	}
}

// forgetUseLocked drops the use that has decayed below a millisecond, of
// tenants holding no slot.
func (p *Pool) forgetUseLocked(now time.Time) {
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
		byTenant = sh.held
	}
	return p.inUse, byTenant
}

// Waiting is the takes waiting for a slot now, all tenants'.
func (p *Pool) Waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for sh := range p.waiting {
		n += len(sh.waiters)
	}
	return n
}

// Tenants is how many tenants' shares the pool keeps now: those with a
// take that holds or waits on a slot.
func (p *Pool) Tenants() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.tenants)
}

// Busy reports whether tenant's recent use makes it busy now (never in
// NewFair's pools).
func (p *Pool) Busy(tenant string) bool {
	if !p.keepBack {
		return false
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.use[tenant]
	return u != nil && u.now(now, p.window) >= p.busyAt()
}
