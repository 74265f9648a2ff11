package control

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// A hosted worker runs a tenant's handler plugin over a region of the
// tenant's store, from a named cursor. The control plane records what the
// operator or tenant asked for — the worker's configuration and whether
// it should run — so that a restarted server runs the same workers; what
// a worker is doing now (its position, faults, backoff) is the
// supervisor's (server/hostedworker).

// The recorded worker changes (category 6 of the system store; never
// renumber one).
var (
	kindWorkerStarted     = core.MustKind(6, 1)
	kindWorkerStopped     = core.MustKind(6, 2)
	kindWorkerQuarantined = core.MustKind(6, 3)
	kindWorkerReset       = core.MustKind(6, 4)
	kindWorkerDeleted     = core.MustKind(6, 5)
)

func init() {
	kindNames[kindWorkerStarted] = "worker.started"
	kindNames[kindWorkerStopped] = "worker.stopped"
	kindNames[kindWorkerQuarantined] = "worker.quarantined"
	kindNames[kindWorkerReset] = "worker.reset"
	kindNames[kindWorkerDeleted] = "worker.deleted"
}

// WorkerState is a hosted worker's desired state, as recorded.
type WorkerState string

// Desired states of a worker.
const (
	// WorkerRunning: the worker should run (after a server restart too).
	WorkerRunning WorkerState = "running"
	// WorkerStopped: stopped by request; it keeps its configuration and
	// its cursor's position, and starts again from there.
	WorkerStopped WorkerState = "stopped"
	// WorkerQuarantined: its plugin kept faulting past its restart policy;
	// it stays stopped (across restarts) until reset.
	WorkerQuarantined WorkerState = "quarantined"
)

// Defaults and ranges of WorkerRestart (see WorkerRestart.WithDefaults).
const (
	DefaultWorkerMaxRestarts = 5
	MaxWorkerMaxRestarts     = 1000
	DefaultWorkerWindowMs    = 10 * 60 * 1000 // 10 minutes
	MinWorkerWindowMs        = 1000           // 1 second
	MaxWorkerWindowMs        = 24 * 60 * 60 * 1000
	DefaultWorkerBackoffMin  = 200            // ms
	DefaultWorkerBackoffMax  = 30 * 1000      // ms
	MaxWorkerBackoffMs       = 60 * 60 * 1000 // 1 hour
)

// WorkerRestart is a worker's restart policy. When its plugin faults (a
// trap, a timeout, a malformed answer, a refused reaction), the worker
// restarts from its last committed position after a backoff that starts
// at BackoffMinMs and doubles with each fault up to BackoffMaxMs; once it
// has restarted MaxRestarts times within the last WindowMs, the next
// fault quarantines it. Zero (or nil) fields take the defaults.
type WorkerRestart struct {
	// MaxRestarts is how many restarts are allowed within the window:
	// default 5, range 0..1000 (0: the first fault quarantines).
	MaxRestarts *int `json:"max_restarts,omitempty"`
	// WindowMs is the window faults are counted in, in milliseconds:
	// default 600000 (10 minutes), range 1000..86400000 (24 hours).
	WindowMs int64 `json:"window_ms,omitempty"`
	// BackoffMinMs is the wait before the first restart, in milliseconds:
	// default 200, range 1..3600000 (1 hour).
	BackoffMinMs int64 `json:"backoff_min_ms,omitempty"`
	// BackoffMaxMs caps the doubled wait: default 30000 (30 seconds),
	// range BackoffMinMs..3600000. MaxRestarts × BackoffMaxMs must fit
	// in half of WindowMs, so that a worker failing every time is
	// quarantined.
	BackoffMaxMs int64 `json:"backoff_max_ms,omitempty"`
}

// WithDefaults fills r's zero fields with the defaults and checks the
// ranges; the error wraps ErrInvalid and names the field and its range.
func (r WorkerRestart) WithDefaults() (WorkerRestart, error) {
	if r.MaxRestarts == nil {
		n := DefaultWorkerMaxRestarts
		r.MaxRestarts = &n
	} else {
		n := *r.MaxRestarts
		r.MaxRestarts = &n
	}
	if r.WindowMs == 0 {
		r.WindowMs = DefaultWorkerWindowMs
	}
	if r.BackoffMinMs == 0 {
		r.BackoffMinMs = DefaultWorkerBackoffMin
	}
	if r.BackoffMaxMs == 0 {
		r.BackoffMaxMs = max(DefaultWorkerBackoffMax, r.BackoffMinMs)
	}
	switch {
	case *r.MaxRestarts < 0 || *r.MaxRestarts > MaxWorkerMaxRestarts:
		return r, fmt.Errorf("%w: restart.max_restarts %d: want 0..%d", ErrInvalid, *r.MaxRestarts, MaxWorkerMaxRestarts)
	case r.WindowMs < MinWorkerWindowMs || r.WindowMs > MaxWorkerWindowMs:
		return r, fmt.Errorf("%w: restart.window_ms %d: want %d..%d", ErrInvalid, r.WindowMs, MinWorkerWindowMs, MaxWorkerWindowMs)
	case r.BackoffMinMs < 1 || r.BackoffMinMs > MaxWorkerBackoffMs:
		return r, fmt.Errorf("%w: restart.backoff_min_ms %d: want 1..%d", ErrInvalid, r.BackoffMinMs, MaxWorkerBackoffMs)
	case r.BackoffMaxMs < r.BackoffMinMs || r.BackoffMaxMs > MaxWorkerBackoffMs:
		return r, fmt.Errorf("%w: restart.backoff_max_ms %d: want backoff_min_ms (%d)..%d", ErrInvalid, r.BackoffMaxMs, r.BackoffMinMs, MaxWorkerBackoffMs)
	case int64(*r.MaxRestarts)*r.BackoffMaxMs > r.WindowMs/2:
		// A worker failing every time restarts at most once per
		// backoff_max_ms (less often when each attempt runs a while), and
		// is quarantined at its max_restarts+1st fault within the window:
		// with more restarts than fit in half the window, it never would
		// be, and would fail, restart and log for ever.
		return r, fmt.Errorf("%w: restart.max_restarts %d with backoff_max_ms %d: a worker failing every time reaches quarantine only if max_restarts × backoff_max_ms = %d ms fits in half of window_ms (%d); lower max_restarts or backoff_max_ms, or widen window_ms",
			ErrInvalid, *r.MaxRestarts, r.BackoffMaxMs, int64(*r.MaxRestarts)*r.BackoffMaxMs, r.WindowMs)
	}
	return r, nil
}

// Window, BackoffMin and BackoffMax are the policy's durations (after
// WithDefaults).
func (r WorkerRestart) Window() time.Duration { return time.Duration(r.WindowMs) * time.Millisecond }

// BackoffMin is the wait before the first restart.
func (r WorkerRestart) BackoffMin() time.Duration {
	return time.Duration(r.BackoffMinMs) * time.Millisecond
}

// BackoffMax caps the wait between restarts.
func (r WorkerRestart) BackoffMax() time.Duration {
	return time.Duration(r.BackoffMaxMs) * time.Millisecond
}

// WorkerDef is a hosted worker as recorded: its configuration and desired
// state.
type WorkerDef struct {
	Tenant string `json:"tenant"`
	// Name identifies the worker within its tenant (core's named-cursor
	// rule: 1..128 of A-Z a-z 0-9 . _ -, starting with a letter or digit).
	Name string `json:"name"`
	// Plugin names the tenant's handler plugin the worker runs (the same
	// rule as Name).
	Plugin string `json:"plugin"`
	// Region selects the events the plugin sees (entity prefix, scope,
	// kind, category); the zero Region is every event.
	Region Region `json:"region"`
	// Cursor is the named cursor (in the tenant's store) the worker
	// resumes from; it defaults to Name. No two workers of a tenant, nor a
	// worker and a cursor defined through the API, share one.
	Cursor  string        `json:"cursor"`
	Restart WorkerRestart `json:"restart"`
	State   WorkerState   `json:"state"`
	// Reason says why a quarantined worker was quarantined (its last
	// fault).
	Reason string `json:"reason,omitempty"`
	// Changed and By say when and by whom the state last changed (the
	// supervisor quarantines as principal "hostedworker").
	Changed time.Time        `json:"changed"`
	By      policy.Principal `json:"by"`
	// Revision is the system-store sequence of the worker's last recorded
	// change: a run started from this definition quarantines or stops it
	// only while it is still this revision (QuarantineWorker,
	// StopWorkerRevision), never a newer start or stop.
	Revision uint64 `json:"revision"`
}

type workerRecord struct {
	Name    string         `json:"name"`
	Plugin  string         `json:"plugin,omitempty"`
	Region  *Region        `json:"region,omitempty"`
	Cursor  string         `json:"cursor,omitempty"`
	Restart *WorkerRestart `json:"restart,omitempty"`
}

// WorkerEntity is the system-store entity whose History records one
// worker's starts, stops, quarantines and resets.
func WorkerEntity(tenant, name string) string { return "worker:" + tenant + "/" + name }

// ValidWorker returns d with its defaults filled in (Cursor, Restart) or
// an error wrapping ErrInvalid that names the field at fault: what
// StartWorker checks before it records anything.
func ValidWorker(d WorkerDef) (WorkerDef, error) {
	if !cursorNameRE.MatchString(d.Name) {
		return d, fmt.Errorf("%w: worker name %s: want 1..128 of A-Z a-z 0-9 . _ -, starting with a letter or digit", ErrInvalid, shown(d.Name))
	}
	if !pluginNameRE.MatchString(d.Plugin) {
		return d, fmt.Errorf("%w: plugin %s: want a plugin's name, 1..64 of a-z 0-9 . _ -, starting with a letter or digit", ErrInvalid, shown(d.Plugin))
	}
	if d.Cursor == "" {
		d.Cursor = d.Name
	}
	if !cursorNameRE.MatchString(d.Cursor) {
		return d, fmt.Errorf("%w: cursor %s: want 1..128 of A-Z a-z 0-9 . _ -, starting with a letter or digit", ErrInvalid, shown(d.Cursor))
	}
	if err := d.Region.Validate(); err != nil {
		return d, err
	}
	r, err := d.Restart.WithDefaults()
	if err != nil {
		return d, err
	}
	d.Restart = r
	return d, nil
}

func sameWorkerConfig(a, b WorkerDef) bool {
	return a.Plugin == b.Plugin && a.Cursor == b.Cursor && regionEqual(a.Region, b.Region) &&
		*a.Restart.MaxRestarts == *b.Restart.MaxRestarts && a.Restart.WindowMs == b.Restart.WindowMs &&
		a.Restart.BackoffMinMs == b.Restart.BackoffMinMs && a.Restart.BackoffMaxMs == b.Restart.BackoffMaxMs
}

// StartWorker records that worker d.Name of tenant d.Tenant should run
// with d's configuration (Cursor defaults to Name; Restart's zero fields
// to the defaults) and returns the definition as recorded. Starting a
// running worker with the same configuration records nothing; with
// another configuration it records the new one (the supervisor restarts
// it). A stopped or quarantined worker starts again (its quarantine
// cleared). Errors: ErrInvalid naming the field; ErrNotFound for an
// unknown tenant; ErrExists when another worker of the tenant, or a
// cursor defined through the API, uses d.Cursor; ErrLimit when starting
// it would make more than max workers of the tenant not stopped (max < 0:
// no limit). The check and the record happen under the plane's write
// lock, so concurrent starts cannot pass the limit together.
func (p *Plane) StartWorker(ctx context.Context, d WorkerDef, max int) (WorkerDef, error) {
	return p.StartWorkerMax(ctx, d, max, -1)
}

// ErrDefinedLimit: StartWorkerMax refused a worker under a new name
// because the tenant has as many workers defined as it may. It wraps
// ErrLimit.
var ErrDefinedLimit = fmt.Errorf("%w: worker definitions", ErrLimit)

// StartWorkerMax is StartWorker also refusing, with ErrDefinedLimit, a
// worker under a new name when the tenant already has maxDefined workers
// defined in any state (maxDefined < 0: no limit); a defined worker's
// name can always be started again.
func (p *Plane) StartWorkerMax(ctx context.Context, d WorkerDef, max, maxDefined int) (WorkerDef, error) {
	d, err := ValidWorker(d)
	if err != nil {
		return WorkerDef{}, err
	}
	p.lockChange()
	defer p.wmu.Unlock()
	if _, ok := p.Tenant(d.Tenant); !ok {
		return WorkerDef{}, fmt.Errorf("%w: tenant %q", ErrNotFound, d.Tenant)
	}
	if _, ok := p.Cursor(d.Tenant, d.Cursor); ok {
		return WorkerDef{}, fmt.Errorf("%w: cursor %q is a cursor defined through the API; give the worker another cursor", ErrExists, d.Cursor)
	}
	p.mu.RLock()
	cur, exists := p.st.workers[d.Tenant][d.Name]
	defined := len(p.st.workers[d.Tenant])
	active := 0
	var clash string
	for _, w := range p.st.workers[d.Tenant] {
		if w.Name == d.Name {
			continue
		}
		if w.State != WorkerStopped {
			active++
		}
		if w.Cursor == d.Cursor {
			clash = w.Name
		}
	}
	p.mu.RUnlock()
	if clash != "" {
		return WorkerDef{}, fmt.Errorf("%w: cursor %q is worker %q's; give the worker another cursor", ErrExists, d.Cursor, clash)
	}
	if exists && cur.State == WorkerRunning && sameWorkerConfig(cur, d) {
		return cur.clone(), nil
	}
	if !exists && maxDefined >= 0 && defined >= maxDefined {
		return WorkerDef{}, fmt.Errorf("%w: the tenant has %d workers defined (at most %d; start a stopped one again instead)", ErrDefinedLimit, defined, maxDefined)
	}
	if max >= 0 && active >= max {
		return WorkerDef{}, fmt.Errorf("%w: the tenant has %d workers running or quarantined (max_workers %d)", ErrLimit, active, max)
	}
	reg, rs := d.Region, d.Restart
	rec := &workerRecord{Name: d.Name, Plugin: d.Plugin, Region: &reg, Cursor: d.Cursor, Restart: &rs}
	if _, err := p.record(ctx, kindWorkerStarted, WorkerEntity(d.Tenant, d.Name), body{Tenant: d.Tenant, Worker: rec}); err != nil {
		return WorkerDef{}, err
	}
	out, _ := p.Worker(d.Tenant, d.Name)
	return out, nil
}

// StopWorker records that the worker should not run; it keeps its
// definition and its cursor. Stopping a stopped worker records nothing;
// stopping a quarantined one clears the quarantine. ErrNotFound if the
// tenant has no such worker.
func (p *Plane) StopWorker(ctx context.Context, tenant, name string) (WorkerDef, error) {
	return p.changeWorker(ctx, tenant, name, kindWorkerStopped, "", func(w WorkerDef) bool { return w.State != WorkerStopped })
}

// StopWorkerRevision is StopWorker for a run of revision rev (the
// worker's plugin asked to stop): it records the stop only while the
// worker is running at that revision.
func (p *Plane) StopWorkerRevision(ctx context.Context, tenant, name string, rev uint64) (WorkerDef, error) {
	return p.changeWorker(ctx, tenant, name, kindWorkerStopped, "", func(w WorkerDef) bool { return w.State == WorkerRunning && w.Revision == rev })
}

// QuarantineWorker records that the worker's run of revision rev is
// quarantined, with reason (at most MaxReasonBytes; longer is cut). A
// worker no longer running at that revision (stopped, restarted or
// reconfigured meanwhile) is left as it is. ErrNotFound if there is no
// such worker.
func (p *Plane) QuarantineWorker(ctx context.Context, tenant, name string, rev uint64, reason string) (WorkerDef, error) {
	if len(reason) > MaxReasonBytes {
		reason = reason[:MaxReasonBytes]
	}
	return p.changeWorker(ctx, tenant, name, kindWorkerQuarantined, reason, func(w WorkerDef) bool { return w.State == WorkerRunning && w.Revision == rev })
}

// ResetWorker clears a worker's quarantine: it should run again. A worker
// not quarantined is left as it is. ErrNotFound if there is no such
// worker.
func (p *Plane) ResetWorker(ctx context.Context, tenant, name string) (WorkerDef, error) {
	return p.changeWorker(ctx, tenant, name, kindWorkerReset, "", func(w WorkerDef) bool { return w.State == WorkerQuarantined })
}

func (p *Plane) changeWorker(ctx context.Context, tenant, name string, kind core.Kind, reason string, decide func(WorkerDef) bool) (WorkerDef, error) {
	p.lockChange()
	defer p.wmu.Unlock()
	w, ok := p.Worker(tenant, name)
	if !ok {
		return WorkerDef{}, fmt.Errorf("%w: worker %q", ErrNotFound, name)
	}
	if !decide(w) {
		return w, nil
	}
	if _, err := p.record(ctx, kind, WorkerEntity(tenant, name), body{Tenant: tenant, Reason: reason, Worker: &workerRecord{Name: name}}); err != nil {
		return WorkerDef{}, err
	}
	w, _ = p.Worker(tenant, name)
	return w, nil
}

// DeleteWorker forgets a worker's definition and returns it as it was:
// its name no longer counts towards the tenant's defined workers, and
// may be started again as a new worker. The worker's cursor is its own
// (no other worker, nor a cursor defined through the API, may use it),
// so its committed position, kept in the tenant's store, is the caller's
// to remove, as DeleteCursor's is; stopping the worker's run is the
// caller's too (the supervisor's). ErrNotFound if the tenant has no such
// worker.
func (p *Plane) DeleteWorker(ctx context.Context, tenant, name string) (WorkerDef, error) {
	p.lockChange()
	defer p.wmu.Unlock()
	w, ok := p.Worker(tenant, name)
	if !ok {
		return WorkerDef{}, fmt.Errorf("%w: worker %q", ErrNotFound, name)
	}
	if _, err := p.record(ctx, kindWorkerDeleted, WorkerEntity(tenant, name), body{Tenant: tenant, Worker: &workerRecord{Name: name}}); err != nil {
		return WorkerDef{}, err
	}
	return w, nil
}

// workersOfPlugin names the tenant's workers, running or quarantined,
// that run plugin (by name); the caller holds mu.
func (s *state) workersOfPlugin(tenant, plugin string) []string {
	var out []string
	for _, w := range s.workers[tenant] {
		if w.Plugin == plugin && w.State != WorkerStopped {
			out = append(out, w.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Worker returns one worker's definition.
func (p *Plane) Worker(tenant, name string) (WorkerDef, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	w, ok := p.st.workers[tenant][name]
	if !ok {
		return WorkerDef{}, false
	}
	return w.clone(), true
}

// Workers lists a tenant's workers, by name; tenant "" lists every
// tenant's (by tenant, then name), for resuming them at start.
func (p *Plane) Workers(tenant string) []WorkerDef {
	p.mu.RLock()
	var out []WorkerDef
	for t, ws := range p.st.workers {
		if tenant != "" && t != tenant {
			continue
		}
		for _, w := range ws {
			out = append(out, w.clone())
		}
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Tenant != out[j].Tenant {
			return out[i].Tenant < out[j].Tenant
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func (w WorkerDef) clone() WorkerDef {
	if w.Region.Category != nil {
		v := *w.Region.Category
		w.Region.Category = &v
	}
	if w.Restart.MaxRestarts != nil {
		v := *w.Restart.MaxRestarts
		w.Restart.MaxRestarts = &v
	}
	w.By.Roles = append([]string(nil), w.By.Roles...)
	return w
}

// applyWorker folds a worker change into the state.
func (s *state) applyWorker(c change) {
	b := c.body
	if _, ok := s.tenants[b.Tenant]; !ok || b.Worker == nil {
		return
	}
	ws := s.workers[b.Tenant]
	if ws == nil {
		ws = map[string]WorkerDef{}
		s.workers[b.Tenant] = ws
	}
	w, ok := ws[b.Worker.Name]
	if c.kind == kindWorkerDeleted {
		delete(ws, b.Worker.Name)
		return
	}
	switch c.kind {
	case kindWorkerStarted:
		r := b.Worker
		w = WorkerDef{Tenant: b.Tenant, Name: r.Name, Plugin: r.Plugin, Cursor: r.Cursor, State: WorkerRunning}
		if r.Region != nil {
			w.Region = *r.Region
		}
		if r.Restart != nil {
			w.Restart = *r.Restart
		}
	case kindWorkerStopped:
		w.State, w.Reason = WorkerStopped, ""
	case kindWorkerQuarantined:
		w.State, w.Reason = WorkerQuarantined, b.Reason
	case kindWorkerReset:
		w.State, w.Reason = WorkerRunning, ""
	}
	if !ok && c.kind != kindWorkerStarted {
		return
	}
	w.Changed, w.By, w.Revision = c.at, b.By, c.seq
	ws[w.Name] = w
}
