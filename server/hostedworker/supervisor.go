package hostedworker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/shares"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/plugins/abi"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/quota"
	"github.com/batpak-go/batpak/server/tenancy"
	"github.com/batpak-go/batpak/server/wire"
)

// PluginSource is where a worker's handler plugin comes from: the
// server's tenant plugin registry.
type PluginSource interface {
	// Handler returns tenant's handler plugin called name, loaded and
	// ready to call. It is asked at every start and restart of a worker
	// and may return the same *plugins.Plugin each time (a plugin's
	// instances are safe for concurrent use). An error wrapping
	// ErrPluginNotFound says there is no such plugin; any other error is
	// the source's failure. Both refuse a start (StartWorker) and are a
	// fault of a running worker.
	Handler(ctx context.Context, tenant, name string) (*plugins.Plugin, error)
}

// Errors of the package.
var (
	// ErrPluginNotFound: the source has no plugin of that name for the
	// tenant. Sources wrap it.
	ErrPluginNotFound = errors.New("hostedworker: no such plugin")
	// ErrClosed: the supervisor was closed.
	ErrClosed = errors.New("hostedworker: supervisor is closed")
)

// PluginError refuses a start whose plugin the source cannot provide, or
// that is not a handler plugin.
type PluginError struct {
	Plugin string
	Err    error
}

func (e *PluginError) Error() string { return fmt.Sprintf("plugin %q: %v", e.Plugin, e.Err) }

// Unwrap returns the source's error.
func (e *PluginError) Unwrap() error { return e.Err }

// State is what a worker is doing now.
type State string

// Worker states.
const (
	StateStarting    State = "starting"    // loading its plugin and opening its cursor
	StateRunning     State = "running"     // feeding events to its plugin
	StateBackoff     State = "backoff"     // waiting to restart after a fault
	StateStopped     State = "stopped"     // stopped by request (or by its plugin)
	StateQuarantined State = "quarantined" // faulted past its restart policy; Reset starts it again
	StateSuspended   State = "suspended"   // its tenant is suspended; it runs again on resume
)

// Fault is one failure of a worker's run.
type Fault struct {
	Time time.Time `json:"time"`
	// Kind is the plugin fault's kind (plugins.FaultKind: "trap",
	// "timeout", "malformed", …), "denied" for a reaction a policy
	// refused, "unavailable" for a plugin the source could not provide,
	// "store" for the tenant's store unable to take writes (a full disk;
	// not counted towards quarantine), "loop" for reactions that would
	// go on without end (ErrReactionLoop: a chain Options.MaxReactionDepth
	// generations deep, or two of the worker's own reactions to one cause
	// fanning out), or "error" for anything else (a failed write).
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// Quarantine says since when and why a worker is quarantined.
type Quarantine struct {
	Since  time.Time `json:"since"`
	Reason string    `json:"reason"`
}

// LogEntry is one line of a worker's own log (starts, faults, restarts,
// quarantine, stops): the last MaxLogEntries are kept per worker.
type LogEntry struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"` // "info" or "error"
	Message string    `json:"message"`
}

// DefaultMaxDefined and MaxDefinedLimit are Options.MaxDefined's default
// and ceiling.
const (
	DefaultMaxDefined = 256
	MaxDefinedLimit   = 65536
)

// DefaultMaxReactionDepth and MaxReactionDepthLimit are
// Options.MaxReactionDepth's default and ceiling.
const (
	DefaultMaxReactionDepth = 16
	MaxReactionDepthLimit   = 1024
)

// ErrReactionLoop is the fault of a worker asked to react to an event
// that is already Options.MaxReactionDepth generations of workers'
// reactions deep, or to fan out on one of its own reactions when another
// of its own reactions to the same cause fanned out too (a worker
// reacting to its own reactions, or workers to each other's, without
// end): its reactions to that event are not written.
var ErrReactionLoop = errors.New("hostedworker: reaction loop")

// MaxLogEntries is how many log entries a worker's status keeps.
const MaxLogEntries = 32

// PluginRef identifies the plugin version a worker runs.
type PluginRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Digest  string `json:"digest"`
}

// Status is a worker's definition and what it is doing.
type Status struct {
	Name    string                `json:"name"`
	Plugin  string                `json:"plugin"`
	Region  control.Region        `json:"region"`
	Cursor  string                `json:"cursor"`
	Restart control.WorkerRestart `json:"restart"`
	// Desired is the recorded state: running, stopped or quarantined.
	Desired control.WorkerState `json:"desired"`
	State   State               `json:"state"`
	// Running is the plugin version of the current (or last) run.
	Running *PluginRef `json:"running,omitempty"`
	// Position is the cursor's committed position (the global sequence
	// after the last event whose reactions are written); Head the store's
	// global sequence; Lag = Head - Position, the log's events past the
	// position in the region or not: the region's events not yet handled
	// when the region is every event, an upper bound on them otherwise (a
	// caught-up worker whose region leaves out later events keeps a Lag
	// above 0). The region's events are not counted: for a region no
	// index narrows (a category alone) that walks the log, and a status
	// must stay cheap however far behind a worker is.
	Position uint64 `json:"position"`
	Head     uint64 `json:"head"`
	Lag      uint64 `json:"lag"`
	// Restarts counts restarts after faults since the worker was last
	// reset or the server started (defining it again, stopped or not,
	// keeps the count, as it keeps RecentFaults).
	Restarts int `json:"restarts"`
	// RecentFaults counts the faults within the restart window.
	RecentFaults int         `json:"recent_faults"`
	LastFault    *Fault      `json:"last_fault,omitempty"`
	NextRestart  *time.Time  `json:"next_restart,omitempty"` // in backoff
	Quarantine   *Quarantine `json:"quarantine,omitempty"`
	Changed      time.Time   `json:"changed"` // when Desired last changed
	ChangedBy    string      `json:"changed_by"`
	Log          []LogEntry  `json:"log"`
}

// StartRequest is what StartWorker needs: Name and Plugin; Cursor
// defaults to Name; Region's zero value is every event; Restart's zero
// fields take the defaults (control.WorkerRestart).
type StartRequest struct {
	Name    string                `json:"name"`
	Plugin  string                `json:"plugin"`
	Region  control.Region        `json:"region"`
	Cursor  string                `json:"cursor,omitempty"`
	Restart control.WorkerRestart `json:"restart"`
}

// Options configure a Supervisor. Plane, Tenants and Source are required.
type Options struct {
	Plane   *control.Plane
	Tenants *tenancy.Registry
	Source  PluginSource
	// Quotas, when set, holds reactions to the tenant's quotas like the
	// API's writes (give the API's Manager, so both share the tenant's
	// rate buckets): max_payload_bytes and storage_bytes refuse (a fault
	// of kind "quota"), events_per_second and bytes_per_second pace the
	// worker. nil: reactions are bounded by the store's limits only.
	Quotas *quota.Manager
	// BatchSize is the most events per plugin call. Default 64; range
	// 1..4096.
	BatchSize int
	// MaxDefined bounds the workers a tenant has defined, in any state
	// (a stopped worker keeps its definition and its cursor): a start
	// under a new name past it is refused with a *DefinedLimitError
	// (until workers are deleted: DeleteWorker); a stopped worker's name
	// can be started again with another configuration. Default 256;
	// range 1..65536, and never below the tenant's max_workers (a tenant
	// without a max_workers limit has none either).
	MaxDefined int
	// InFlight bounds how many workers, all tenants' together, read a
	// batch of events and call their plugin at once (each up to
	// MaxBatchBytes of events, and the plugin's answer up to its
	// max_output_bytes). A tenant takes at most half of them, and a turn
	// that frees goes to the waiting tenant holding the fewest, then to
	// the one whose workers held turns least lately, so a tenant whose
	// plugin answers quickly gets the next one however many tenants keep
	// the others busy; the other workers wait their turn before reading,
	// holding no events. A worker then
	// writes its plugin's reactions in its tenant's turn alone (a tenant
	// has TenantInFlight), so that what makes its writes wait — the
	// tenant's rates, its policy, a gate asking to retry — holds no
	// other tenant's worker back. Default DefaultInFlight; range
	// 1..MaxInFlight.
	InFlight int
	// MaxReactionDepth bounds chains of hosted workers' reactions: a
	// worker whose plugin reacts to an event that is already the
	// MaxReactionDepth-th in a chain of workers' reactions (a reaction to
	// a reaction to … an event no worker wrote) faults with
	// ErrReactionLoop (kind "loop") and writes nothing for it, and is
	// quarantined past its restart policy. A worker two of whose own
	// reactions to one cause both fan out (the log would multiply at
	// every generation) faults the same way; one (a step answered with several
	// reactions) is a workflow's step, not a loop. The bound is on
	// generations, not on how many reactions a chain holds: workers
	// fanning out on each other's reactions (k each) write up to k to the
	// power of the depth per event before the fault, within the tenant's
	// events_per_second and storage_bytes. Default
	// DefaultMaxReactionDepth; range 1..MaxReactionDepthLimit.
	MaxReactionDepth int
	Logger           *slog.Logger // nil: slog.Default()
	// Standby makes the supervisor start in standby (see Standby): it
	// runs nothing until Resume. A cluster node passes it: only the
	// leader runs workers.
	Standby bool
}

// supervisorPrincipal records the supervisor's own changes (quarantine,
// a plugin's stop).
var supervisorPrincipal = policy.Principal{ID: "hostedworker", Roles: []string{"system"}}

type key struct{ tenant, name string }

// Supervisor runs the hosted workers. Safe for concurrent use.
type Supervisor struct {
	opts Options
	log  *slog.Logger

	// opMu serialises the changes of workers (start, stop, reset, tenant
	// changes), so that a worker's runner always follows its latest
	// recorded state.
	opMu    sync.Mutex
	mu      sync.Mutex
	runners map[key]*runner // the current (or last) run of each worker
	// turns are the server's turns (Options.InFlight), tenantInFlight
	// each tenant's slots (TenantInFlight): see turn.
	turns          *shares.Pool
	tenantInFlight map[string]chan struct{}
	waiting        atomic.Int64 // workers waiting for a turn (Metrics)
	closed         bool
	standby        bool // runs nothing (a cluster node that does not lead): Standby until Resume
	base           context.Context
	stop           context.CancelFunc
}

// New makes a Supervisor; it starts nothing until Resume.
func New(opts Options) (*Supervisor, error) {
	switch {
	case opts.Plane == nil || opts.Tenants == nil || opts.Source == nil:
		return nil, errors.New("hostedworker: Options.Plane, Tenants and Source are required")
	case opts.BatchSize < 0 || opts.BatchSize > 4096:
		return nil, fmt.Errorf("hostedworker: Options.BatchSize is %d, want 1..4096", opts.BatchSize)
	case opts.MaxDefined < 0 || opts.MaxDefined > MaxDefinedLimit:
		return nil, fmt.Errorf("hostedworker: Options.MaxDefined is %d, want 1..%d", opts.MaxDefined, MaxDefinedLimit)
	case opts.InFlight < 0 || opts.InFlight > MaxInFlight:
		return nil, fmt.Errorf("hostedworker: Options.InFlight is %d, want 1..%d", opts.InFlight, MaxInFlight)
	case opts.MaxReactionDepth < 0 || opts.MaxReactionDepth > MaxReactionDepthLimit:
		return nil, fmt.Errorf("hostedworker: Options.MaxReactionDepth is %d, want 1..%d", opts.MaxReactionDepth, MaxReactionDepthLimit)
	}
	if opts.MaxReactionDepth == 0 {
		opts.MaxReactionDepth = DefaultMaxReactionDepth
	}
	if opts.InFlight == 0 {
		opts.InFlight = DefaultInFlight
	}
	if opts.MaxDefined == 0 {
		opts.MaxDefined = DefaultMaxDefined
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = 64
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	base, stop := context.WithCancel(context.Background())
	return &Supervisor{opts: opts, log: opts.Logger, runners: map[key]*runner{},
		turns: shares.NewFair(opts.InFlight), tenantInFlight: map[string]chan struct{}{}, base: base, stop: stop, standby: opts.Standby}, nil
}

// Resume starts every worker the control plane records as running whose
// tenant is active (at server start, or when a cluster node becomes the
// leader: it ends Standby). Each continues from its named cursor's
// committed position.
func (s *Supervisor) Resume() {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.mu.Lock()
	s.standby = false
	s.mu.Unlock()
	for _, d := range s.opts.Plane.Workers("") {
		if d.State == control.WorkerRunning {
			s.reconcileLocked(d.Tenant, d.Name, false)
		}
	}
}

// Close stops every worker (each after the batch in hand) and waits for
// them, up to ctx; nothing is recorded, so they resume at the next start.
// Later calls fail with ErrClosed.
func (s *Supervisor) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	rs := make([]*runner, 0, len(s.runners))
	for _, r := range s.runners {
		rs = append(rs, r)
	}
	s.mu.Unlock()
	s.stop()
	for _, r := range rs {
		select {
		case <-r.done:
		case <-ctx.Done():
			return fmt.Errorf("hostedworker: workers still stopping at close: %w", ctx.Err())
		}
	}
	return nil
}

// Standby stops every worker (each after the batch in hand, its position
// committed as far as it got) without recording anything, and runs none
// until Resume: what a cluster node does when it stops leading, so that
// only the leader runs workers. Changes recorded meanwhile (by the
// leader) take effect at Resume. It waits for the workers up to ctx.
func (s *Supervisor) Standby(ctx context.Context) error {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.mu.Lock()
	s.standby = true
	rs := make([]*runner, 0, len(s.runners))
	for _, r := range s.runners {
		rs = append(rs, r)
	}
	s.mu.Unlock()
	for _, r := range rs {
		if r.cancel != nil {
			r.cancel()
		}
	}
	for _, r := range rs {
		select {
		case <-r.done:
			r.setState(StateStopped, "")
		case <-ctx.Done():
			return fmt.Errorf("hostedworker: workers still stopping at standby: %w", ctx.Err())
		}
	}
	return nil
}

func (s *Supervisor) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// maxWorkers is the tenant's max_workers quota (-1: no limit).
func (s *Supervisor) maxWorkers(tenant string) int {
	n := s.opts.Plane.Effective(tenant).MaxWorkers
	if n <= 0 {
		return -1
	}
	return n
}

// StartWorker records that worker req.Name of tenant runs req.Plugin (see
// control.Plane.StartWorker) and starts it; a running worker with the
// same configuration is left running, one with another configuration is
// restarted with the new one. Errors: a *PluginError when the source
// cannot provide the plugin or it is not a handler; a *wire.Error for a
// region that does not parse; control.ErrInvalid naming a field;
// control.ErrExists for a cursor in use; a *quota.Exceeded (max_workers)
// past the tenant's limit; a *DefinedLimitError for a new name past
// Options.MaxDefined; ErrClosed.
func (s *Supervisor) StartWorker(ctx context.Context, tenant string, req StartRequest) (Status, error) {
	if s.isClosed() {
		return Status{}, ErrClosed
	}
	if _, err := wire.RegionFromControl(req.Region); err != nil {
		return Status{}, err
	}
	d := control.WorkerDef{Tenant: tenant, Name: req.Name, Plugin: req.Plugin, Region: req.Region, Cursor: req.Cursor, Restart: req.Restart}
	if _, err := control.ValidWorker(d); err != nil {
		return Status{}, err
	}
	if _, ok := s.opts.Plane.Tenant(tenant); !ok {
		return Status{}, fmt.Errorf("%w: tenant %q", control.ErrNotFound, tenant)
	}
	if err := s.checkPlugin(ctx, tenant, req.Plugin); err != nil {
		return Status{}, err
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	max := s.maxWorkers(tenant)
	defined := -1
	if max >= 0 {
		defined = s.opts.MaxDefined
		if max > defined {
			defined = max
		}
	}
	prev, existed := s.opts.Plane.Worker(tenant, req.Name)
	now, err := s.opts.Plane.StartWorkerMax(ctx, d, max, defined)
	if err != nil {
		if errors.Is(err, control.ErrDefinedLimit) {
			return Status{}, &DefinedLimitError{Defined: len(s.opts.Plane.Workers(tenant)), Limit: defined, MaxDefined: s.opts.MaxDefined}
		}
		if errors.Is(err, control.ErrLimit) {
			return Status{}, &quota.Exceeded{Quota: "max_workers", Limit: float64(max)}
		}
		return Status{}, err
	}
	if existed && prev.Cursor != now.Cursor {
		s.giveUpCursor(ctx, tenant, req.Name, prev.Cursor)
	}
	s.reconcileLocked(tenant, req.Name, false)
	return s.Status(ctx, tenant, req.Name)
}

// giveUpCursor rewinds the cursor worker name no longer uses to the log's
// beginning, as deleting the worker does, once its run on it has
// stopped: whatever takes the name up later starts afresh rather than
// where this worker left it. A rewind that fails is logged (the worker
// runs on its new cursor all the same). The caller holds opMu.
func (s *Supervisor) giveUpCursor(ctx context.Context, tenant, name, cursor string) {
	s.mu.Lock()
	old := s.runners[key{tenant, name}]
	s.mu.Unlock()
	if old != nil {
		old.halt() // nothing commits the old cursor after this
	}
	// Taken up meanwhile (an API cursor defined on the name; another
	// worker cannot: opMu): it is someone else's now, and left alone.
	if _, ok := s.opts.Plane.Cursor(tenant, cursor); ok {
		return
	}
	if err := s.rewind(ctx, tenant, cursor); err != nil {
		s.log.Warn("hosted worker: the cursor it gave up keeps its position", "tenant", tenant, "worker", name, "cursor", cursor, "error", err)
	}
}

// DefinedLimitError refuses a worker under a new name when the tenant
// already has as many workers defined, in any state, as it may
// (Options.MaxDefined, or the tenant's max_workers when that is higher).
// It is no passing condition: it lasts until workers are deleted
// (DeleteWorker), so an API answers it as a conflict, not a rate.
type DefinedLimitError struct {
	Defined    int // workers the tenant has defined
	Limit      int // the limit that applies to the tenant
	MaxDefined int // Options.MaxDefined (server.workers_max_defined)
}

func (e *DefinedLimitError) Error() string {
	lim := fmt.Sprintf("server.workers_max_defined %d", e.MaxDefined)
	if e.Limit > e.MaxDefined {
		lim = fmt.Sprintf("server.workers_max_defined %d, raised to the tenant's max_workers %d", e.MaxDefined, e.Limit)
	}
	return fmt.Sprintf("the tenant has %d hosted workers defined, the most it may (%s): stopped workers keep their definitions; delete the workers no longer needed (DELETE …/workers/{name}, batpak worker delete NAME), or start one of them again under its name",
		e.Defined, lim)
}

// DeleteWorker stops the worker if it runs (after the batch in hand) and
// forgets it: its definition (control.Plane.DeleteWorker), so it no
// longer counts towards the tenant's defined workers, and its cursor's
// committed position, rewound to the log's beginning as deleting a
// cursor through the API rewinds it — a worker's cursor is its own (no
// other worker, nor a cursor defined through the API, may use it), so
// whatever takes the name up later (a worker of the same name or
// cursor, an API cursor) starts afresh. Its status, faults and log go
// too. The rewind comes first: should recording the deletion then fail,
// the worker is left defined (running again if it was) from the log's
// beginning, its reactions to events it had handled not written again
// while their idempotency keys are remembered. control.ErrNotFound if
// the tenant has no such worker.
func (s *Supervisor) DeleteWorker(ctx context.Context, tenant, name string) error {
	if s.isClosed() {
		return ErrClosed
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	d, ok := s.opts.Plane.Worker(tenant, name)
	if !ok {
		return fmt.Errorf("%w: worker %q", control.ErrNotFound, name)
	}
	k := key{tenant, name}
	s.mu.Lock()
	old := s.runners[k]
	s.mu.Unlock()
	if old != nil {
		old.halt() // nothing commits the cursor after this
	}
	err := s.rewind(ctx, tenant, d.Cursor)
	if err == nil {
		_, err = s.opts.Plane.DeleteWorker(ctx, tenant, name)
	}
	if err != nil {
		s.reconcileLocked(tenant, name, false) // as recorded
		return err
	}
	s.mu.Lock()
	if s.runners[k] == old {
		delete(s.runners, k)
	}
	s.mu.Unlock()
	return nil
}

// rewind moves the tenant's named cursor back to the log's beginning
// (core.Store.ResetCursor: durable, and replicated on a cluster).
func (s *Supervisor) rewind(ctx context.Context, tenant, cursor string) error {
	lease, err := s.opts.Tenants.Acquire(ctx, tenant)
	if err != nil {
		return err
	}
	defer lease.Release()
	return lease.Store().ResetCursor(cursor)
}

// checkPlugin asks the source for the plugin and checks it is a handler.
func (s *Supervisor) checkPlugin(ctx context.Context, tenant, name string) error {
	p, err := s.opts.Source.Handler(ctx, tenant, name)
	if err != nil {
		return &PluginError{Plugin: name, Err: err}
	}
	if p == nil {
		return &PluginError{Plugin: name, Err: ErrPluginNotFound}
	}
	if k := p.Manifest().Kind; k != plugins.KindHandler {
		return &PluginError{Plugin: name, Err: fmt.Errorf("a %s plugin, not a handler", k)}
	}
	return nil
}

// StopWorker records that the worker is stopped and stops it after the
// batch in hand (its position stays committed). control.ErrNotFound if
// the tenant has no such worker.
func (s *Supervisor) StopWorker(ctx context.Context, tenant, name string) (Status, error) {
	if s.isClosed() {
		return Status{}, ErrClosed
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if _, err := s.opts.Plane.StopWorker(ctx, tenant, name); err != nil {
		return Status{}, err
	}
	s.reconcileLocked(tenant, name, false)
	return s.Status(ctx, tenant, name)
}

// ResetWorker clears a worker's quarantine and its fault count and starts
// it again (also resetting its plugin's own fault count,
// plugins.Plugin.Reset). A worker not quarantined only has its fault
// count cleared. control.ErrNotFound if there is no such worker.
func (s *Supervisor) ResetWorker(ctx context.Context, tenant, name string) (Status, error) {
	if s.isClosed() {
		return Status{}, ErrClosed
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	d, err := s.opts.Plane.ResetWorker(ctx, tenant, name)
	if err != nil {
		return Status{}, err
	}
	if p, err := s.opts.Source.Handler(ctx, tenant, d.Plugin); err == nil && p != nil {
		p.Reset()
	}
	s.reconcileLocked(tenant, name, true)
	return s.Status(ctx, tenant, name)
}

// TenantChanged brings the tenant's workers in line with the tenant's
// state: a deleted tenant's workers stop and are forgotten (their leases
// released, so the tenant's store can be removed), a suspended tenant's
// stop, an active tenant's recorded as running start. Call it after a
// tenant is suspended, resumed or deleted.
func (s *Supervisor) TenantChanged(tenant string) {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.mu.Lock()
	var names []string
	for k := range s.runners {
		if k.tenant == tenant {
			names = append(names, k.name)
		}
	}
	s.mu.Unlock()
	for _, d := range s.opts.Plane.Workers(tenant) {
		names = append(names, d.Name)
	}
	for _, n := range names {
		s.reconcileLocked(tenant, n, false)
	}
	if _, ok := s.opts.Plane.Tenant(tenant); !ok {
		s.mu.Lock()
		for k := range s.runners {
			if k.tenant == tenant {
				delete(s.runners, k)
			}
		}
		// Its workers are stopped: the tenant's turns go with it (a worker
		// still ending keeps the channel it took its turn from).
		delete(s.tenantInFlight, tenant)
		s.mu.Unlock()
	}
}

// reconcileLocked makes the worker's runner follow its recorded state:
// it runs (with the recorded configuration) when the worker is recorded
// as running and its tenant is active, and is stopped otherwise. fresh
// clears the fault history of a new run. The caller holds opMu.
func (s *Supervisor) reconcileLocked(tenant, name string, fresh bool) {
	k := key{tenant, name}
	d, defined := s.opts.Plane.Worker(tenant, name)
	t, tenantOK := s.opts.Plane.Tenant(tenant)
	want := defined && tenantOK && d.State == control.WorkerRunning && t.State == control.StateActive
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	want = want && !s.standby
	old := s.runners[k]
	s.mu.Unlock()
	if old != nil && old.active() && want && sameConfig(old.def, d) && !fresh {
		return // running as recorded
	}
	if old != nil {
		old.halt()
		// The halted run may have recorded a quarantine or its plugin's
		// stop on its way out (before a reset that found nothing to
		// clear): follow what is recorded now.
		d, defined = s.opts.Plane.Worker(tenant, name)
		t, tenantOK = s.opts.Plane.Tenant(tenant)
		s.mu.Lock()
		want = defined && tenantOK && d.State == control.WorkerRunning && t.State == control.StateActive && !s.standby
		s.mu.Unlock()
	}
	if !want {
		if old != nil && tenantOK && !defined {
			// Deleted (here or, on a cluster, by another leader): its
			// status goes with it.
			s.mu.Lock()
			if s.runners[k] == old {
				delete(s.runners, k)
			}
			s.mu.Unlock()
			return
		}
		if old != nil {
			switch {
			case !tenantOK:
			case t.State == control.StateSuspended && defined && d.State == control.WorkerRunning:
				old.setState(StateSuspended, "the tenant is suspended")
			case defined && d.State == control.WorkerQuarantined:
				old.setState(StateQuarantined, "")
			default:
				old.setState(StateStopped, "stopped")
			}
		}
		return
	}
	r := newRunner(s, d)
	if old != nil && !fresh {
		r.inherit(old)
	}
	s.mu.Lock()
	s.runners[k] = r
	s.mu.Unlock()
	r.start(s.base)
}

func sameConfig(a, b control.WorkerDef) bool {
	ra, rb := a.Region, b.Region
	return a.Plugin == b.Plugin && a.Cursor == b.Cursor && sameRestart(a.Restart, b.Restart) &&
		ra.Entity == rb.Entity && ra.Scope == rb.Scope && ra.Kind == rb.Kind &&
		(ra.Category == nil) == (rb.Category == nil) && (ra.Category == nil || *ra.Category == *rb.Category)
}

func sameRestart(a, b control.WorkerRestart) bool {
	return a.WindowMs == b.WindowMs && a.BackoffMinMs == b.BackoffMinMs && a.BackoffMaxMs == b.BackoffMaxMs &&
		(a.MaxRestarts == nil) == (b.MaxRestarts == nil) && (a.MaxRestarts == nil || *a.MaxRestarts == *b.MaxRestarts)
}

// Status returns the worker's definition and what it is doing.
// control.ErrNotFound if the tenant has no such worker.
func (s *Supervisor) Status(ctx context.Context, tenant, name string) (Status, error) {
	d, ok := s.opts.Plane.Worker(tenant, name)
	if !ok {
		return Status{}, fmt.Errorf("%w: worker %q", control.ErrNotFound, name)
	}
	st := s.status(d)
	if err := s.position(ctx, tenant, []*Status{&st}); err != nil {
		return Status{}, err
	}
	return st, nil
}

// Workers lists the tenant's workers with their status, by name.
func (s *Supervisor) Workers(ctx context.Context, tenant string) ([]Status, error) {
	defs := s.opts.Plane.Workers(tenant)
	out := make([]Status, len(defs))
	ps := make([]*Status, len(defs))
	for i, d := range defs {
		out[i] = s.status(d)
		ps[i] = &out[i]
	}
	if len(out) > 0 {
		if err := s.position(ctx, tenant, ps); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// status is d with its runner's state (positions left to position).
func (s *Supervisor) status(d control.WorkerDef) Status {
	st := Status{Name: d.Name, Plugin: d.Plugin, Region: d.Region, Cursor: d.Cursor, Restart: d.Restart,
		Desired: d.State, Changed: d.Changed, ChangedBy: d.By.ID, Log: []LogEntry{}}
	s.mu.Lock()
	r := s.runners[key{d.Tenant, d.Name}]
	s.mu.Unlock()
	if r != nil {
		r.fill(&st)
	}
	switch d.State {
	case control.WorkerStopped:
		st.State = StateStopped
		st.NextRestart = nil
	case control.WorkerQuarantined:
		st.State = StateQuarantined
		st.NextRestart = nil
		st.Quarantine = &Quarantine{Since: d.Changed, Reason: d.Reason}
	default:
		if t, ok := s.opts.Plane.Tenant(d.Tenant); ok && t.State == control.StateSuspended {
			st.State = StateSuspended
		} else if r == nil || st.State == "" {
			st.State = StateStopped // not started by this server (closing)
		}
	}
	return st
}

// position fills the cursors' committed positions and the store's head.
func (s *Supervisor) position(ctx context.Context, tenant string, sts []*Status) error {
	lease, err := s.opts.Tenants.Acquire(ctx, tenant)
	if err != nil {
		return err
	}
	defer lease.Release()
	store := lease.Store()
	head := store.Usage().GlobalSequence
	for _, st := range sts {
		cur, err := store.NamedCursor(st.Cursor, core.All())
		if err != nil {
			return err
		}
		st.Position = cur.Committed()
		st.Head = head
		st.Lag = head - min(st.Position, head)
	}
	return nil
}

// runner is one run of a worker: from a start (or reset) until it is
// stopped, quarantined or the supervisor closes, restarting after faults.
type runner struct {
	s      *Supervisor
	def    control.WorkerDef
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	state     State
	running   *PluginRef
	restarts  int
	faults    []time.Time // within the window
	lastFault *Fault
	next      time.Time
	log       []LogEntry

	// depths caches the reaction depth (reactionDepth) of the recent
	// sources the worker reacted to, so that their own reactions' depth,
	// when they come back as sources, needs no read. Used by the handler
	// alone (one batch at a time); forgotten past 4,096 and at a restart
	// (then read again from the store).
	depths map[core.EventID]int
}

func newRunner(s *Supervisor, d control.WorkerDef) *runner {
	return &runner{s: s, def: d, done: make(chan struct{}), state: StateStarting}
}

// inherit keeps the previous run's history (a configuration change is
// not a reset).
func (r *runner) inherit(old *runner) {
	old.mu.Lock()
	defer old.mu.Unlock()
	r.restarts, r.faults, r.lastFault, r.running = old.restarts, old.faults, old.lastFault, old.running
	r.log = append([]LogEntry(nil), old.log...)
}

func (r *runner) start(base context.Context) {
	ctx, cancel := context.WithCancel(base)
	r.cancel = cancel
	go r.run(ctx)
}

// active reports whether the run is still going.
func (r *runner) active() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// halt stops the run after the batch in hand and waits for it.
func (r *runner) halt() {
	if r.cancel != nil {
		r.cancel()
	}
	<-r.done
}

func (r *runner) logf(level, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.log = append(r.log, LogEntry{Time: time.Now().UTC(), Level: level, Message: msg})
	if len(r.log) > MaxLogEntries {
		r.log = append(r.log[:0], r.log[len(r.log)-MaxLogEntries:]...)
	}
	r.mu.Unlock()
	lvl := slog.LevelInfo
	if level == "error" {
		lvl = slog.LevelWarn
	}
	r.s.log.Log(context.Background(), lvl, "hosted worker: "+msg, "tenant", r.def.Tenant, "worker", r.def.Name)
}

func (r *runner) setState(st State, msg string) {
	r.mu.Lock()
	r.state = st
	r.next = time.Time{}
	r.mu.Unlock()
	if msg != "" {
		r.logf("info", "%s", msg)
	}
}

func (r *runner) fill(st *Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st.State = r.state
	st.Restarts = r.restarts
	window := r.def.Restart.Window()
	now := time.Now()
	for _, f := range r.faults {
		if now.Sub(f) <= window {
			st.RecentFaults++
		}
	}
	if r.lastFault != nil {
		f := *r.lastFault
		st.LastFault = &f
	}
	if r.running != nil {
		p := *r.running
		st.Running = &p
	}
	if !r.next.IsZero() && r.state == StateBackoff {
		n := r.next
		st.NextRestart = &n
	}
	st.Log = append(st.Log, r.log...)
}

// run is the runner's loop: run the plugin until it faults, then back off
// and restart, or quarantine.
func (r *runner) run(ctx context.Context) {
	defer close(r.done)
	for {
		err := r.once(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			// The plugin answered stop: record it, so the worker does not
			// start again at the next server start.
			r.setState(StateStopped, "the plugin asked to stop")
			sctx := policy.WithPrincipal(context.Background(), supervisorPrincipal)
			if _, err := r.s.opts.Plane.StopWorkerRevision(sctx, r.def.Tenant, r.def.Name, r.def.Revision); err != nil && !errors.Is(err, control.ErrNotFound) {
				r.logf("error", "recording the plugin's stop: %v", err)
			}
			return
		}
		if errors.Is(err, tenancy.ErrClosed) || errors.Is(err, tenancy.ErrUnknownTenant) {
			r.setState(StateStopped, "the tenant's store is gone")
			return
		}
		if cause, ok := storeUnavailable(err); ok {
			// The server's disk, not the plugin: shown, not counted
			// towards quarantine, and tried again as often as the
			// registry reopens a stopped store.
			f := Fault{Time: time.Now().UTC(), Kind: "store", Message: "the tenant's store stopped taking writes (" + cause + "); restarting"}
			r.mu.Lock()
			r.lastFault = &f
			r.mu.Unlock()
			r.logf("error", "%s", f.Message)
			if !r.restartAfter(ctx, tenancy.ReopenAfter) {
				return
			}
			continue
		}
		f := r.fault(err)
		if n := len(r.faults); n > *r.def.Restart.MaxRestarts {
			reason := fmt.Sprintf("%d faults within %v (max_restarts %d); last: %s: %s", n, r.def.Restart.Window(), *r.def.Restart.MaxRestarts, f.Kind, f.Message)
			// Record first: a status showing the state quarantined then
			// also shows its reason and desired state.
			qctx := policy.WithPrincipal(context.Background(), supervisorPrincipal)
			if _, err := r.s.opts.Plane.QuarantineWorker(qctx, r.def.Tenant, r.def.Name, r.def.Revision, reason); err != nil && !errors.Is(err, control.ErrNotFound) {
				r.logf("error", "recording the quarantine: %v", err)
			}
			r.logf("error", "quarantined: %s", reason)
			r.setState(StateQuarantined, "")
			return
		}
		d := r.def.Restart.BackoffMin() << min(len(r.faults)-1, 30)
		if d <= 0 || d > r.def.Restart.BackoffMax() {
			d = r.def.Restart.BackoffMax()
		}
		if !r.restartAfter(ctx, d) {
			return
		}
	}
}

// restartAfter puts the runner in backoff for d and waits it out,
// counting the restart; false when ctx ends first.
func (r *runner) restartAfter(ctx context.Context, d time.Duration) bool {
	r.mu.Lock()
	r.state, r.next = StateBackoff, time.Now().Add(d)
	r.mu.Unlock()
	r.logf("info", "restarting in %v", d)
	t := time.NewTimer(d)
	select {
	case <-ctx.Done():
		t.Stop()
		return false
	case <-t.C:
	}
	r.mu.Lock()
	r.restarts++
	r.mu.Unlock()
	return true
}

// storeUnavailable reports whether err is the tenant store's failure
// rather than the worker's — its writer stopped (a full disk, an I/O
// error), or the store was closed under the worker to be reopened — and
// names the cause for the worker's status, without the store's path.
func storeUnavailable(err error) (cause string, ok bool) {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return "its disk is full", true
	case errors.Is(err, core.ErrWriterStopped):
		return "a write to its disk failed", true
	case errors.Is(err, core.ErrClosed):
		return "it was closed to be reopened", true
	}
	return "", false
}

// fault records err as a fault of the run and returns it.
func (r *runner) fault(err error) Fault {
	f := Fault{Time: time.Now().UTC(), Kind: "error", Message: err.Error()}
	var pf *plugins.PluginFault
	var den *policy.Denial
	var pe *PluginError
	switch {
	case errors.As(err, &den):
		f.Kind = "denied"
	case errors.As(err, &pf):
		f.Kind = string(pf.Kind)
	case errors.As(err, &pe):
		f.Kind = "unavailable"
	case errors.As(err, new(*quota.Exceeded)):
		f.Kind = "quota"
	case errors.Is(err, ErrReactionLoop):
		f.Kind = "loop"
	}
	f.Message = strings.TrimPrefix(f.Message, "batpak: ")
	if len(f.Message) > 2048 {
		f.Message = f.Message[:2048] + "…"
	}
	window := r.def.Restart.Window()
	r.mu.Lock()
	kept := r.faults[:0]
	for _, t := range r.faults {
		if f.Time.Sub(t) <= window {
			kept = append(kept, t)
		}
	}
	r.faults = append(kept, f.Time)
	r.lastFault = &f
	r.mu.Unlock()
	r.logf("error", "fault (%s): %s", f.Kind, f.Message)
	return f
}

// once runs the worker until it ends: nil when the plugin answered stop
// (or ctx ended), the fault otherwise.
func (r *runner) once(ctx context.Context) error {
	lease, err := r.s.opts.Tenants.Acquire(ctx, r.def.Tenant)
	if err != nil {
		return openFault(err)
	}
	defer lease.Release()
	store := lease.Store()
	if err := store.Stopped(); err != nil {
		return err // a store fault, without running the plugin for nothing
	}
	p, err := r.s.opts.Source.Handler(ctx, r.def.Tenant, r.def.Plugin)
	if err == nil && p == nil {
		err = ErrPluginNotFound
	}
	if err == nil && p.Manifest().Kind != plugins.KindHandler {
		err = fmt.Errorf("a %s plugin, not a handler", p.Manifest().Kind)
	}
	if err != nil {
		return &PluginError{Plugin: r.def.Plugin, Err: err}
	}
	region, err := wire.RegionFromControl(r.def.Region)
	if err != nil {
		return err
	}
	never := core.RestartNever()
	t := r.s.newTurn(r.def.Tenant)
	w, err := store.CursorWorker(ctx, region, core.WorkerConfig{Name: r.def.Cursor, BatchSize: r.s.opts.BatchSize, BatchBytes: batchBytes(p), Restart: &never, Turn: t.take},
		r.handler(store, p, t))
	if err != nil {
		return err
	}
	ref := p.Ref()
	r.mu.Lock()
	r.state, r.next = StateRunning, time.Time{}
	r.running = &PluginRef{Name: ref.Name, Version: ref.Version, Digest: ref.Digest}
	r.mu.Unlock()
	r.logf("info", "running plugin %s %s (%.12s…) from cursor %s", ref.Name, ref.Version, ref.Digest, r.def.Cursor)
	err = w.Join()
	var we *core.WorkerError
	if errors.As(err, &we) {
		err = we.Err
	}
	if errors.Is(err, core.ErrHandlerPanic) {
		// A panic of the server's own code around the plugin: its stack
		// names the server's source files and is for the operator only.
		r.s.log.Error("hosted worker: handler panic", "tenant", r.def.Tenant, "worker", r.def.Name, "err", err)
		return scrubbed{"the server failed running the handler (an internal error; its operator has the details in the server's log)", err}
	}
	if err != nil {
		if dir := store.Dir(); dir != "" && strings.Contains(err.Error(), dir) {
			err = scrubbed{strings.ReplaceAll(err.Error(), dir, "<store>"), err}
		}
	}
	return err
}

// openFault is why the tenant's store would not open, as a worker's fault
// (shown to the tenant): a damaged store says which kind of damage, and
// no message keeps a path of the server's.
func openFault(err error) error {
	switch {
	case errors.Is(err, core.ErrLogTruncated):
		return scrubbed{"the tenant's store is damaged (its log is shorter than it recorded: acknowledged events are missing); the server's operator must recover it", err}
	case errors.Is(err, core.ErrChainBroken):
		return scrubbed{"the tenant's store is damaged (a hash chain is broken); the server's operator must recover it", err}
	case errors.Is(err, core.ErrCorrupt):
		return scrubbed{"the tenant's store is damaged (a segment holds bytes that fail their checks); the server's operator must recover it", err}
	}
	if msg := absPath.ReplaceAllString(err.Error(), "${1}<store>"); msg != err.Error() {
		return scrubbed{msg, err}
	}
	return err
}

// absPath matches an absolute path in a message (after the start, a
// space, a quote, a parenthesis or an equals sign).
var absPath = regexp.MustCompile(`(^|[\s'"(=])/[^\s:'"]*[^\s:'".,;)]`)

// scrubbed is an error whose message no longer shows the tenant store's
// path (a worker's faults are shown to the tenant), still matching what
// the original matched.
type scrubbed struct {
	msg  string
	orig error
}

func (e scrubbed) Error() string { return e.msg }
func (e scrubbed) Unwrap() error { return e.orig }

// TenantInFlight is how many of one tenant's workers may hold a batch
// and their plugin's answer at once, from reading the batch to the end
// of writing the reactions (Options.InFlight): so a tenant's 16 workers
// hold at most four batches and four answers, not sixteen.
const TenantInFlight = 4

// DefaultInFlight and MaxInFlight are Options.InFlight's default and
// ceiling. A worker holds up to 8 MiB of events and its plugin's answer
// (up to max_output_bytes, 16 MiB by default), and while it writes the
// reactions built from it: about 60 MiB at worst (an answer of 16,384
// reactions with 1 KB names).
const (
	DefaultInFlight = 8
	MaxInFlight     = 1024
)

// Metrics are the gauges of the workers in flight (for /metrics): how
// many hold a turn of the server's now, and how many wait for one, so an
// operator sees when Options.InFlight (server.workers_in_flight) holds
// the tenants' workers back.
func (s *Supervisor) Metrics() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "batpak_hosted_workers_in_flight",
			Help: "Hosted workers reading a batch and calling their plugin now (bounded by server.workers_in_flight)."},
			func() float64 { all, _ := s.turns.InUse(""); return float64(all) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "batpak_hosted_workers_waiting",
			Help: "Hosted workers with events to read waiting for their turn (server.workers_in_flight; a tenant at most half, a freed turn to the waiting tenant holding the fewest)."},
			func() float64 { return float64(s.waiting.Load()) }),
	}
}

// turn is one worker's place among the workers in flight: a slot of its
// tenant's TenantInFlight, then one of the server's turns
// (Options.InFlight, a shares.NewFair pool: a tenant holds at most half, and a turn
// that frees goes to the waiting tenant holding the fewest, then to the
// one whose workers held turns least lately, so tenants with slow plugins
// cannot keep one with quick plugins waiting), taken
// before the worker reads a batch (core.WorkerConfig.Turn). The server's
// is given back once the plugin has answered (pause), the tenant's when
// the handler returns. A worker's turn is used by its own goroutine
// only.
type turn struct {
	pool    *shares.Pool
	name    string        // the tenant's id
	tenant  chan struct{} // the tenant's slots
	server  func()        // gives the server's turn back; nil when not held
	waiting *atomic.Int64 // the supervisor's count of workers waiting for a turn
}

// newTurn makes the turn of a worker of tenant.
func (s *Supervisor) newTurn(tenant string) *turn {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.tenantInFlight[tenant]
	if c == nil {
		c = make(chan struct{}, TenantInFlight)
		s.tenantInFlight[tenant] = c
	}
	return &turn{pool: s.turns, name: tenant, tenant: c, waiting: &s.waiting}
}

// take waits, within ctx, for the tenant's slot and then the server's;
// release gives both back.
func (t *turn) take(ctx context.Context) (release func(), err error) {
	t.waiting.Add(1)
	defer t.waiting.Add(-1)
	select {
	case t.tenant <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := t.resume(ctx); err != nil {
		<-t.tenant
		return nil, err
	}
	return func() {
		t.pause()
		<-t.tenant
	}, nil
}

// pause gives the server's turn up, keeping the tenant's slot: the
// worker goes on with what only its tenant's limits bound (writing
// reactions).
func (t *turn) pause() {
	if t.server != nil {
		t.server()
		t.server = nil
	}
}

// resume takes a server's turn, waiting within ctx.
func (t *turn) resume(ctx context.Context) error {
	if t.server != nil {
		return nil
	}
	release, err := t.pool.Take(ctx, t.name, 0)
	if err != nil {
		return err
	}
	t.server = release
	return nil
}

// batchBytes bounds the events one call of p is handed (as
// core.Cursor.PollBytes counts them) to a quarter of p's memory, and to
// MaxBatchBytes: so a batch of large events fits the module (64 events
// of 1 MiB never did, and faulted every time), and a worker holds at
// most that much while it waits for its turn to call, however much
// memory its plugin may have.
func batchBytes(p *plugins.Plugin) int {
	return int(min(int64(p.Manifest().Limits.MemoryPages)*65536/4, MaxBatchBytes))
}

// MaxBatchBytes bounds the events one handler call is handed, in bytes
// (a call gets at least one event, whatever its size).
const MaxBatchBytes = 8 << 20

// checkBatch holds one source's count of reactions to the tenant's
// max_batch_events before they are built.
func (r *runner) checkBatch(n int) error {
	if r.s.opts.Quotas == nil {
		return nil
	}
	if ex := r.s.opts.Quotas.Tenant(r.def.Tenant, r.s.opts.Plane.Effective(r.def.Tenant)).CheckBatch(n); ex != nil {
		return ex
	}
	return nil
}

// admit holds one source's reactions to the tenant's quotas (when the
// supervisor has them): payload size and storage refuse, the rates pace
// (their count was checked by checkBatch).
func (r *runner) admit(ctx context.Context, store *core.Store, items []core.BatchItem) error {
	if r.s.opts.Quotas == nil {
		return nil
	}
	qt := r.s.opts.Quotas.Tenant(r.def.Tenant, r.s.opts.Plane.Effective(r.def.Tenant))
	bytes, largest, names := 0, 0, 0
	for _, it := range items {
		bytes += len(it.Payload)
		largest = max(largest, len(it.Payload))
		names += len(it.Coordinate.Entity) + len(it.Coordinate.Scope) + len(it.Options.IdempotencyKey)
	}
	// The count was held to max_batch_events before the items were
	// built (checkBatch).
	if ex := qt.CheckPayload(largest); ex != nil {
		return ex
	}
	u := store.Usage()
	if ex := qt.CheckStorage(u.Bytes, bytes); ex != nil {
		return ex
	}
	if ex := qt.CheckIndex(u.IndexBytes, quota.IndexCost(len(items), names)); ex != nil {
		return ex
	}
	return qt.PaceWrite(ctx, len(items), bytes)
}

// writtenBefore reports whether err refuses a source event's reactions
// because reactions to it were written under cursor before: an
// idempotency key of the cursor's for the source names another event, or
// the batch mixes keys written then with new ones (the plugin answers
// more reactions now). Only workers write such keys: appends and batches
// through the API refuse keys beginning wire.WorkerKeyPrefix, and an
// import takes one only on an event that names the key's source as its
// cause, as a worker's reaction does (wire.CheckImportedKey, so that an
// export with reactions imports again), so no writer but a tenant admin
// importing a made-up reaction to that very source can make a worker
// take its reactions for written.
func writtenBefore(ctx context.Context, store *core.Store, err error, cursor string, source core.EventID, items []core.BatchItem) bool {
	// Every key of the batch is the cursor's for the source.
	return store.KeptReactions(ctx, err, fmt.Sprintf("%s%s:%s:", wire.WorkerKeyPrefix, cursor, source), items)
}

// reactionDepth is how many generations of hosted workers' reactions ev
// ends: 0 for an event no worker wrote, 1 for a worker's reaction to
// one, 2 for a reaction to that, … counted up to the supervisor's
// MaxReactionDepth. A worker's reaction is an event whose idempotency
// key is a worker's (wire.WorkerKeyPrefix, which only workers and
// imports of their reactions may carry) and whose causation id is its
// source's. A cause no longer in the store (compacted) ends the count.
// The depth of ev is remembered for its own reactions' turn.
func (r *runner) reactionDepth(store *core.Store, ev *core.StoredEvent) int {
	limit := r.s.opts.MaxReactionDepth
	d := 0
	key, cause := ev.IdempotencyKey, ev.Header.CausationID
	for strings.HasPrefix(key, wire.WorkerKeyPrefix) && !cause.IsZero() && d < limit {
		d++
		if cd, ok := r.depths[cause]; ok {
			d = min(d+cd, limit)
			break
		}
		parent, err := store.Get(cause)
		if err != nil {
			break
		}
		key, cause = parent.IdempotencyKey, parent.Header.CausationID
	}
	if r.depths == nil || len(r.depths) >= 4096 {
		r.depths = make(map[core.EventID]int, 64)
	}
	r.depths[ev.Header.ID] = d
	return d
}

// fansOutAgain reports whether ev — one of the worker's own reactions
// (its key begins ownKeys) to cause, itself the worker's own reaction,
// which the plugin now answers with several reactions — has a sibling
// that fanned out too: another of the worker's own reactions to cause
// answered with several. Two of a generation fanning out is the log
// multiplying at every generation (a plugin doubling what it is handed
// back); one of them fanning out is a workflow's step (a chain with a
// notification beside each step, a step answered with several items).
// It reads the reactions' idempotency keys, which are exact — the
// cause's reactions are ownKeys+cause+":0", ":1", … (written as one
// batch, at most max_batch_events), and a sibling fanned out when its
// ":1" key is stored — so no event is read, however many or large the
// siblings are.
func fansOutAgain(store *core.Store, ev *core.StoredEvent, cause core.EventID, ownKeys string) bool {
	for i := 0; ; i++ {
		sibling, ok := store.KeyHolder(ownKeys + cause.String() + ":" + strconv.Itoa(i))
		if !ok {
			return false
		}
		if sibling == ev.Header.ID {
			continue
		}
		if _, fanned := store.KeyHolder(ownKeys + sibling.String() + ":1"); fanned {
			return true
		}
	}
}

// handler adapts the plugin to the cursor worker: for each batch it calls
// the plugin and writes the reactions it returns, those of each source
// event as one atomic batch with idempotency keys
// "worker:<cursor>:<source id>:<n>", through the tenant store's gates
// (action "plugin", the worker's principal, the plugin's Ref), waiting out
// a gate that asks to retry (plugins.AppendReactions).
//
// The worker holds its turn (t) from before it reads the batch until the
// handler returns (core.WorkerConfig.Turn).
func (r *runner) handler(store *core.Store, p *plugins.Plugin, t *turn) core.Handler {
	principal := policy.Principal{ID: "worker:" + r.def.Name, Tenant: r.def.Tenant, Roles: []string{"plugin"}}
	cursor := r.def.Cursor
	ownKeys := wire.WorkerKeyPrefix + cursor + ":" // the keys of this worker's own reactions
	return func(ctx context.Context, batch []core.StoredEvent) (core.WorkerAction, error) {
		action, rs, err := p.Handle(ctx, batch)
		// The server's turn covers reading the batch and the call; the
		// reactions are written in the tenant's turn alone, so that what
		// makes the writes wait (the tenant's rates, its policy, a gate
		// asking to retry) holds none of the other tenants' workers.
		t.pause()
		if err != nil {
			return core.Continue, err
		}
		// Each source's reactions are counted against the tenant's batch
		// bound before any is built, and built one source at a time: the
		// host holds at most one source's batch beside the answer.
		bySource := map[uint32][]int{}
		var order []uint32
		for i, re := range rs {
			if _, seen := bySource[re.Source]; !seen {
				order = append(order, re.Source)
			}
			bySource[re.Source] = append(bySource[re.Source], i)
		}
		fannedIn := map[core.EventID]bool{} // causes of the worker's own reactions this batch fans out on
		for _, src := range order {
			if err := r.checkBatch(len(bySource[src])); err != nil {
				return core.Continue, fmt.Errorf("reactions to %s: %w", batch[src].Header.ID, err)
			}
			sev := &batch[src]
			d := r.reactionDepth(store, sev)
			if d >= r.s.opts.MaxReactionDepth {
				return core.Continue, fmt.Errorf("reactions to %s: %w: it is the reaction %d generations deep to an event no worker wrote (at most %d, server.workers_max_reaction_depth): does the worker's region take in what its plugin writes?",
					sev.Header.ID, ErrReactionLoop, d, r.s.opts.MaxReactionDepth)
			}
			if n := len(bySource[src]); n > 1 && strings.HasPrefix(sev.IdempotencyKey, ownKeys) {
				// The worker fans out on its own reaction: a loop when
				// another of its own reactions to the same cause — itself
				// the worker's own — fanned out too (earlier in this
				// batch, or written before).
				if cause, err := store.Get(sev.Header.CausationID); err == nil && strings.HasPrefix(cause.IdempotencyKey, ownKeys) {
					if fannedIn[cause.Header.ID] || fansOutAgain(store, sev, cause.Header.ID, ownKeys) {
						return core.Continue, fmt.Errorf("reactions to %s: %w: the plugin answers the worker's own reaction with %d reactions, and another of the worker's own reactions to the same cause %s fanned out too: the log would multiply at every generation (a worker may fan out on one of its own reactions to a cause, not on several: give such steps workers of their own): does the worker's region take in what its plugin writes?",
							sev.Header.ID, ErrReactionLoop, n, sev.Header.CausationID)
					}
					fannedIn[cause.Header.ID] = true
				}
			}
		}
		wctx := core.WithPlugin(core.WithAction(ctx, core.ActionPlugin), p.Ref())
		wctx = policy.WithPrincipal(wctx, principal)
		for _, src := range order {
			sev := &batch[src]
			items := make([]core.BatchItem, 0, len(bySource[src]))
			for n, i := range bySource[src] {
				re := &rs[i]
				coord, err := core.NewCoordinate(string(re.Entity), string(re.Scope))
				if err != nil {
					return core.Continue, fmt.Errorf("plugin %s reaction %d: %w", p.Name(), i, err)
				}
				items = append(items, core.BatchItem{
					// The answer is the host's copy, kept by nothing
					// else: its payloads are written as they are.
					Coordinate: coord, Kind: core.Kind(re.Kind), Payload: re.Payload,
					Options: core.AppendOptions{
						CorrelationID:  sev.Header.CorrelationID,
						CausationID:    sev.Header.ID,
						IdempotencyKey: wire.WorkerKey(cursor, sev.Header.ID, n),
					},
				})
			}
			if err := r.admit(ctx, store, items); err != nil {
				return core.Continue, fmt.Errorf("reactions to %s: %w", sev.Header.ID, err)
			}
			if err := plugins.AppendReactions(wctx, store, items); err != nil {
				if writtenBefore(wctx, store, err, cursor, sev.Header.ID, items) {
					// A worker on this cursor handled the event before (one
					// deleted and made again, whose cursor starts over, or
					// one reset) and its plugin answers otherwise now: the
					// reactions written then stand, none is written twice,
					// and the worker goes on.
					r.logf("info", "reactions to %s were written before under cursor %q and are kept (the plugin now answers otherwise: %v)", sev.Header.ID, cursor, err)
					continue
				}
				return core.Continue, fmt.Errorf("reactions to %s: %w", sev.Header.ID, err)
			}
		}
		if action == abi.ActionStop {
			return core.Stop, nil
		}
		return core.Continue, nil
	}
}
