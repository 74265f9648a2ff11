package quota

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/batpak-go/batpak/server/control"
)

// Exceeded says which quota refused a request.
type Exceeded struct {
	// Quota names the limit: "requests_per_second" (AllowRequest),
	// "events_per_second", "bytes_per_second",
	// "events_burst", "bytes_burst" (one request larger than the bucket),
	// "storage_bytes", "max_payload_bytes", "max_batch_events",
	// "max_subscriptions", "max_cursors", "max_workers" (hosted workers,
	// refused by server/hostedworker), "upload_bytes_per_hour" (policy
	// bundles and plugin uploads; Limit in bytes per hour),
	// "control_changes_per_second" and "control_changes_per_day" (a
	// tenant's own control-plane changes, AllowControlChange).
	Quota      string
	Limit      float64       // the quota's value
	RetryAfter time.Duration // 0 when retrying will not help
}

func (e *Exceeded) Error() string { return "quota exceeded: " + e.Quota }

// Manager holds every tenant's limiters. Safe for concurrent use.
type Manager struct {
	now     func() time.Time
	mu      sync.RWMutex
	tenants map[string]*Tenant
}

// New makes a Manager on the wall clock.
func New() *Manager { return NewWithClock(time.Now) }

// NewWithClock makes a Manager whose token buckets refill by now (tests
// and simulations drive time themselves).
func NewWithClock(now func() time.Time) *Manager {
	return &Manager{now: now, tenants: map[string]*Tenant{}}
}

// Tenant returns tenant id's limiter, updating it to q (effective quotas,
// control.Plane.Effective) when they changed: rates and bursts change in
// place (tokens already taken stay taken), the subscription count carries
// over. Cheap when nothing changed (one map lookup, one comparison).
func (m *Manager) Tenant(id string, q control.Quotas) *Tenant {
	m.mu.RLock()
	t := m.tenants[id]
	m.mu.RUnlock()
	if t == nil {
		m.mu.Lock()
		if t = m.tenants[id]; t == nil {
			t = newTenant(m.now, q)
			m.tenants[id] = t
		}
		m.mu.Unlock()
	}
	t.update(q)
	return t
}

// Restore charges tenant id's budgets that outlast a process — the
// daily control-plane changes of each class and the hourly upload bytes —
// with what the control plane recorded it spent (control.Plane.Spending,
// oldest first), replacing what this Manager charged them so far: as if
// every recorded spend had been charged here when it was made. A server
// calls it for every tenant when it starts, and a cluster node when it
// begins to lead, so that neither a restart nor a new leader hands a
// tenant a fresh day's budget. Requests refused, or that failed after
// their charge, are not on record and are not charged again.
func (m *Manager) Restore(id string, q control.Quotas, spent []control.Spend) {
	t := m.Tenant(id, q)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for i := range t.changes {
		d := &t.changes[i].daily
		d.lim = nil
		d.set(now, float64(t.q.ControlChangesPerDay)/86400, max(t.q.ControlChangesPerDay, 0))
	}
	t.uploads.lim = nil
	t.setUploads(now, t.q.UploadBytesPerHour)
	for _, sp := range spent {
		at := sp.At
		if at.After(now) {
			at = now
		}
		d := &t.changes[Member].daily
		if sp.Admin {
			d = &t.changes[Admin].daily
		}
		if !d.unlimited {
			takeUpTo(d.lim, at, 1)
		}
		if sp.Bytes > 0 && !t.uploads.unlimited {
			takeUpTo(t.uploads.lim, at, sp.Bytes)
		}
	}
}

// takeUpTo takes n tokens from lim at at, or all it holds when fewer (a
// quota lowered since the spend: the bucket ends empty, not untouched).
func takeUpTo(lim *rate.Limiter, at time.Time, n int64) {
	have := int64(math.Floor(lim.TokensAt(at)))
	if k := min(n, have); k > 0 {
		lim.AllowN(at, int(k))
	}
}

// Forget drops a tenant's limiter (deleted tenant). A later Tenant call
// starts it afresh, with full buckets.
func (m *Manager) Forget(id string) {
	m.mu.Lock()
	delete(m.tenants, id)
	m.mu.Unlock()
}

// chargedKey marks a request context already charged to its tenant's
// request rate.
type chargedKey struct{}

// WithRequestCharged marks ctx's request as charged to its tenant's
// request rate already: the web console charges the requests it passes
// to the API in-process, and the API does not charge them again. Only
// code in the server's process can set it; nothing a client sends does.
func WithRequestCharged(ctx context.Context) context.Context {
	return context.WithValue(ctx, chargedKey{}, true)
}

// RequestCharged reports whether ctx's request was charged already
// (WithRequestCharged).
func RequestCharged(ctx context.Context) bool {
	v, _ := ctx.Value(chargedKey{}).(bool)
	return v
}

// Tenant is one tenant's limiters. Safe for concurrent use.
type Tenant struct {
	now func() time.Time

	mu       sync.Mutex
	q        control.Quotas
	events   bucket
	bytes    bucket
	requests bucket
	uploads  bucket // bytes per second; burst: an hour's worth
	// changes are the control-plane changes the tenant's credentials
	// make, in two classes with buckets of their own: [Admin] its admin
	// credentials', [Member] its other credentials' (a writer's cursor
	// definitions), so that a leaked writer key cannot spend what the
	// tenant's admins need, to revoke it among others.
	changes [2]changeBuckets
	subs    int
}

// changeBuckets are one class of control-plane changes: the pace and the
// day's budget (control_changes_per_day).
type changeBuckets struct{ pace, daily bucket }

// ChangeClass is whose control-plane change AllowControlChange charges:
// a tenant's admin credentials have buckets of their own.
type ChangeClass int

// The classes of control-plane changes.
const (
	Admin  ChangeClass = iota // a credential of the tenant with the admin role
	Member                    // any other credential of the tenant
)

// The bucket of a tenant's own control-plane changes (see
// AllowControlChange): ControlChangesPerSecond, holding
// ControlChangesBurst.
const (
	ControlChangesPerSecond = 10
	ControlChangesBurst     = 100
)

// bucket is one token bucket; unlimited when its rate is zero or negative.
type bucket struct {
	name, burstName string
	unlimited       bool
	rate            float64
	burst           int
	lim             *rate.Limiter
}

func newTenant(now func() time.Time, q control.Quotas) *Tenant {
	t := &Tenant{now: now, q: q}
	t.events = bucket{name: "events_per_second", burstName: "events_burst"}
	t.bytes = bucket{name: "bytes_per_second", burstName: "bytes_burst"}
	t.events.set(now(), q.EventsPerSecond, q.EventsBurst)
	t.bytes.set(now(), q.BytesPerSecond, q.BytesBurst)
	t.requests = bucket{name: "requests_per_second", burstName: "requests_burst"}
	t.requests.set(now(), q.RequestsPerSecond, q.RequestsBurst)
	t.uploads = bucket{name: "upload_bytes_per_hour", burstName: "upload_bytes_per_hour"}
	t.setUploads(now(), q.UploadBytesPerHour)
	for i := range t.changes {
		c := &t.changes[i]
		c.pace = bucket{name: "control_changes_per_second", burstName: "control_changes_per_second"}
		c.pace.set(now(), ControlChangesPerSecond, ControlChangesBurst)
		c.daily = bucket{name: "control_changes_per_day", burstName: "control_changes_per_day"}
	}
	t.setDaily(now(), q.ControlChangesPerDay)
	return t
}

// setDaily sets the bucket of control-plane changes from its daily quota.
// What the tenant used of the old budget stays used: raised from 3 to
// 1,000 with 3 spent, 997 are left; lowered below what is spent, none.
func (t *Tenant) setDaily(now time.Time, perDay int) {
	for i := range t.changes {
		d := &t.changes[i].daily
		used := 0
		if !d.unlimited && d.lim != nil {
			used = int(math.Ceil(float64(d.burst) - d.lim.TokensAt(now)))
		}
		d.set(now, float64(perDay)/86400, max(perDay, 0))
		if !d.unlimited {
			d.lim = rate.NewLimiter(rate.Limit(d.rate), d.burst)
			d.lim.AllowN(now, min(max(used, 0), d.burst))
		}
	}
}

// AllowControlChange takes a token for one change a tenant credential
// makes to the control plane all tenants share (a key issued, a cursor
// defined or deleted, a policy, plugin or worker change; server/httpapi
// does not charge a key's revocation, see its doc) from the two buckets
// of its class, or takes none and refuses it: "control_changes_per_day"
// (the tenant's quota) when the class's budget for the day is spent, else
// "control_changes_per_second" (the same pace for every tenant), with
// RetryAfter until the bucket holds one. Each change is a lasting record
// of the shared control plane, so a tenant's churn must not grow it at
// the speed of its requests, nor without bound over days. The classes
// (Admin, Member) have buckets of their own: what a tenant's members
// spend, its admins still have.
func (t *Tenant) AllowControlChange(class ChangeClass) *Exceeded {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := &t.changes[min(max(class, Admin), Member)]
	now := t.now()
	if w, ok := c.daily.wait(now, 1); !ok || w > 0 {
		return &Exceeded{Quota: c.daily.name, Limit: float64(t.q.ControlChangesPerDay), RetryAfter: w}
	}
	if w, _ := c.pace.wait(now, 1); w > 0 {
		return &Exceeded{Quota: c.pace.name, Limit: ControlChangesPerSecond, RetryAfter: w}
	}
	c.pace.lim.AllowN(now, 1)
	if !c.daily.unlimited {
		c.daily.lim.AllowN(now, 1)
	}
	return nil
}

// AllowRequest takes one token from the tenant's request bucket
// (requests_per_second, holding requests_burst), or takes none and
// refuses the request as "requests_per_second" with RetryAfter until the
// bucket holds one. The HTTP layer asks it for every request of a
// tenant's credentials, once they are authenticated and before anything
// else is done for the request, so that a flood of small requests costs
// the other tenants one check each. A zero or negative rate is no limit.
func (t *Tenant) AllowRequest() *Exceeded {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.requests.unlimited {
		return nil
	}
	now := t.now()
	if w, _ := t.requests.wait(now, 1); w > 0 {
		return &Exceeded{Quota: t.requests.name, Limit: t.requests.rate, RetryAfter: w}
	}
	t.requests.lim.AllowN(now, 1)
	return nil
}

// ReserveRequests charges n tokens to the tenant's request bucket for
// work a request does past what one request is allowed (a long read
// walking more of the tenant's index than one page may, see
// httpapi.PageExamine): it takes them, into debt if need be, and returns
// how long until the bucket has paid the debt back at its rate (0: none),
// for the caller to wait out, as PaceWrite does for writes — in pieces if
// it must (an event stream, between its heartbeats). Meanwhile
// AllowRequest refuses the tenant's other requests, so that its requests
// and the extra work of its long reads keep to one rate. A zero or
// negative rate is no limit.
func (t *Tenant) ReserveRequests(n int) time.Duration {
	var wait time.Duration
	for n > 0 {
		t.mu.Lock()
		took, w := t.requests.reserve(t.now(), n)
		t.mu.Unlock()
		n -= took
		wait = max(wait, w)
	}
	return wait
}

// setUploads sets the upload bucket from its hourly quota.
func (t *Tenant) setUploads(now time.Time, perHour int64) {
	burst := int(min(perHour, math.MaxInt32))
	t.uploads.set(now, float64(perHour)/3600, burst)
}

// burstFor is the bucket size: the quota's, or one second's worth of the
// rate (at least 1) when the burst is zero.
func burstFor(r float64, b int) int {
	if b > 0 {
		return b
	}
	if r >= math.MaxInt32 {
		return math.MaxInt32
	}
	return max(1, int(math.Ceil(r)))
}

func (b *bucket) set(now time.Time, r float64, burst int) {
	if r <= 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		b.unlimited, b.rate, b.burst, b.lim = true, r, burst, nil
		return
	}
	burst = burstFor(r, burst)
	if b.lim == nil {
		b.lim = rate.NewLimiter(rate.Limit(r), burst) // full bucket
	} else {
		b.lim.SetLimitAt(now, rate.Limit(r))
		b.lim.SetBurstAt(now, burst)
	}
	b.unlimited, b.rate, b.burst = false, r, burst
}

// maxWait bounds a computed wait (a rate near zero): about a century.
const maxWait = 100 * 365 * 24 * time.Hour

// wait is how long until n tokens are there (0: now; at most maxWait); ok
// false when n is more than the bucket holds.
func (b *bucket) wait(now time.Time, n int) (time.Duration, bool) {
	if b.unlimited || n <= 0 {
		return 0, true
	}
	if n > b.burst {
		return 0, false
	}
	have := b.lim.TokensAt(now)
	if have >= float64(n) {
		return 0, true
	}
	// Whole microseconds, rounded up, forgiving float error below a
	// nanosecond (1 token at 10/s is 100ms, not 100.000001ms).
	us := math.Ceil((float64(n)-have)/b.rate*1e6 - 1e-3)
	// A tiny rate gives a wait past what a Duration holds: clamped, in
	// floating point, so it never wraps to "no wait".
	us = min(us, float64(maxWait/time.Microsecond))
	return time.Duration(max(us, 1)) * time.Microsecond, true
}

func (t *Tenant) update(q control.Quotas) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if q == t.q {
		return
	}
	now := t.now()
	if q.EventsPerSecond != t.q.EventsPerSecond || q.EventsBurst != t.q.EventsBurst {
		t.events.set(now, q.EventsPerSecond, q.EventsBurst)
	}
	if q.BytesPerSecond != t.q.BytesPerSecond || q.BytesBurst != t.q.BytesBurst {
		t.bytes.set(now, q.BytesPerSecond, q.BytesBurst)
	}
	if q.RequestsPerSecond != t.q.RequestsPerSecond || q.RequestsBurst != t.q.RequestsBurst {
		t.requests.set(now, q.RequestsPerSecond, q.RequestsBurst)
	}
	if q.UploadBytesPerHour != t.q.UploadBytesPerHour {
		t.setUploads(now, q.UploadBytesPerHour)
	}
	if q.ControlChangesPerDay != t.q.ControlChangesPerDay {
		t.setDaily(now, q.ControlChangesPerDay)
	}
	t.q = q
}

// Quotas returns the effective quotas the limiter applies.
func (t *Tenant) Quotas() control.Quotas {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.q
}

// AllowWrite takes events tokens from the events bucket and bytes tokens
// from the bytes bucket, both or neither. When either is short it takes
// nothing and names the bucket that needs longer to refill, with
// RetryAfter the time until both hold enough (for this request alone;
// other writes may take the tokens first). A request larger than a bucket
// can ever hold (events > the events burst, bytes > the bytes burst) is
// refused as "events_burst" or "bytes_burst" with RetryAfter 0: retrying
// it will not help, it must be split. A zero or negative rate is no limit.
func (t *Tenant) AllowWrite(events, bytes int) *Exceeded {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	we, ok := t.events.wait(now, events)
	if !ok {
		return &Exceeded{Quota: t.events.burstName, Limit: float64(t.events.burst)}
	}
	wb, ok := t.bytes.wait(now, bytes)
	if !ok {
		return &Exceeded{Quota: t.bytes.burstName, Limit: float64(t.bytes.burst)}
	}
	switch {
	case we > 0 && we >= wb:
		return &Exceeded{Quota: t.events.name, Limit: t.events.rate, RetryAfter: we}
	case wb > 0:
		return &Exceeded{Quota: t.bytes.name, Limit: t.bytes.rate, RetryAfter: wb}
	}
	// Both buckets hold enough and nothing else takes from them while
	// t.mu is held, so both takes succeed.
	if !t.events.unlimited && events > 0 {
		t.events.lim.AllowN(now, events)
	}
	if !t.bytes.unlimited && bytes > 0 {
		t.bytes.lim.AllowN(now, bytes)
	}
	return nil
}

// AllowWriteCost charges a write that costs cost events of the event
// rate and no bytes (a cursor change), as AllowWrite does; a cost above
// the tenant's events_burst is charged as the whole burst, so the write
// stays possible at any burst.
func (t *Tenant) AllowWriteCost(cost int) *Exceeded {
	t.mu.Lock()
	burst, unlimited := t.events.burst, t.events.unlimited
	t.mu.Unlock()
	if !unlimited && burst > 0 {
		cost = min(cost, burst)
	}
	return t.AllowWrite(cost, 0)
}

// AllowUpload charges an upload of n bytes (a policy bundle, a plugin
// upload) to the tenant's upload_bytes_per_hour, or takes nothing and
// says how long until the bucket holds n (RetryAfter; 0 when n is more
// than an hour's worth: it never will). Limit is the hourly quota.
func (t *Tenant) AllowUpload(n int) *Exceeded {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	w, ok := t.uploads.wait(now, n)
	switch {
	case !ok:
		return &Exceeded{Quota: t.uploads.name, Limit: float64(t.q.UploadBytesPerHour)}
	case w > 0:
		return &Exceeded{Quota: t.uploads.name, Limit: float64(t.q.UploadBytesPerHour), RetryAfter: w}
	}
	if !t.uploads.unlimited && n > 0 {
		t.uploads.lim.AllowN(now, n)
	}
	return nil
}

// ChargeUpload takes n bytes from the tenant's upload_bytes_per_hour
// whatever it holds (at most the hour's worth): the bucket may owe them,
// and later uploads wait until it has paid. It charges what an upload
// cost besides its bytes (the compile time of its module).
func (t *Tenant) ChargeUpload(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.uploads.unlimited || n <= 0 {
		return
	}
	t.uploads.lim.ReserveN(t.now(), min(n, t.uploads.burst))
}

// Exhausted reports, taking nothing, that the events bucket cannot pay
// for events now (events_per_second, with RetryAfter), so that a write
// over the rate is refused before its body is read. nil when it can, or
// when events is more than the bucket holds (AllowWrite refuses that).
func (t *Tenant) Exhausted(events int) *Exceeded {
	t.mu.Lock()
	defer t.mu.Unlock()
	if w, ok := t.events.wait(t.now(), events); ok && w > 0 {
		return &Exceeded{Quota: t.events.name, Limit: t.events.rate, RetryAfter: w}
	}
	return nil
}

// PaceWrite charges events and bytes to the rate buckets for a write that
// is paced rather than refused (an import, charged batch by batch): it
// takes the tokens a bucket's burst at a time, letting the bucket run
// into debt (at most one burst), and waits, within ctx, until each debt
// is paid back at the bucket's rate. Meanwhile AllowWrite refuses the tenant's
// other writes (their RetryAfter counts the debt), so that all of a
// tenant's writes together keep to its rates. It returns ctx's error
// when ctx ends first (the tokens stay taken). A zero or negative rate is
// no limit.
func (t *Tenant) PaceWrite(ctx context.Context, events, bytes int) error {
	for events > 0 || bytes > 0 {
		t.mu.Lock()
		now := t.now()
		ne, we := t.events.reserve(now, events)
		nb, wb := t.bytes.reserve(now, bytes)
		t.mu.Unlock()
		events, bytes = events-ne, bytes-nb
		if d := max(we, wb); d > 0 {
			tm := time.NewTimer(d)
			select {
			case <-ctx.Done():
				tm.Stop()
				return ctx.Err()
			case <-tm.C:
			}
		}
	}
	return ctx.Err()
}

// reserve takes up to one burst of the n tokens wanted, into debt if need
// be: how many it took and how long until they are paid back.
func (b *bucket) reserve(now time.Time, n int) (int, time.Duration) {
	if n <= 0 {
		return 0, 0
	}
	if b.unlimited {
		return n, 0
	}
	n = min(n, b.burst)
	return n, b.lim.ReserveN(now, n).DelayFrom(now)
}

// limitOf is an int quota as a limit: ok false when it is no limit (zero
// or negative).
func limitOf(v int) (int, bool) { return v, v > 0 }

// CheckStorage refuses when used+adding would pass the storage quota:
// exactly the quota is allowed. RetryAfter is 0. Zero or negative: no
// limit.
func (t *Tenant) CheckStorage(used int64, adding int) *Exceeded {
	t.mu.Lock()
	limit := t.q.StorageBytes
	t.mu.Unlock()
	if limit <= 0 || used+int64(adding) <= limit {
		return nil
	}
	return &Exceeded{Quota: "storage_bytes", Limit: float64(limit)}
}

// CheckIndex refuses when used+adding would pass the index_bytes quota
// (used is the store's core.Usage.IndexBytes; adding what the write's
// events and names may add): exactly the quota is allowed. RetryAfter is
// 0. Zero or negative: no limit.
func (t *Tenant) CheckIndex(used, adding int64) *Exceeded {
	t.mu.Lock()
	limit := t.q.IndexBytes
	t.mu.Unlock()
	if limit <= 0 || used+adding <= limit {
		return nil
	}
	return &Exceeded{Quota: "index_bytes", Limit: float64(limit)}
}

// IndexCost is what events carrying names bytes of entity, scope and
// idempotency-key names may add to a store's index: the core's estimate
// per event and per name, taking every name as new.
func IndexCost(events, names int) int64 {
	return int64(events)*indexEventBytes + int64(names) + int64(events)*indexNameBytes
}

// The per-event and per-name costs of core.Usage.IndexBytes (rounded up):
// an entry with its postings and id slot, and a correlation group of its
// own; an entity, scope or key besides its name.
const (
	indexEventBytes = 82 + 96 + 8
	indexNameBytes  = 3 * 96
)

// CheckPayload refuses one event's payload of n bytes over
// max_payload_bytes (exactly the limit is allowed). Zero or negative: no
// limit (core's own SingleAppendMaxBytes still applies).
func (t *Tenant) CheckPayload(n int) *Exceeded {
	t.mu.Lock()
	limit, ok := limitOf(t.q.MaxPayloadBytes)
	t.mu.Unlock()
	if !ok || n <= limit {
		return nil
	}
	return &Exceeded{Quota: "max_payload_bytes", Limit: float64(limit)}
}

// CheckBatch refuses a batch of n events over max_batch_events (exactly
// the limit is allowed). Zero or negative: no limit.
func (t *Tenant) CheckBatch(n int) *Exceeded {
	t.mu.Lock()
	limit, ok := limitOf(t.q.MaxBatchEvents)
	t.mu.Unlock()
	if !ok || n <= limit {
		return nil
	}
	return &Exceeded{Quota: "max_batch_events", Limit: float64(limit)}
}

// CheckCursors refuses defining one more named cursor when the tenant
// already has defined of them and that is max_cursors (so exactly
// max_cursors may exist). Zero or negative: no limit. MaxCursors gives the
// number for control.Plane.DefineCursorMax, which checks under its own
// lock.
func (t *Tenant) CheckCursors(defined int) *Exceeded {
	limit, ok := t.MaxCursors()
	if !ok || defined < limit {
		return nil
	}
	return &Exceeded{Quota: "max_cursors", Limit: float64(limit)}
}

// MaxCursors returns the cursor limit, ok false when there is none.
func (t *Tenant) MaxCursors() (int, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return limitOf(t.q.MaxCursors)
}

// AcquireSubscription counts one more stream, or refuses when
// max_subscriptions are open (exactly the limit may be open; zero or
// negative: no limit). release gives the slot back; calling it more than
// once releases once. Lowering the quota closes no stream: new ones are
// refused until the count is under it.
func (t *Tenant) AcquireSubscription() (release func(), ex *Exceeded) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if limit, ok := limitOf(t.q.MaxSubscriptions); ok && t.subs >= limit {
		return nil, &Exceeded{Quota: "max_subscriptions", Limit: float64(limit)}
	}
	t.subs++
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			t.subs--
			t.mu.Unlock()
		})
	}, nil
}

// Subscriptions is how many streams are open.
func (t *Tenant) Subscriptions() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.subs
}
