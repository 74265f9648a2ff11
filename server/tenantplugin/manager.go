package tenantplugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/ijson"
	"github.com/batpak-go/batpak/internal/durable"
	"github.com/batpak-go/batpak/internal/keylock"
	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/internal/shares"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/control"
)

// Revision is one kept version of a tenant's plugin, as the control
// plane records it.
type Revision = control.PluginVersion

// RejectedError refuses an uploaded plugin: its manifest, its pin, or
// the module as the plugin host checks and compiles it (Cause is then a
// *plugins.LoadError). Nothing is stored and the active version stays.
type RejectedError struct {
	Plugin string // "" when the manifest was refused before it named one
	Reason string
	Cause  error
}

// Error is one line of printable text: what a module put in its names
// (an import's, a start function's message) is escaped, so that a
// refusal cannot forge lines in a terminal or a log.
func (e *RejectedError) Error() string {
	msg := "plugin " + e.Plugin + " refused: " + e.Reason
	if e.Plugin == "" {
		// A manifest refused before it names a plugin.
		msg = "plugin manifest refused: " + e.Reason
	}
	if e.Cause != nil {
		msg += ": " + strings.TrimPrefix(e.Cause.Error(), "batpak: ")
	}
	return printable.String(msg)
}

// Unwrap returns the cause.
func (e *RejectedError) Unwrap() error { return e.Cause }

// LimitError refuses an upload over one of the tenant's plugin limits.
type LimitError struct {
	Quota string // the control.Quotas key: "max_module_bytes", "plugin_memory_bytes", …
	// Field is the manifest's limits member counted against Quota when
	// it is not the quota's own: "stack_bytes" or "table_elements" (in
	// bytes of the host's memory, 8 an element) against
	// plugin_memory_bytes. "" otherwise.
	Field string
	Limit int64 // the tenant's limit (milliseconds for plugin_call_ms)
	Asked int64
}

func (e *LimitError) Error() string {
	msg := fmt.Sprintf("the plugin asks %d, over the tenant's limit %d (quotas.%s)", e.Asked, e.Limit, e.Quota)
	switch e.Field {
	case "":
		return msg
	case "table_elements":
		return "limits.table_elements: " + msg + "; a table element costs the host 8 bytes"
	}
	return "limits." + e.Field + ": " + msg
}

// NotLoadedError: a kept plugin whose active version could not be
// loaded (at start: its stored module missing or damaged, or over the
// tenant's limits as they are now). Swap to a version, or push one. Its
// text is shown to the tenant: a module is named by its digest, never by
// the server's path (the server's log has the path).
type NotLoadedError struct {
	Plugin string
	Cause  error
}

func (e *NotLoadedError) Error() string {
	return "plugin " + e.Plugin + " is not loaded: " + strings.TrimPrefix(e.Cause.Error(), "batpak: ")
}

// Unwrap returns the cause.
func (e *NotLoadedError) Unwrap() error { return e.Cause }

// Options configure a Manager.
type Options struct {
	Dir   string         // <root>/plugins: the modules; required
	Plane *control.Plane // required
	// LocalResets makes Reset lift the quarantine on this node only and
	// record nothing: for a rolling upgrade of a cluster from a version
	// whose nodes cannot read a recorded reset (cluster.single_write_entries
	// sets it on a server).
	LocalResets bool
	// OnCheck, when set, is told how long each upload's check (Push: the
	// module's validation and compile) held its check slot, refused or
	// not: the server charges it to the tenant's upload budget, so that
	// modules slow to compile cost their compile time, not just their
	// bytes.
	OnCheck func(tenant string, held time.Duration)
	// Node names the cluster node this manager runs on ("" on a single
	// server): Status carries it, since each node counts the faults,
	// calls and log lines of the projections it serves itself.
	Node string
	// CacheDir keeps compiled modules, shared by every tenant's plugin
	// host: a module is compiled once whoever uploads it. "" keeps
	// each tenant's compiled code in memory only, and so does a CacheDir
	// that cannot be used (logged; the plugins load all the same).
	CacheDir string
	// CacheMaxBytes bounds the files under CacheDir: past it, after a
	// module is compiled, the oldest compiled modules are removed (see
	// pruneCache). Each distinct module a tenant uploads adds its
	// compiled form (up to about 40× the module's size), and a tenant can
	// upload and delete modules without end. 0 means
	// DefaultCacheMaxBytes (4 GiB); negative: no bound.
	CacheMaxBytes int64
	// Compiler, when set, compiles every module before a tenant's plugin
	// host does, bounded in time and memory (plugins.HostOptions.Compiler;
	// server/plugincompiler runs it in a child process): a module it
	// refuses is refused like any other (*RejectedError). It needs
	// CacheDir. nil compiles in the server's process, unbounded.
	Compiler func(ctx context.Context, cacheDir string, original, rewritten []byte) error
	// CompilerID names the Compiler's limits (plugins.HostOptions.CompilerID).
	CompilerID string
	// Ceilings are the server's plugin limits (server.plugins.*): no
	// tenant's quota raises a limit past them.
	Ceilings Limits
	// LogLines is how many recent log lines and faults each plugin's
	// status keeps (in memory). 0 means 100; range up to 10000.
	LogLines int
	Logger   *slog.Logger // the server's own messages; nil: slog.Default()
	// States is the tenants' stores' projection cache, if any: a deleted
	// tenant's states are dropped from it (Remove).
	States *StateCache
	// Checks is how many uploads and swaps check and compile a module at
	// once, all tenants together (a tenant's own changes run one at a
	// time). 0 means DefaultChecks; range 1..MaxChecks.
	Checks int
	// Running is how many plugin calls run at once, all tenants together
	// (hosted workers' handlers, and projection folds: a fold takes its
	// first call's slot before it reads its first event); a tenant runs
	// at most half of them (at least one). A call waits for its turn
	// before its timeout starts (plugins.HostOptions.Admit), so another
	// tenant's busy plugins slow a tenant's calls down but do not make
	// them time out and fault into quarantine. 0 means DefaultRunning();
	// range 1..MaxRunning.
	Running int
	// CodeBytes bounds the server's memory its tenants' loaded modules'
	// compiled code holds, all tenants together (each module charged its
	// plugins.CodeEstimate before it is compiled, then what it compiled
	// to, plugins.Plugin.CodeBytes, while it is loaded; a hot swap holds both
	// versions until the calls running on the old one return), a tenant
	// at most half: a load past it is refused (*RoomError), the plugins
	// loaded stay. 0 means DefaultCodeBytes (2 GiB); negative: no bound.
	CodeBytes int64
	// IdleBytes bounds the memory of the instances kept idle for the next
	// call (each up to its plugin's memory limit, a plugin at most its
	// pool's), all tenants together, a tenant at most half: past it an
	// instance a call hands back is closed instead, and the next call
	// instantiates one. 0 means DefaultIdleBytes (1 GiB); negative: no
	// bound.
	IdleBytes int64
	// Blobs, when set, is where modules are kept instead of Dir (a
	// cluster node passes its replicated blob store): Push puts a module
	// there before the control plane records its version, and a version
	// is loaded from there — at Open, and on Sync. This manager removes
	// no blob (the cluster node collects those no version names). nil:
	// <Dir>/<tenant>/<sha256>.wasm.
	Blobs Blobs
}

// Blobs keeps content-addressed bytes: a cluster node's replicated blob
// store (server/cluster Node.PutBlob, Node.Blob).
type Blobs interface {
	// Put stores data durably (on a cluster: committed on a majority of
	// nodes) and returns its hex SHA-256.
	Put(ctx context.Context, data []byte) (digest string, err error)
	// Get returns the bytes stored under digest; an error matching
	// fs.ErrNotExist when there are none (yet).
	Get(digest string) ([]byte, error)
}

// DefaultChecks and MaxChecks are Options.Checks' default and largest
// value.
const (
	DefaultChecks = 2
	MaxChecks     = 64
)

// DefaultRunning is Options.Running's default: the machine's processors,
// at least 2 (so that a tenant's half leaves room for another's). MaxRunning
// is its largest value.
func DefaultRunning() int { return max(runtime.NumCPU(), 2) }

// MaxRunning is Options.Running's largest value.
const MaxRunning = 1024

// Manager keeps the tenants' plugins: uploads, versions, swaps and
// projections. Safe for concurrent use; a tenant's changes (push, swap,
// delete) run one at a time, different tenants' at once (one tenant's
// slow upload holds no other tenant's).
type Manager struct {
	opts Options

	locks  keylock.Locks // a change lock per tenant changing now, or waiting to
	checks *shares.Pool  // a slot for each module being checked (Options.Checks), a share per tenant
	// running: a slot for each plugin call running (Options.Running), a
	// share per tenant.
	running *shares.Pool

	tmu      sync.RWMutex
	tenants  map[string]*tenantHost
	tempDirs []string // compile caches made when Options.CacheDir could not be used

	calls *shares.Pool // a slot for each projection call running (Calls), handed out fairly

	pruneMu    sync.Mutex // one pruneCache at a time
	pruneStamp string     // the cache's subdirectories when it was last walked (under pruneMu)

	// code and idle bound what the tenants' plugin hosts hold between
	// calls (Options.CodeBytes, IdleBytes).
	code, idle *residentBudget

	// The loads Open leaves to the background (loadAtStart): stopped and
	// waited for by Close.
	startCancel context.CancelFunc
	startLoads  sync.WaitGroup
}

// ErrLoading is the cause of a *NotLoadedError for a plugin the server
// has not loaded yet since it started: Open loads the tenants' plugins in
// the background (a module missing from the compile cache is compiled
// again, which can take seconds), so that one tenant's modules slow to
// compile do not keep the server, or the other tenants' plugins, from
// starting. Retry shortly (503 BUSY over HTTP); hosted workers wait
// (WaitLoaded).
var ErrLoading = errors.New("loading: the server loads its tenants' plugins after it starts; retry shortly")

// TenantCalls and Calls bound the projection reads at once: one
// tenant's (waiting or running), and all tenants' folds together. A read
// whose state is cached and current takes only one of its tenant's
// TenantCalls. A read with events to fold waits for its turn before it
// reads any (core.FoldAdmitter): one of the server's plugin call slots
// (Options.Running, handed out fairly by shares.New: a freed one goes to
// the waiting tenant holding the fewest, then to the one that used the
// slots least lately), in which its first plugin call runs, and one of
// the Calls folds in flight, kept to its end; each later call of the
// fold waits for a slot of its own, as any plugin call does (a fold of
// many calls takes turns with the others' calls). So a read waiting for
// its first call holds no events, the events folds hold while waiting
// for a later call are those of at most Calls folds, and a quick
// tenant's read waits for one hand-over of the call slots however many
// slow reads other tenants keep waiting. A read waits up to
// CallSlotWait for its slots; past it it fails with ErrBusy (503 BUSY
// over HTTP).
const (
	TenantCalls  = 4
	Calls        = 32
	CallSlotWait = time.Second
)

// ErrBusy: a projection found no slot within CallSlotWait (its
// tenant, or the server, runs as many plugin calls as it may). Retry.
var ErrBusy = errors.New("tenantplugin: too many projection calls at once; retry")

// tenantSlot takes one of the tenant's TenantCalls slots for one
// projection read, waiting up to wait within ctx; release gives it back.
func tenantSlot(ctx context.Context, th *tenantHost, wait time.Duration) (release func(), err error) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case th.calls <- struct{}{}:
		return func() { <-th.calls }, nil
	case <-t.C:
		return nil, ErrBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// foldTurn is one projection fold's turn (core.FoldAdmitter): a call slot
// and a place among the folds in flight, taken before the fold reads its
// first event. Its first plugin call runs in that slot (the host's Admit
// finds the turn in the call's context and takes the slot over:
// turnSlot); each later call of the fold waits for one of its own, as any
// call does, while the fold keeps its place. So a fold waiting for
// its first call holds no events, and a fold of many calls holds a slot
// per call, not for all of them.
type foldTurn struct {
	m        *Manager
	tenant   string
	ctx      context.Context
	deadline time.Time // the latest the turn is waited for

	mu   sync.Mutex
	slot func() // the call slot while held (nil: given back)
}

// foldTurnKey is the context key of the fold a plugin call belongs to.
type foldTurnKey struct{}

// turnSlot hands the call slot of the fold ctx belongs to, if it still
// holds it, to the call asking: the call's release gives it back, and
// the fold's later calls — another batch, or the next part of a batch
// the plugin's memory splits in several calls — take slots of their own.
func turnSlot(ctx context.Context) (release func(), ok bool) {
	f, _ := ctx.Value(foldTurnKey{}).(*foldTurn)
	if f == nil {
		return nil, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	release, f.slot = f.slot, nil
	return release, release != nil
}

// admit takes the fold's call slot, then its place among the folds in
// flight, within the turn's deadline: ErrBusy past it, ctx's error when
// it ends first. A place that is not free at once is waited for with no
// slot held (the slot is given back and taken again after it), so that
// slots never idle behind folds that wait for their next call.
func (f *foldTurn) admit() (release func(), err error) {
	busy := func() error {
		if f.ctx.Err() != nil {
			return f.ctx.Err()
		}
		return ErrBusy
	}
	take := func(p *shares.Pool) (func(), error) {
		left := time.Until(f.deadline)
		if left <= 0 {
			return nil, busy()
		}
		rel, err := p.Take(f.ctx, f.tenant, left)
		if err != nil {
			return nil, busy()
		}
		return rel, nil
	}
	slot, err := take(f.m.running)
	if err != nil {
		return nil, err
	}
	place, ok := f.m.calls.TryTake(f.tenant)
	if !ok {
		slot()
		if place, err = take(f.m.calls); err != nil {
			return nil, err
		}
		if slot, err = take(f.m.running); err != nil {
			place()
			return nil, err
		}
	}
	f.mu.Lock()
	f.slot = slot
	f.mu.Unlock()
	return func() { f.yield(); place() }, nil
}

// yield gives the fold's call slot back, if it holds it: its next calls
// wait for slots of their own.
func (f *foldTurn) yield() {
	f.mu.Lock()
	slot := f.slot
	f.slot = nil
	f.mu.Unlock()
	if slot != nil {
		slot()
	}
}

// lock takes the tenant's change lock and returns its unlock.
func (m *Manager) lock(tenant string) (unlock func()) { return m.locks.Lock(tenant) }

// checkWait is the longest an upload or a swap waits for a check slot
// (a variable for tests).
var checkWait = 30 * time.Second

// check takes one of the tenant's share of the slots to check and
// compile a module, then one of the manager's (Options.Checks): a tenant
// takes at most half of them (at least one), so that one tenant's modules
// slow to compile cannot hold every slot. An upload or swap (wait) waits
// at most checkWait within ctx, then gets a *core.RetryError; a load as
// changes are applied waits while ctx lasts. It returns the release.
func (m *Manager) check(ctx context.Context, tenant string, wait bool) (release func(), err error) {
	var within time.Duration
	if wait {
		within = checkWait
	}
	release, err = m.checks.Take(ctx, tenant, within)
	if reason, busy := m.checks.Refusal(err, "plugin checks (server.plugin_checks)"); busy {
		return nil, &core.RetryError{After: 5 * time.Second, Reason: reason}
	}
	return release, err
}

// tenantHost is one tenant's plugin host and its plugins.
type tenantHost struct {
	host    *plugins.Host
	mu      sync.RWMutex
	plugins map[string]*hosted
	calls   chan struct{} // a slot for each projection call running (TenantCalls)
}

// hosted is one of a tenant's plugins as loaded.
type hosted struct {
	p   atomic.Pointer[plugins.Plugin] // nil when it could not be loaded (err)
	err atomic.Pointer[error]          // why it could not be loaded
	rev atomic.Pointer[Revision]       // the version p runs

	requests, faults, calls atomic.Uint64
	callNanos               atomic.Int64
	// resets is the control plane's TenantPlugin.ResetSeq this node has
	// applied (see applyResets).
	resets   atomic.Uint64
	logs     *ring[LogLine]
	faultLog *ring[Fault]
	// loaded is closed once the plugin's first load was tried (at once,
	// but for the loads Open leaves to the background).
	loaded chan struct{}
	name   string // the plugin's name
}

// closedChan is the loaded of a plugin with nothing to wait for.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Open makes the manager and starts loading the active version of every
// tenant's plugins in the background (until one is loaded its projections
// fail with a *NotLoadedError wrapping ErrLoading; WaitLoaded and
// WaitStarted wait for them; a version that does not load is logged, and
// its projections fail with *NotLoadedError until another version is
// swapped in); it
// removes the modules of tenants the plane no longer holds, and the files
// no kept version refers to (an upload's temporary file, a module a
// change the server stopped in left).
func Open(ctx context.Context, opts Options) (*Manager, error) {
	if opts.Dir == "" || opts.Plane == nil {
		return nil, errors.New("tenantplugin: Options.Dir and Options.Plane are required")
	}
	var err error
	if opts.Ceilings, err = opts.Ceilings.WithDefaults(); err != nil {
		return nil, err
	}
	if opts.LogLines == 0 {
		opts.LogLines = 100
	}
	if opts.LogLines < 0 || opts.LogLines > 10000 {
		return nil, fmt.Errorf("server.plugins.log_lines_kept = %d: want 1..10000", opts.LogLines)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Checks == 0 {
		opts.Checks = DefaultChecks
	}
	if opts.CacheMaxBytes == 0 {
		opts.CacheMaxBytes = DefaultCacheMaxBytes
	}
	if opts.Checks < 1 || opts.Checks > MaxChecks {
		return nil, fmt.Errorf("server.plugin_checks = %d: want 1..%d", opts.Checks, MaxChecks)
	}
	if opts.Running == 0 {
		opts.Running = DefaultRunning()
	}
	if opts.CodeBytes == 0 {
		opts.CodeBytes = DefaultCodeBytes
	}
	if opts.IdleBytes == 0 {
		opts.IdleBytes = DefaultIdleBytes
	}
	if opts.Running < 1 || opts.Running > MaxRunning {
		return nil, fmt.Errorf("server.plugin_calls_running = %d: want 1..%d", opts.Running, MaxRunning)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	m := &Manager{opts: opts, tenants: map[string]*tenantHost{}, checks: shares.New(opts.Checks),
		running: shares.New(opts.Running), calls: shares.NewFair(Calls),
		code: newResidentBudget("server.plugin_code_bytes", opts.CodeBytes), idle: newResidentBudget("server.plugin_idle_bytes", opts.IdleBytes)}
	ents, err := os.ReadDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if _, ok := opts.Plane.Tenant(e.Name()); !ok || !e.IsDir() {
			if err := os.RemoveAll(filepath.Join(opts.Dir, e.Name())); err != nil {
				return nil, err
			}
			continue
		}
		// An upload the server stopped in left its temporary file; a
		// change it stopped in, a module no version refers to.
		m.gc(e.Name())
	}
	// The plugins load in the background, a tenant's one after another
	// and the tenants side by side, each taking its share of the check
	// slots (a module missing from the compile cache is compiled again):
	// one tenant's slow modules hold up that tenant's plugins, not the
	// server's start nor the other tenants'.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.startCancel = cancel
	for _, tenant := range opts.Plane.PluginTenants() {
		th, err := m.host(tenant)
		if err != nil {
			cancel()
			return nil, err
		}
		var hs []*hosted
		for _, tp := range opts.Plane.Plugins(tenant) {
			if _, ok := tp.ActiveVersion(); !ok {
				continue
			}
			h := m.newHosted(th, tp.Name)
			h.loaded = make(chan struct{})
			h.resets.Store(tp.ResetSeq) // a fresh load has nothing to lift
			loading := error(ErrLoading)
			h.err.Store(&loading)
			hs = append(hs, h)
		}
		if len(hs) == 0 {
			continue
		}
		m.startLoads.Add(1)
		go m.loadAtStart(bg, tenant, hs)
	}
	return m, nil
}

// loadAtStart loads the tenant's plugins hs that Open left loading, one
// at a time, each under the tenant's lock (so a change to the tenant's
// plugins waits for one load, not all of them) and as the control plane
// has it then (syncPlugin: its active version, or logged and answering
// *NotLoadedError; one deleted meanwhile is skipped), and lets each one's
// waiters go once its load was tried.
func (m *Manager) loadAtStart(ctx context.Context, tenant string, hs []*hosted) {
	defer m.startLoads.Done()
	for _, h := range hs {
		func() {
			defer close(h.loaded)
			defer m.lock(tenant)()
			for _, tp := range m.opts.Plane.Plugins(tenant) {
				if tp.Name == h.name && ctx.Err() == nil {
					m.syncPlugin(ctx, tenant, tp)
				}
			}
			if e := h.err.Load(); h.p.Load() == nil && e != nil && errors.Is(*e, ErrLoading) {
				err := errors.New("the plugin was deleted or replaced while the server loaded it")
				if ctx.Err() != nil {
					err = errors.New("the server stopped before it loaded the plugin")
				}
				h.err.Store(&err)
			}
		}()
	}
}

// WaitLoaded waits until the tenant's plugin name has been loaded (or its
// load tried) since the server started, or ctx ends (its error). A plugin
// it does not know, or one loaded already, returns at once.
func (m *Manager) WaitLoaded(ctx context.Context, tenant, name string) error {
	h := m.lookup(tenant, name)
	if h == nil || h.loaded == nil {
		return nil
	}
	select {
	case <-h.loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitStarted waits until every plugin Open left to the background has
// been loaded (or its load tried), or ctx ends (its error).
func (m *Manager) WaitStarted(ctx context.Context) error {
	done := make(chan struct{})
	go func() { m.startLoads.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the loads Open left to the background (waiting for the one
// running, within ctx) and unloads every plugin.
func (m *Manager) Close(ctx context.Context) error {
	if m.startCancel != nil {
		m.startCancel()
	}
	if err := m.WaitStarted(ctx); err != nil {
		m.opts.Logger.Warn("closing the plugins before a start-up load stopped", "error", err)
	}
	m.tmu.Lock()
	ts, tmp := m.tenants, m.tempDirs
	m.tenants, m.tempDirs = map[string]*tenantHost{}, nil
	m.tmu.Unlock()
	// Side by side: each host waits for its plugins' code to be unmapped
	// (a collection or two), and the collections serve them all.
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, th := range ts {
		wg.Go(func() {
			err := th.host.Close(ctx)
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, dir := range tmp {
		errs = append(errs, os.RemoveAll(dir))
	}
	return errors.Join(errs...)
}

// Ceilings returns the server's plugin limits.
func (m *Manager) Ceilings() Limits { return m.opts.Ceilings }

// Limits returns the tenant's plugin limits: its quotas lowered to the
// server's ceilings.
func (m *Manager) Limits(tenant string) Limits {
	t, _ := m.opts.Plane.Tenant(tenant)
	return under(m.opts.Ceilings, t.Quotas)
}

// host returns the tenant's plugin host, made on first use.
func (m *Manager) host(tenant string) (*tenantHost, error) {
	m.tmu.RLock()
	th := m.tenants[tenant]
	m.tmu.RUnlock()
	if th != nil {
		return th, nil
	}
	m.tmu.Lock()
	defer m.tmu.Unlock()
	if th = m.tenants[tenant]; th != nil {
		return th, nil
	}
	th = &tenantHost{plugins: map[string]*hosted{}, calls: make(chan struct{}, TenantCalls)}
	sink := logSink{find: func(name string) *ring[LogLine] {
		th.mu.RLock()
		defer th.mu.RUnlock()
		if h := th.plugins[name]; h != nil {
			return h.logs
		}
		return nil
	}}
	var compiler func(context.Context, string, []byte, []byte) error
	if m.opts.CacheDir != "" {
		compiler = m.opts.Compiler
	}
	admit := func(ctx context.Context) (func(), error) {
		if release, ok := turnSlot(ctx); ok {
			// A projection fold's first call: it runs in the slot the fold
			// took before it read its events (foldTurn).
			return release, nil
		}
		return m.running.Take(ctx, tenant, 0)
	}
	charge := m.charge(tenant)
	host, err := plugins.NewHost(plugins.HostOptions{CacheDir: m.opts.CacheDir, Compiler: compiler, CompilerID: m.opts.CompilerID, Logger: slog.New(sink), Admit: admit, Charge: charge})
	if err != nil && m.opts.CacheDir != "" {
		// A cache is never worth refusing the plugins over: compile into
		// a temporary one (the Compiler needs a directory to compile
		// into), removed when the server stops; failing that, in memory
		// in the server's process, unbounded.
		tmp, terr := os.MkdirTemp("", "batpak-plugin-cache-")
		if terr == nil {
			m.opts.Logger.Error("the plugin compile cache cannot be used: a tenant's plugins are compiled into a temporary one, again after a restart",
				"tenant", tenant, "dir", m.opts.CacheDir, "temporary", tmp, "error", err)
			m.tempDirs = append(m.tempDirs, tmp)
			host, err = plugins.NewHost(plugins.HostOptions{CacheDir: tmp, Compiler: compiler, CompilerID: m.opts.CompilerID, Logger: slog.New(sink), Admit: admit, Charge: charge})
		}
		if terr != nil || err != nil {
			if compiler != nil {
				// Compiling tenants' modules without the bound is not an option.
				return nil, fmt.Errorf("no compile cache to compile the tenant's plugins into (%s: %v; a temporary one: %v)", m.opts.CacheDir, err, terr)
			}
			m.opts.Logger.Error("the plugin compile cache cannot be used: a tenant's plugins are compiled in memory, again at every load",
				"tenant", tenant, "dir", m.opts.CacheDir, "error", err)
			host, err = plugins.NewHost(plugins.HostOptions{Logger: slog.New(sink), Admit: admit, Charge: charge})
		}
	}
	if err != nil {
		return nil, err
	}
	th.host = host
	m.tenants[tenant] = th
	return th, nil
}

func (m *Manager) newHosted(th *tenantHost, name string) *hosted {
	h := &hosted{logs: newRing[LogLine](m.opts.LogLines), faultLog: newRing[Fault](m.opts.LogLines), loaded: closedChan, name: name}
	th.mu.Lock()
	th.plugins[name] = h
	th.mu.Unlock()
	return h
}

func (th *tenantHost) get(name string) *hosted {
	th.mu.RLock()
	defer th.mu.RUnlock()
	return th.plugins[name]
}

func (m *Manager) lookup(tenant, name string) *hosted {
	m.tmu.RLock()
	th := m.tenants[tenant]
	m.tmu.RUnlock()
	if th == nil {
		return nil
	}
	return th.get(name)
}

func (m *Manager) modulePath(tenant, digest string) string {
	return filepath.Join(m.opts.Dir, tenant, digest+".wasm")
}

// owner is the principal a tenant's plugin acts as: its writes carry the
// tenant and the role writer, and the plugin's own identity beside
// (plugins.Plugin.Ref).
func owner(tenant, name string) policy.Principal {
	return policy.Principal{ID: "plugin:" + name, Tenant: tenant, Roles: []string{"writer"}}
}

// manifestFor parses a manifest as uploaded and fits its limits to the
// tenant's: a limit the manifest leaves out is the tenant's; one it asks
// over the tenant's is a *LimitError when strict (an upload), lowered to
// it otherwise (a stored version loaded under lowered quotas).
//
// An upload (strict) is also refused when its manifest is not exactly one
// JSON value, repeats a member (encoding/json would let the last one win)
// or asks a negative limits.timeout; a stored version, accepted before
// these checks, still loads.
func manifestFor(raw []byte, l Limits, strict bool) (plugins.Manifest, error) {
	var mf plugins.Manifest
	if strict {
		if err := ijson.Validate(raw, 0); err != nil {
			var je *ijson.Error
			if errors.As(err, &je) && je.Rule == ijson.RuleDuplicateKey {
				return mf, &RejectedError{Reason: fmt.Sprintf("the manifest repeats the member %s (at byte %d): give each member once", strconv.Quote(printable.Clip(je.Key, 64)), je.Offset)}
			}
			return mf, &RejectedError{Reason: "the manifest is not a plugin manifest", Cause: err}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&mf); err != nil {
		return mf, &RejectedError{Reason: "the manifest is not a plugin manifest", Cause: err}
	}
	if g := mf.Grants; (g.Clock || g.Random) && !l.AllowClockRandom {
		var asked []string
		if g.Clock {
			asked = append(asked, `"clock"`)
		}
		if g.Random {
			asked = append(asked, `"random"`)
		}
		return mf, &RejectedError{Plugin: mf.Name, Reason: fmt.Sprintf("the manifest grants %s, which this server does not give tenants' plugins (server.plugins.allow_clock_random is off): "+
			"each node of a cluster folds a projection itself, so its state would differ from node to node; drop the grant (the plugin then sees a fixed clock and a random source of zeros)", strings.Join(asked, " and "))}
	}
	if strict && mf.Limits.Timeout < 0 {
		return mf, &RejectedError{Plugin: mf.Name, Reason: fmt.Sprintf(`limits.timeout %s is negative: want a duration such as "250ms", or leave it out for the tenant's limit`, time.Duration(mf.Limits.Timeout))}
	}
	ml := &mf.Limits
	pages := uint32(l.MemoryBytes / pageBytes)
	type fit struct {
		quota      string
		field      string // a manifest member counted against quota (not its own)
		asked, lim int64
		set        func(int64)
		def        int64 // what an unset member asks, if not the tenant's limit
	}
	// The call stack and the tables a plugin's calls use are the host's
	// memory beside the plugin's linear memory (a call's stack up to
	// twice limits.stack_bytes, 8 bytes a table element): each is at most
	// the tenant's plugin_memory_bytes too.
	memLim := int64(pages) * pageBytes
	for _, f := range []fit{
		{"plugin_memory_bytes", "", int64(ml.MemoryPages) * pageBytes, int64(pages) * pageBytes, func(v int64) { ml.MemoryPages = uint32(v / pageBytes) }, 0},
		{"plugin_call_ms", "", time.Duration(ml.Timeout).Milliseconds(), l.CallTimeout.Milliseconds(), func(v int64) { ml.Timeout = plugins.Duration(time.Duration(v) * time.Millisecond) }, 0},
		{"plugin_output_bytes", "", int64(ml.MaxOutputBytes), l.OutputBytes, func(v int64) { ml.MaxOutputBytes = uint32(v) }, 0},
		{"plugin_log_lines", "", int64(ml.LogLines), int64(l.LogLines), func(v int64) { ml.LogLines = uint32(v) }, 0},
		{"plugin_log_bytes", "", int64(ml.LogBytes), l.LogBytes, func(v int64) { ml.LogBytes = uint32(v) }, 0},
		{"plugin_memory_bytes", "stack_bytes", int64(ml.StackBytes), memLim, func(v int64) { ml.StackBytes = uint32(v) }, defaultStackBytes},
		{"plugin_memory_bytes", "table_elements", int64(ml.TableElements) * tableElementBytes, memLim,
			func(v int64) { ml.TableElements = uint32(v / tableElementBytes) }, defaultTableElements * tableElementBytes},
	} {
		switch {
		case f.asked == 0 && f.def > 0:
			f.set(min(f.def, f.lim))
		case f.asked == 0:
			f.set(f.lim)
		case f.asked > f.lim && strict:
			return mf, &LimitError{Quota: f.quota, Field: f.field, Limit: f.lim, Asked: f.asked}
		case f.asked > f.lim:
			f.set(f.lim)
		}
	}
	// Idle pooled instances each keep their memory: at most
	// maxPoolSize per plugin, whatever the manifest asks.
	ml.PoolSize = min(max(ml.PoolSize, 0), maxPoolSize)
	// A plugin failing every call is quarantined after at most
	// maxFaults of them, whatever the manifest asks: each may have taken
	// a whole call timeout of the host's CPU.
	ml.MaxFaults = min(max(ml.MaxFaults, 0), maxFaults)
	// A handler's answer is held whole while its reactions are written:
	// at most maxReactions of them, whatever the manifest asks.
	if ml.MaxReactions == 0 || ml.MaxReactions > maxReactions {
		ml.MaxReactions = maxReactions
	}
	if l.CallTimeout < time.Millisecond || time.Duration(ml.Timeout) < time.Millisecond {
		ml.Timeout = plugins.Duration(max(l.CallTimeout, time.Millisecond))
	}
	if d := time.Duration(ml.Timeout); d > l.CallTimeout {
		ml.Timeout = plugins.Duration(l.CallTimeout)
	}
	return mf, nil
}

// The plugin host's defaults of limits.stack_bytes and
// limits.table_elements, and what a table element costs it.
const (
	defaultStackBytes    = 4 << 20
	defaultTableElements = 1 << 17
	tableElementBytes    = 8
)

// maxPoolSize bounds the idle instances a tenant's plugin keeps
// (plugins.Limits.PoolSize; its default).
const maxPoolSize = 8

// maxFaults bounds the consecutive faults before a tenant's plugin is
// quarantined (plugins.Limits.MaxFaults; its default is 5).
const maxFaults = 20

// maxReactions bounds the reactions one call of a tenant's handler may
// return (plugins.Limits.MaxReactions; its default).
const maxReactions = plugins.DefaultMaxReactions

// maxStoredModuleBytes is the most a stored module may hold: the highest
// server.plugins.max_module_bytes allows (a module accepted under a
// higher ceiling than today's still loads).
const maxStoredModuleBytes = 256 << 20

// loadInto loads rev's stored module into h (Load, or Swap when h runs a
// plugin already), its limits fitted to the tenant's now.
func (m *Manager) loadInto(ctx context.Context, tenant string, th *tenantHost, h *hosted, rev Revision) error {
	var wasm []byte
	var err error
	if m.opts.Blobs != nil {
		wasm, err = m.opts.Blobs.Get(rev.Digest)
	} else {
		wasm, err = durable.ReadFile(m.modulePath(tenant, rev.Digest), maxStoredModuleBytes)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &storedModuleError{fmt.Sprintf("its stored module (sha256 %s) is missing", rev.Digest), err}
	case err != nil:
		return &storedModuleError{fmt.Sprintf("its stored module (sha256 %s) cannot be read: %s", rev.Digest, osReason(err)), err}
	case plugins.Digest(wasm) != rev.Digest:
		return &storedModuleError{fmt.Sprintf("its stored module's SHA-256 is not its digest %s (damaged)", rev.Digest), nil}
	}
	mf, err := manifestFor(rev.Manifest, m.Limits(tenant), false)
	if err != nil {
		return err
	}
	return m.run(ctx, tenant, th, h, wasm, mf, rev)
}

// storedModuleError: a kept version's module file is missing, unreadable
// or damaged. Its text names the module by digest, never by the server's
// path (it is shown to the tenant); Cause keeps the file system's error
// for the server's log.
type storedModuleError struct {
	msg   string
	Cause error
}

func (e *storedModuleError) Error() string { return e.msg }

// osReason is err without the path an *os.PathError names.
func osReason(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// run makes h run wasm: a first load, or a hot swap.
func (m *Manager) run(ctx context.Context, tenant string, th *tenantHost, h *hosted, wasm []byte, mf plugins.Manifest, rev Revision) error {
	if p := h.p.Load(); p != nil {
		if err := p.Swap(ctx, wasm, mf); err != nil {
			return err
		}
		m.pruneCache()
		h.rev.Store(&rev)
		return nil
	}
	p, err := th.host.LoadFor(ctx, owner(tenant, mf.Name), wasm, mf)
	if err != nil {
		return err
	}
	m.pruneCache()
	h.rev.Store(&rev) // before p: a plugin seen loaded has its version
	h.p.Store(p)
	h.err.Store(nil)
	return nil
}

// Push checks, compiles and stores an uploaded plugin (manifest: the
// plugins.Manifest as JSON, with "sha256" the module's digest) and
// records it as a new version of the tenant's plugin named in the
// manifest, active when activate (a new plugin is always active). Errors:
// *LimitError (the module or a manifest limit over the tenant's),
// *RejectedError (manifest — over control.MaxPluginManifestBytes, checked
// before anything else —, pin, or the module as the plugin host refuses
// it), control.ErrExists (the version is kept with another module or
// another manifest: a version is immutable), control.ErrLimit (too many
// plugins or versions), control.ErrNotFound (no such tenant). On any
// error nothing is recorded, no module file is left behind and the active
// version stays. Pushing a kept version again (the same module and the
// same manifest, control.SamePluginManifest) only activates it.
func (m *Manager) Push(ctx context.Context, tenant string, manifest, wasm []byte, activate bool) (control.TenantPlugin, error) {
	if len(manifest) > control.MaxPluginManifestBytes {
		return control.TenantPlugin{}, &RejectedError{Reason: fmt.Sprintf("the manifest is %d bytes, at most %d", len(manifest), control.MaxPluginManifestBytes)}
	}
	l := m.Limits(tenant)
	if int64(len(wasm)) > l.ModuleBytes {
		return control.TenantPlugin{}, &LimitError{Quota: "max_module_bytes", Limit: l.ModuleBytes, Asked: int64(len(wasm))}
	}
	mf, err := manifestFor(manifest, l, true)
	if err != nil {
		return control.TenantPlugin{}, err
	}
	refuse := func(reason string) error { return &RejectedError{Plugin: mf.Name, Reason: reason} }
	if err := control.ValidPluginName(mf.Name); err != nil {
		return control.TenantPlugin{}, refuse(strings.TrimPrefix(err.Error(), "control: invalid: "))
	}
	if err := control.ValidPluginVersion(mf.Version); err != nil {
		return control.TenantPlugin{}, refuse(strings.TrimPrefix(err.Error(), "control: invalid: "))
	}
	digest := plugins.Digest(wasm)
	switch {
	case mf.SHA256 == "":
		return control.TenantPlugin{}, refuse(`the manifest pins no module: set "sha256" to the module's SHA-256 (` + digest + `)`)
	case !isHex64(mf.SHA256):
		return control.TenantPlugin{}, refuse(fmt.Sprintf("the manifest's sha256 %s is malformed: want 64 hex digits, the module's SHA-256 (%s)", strconv.Quote(printable.Clip(mf.SHA256, 80)), digest))
	case subtle.ConstantTimeCompare([]byte(strings.ToLower(mf.SHA256)), []byte(digest)) != 1:
		return control.TenantPlugin{}, refuse(fmt.Sprintf("the module's SHA-256 %s is not the manifest's sha256 %s", digest, mf.SHA256))
	}
	defer m.lock(tenant)()
	if _, ok := m.opts.Plane.Tenant(tenant); !ok {
		return control.TenantPlugin{}, fmt.Errorf("%w: tenant %q", control.ErrNotFound, tenant)
	}
	cur, exists := m.opts.Plane.Plugin(tenant, mf.Name)
	if old, ok := cur.Version(mf.Version); ok && old.Digest != digest {
		return control.TenantPlugin{}, fmt.Errorf("%w: plugin %s version %s is kept with another module (sha256 %s): give the new module a new version", control.ErrExists, mf.Name, mf.Version, old.Digest)
	} else if ok && !control.SamePluginManifest(old.Manifest, manifest) {
		// A version is immutable: its manifest (limits, grants) too.
		return control.TenantPlugin{}, control.ChangedManifestError(mf.Name, mf.Version)
	} else if ok {
		// Kept, but its stored module may be gone or damaged (here, or
		// with Options.Blobs on another node, which then cannot load
		// it): stored again, the same module pushed again repairs it.
		if err := m.store(ctx, tenant, digest, wasm); err != nil {
			return control.TenantPlugin{}, err
		}
		if !activate {
			return cur, nil
		}
		return m.swapLocked(ctx, tenant, mf.Name, mf.Version)
	}
	if exists && len(cur.Versions) > 0 && cur.Versions[0].Kind != string(mf.Kind) {
		return control.TenantPlugin{}, refuse(fmt.Sprintf("a %s plugin cannot have a %s version (use another name)", cur.Versions[0].Kind, mf.Kind))
	}
	if !exists && len(m.opts.Plane.Plugins(tenant)) >= l.Plugins {
		return control.TenantPlugin{}, fmt.Errorf("%w: the tenant has %d plugins, its limit (quotas.max_plugins)", control.ErrLimit, l.Plugins)
	}
	if len(cur.Versions) >= l.Versions {
		return control.TenantPlugin{}, fmt.Errorf("%w: plugin %s keeps %d versions, its limit (quotas.max_plugin_versions): delete one first", control.ErrLimit, mf.Name, l.Versions)
	}
	th, err := m.host(tenant)
	if err != nil {
		return control.TenantPlugin{}, err
	}
	rev := Revision{Version: mf.Version, Digest: digest, Kind: string(mf.Kind), Bytes: int64(len(wasm)), Manifest: json.RawMessage(manifest)}
	// Compile before anything is stored: a refused module leaves no trace.
	release, err := m.check(ctx, tenant, true)
	if err != nil {
		return control.TenantPlugin{}, err
	}
	defer release()
	if m.opts.OnCheck != nil {
		held := time.Now()
		defer func() { m.opts.OnCheck(tenant, time.Since(held)) }()
	}
	defer m.pruneCache() // what the check compiled, whatever became of it
	h := th.get(mf.Name)
	switch {
	case h == nil || h.p.Load() == nil:
		// A new plugin (or one whose active version did not load): load
		// it under its name; it serves once recorded.
		if h == nil {
			h = &hosted{logs: newRing[LogLine](m.opts.LogLines), faultLog: newRing[Fault](m.opts.LogLines), loaded: closedChan, name: mf.Name}
		}
		p, err := th.host.LoadFor(ctx, owner(tenant, mf.Name), wasm, mf)
		if err != nil {
			return control.TenantPlugin{}, rejected(mf.Name, err)
		}
		if err := m.store(ctx, tenant, digest, wasm); err != nil {
			_ = th.host.Unload(context.Background(), mf.Name)
			return control.TenantPlugin{}, err
		}
		tp, err := m.opts.Plane.AddPluginVersion(ctx, tenant, rev, mf.Name, activate, l.Plugins, l.Versions)
		if err != nil {
			_ = th.host.Unload(context.Background(), mf.Name)
			m.gc(tenant)
			return control.TenantPlugin{}, err
		}
		if tp.Active == mf.Version {
			stored, _ := tp.ActiveVersion()
			h.rev.Store(&stored) // before p: a plugin seen loaded has its version
			h.p.Store(p)
			h.err.Store(nil)
			th.mu.Lock()
			th.plugins[mf.Name] = h
			th.mu.Unlock()
		} else {
			_ = th.host.Unload(context.Background(), mf.Name)
		}
		return tp, nil
	case !activate:
		// Check the module without touching the running version: load it
		// under a scratch name (compiled code is cached for a later swap).
		scratch := mf
		scratch.Name = fmt.Sprintf("check.%d", time.Now().UnixNano())
		if _, err := th.host.LoadFor(ctx, owner(tenant, mf.Name), wasm, scratch); err != nil {
			return control.TenantPlugin{}, rejected(mf.Name, err)
		}
		_ = th.host.Unload(context.Background(), scratch.Name)
		if err := m.store(ctx, tenant, digest, wasm); err != nil {
			return control.TenantPlugin{}, err
		}
		tp, err := m.opts.Plane.AddPluginVersion(ctx, tenant, rev, mf.Name, false, l.Plugins, l.Versions)
		if err != nil {
			m.gc(tenant)
		}
		return tp, err
	default:
		// A new active version of a running plugin: a hot swap. Stored
		// first, so a recorded version always has its module.
		if err := m.store(ctx, tenant, digest, wasm); err != nil {
			return control.TenantPlugin{}, err
		}
		prev := h.rev.Load()
		if err := m.run(ctx, tenant, th, h, wasm, mf, rev); err != nil {
			m.gc(tenant)
			return control.TenantPlugin{}, rejected(mf.Name, err)
		}
		tp, err := m.opts.Plane.AddPluginVersion(ctx, tenant, rev, mf.Name, true, l.Plugins, l.Versions)
		if err != nil {
			if prev != nil {
				_ = m.loadInto(context.WithoutCancel(ctx), tenant, th, h, *prev)
			}
			m.gc(tenant)
			return control.TenantPlugin{}, err
		}
		stored, _ := tp.ActiveVersion()
		h.rev.Store(&stored)
		return tp, nil
	}
}

// rejected is the plugin host's refusal of a module as a *RejectedError;
// a load cut short by its caller's context is that context's error, and
// any other error is returned as it is.
func rejected(name string, err error) error {
	var le *plugins.LoadError
	if errors.As(err, &le) && errors.Is(le.Cause, context.Canceled) {
		// The caller's context ended (the server shutting down, the
		// client gone): nothing was decided about the module.
		return le.Cause
	}
	if errors.As(err, &le) {
		return &RejectedError{Plugin: name, Reason: le.Reason, Cause: le.Cause}
	}
	return err
}

// Swap makes a kept version of the tenant's plugin the active one, hot:
// calls in progress finish on the old version, new calls run the new one,
// and none fails for the swap. control.ErrNotFound for an unknown plugin
// or version; *RejectedError when the version's stored module is missing
// or damaged (named by digest, never by path) or the plugin host refuses
// it under the tenant's limits now. An error loading the stored module
// leaves the active version as it was.
func (m *Manager) Swap(ctx context.Context, tenant, name, version string) (control.TenantPlugin, error) {
	defer m.lock(tenant)()
	return m.swapLocked(ctx, tenant, name, version)
}

func (m *Manager) swapLocked(ctx context.Context, tenant, name, version string) (control.TenantPlugin, error) {
	tp, ok := m.opts.Plane.Plugin(tenant, name)
	if !ok {
		return tp, fmt.Errorf("%w: plugin %q", control.ErrNotFound, name)
	}
	rev, ok := tp.Version(version)
	if !ok {
		return tp, fmt.Errorf("%w: version %q of plugin %q", control.ErrNotFound, version, name)
	}
	th, err := m.host(tenant)
	if err != nil {
		return tp, err
	}
	h := th.get(name)
	if h == nil {
		h = m.newHosted(th, name)
	}
	if tp.Active == version && h.p.Load() != nil {
		return tp, nil
	}
	release, err := m.check(ctx, tenant, true)
	if err != nil {
		return tp, err
	}
	defer release()
	prev := h.rev.Load()
	if err := m.loadInto(ctx, tenant, th, h, rev); err != nil {
		var se *storedModuleError
		if errors.As(err, &se) {
			m.opts.Logger.Error("a tenant's kept plugin version cannot be swapped in", "tenant", tenant, "plugin", name, "version", version,
				"module", m.modulePath(tenant, rev.Digest), "error", se.Cause)
			return tp, &RejectedError{Plugin: name, Reason: "version " + version + ": " + se.msg + ": push it again"}
		}
		return tp, fmt.Errorf("tenantplugin: stored version %s of plugin %s: %w", version, name, rejected(name, err))
	}
	out, err := m.opts.Plane.SwapPlugin(ctx, tenant, name, version)
	if err != nil {
		if prev != nil {
			_ = m.loadInto(context.WithoutCancel(ctx), tenant, th, h, *prev)
		}
		return out, err
	}
	return out, nil
}

// Delete forgets the tenant's plugin (version "": all of it, unloaded) or
// one inactive version, and removes the modules no kept version refers
// to. Errors as control.Plane.DeletePlugin.
func (m *Manager) Delete(ctx context.Context, tenant, name, version string) error {
	defer m.lock(tenant)()
	if err := m.opts.Plane.DeletePlugin(ctx, tenant, name, version); err != nil {
		return err
	}
	if version == "" {
		m.tmu.RLock()
		th := m.tenants[tenant]
		m.tmu.RUnlock()
		if th != nil {
			th.mu.Lock()
			h := th.plugins[name]
			delete(th.plugins, name)
			th.mu.Unlock()
			if h != nil && h.p.Load() != nil {
				_ = th.host.Unload(context.Background(), name)
			}
		}
	}
	m.gc(tenant)
	return nil
}

// Sync brings the tenant's loaded plugins in line with the control
// plane: each kept plugin runs its active version (loaded, or hot-swapped
// to it), a plugin the plane no longer keeps is unloaded. It is what a
// node that did not make a change (a cluster follower, a later leader)
// calls when it learns of a plugin.* change (control.Options.OnChange;
// never from the hook itself: it compiles and takes the tenant's lock).
// A version that cannot be loaded (its module not on this node yet, or
// refused) is logged, and the plugin's projections fail with
// *NotLoadedError until a later Sync loads it. Idempotent.
func (m *Manager) Sync(ctx context.Context, tenant string) {
	defer m.lock(tenant)()
	kept := map[string]bool{}
	for _, tp := range m.opts.Plane.Plugins(tenant) {
		kept[tp.Name] = true
		if !m.syncPlugin(ctx, tenant, tp) {
			return
		}
	}
	m.tmu.RLock()
	th := m.tenants[tenant]
	m.tmu.RUnlock()
	if th == nil {
		return
	}
	th.mu.Lock()
	var gone []string
	for name, h := range th.plugins {
		if !kept[name] {
			delete(th.plugins, name)
			if h.p.Load() != nil {
				gone = append(gone, name)
			}
		}
	}
	th.mu.Unlock()
	for _, name := range gone {
		_ = th.host.Unload(context.Background(), name)
	}
}

// syncPlugin makes the tenant's plugin tp run its active version (loaded,
// or hot-swapped to it); false when it could not go on (no host, or ctx
// ended waiting for a check slot). Caller holds the tenant's lock.
func (m *Manager) syncPlugin(ctx context.Context, tenant string, tp control.TenantPlugin) bool {
	rev, ok := tp.ActiveVersion()
	if !ok {
		return true
	}
	th, err := m.host(tenant)
	if err != nil {
		m.opts.Logger.Error("a tenant's plugin host cannot be made", "tenant", tenant, "error", err)
		return false
	}
	h := th.get(tp.Name)
	if h == nil {
		h = m.newHosted(th, tp.Name)
	}
	if cur := h.rev.Load(); h.p.Load() != nil && cur != nil && cur.Version == rev.Version && cur.Digest == rev.Digest {
		applyResets(h, tp)
		return true
	}
	release, err := m.check(ctx, tenant, false)
	if err != nil {
		return false
	}
	err = m.loadInto(ctx, tenant, th, h, rev)
	release()
	applyResets(h, tp) // a fresh load has nothing to lift: marks them applied
	if err != nil {
		if ctx.Err() != nil {
			return false // the server stops: not the version's fault
		}
		m.opts.Logger.Error("a tenant's plugin version does not load on this node: its projections fail until it does",
			"tenant", tenant, "plugin", tp.Name, "version", rev.Version, "module", rev.Digest, "error", err)
		if h.p.Load() == nil {
			h.err.Store(&err)
		}
	}
	return true
}

// Reset lifts the quarantine of the tenant's plugin (and forgets its
// consecutive faults): it records the reset in the control plane
// (control.Plane.ResetPlugin, as the principal in ctx), so that every
// node of a cluster lifts its own (Sync), and applies it here; with
// Options.LocalResets it lifts this node's only and records nothing.
// control.ErrNotFound for an unknown plugin.
func (m *Manager) Reset(ctx context.Context, tenant, name string) (Status, error) {
	h := m.lookup(tenant, name)
	if _, ok := m.opts.Plane.Plugin(tenant, name); !ok || h == nil {
		return Status{}, fmt.Errorf("%w: plugin %q", control.ErrNotFound, name)
	}
	if m.opts.LocalResets {
		if p := h.p.Load(); p != nil {
			p.Reset()
		}
		return m.Status(tenant, name)
	}
	tp, err := m.opts.Plane.ResetPlugin(ctx, tenant, name)
	if err != nil {
		return Status{}, err
	}
	applyResets(h, tp)
	return m.Status(tenant, name)
}

// applyResets lifts h's quarantine when the control plane records a
// later reset of its plugin than the one h has applied. Each node counts a plugin's
// faults and quarantines it on its own; a reset, recorded once, reaches
// them all.
func applyResets(h *hosted, tp control.TenantPlugin) {
	for {
		seen := h.resets.Load()
		if tp.ResetSeq <= seen {
			return
		}
		if h.resets.CompareAndSwap(seen, tp.ResetSeq) {
			if p := h.p.Load(); p != nil {
				p.Reset()
			}
			return
		}
	}
}

// Remove closes and deletes the plugins of a tenant the control plane
// has deleted.
func (m *Manager) Remove(tenant string) error {
	defer m.lock(tenant)()
	if _, ok := m.opts.Plane.Tenant(tenant); ok {
		return fmt.Errorf("tenantplugin: tenant %q still exists", tenant)
	}
	m.tmu.Lock()
	th := m.tenants[tenant]
	delete(m.tenants, tenant)
	m.tmu.Unlock()
	if th != nil {
		_ = th.host.Close(context.Background())
	}
	if m.opts.States != nil {
		m.opts.States.Forget(tenant)
	}
	return os.RemoveAll(filepath.Join(m.opts.Dir, tenant))
}

// gc removes the tenant's module files no kept version refers to (none
// with Options.Blobs: the cluster node collects unreferenced blobs).
func (m *Manager) gc(tenant string) {
	if m.opts.Blobs != nil {
		return
	}
	keep := map[string]bool{}
	for _, tp := range m.opts.Plane.Plugins(tenant) {
		for _, v := range tp.Versions {
			keep[v.Digest+".wasm"] = true
		}
	}
	ents, _ := os.ReadDir(filepath.Join(m.opts.Dir, tenant))
	for _, e := range ents {
		if !keep[e.Name()] {
			_ = os.Remove(filepath.Join(m.opts.Dir, tenant, e.Name()))
		}
	}
}

// store writes the module to its content address, durably, unless it is
// there already.
func (m *Manager) store(ctx context.Context, tenant, digest string, data []byte) error {
	if m.opts.Blobs != nil {
		got, err := m.opts.Blobs.Put(ctx, data)
		if err != nil {
			return fmt.Errorf("tenantplugin: storing the module: %w", err)
		}
		if got != digest {
			return fmt.Errorf("tenantplugin: storing the module: stored as %s, not its digest %s", got, digest)
		}
		return nil
	}
	if err := durable.WriteFile(m.modulePath(tenant, digest), data); err != nil {
		return fmt.Errorf("tenantplugin: storing the module: %w", err)
	}
	return nil
}

// Plugin returns the tenant's plugin called name as loaded, running its
// active version, and that version's record: for hosting it elsewhere
// (a handler plugin's worker). The *plugins.Plugin stays the same across
// swaps (Swap replaces its module in place) until the plugin is deleted
// (Delete closes it) or its tenant removed; Revision is the version it
// ran when Plugin was called.
// control.ErrNotFound for an unknown plugin; *NotLoadedError when its
// active version could not be loaded.
func (m *Manager) Plugin(ctx context.Context, tenant, name string) (*plugins.Plugin, Revision, error) {
	_, p, rev, err := m.loaded(ctx, tenant, name)
	return p, rev, err
}

// loaded is Plugin with the plugin's record of calls, from one lookup (a
// deletion in between cannot leave one without the other).
func (m *Manager) loaded(ctx context.Context, tenant, name string) (*hosted, *plugins.Plugin, Revision, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, Revision{}, err
	}
	h := m.lookup(tenant, name)
	if h == nil {
		return nil, nil, Revision{}, fmt.Errorf("%w: plugin %q", control.ErrNotFound, name)
	}
	// rev is stored before p: a plugin seen loaded has its version.
	p := h.p.Load()
	if p == nil {
		err := errors.New("not loaded")
		if e := h.err.Load(); e != nil {
			err = *e
		}
		return nil, nil, Revision{}, &NotLoadedError{Plugin: name, Cause: err}
	}
	return h, p, *h.rev.Load(), nil
}

// Projected is a projection plugin's state of one entity.
type Projected struct {
	State      []byte // the plugin's state bytes (nil: no events)
	Found      bool   // the entity has events
	Generation uint64 // core.Store.EntityGeneration of the state
	Version    string // the plugin version that made it
	Digest     string // its module's SHA-256
	// Consistent is false when the plugin was swapped while projecting
	// (Version and Digest may then not be the state's).
	Consistent bool
}

// Project folds the entity's events (in store, the tenant's) through the
// tenant's projection plugin name, continuing from the store's projection
// cache. A plugin fault is a *plugins.PluginFault (recorded in the
// plugin's status: counted, and listed in its recent faults); other
// errors as Plugin, or the store's.
func (m *Manager) Project(ctx context.Context, store *core.Store, tenant, name, entity string) (Projected, error) {
	h, p, rev, err := m.loaded(ctx, tenant, name)
	if err != nil {
		return Projected{}, err
	}
	if rev.Kind != string(plugins.KindProjection) {
		return Projected{}, &RejectedError{Plugin: name, Reason: "it is a " + rev.Kind + " plugin, not a projection plugin"}
	}
	m.tmu.RLock()
	th := m.tenants[tenant]
	m.tmu.RUnlock()
	if th == nil {
		return Projected{}, fmt.Errorf("%w: plugin %q", control.ErrNotFound, name)
	}
	h.requests.Add(1)
	start := time.Now()
	release, err := tenantSlot(ctx, th, CallSlotWait)
	if err != nil {
		return Projected{}, err
	}
	defer release()
	// The fold is pinned to the version current when it starts, whose
	// name files the state in the projection cache; a swap during it ends
	// the fold (ErrSwapped, nothing cached) and it starts again on the new
	// version, so no state is filed under a version that did not make it.
	var (
		before, after string
		gen           uint64
		state         []byte
	)
	for try := 0; ; try++ {
		// A fold waits for its turn (a call slot) only when it has events
		// to read, before it reads them (foldTurn); a fold started again
		// after a swap waits for a turn of its own.
		turn := &foldTurn{m: m, tenant: tenant, ctx: ctx, deadline: start.Add(CallSlotWait)}
		if try > 0 {
			turn.deadline = time.Now().Add(CallSlotWait)
		}
		pr := plugins.Projection{P: p, Ctx: context.WithValue(ctx, foldTurnKey{}, turn)}.Pinned()
		before = p.Digest()
		gen, state, _, err = core.ProjectIfChanged(store, entity, countingProjection{Projection: pr, h: h, turn: turn}, ^uint64(0), core.Consistent())
		if !errors.Is(err, plugins.ErrSwapped) || try == maxSwapRetries {
			break
		}
	}
	if err != nil {
		var f *plugins.PluginFault
		if errors.As(err, &f) && f.Kind != plugins.FaultQuarantined {
			h.faults.Add(1)
			h.faultLog.add(Fault{Time: time.Now().UTC(), Version: f.Version, Kind: string(f.Kind), Message: cut(f.Cause.Error())})
		}
		return Projected{}, err
	}
	after = p.Digest()
	cur := h.rev.Load()
	return Projected{State: state, Found: gen != 0, Generation: gen, Version: cur.Version, Digest: after,
		Consistent: before == after && cur.Digest == after}, nil
}

// maxSwapRetries is how many times a projection read starts its fold
// again after a swap of the plugin ended it (see Project); past it the
// read fails with plugins.ErrSwapped.
const maxSwapRetries = 8

// countingProjection counts the plugin calls a projection makes and
// their time (a cached state makes none).
type countingProjection struct {
	plugins.Projection
	h    *hosted
	turn *foldTurn // the fold's turn (core.FoldAdmitter)
}

// AdmitFold implements core.FoldAdmitter: the fold's turn.
func (c countingProjection) AdmitFold() (release func(), err error) { return c.turn.admit() }

func (c countingProjection) ApplyBatch(state []byte, evs []core.StoredEvent) ([]byte, error) {
	t := time.Now()
	out, err := c.Projection.ApplyBatch(state, evs)
	if c.turn != nil {
		c.turn.yield() // a slot no call took (none ran): given back
	}
	c.h.calls.Add(1)
	c.h.callNanos.Add(int64(time.Since(t)))
	return out, err
}

// Status is a plugin's state as its tenant sees it.
type Status struct {
	control.TenantPlugin
	// Node is the cluster node whose counters, faults, logs and
	// quarantine these are (Options.Node; absent on a single server):
	// each node keeps its own.
	Node        string  `json:"node,omitempty"`
	Loaded      bool    `json:"loaded"`
	LoadError   string  `json:"load_error,omitempty"`
	Digest      string  `json:"digest,omitempty"` // the running module's SHA-256
	Quarantined bool    `json:"quarantined"`
	Limits      Limits  `json:"limits"` // the tenant's limits now
	Stats       Stats   `json:"stats"`
	Faults      []Fault `json:"faults"` // recent faults, oldest first
	// Logs are the plugin's recent log lines, oldest first
	// (Options.LogLines are kept; a restart empties them).
	Logs []LogLine `json:"logs"`
}

// Stats are a plugin's counters since the server started.
type Stats struct {
	Requests        uint64  `json:"requests"` // projections asked of it
	Calls           uint64  `json:"calls"`    // plugin calls they made (a cached state makes none)
	CallSeconds     float64 `json:"call_seconds"`
	Faults          uint64  `json:"faults"`
	LogLines        uint64  `json:"log_lines"`
	LogBytes        uint64  `json:"log_bytes"`
	DroppedLogLines uint64  `json:"dropped_log_lines"`
	DroppedLogBytes uint64  `json:"dropped_log_bytes"`
}

// Status returns the tenant's plugin's status. control.ErrNotFound for
// an unknown plugin.
func (m *Manager) Status(tenant, name string) (Status, error) {
	tp, ok := m.opts.Plane.Plugin(tenant, name)
	if !ok {
		return Status{}, fmt.Errorf("%w: plugin %q", control.ErrNotFound, name)
	}
	st := Status{TenantPlugin: tp, Node: m.opts.Node, Limits: m.Limits(tenant), Faults: []Fault{}, Logs: []LogLine{}}
	h := m.lookup(tenant, name)
	if h == nil {
		return st, nil
	}
	st.Faults, st.Logs = h.faultLog.list(), h.logs.list()
	st.Stats = Stats{Requests: h.requests.Load(), Calls: h.calls.Load(), CallSeconds: time.Duration(h.callNanos.Load()).Seconds(), Faults: h.faults.Load()}
	p := h.p.Load()
	if p == nil {
		if e := h.err.Load(); e != nil {
			st.LoadError = (*e).Error()
		}
		return st, nil
	}
	ps := p.Stats()
	st.Stats.LogLines, st.Stats.LogBytes, st.Stats.DroppedLogLines, st.Stats.DroppedLogBytes = ps.LogLines, ps.LogBytes, ps.DroppedLogLines, ps.DroppedLogBytes
	st.Loaded, st.Digest, st.Quarantined = true, p.Digest(), p.Quarantined()
	return st, nil
}

// Summary is one plugin in a tenant's list.
type Summary struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	Active      string `json:"active"`
	Digest      string `json:"digest"`
	Versions    int    `json:"versions"`
	Loaded      bool   `json:"loaded"`
	Quarantined bool   `json:"quarantined"`
}

// List summarises the tenant's plugins, by name.
func (m *Manager) List(tenant string) []Summary {
	out := []Summary{}
	for _, tp := range m.opts.Plane.Plugins(tenant) {
		rev, _ := tp.ActiveVersion()
		s := Summary{Name: tp.Name, Kind: rev.Kind, Active: tp.Active, Digest: rev.Digest, Versions: len(tp.Versions)}
		if h := m.lookup(tenant, tp.Name); h != nil {
			if p := h.p.Load(); p != nil {
				s.Loaded, s.Quarantined = true, p.Quarantined()
			}
		}
		out = append(out, s)
	}
	return out
}

// ETag is the entity tag of a projected state: the entity's generation,
// the module's digest and a digest of the state itself (so a redaction,
// which changes a state but not the generation, changes the tag).
func ETag(p Projected) string {
	sum := sha256.Sum256(p.State)
	return fmt.Sprintf(`"g%d-%s-%s"`, p.Generation, p.Digest[:16], hex.EncodeToString(sum[:8]))
}

// isHex64 says whether s is a SHA-256 as hex: 64 hex digits.
func isHex64(s string) bool {
	_, err := hex.DecodeString(s)
	return len(s) == 64 && err == nil
}
