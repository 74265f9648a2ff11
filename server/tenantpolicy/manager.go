package tenantpolicy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/durable"
	"github.com/batpak-go/batpak/internal/shares"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
	"github.com/batpak-go/batpak/server/control"
)

// RejectedError refuses a bundle that does not compile or whose Rego
// tests fail; the active revision stays.
type RejectedError struct {
	// Stage is "compile" (the bundle does not load or compile) or "tests"
	// (it compiles, and a test failed or erred).
	Stage string
	// Errors lists the compile errors ("file:line: code: message") or the
	// failed tests ("data.pkg.test_name: failed", or with the error).
	Errors []string
}

func (e *RejectedError) Error() string {
	what := "does not compile"
	if e.Stage == "tests" {
		what = "fails its tests"
	}
	return "policy bundle " + what + ": " + strings.Join(e.Errors, "; ")
}

// Bounds of the bundles checked at once (Options.Checks).
const (
	DefaultChecks = 2
	MaxChecks     = 64
)

// Options configure a Manager.
type Options struct {
	Dir    string         // where the bundles are kept (<root>/policies); required
	Plane  *control.Plane // required
	Limits Limits
	// Timeout bounds one evaluation of a tenant's bundle (as the platform
	// policy's, opa.Options.Timeout); 0 means 1s.
	Timeout time.Duration
	// MaxConcurrent bounds the policy evaluations running at once, both
	// layers together (the others wait their turn); 0 means GOMAXPROCS.
	// One tenant's evaluations take at most half of them (at least one),
	// so that a tenant whose policy is slow cannot hold every slot; and
	// the tenants whose evaluations kept the slots busy lately share half
	// of them, however many they are; a slot that frees goes to the
	// waiting tenant holding the fewest, then to the one whose
	// evaluations held the slots least lately (shares.Pool). An
	// evaluation that finds no slot within slotWait is refused with a
	// *core.RetryError (503 BUSY over HTTP), nothing written.
	MaxConcurrent int
	Logger        *slog.Logger // nil: slog.Default()
	// DecisionDir is where the tenants' decision logs are kept (see the
	// package documentation); "" means "decisions" beside Dir.
	DecisionDir string
	// DecisionLogSize is how many decisions (denials and sampled allows)
	// each tenant's decision log keeps: a query sees exactly the newest
	// this many (within DecisionLogBytes). 0 means
	// DefaultDecisionLogSize (1000); negative: no log. Range up to
	// 100000.
	DecisionLogSize int
	// DecisionLogBytes bounds each tenant's decision log: a query sees
	// the newest decisions whose JSON lines together take at most this
	// many bytes, and the log takes at most 5/4 of it on disk (plus one
	// decision). 0 means DefaultDecisionLogBytes (4 MiB); range
	// 64 KiB..1 GiB.
	DecisionLogBytes int64
	// DecisionPrincipalRefill paces what one principal (an API key, or a
	// JWT's subject) adds to its tenant's decision log, so that no writer
	// can push older entries — its own earlier denials among them — out
	// of the log by provoking denials: a principal adds at most an eighth
	// of DecisionLogSize entries and of DecisionLogBytes bytes at once,
	// and its share refills over this long. Its decisions past its share
	// are counted (DecisionCounts.Suppressed), not recorded: their
	// denials carry no decision id, and the principal's next recorded
	// decision says how many it had suppressed before it. 0 means 10
	// minutes; negative: no pacing.
	DecisionPrincipalRefill time.Duration
	// DecisionQueue bounds the decisions waiting for the decision log's
	// writer (also bounded by DecisionQueueMaxBytes; one tenant holds at
	// most a quarter of it): the write path never waits for the disk; a
	// decision past the bound is dropped and
	// counted (DecisionCounts.Dropped, DecisionStats.Dropped). 0 means
	// DefaultDecisionQueue (4096); range 1..1048576.
	DecisionQueue int
	// CheckTimeout bounds the checks of one bundle — its Rego tests and
	// its compilation together — at upload and at load: a bundle still
	// checking then is refused (*RejectedError naming
	// policy_bundle_check_timeout). A tenant's uploads run one at a
	// time, so this is also the longest one upload holds the tenant's
	// next. 0 means 30s; range 1s..10m.
	CheckTimeout time.Duration
	// Checks bounds the bundles being checked at once (uploads and loads
	// together); one tenant's take at most half of them (at least one),
	// so that a tenant whose bundles are slow to check cannot hold up
	// another's upload. An upload that finds neither its tenant's
	// previous change finished nor a slot within uploadWait is refused
	// with a *core.RetryError (503 BUSY over HTTP), nothing changed. 0
	// means DefaultChecks (2); range 1..MaxChecks.
	Checks int
	// DecisionMaxBytes bounds what a decision log entry keeps of each
	// input field and of each reason's message and context: exactly this
	// many bytes of JSON are kept, a longer one is replaced by a string
	// noting its size. 0 means DefaultDecisionMaxBytes (4096); range
	// 256..1MiB.
	DecisionMaxBytes int
	// Blobs, when set, is where accepted bundles are kept instead of Dir
	// (a cluster node passes its replicated blob store): Push puts the
	// bytes there before the control plane names the revision, and a
	// revision is loaded from there — at Open, on Refresh, and by the
	// first write that finds the active revision not loaded. Dir then
	// holds only the temporary directories of bundles being checked.
	// nil: <Dir>/<tenant>/<revision>.tar.gz.
	Blobs Blobs
	// Isolate runs everything of a tenant's bundle — its checks at upload
	// and at load, and every evaluation — in child processes: this binary
	// again, whose main must call RunChild first (else Open fails with
	// ErrSandboxUnavailable). A tenant's Rego can ask for time and memory
	// that no check inside OPA bounds (the type checker and unification
	// walk a value built by doubling in full: a 600-byte bundle can hold a
	// core for minutes, or ask for more memory than the machine has); a
	// child is killed one second past Timeout (an evaluation) or
	// CheckTimeout (a check or load), or when its Go runtime holds more
	// than MemoryBytes, and the write is denied with POLICY_ERROR (the
	// upload refused) saying which. Checks checker children and MaxConcurrent
	// evaluation children run, each keeping at most 32 compiled revisions
	// (the least recently used is compiled again when next needed); a
	// killed child is replaced at the next request. See the package
	// documentation.
	Isolate bool
	// MemoryBytes bounds each child's Go runtime (heap, stacks and the
	// runtime's own) with Isolate. 0 means DefaultMemoryBytes (1 GiB);
	// range MinMemoryBytes..MaxMemoryBytes.
	MemoryBytes int64
	// OnCheck, when set, is told how long each check a tenant asked for
	// held its check slot, refused or accepted: a Push's tests and
	// compilation, and the compilation of the stored revision a Rollback
	// makes active when it is no longer compiled. The server charges it
	// to the tenant's upload budget (as a plugin's compile), so that a
	// small bundle whose tests run to CheckTimeout costs its check time,
	// not just its bytes. Loads the tenant did not ask for (at Open, on
	// Refresh, by a write finding its revision not loaded) are not
	// reported. Called on the pushing or rolling-back goroutine, before
	// it returns.
	OnCheck func(tenant string, held time.Duration)
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

// loaded is one revision of a tenant's bundle, compiled.
type loaded struct {
	adm   *policy.Admitter // nil when err is set
	iso   *isolatedGate    // the sandbox's gate behind adm (nil: judged in this process)
	paths []string         // the input paths the bundle reads
	err   error            // why the revision could not be loaded
}

// Manager keeps the tenants' bundles and makes their admissions. Safe for
// concurrent use; uploads and rollbacks run one at a time.
type Manager struct {
	opts   Options
	slots  *shares.Pool // evaluations running (Options.MaxConcurrent), a share per tenant
	checks *shares.Pool // bundles being checked (Options.Checks), a share per tenant
	// changes: one Push, Rollback or Remove of a tenant at a time.
	changes tenantLocks

	gmu   sync.RWMutex
	gates map[string]map[string]*loaded // tenant → revision → compiled bundle

	// loads: one load of a tenant's revisions learnt from the control
	// plane at a time (Refresh, and a write finding its revision not
	// loaded).
	loads tenantLocks

	sb *sandbox // nil: bundles are checked and evaluated in this process

	dlog    *decisionStore // nil: no decision log
	lmu     sync.Mutex
	tcounts map[string]*tenantCounts
	paces   map[string]*principalPace // guarded by lmu: principals' shares of their tenant's log (decisions.go)
	// pacesForgot is when pace last forgot the full shares (guarded by lmu).
	pacesForgot time.Time
	recorded    [2][2]atomic.Uint64 // [layer][result] decisions queued
}

// Open makes the manager and loads the active revision of every tenant
// (see the package documentation); it removes the files of tenants the
// plane no longer holds and the leftovers of interrupted uploads.
func Open(ctx context.Context, opts Options) (*Manager, error) {
	if opts.Dir == "" || opts.Plane == nil {
		return nil, errors.New("tenantpolicy: Options.Dir and Options.Plane are required")
	}
	var err error
	if opts.Limits, err = opts.Limits.WithDefaults(); err != nil {
		return nil, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.DecisionPrincipalRefill == 0 {
		opts.DecisionPrincipalRefill = 10 * time.Minute
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = runtime.GOMAXPROCS(0)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DecisionLogSize == 0 {
		opts.DecisionLogSize = DefaultDecisionLogSize
	}
	if opts.CheckTimeout == 0 {
		opts.CheckTimeout = 30 * time.Second
	}
	if opts.Checks == 0 {
		opts.Checks = DefaultChecks
	}
	if opts.Checks < 1 || opts.Checks > MaxChecks {
		return nil, fmt.Errorf("policy bundle checks = %d: want 1..%d", opts.Checks, MaxChecks)
	}
	if opts.CheckTimeout < time.Second || opts.CheckTimeout > 10*time.Minute {
		return nil, fmt.Errorf("policy bundle check timeout = %v: want 1s..10m", opts.CheckTimeout)
	}
	if opts.DecisionMaxBytes == 0 {
		opts.DecisionMaxBytes = DefaultDecisionMaxBytes
	}
	if opts.MemoryBytes == 0 {
		opts.MemoryBytes = DefaultMemoryBytes
	}
	if opts.MemoryBytes < MinMemoryBytes || opts.MemoryBytes > MaxMemoryBytes {
		return nil, fmt.Errorf("policy memory = %d bytes: want %d..%d", opts.MemoryBytes, int64(MinMemoryBytes), int64(MaxMemoryBytes))
	}
	if opts.DecisionMaxBytes < 256 || opts.DecisionMaxBytes > 1<<20 {
		return nil, fmt.Errorf("policy decision max bytes = %d: want 256..1MiB", opts.DecisionMaxBytes)
	}
	if opts.DecisionLogSize > 100000 {
		return nil, fmt.Errorf("policy decision log size = %d: want at most 100000 (negative: none)", opts.DecisionLogSize)
	}
	if opts.DecisionLogBytes == 0 {
		opts.DecisionLogBytes = DefaultDecisionLogBytes
	}
	if opts.DecisionLogBytes < 64<<10 || opts.DecisionLogBytes > 1<<30 {
		return nil, fmt.Errorf("policy decision log bytes = %d: want 64KiB..1GiB", opts.DecisionLogBytes)
	}
	if opts.DecisionQueue == 0 {
		opts.DecisionQueue = DefaultDecisionQueue
	}
	if opts.DecisionQueue < 1 || opts.DecisionQueue > 1<<20 {
		return nil, fmt.Errorf("policy decision queue = %d: want 1..1048576", opts.DecisionQueue)
	}
	if opts.DecisionDir == "" {
		opts.DecisionDir = filepath.Join(filepath.Dir(filepath.Clean(opts.Dir)), "decisions")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	m := &Manager{opts: opts, slots: shares.New(opts.MaxConcurrent), checks: shares.New(opts.Checks),
		gates: map[string]map[string]*loaded{}, tcounts: map[string]*tenantCounts{}}
	if opts.Isolate {
		if m.sb, err = newSandbox(opts.MemoryBytes, opts.Dir, opts.MaxConcurrent, opts.Checks); err != nil {
			return nil, err
		}
	}
	for _, dir := range []string{opts.Dir, opts.DecisionDir} {
		ents, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		for _, e := range ents {
			if _, ok := opts.Plane.Tenant(e.Name()); !ok || !e.IsDir() {
				if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
					return nil, err
				}
			}
		}
	}
	if opts.DecisionLogSize > 0 {
		var err error
		if m.dlog, err = newDecisionStore(opts.DecisionDir, opts.DecisionLogSize, opts.DecisionLogBytes, opts.DecisionQueue, opts.Logger,
			func(t string) bool { _, ok := opts.Plane.Tenant(t); return ok }); err != nil {
			return nil, err
		}
	}
	for tenant, rev := range opts.Plane.PolicyTenants() {
		l := m.loadStored(ctx, ctx, tenant, rev, false)
		if l.err != nil {
			opts.Logger.Error("a tenant's active policy bundle does not load: its writes are refused (POLICY_ERROR) until a bundle is pushed or rolled back to",
				"tenant", tenant, "revision", rev, "error", l.err)
		}
		m.put(tenant, rev, l)
	}
	return m, nil
}

// Remove deletes the bundles of a tenant the control plane has deleted
// (control.Plane.DeleteTenant first) and forgets their compiled forms.
// What a crash leaves behind Open removes.
func (m *Manager) Remove(tenant string) error {
	release, err := m.changes.lock(context.Background(), tenant)
	if err != nil {
		return err
	}
	defer release()
	if _, ok := m.opts.Plane.Tenant(tenant); ok {
		return fmt.Errorf("tenantpolicy: tenant %q still exists", tenant)
	}
	m.gmu.Lock()
	delete(m.gates, tenant)
	m.gmu.Unlock()
	m.lmu.Lock()
	delete(m.tcounts, tenant)
	for k := range m.paces {
		if strings.HasPrefix(k, tenant+"\x00") {
			delete(m.paces, k)
		}
	}
	m.lmu.Unlock()
	if m.dlog != nil {
		if err := m.dlog.remove(tenant); err != nil {
			return err
		}
	}
	return os.RemoveAll(filepath.Join(m.opts.Dir, tenant))
}

// Close writes the decisions still queued and stops the decision log's
// writer; decisions made after Close are dropped (counted). Safe to call
// more than once.
func (m *Manager) Close() {
	if m.sb != nil {
		m.sb.close()
	}
	if m.dlog != nil {
		m.dlog.close()
	}
}

// Limits returns the manager's bundle limits (defaults filled in).
func (m *Manager) Limits() Limits { return m.opts.Limits }

func (m *Manager) bundlePath(tenant, rev string) string {
	return filepath.Join(m.opts.Dir, tenant, rev+".tar.gz")
}

// Policies returns the tenant's revisions and the active one.
func (m *Manager) Policies(tenant string) control.TenantPolicy { return m.opts.Plane.Policy(tenant) }

// Push checks, tests, compiles and stores the bundle read from r (a
// gzip-compressed tar) and makes it the tenant's active revision. It
// returns *BundleError for an archive it refuses (Limit
// "max_bundle_bytes" when r holds more than Limits.MaxBundleBytes),
// *RejectedError for a bundle that does not compile or fails its tests,
// and the control plane's errors (control.ErrNotFound for an unknown
// tenant). On any error the active revision is unchanged. Pushing the
// active bundle again changes nothing (unless its stored file did not
// load at Open: then it is checked and stored again).
func (m *Manager) Push(ctx context.Context, tenant string, r io.Reader) (control.TenantPolicy, error) {
	max := m.opts.Limits.MaxBundleBytes
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return control.TenantPolicy{}, err
	}
	if int64(len(data)) > max {
		return control.TenantPolicy{}, &BundleError{Detail: fmt.Sprintf("larger than %d bytes (max_bundle_bytes)", max), Limit: "max_bundle_bytes", Value: max}
	}
	sum := sha256.Sum256(data)
	rev := hex.EncodeToString(sum[:])
	wait, end, err := m.beginChange(ctx, tenant)
	if err != nil {
		return control.TenantPolicy{}, err
	}
	defer end()
	if _, ok := m.opts.Plane.Tenant(tenant); !ok {
		return control.TenantPolicy{}, fmt.Errorf("%w: tenant %q", control.ErrNotFound, tenant)
	}
	if m.opts.Plane.ActivePolicy(tenant) == rev {
		if l := m.get(tenant, rev); l != nil && l.err == nil {
			// Compiled here, but its stored bytes may be gone or damaged
			// (here, or with Options.Blobs on another node, which then
			// cannot load it; nor can a restart): stored again, the same
			// bundle pushed again repairs them.
			if err := m.store(ctx, tenant, rev, data); err != nil {
				return control.TenantPolicy{}, err
			}
			return m.opts.Plane.Policy(tenant), nil
		}
		// The active revision did not load at start (its file missing or
		// damaged): the same bundle pushed again repairs it.
	}
	l, err := m.check(ctx, wait, tenant, data, true, true, m.opts.Limits)
	if err != nil {
		return control.TenantPolicy{}, err
	}
	if err := m.store(ctx, tenant, rev, data); err != nil {
		return control.TenantPolicy{}, err
	}
	return m.activate(ctx, tenant, rev, l, func() (control.TenantPolicy, error) {
		tp, err := m.opts.Plane.ActivatePolicy(ctx, tenant, rev, int64(len(data)), m.opts.Limits.MaxRevisions)
		if err == nil {
			m.gc(tenant, tp)
		}
		return tp, err
	})
}

// gc removes the stored bundles of the tenant's revisions tp no longer
// lists (dropped past Limits.MaxRevisions), and what a push that failed
// after storing its bundle left. With Options.Blobs the bundles are
// blobs, which the cluster node collects itself. Called under the
// tenant's change lock.
func (m *Manager) gc(tenant string, tp control.TenantPolicy) {
	if m.opts.Blobs != nil {
		return
	}
	keep := map[string]bool{}
	for _, r := range tp.Revisions {
		keep[r.Revision+".tar.gz"] = true
	}
	ents, _ := os.ReadDir(filepath.Join(m.opts.Dir, tenant))
	for _, e := range ents {
		if name := e.Name(); e.Type().IsRegular() && strings.HasSuffix(name, ".tar.gz") && !keep[name] {
			_ = os.Remove(filepath.Join(m.opts.Dir, tenant, name))
		}
	}
}

// Rollback makes an earlier revision of the tenant's bundle active again
// (its tests are not run again: they passed at upload).
// control.ErrNotFound when the tenant has no such revision; an error
// loading the stored bundle leaves the active revision as it was.
func (m *Manager) Rollback(ctx context.Context, tenant, rev string) (control.TenantPolicy, error) {
	if err := control.ValidPolicyRevision(rev); err != nil {
		return control.TenantPolicy{}, err
	}
	wait, end, err := m.beginChange(ctx, tenant)
	if err != nil {
		return control.TenantPolicy{}, err
	}
	defer end()
	tp := m.opts.Plane.Policy(tenant)
	if tp.Active == rev {
		return tp, nil
	}
	known := false
	for _, r := range tp.Revisions {
		known = known || r.Revision == rev
	}
	if !known {
		return control.TenantPolicy{}, fmt.Errorf("%w: policy revision %q of tenant %q", control.ErrNotFound, rev, tenant)
	}
	l := m.get(tenant, rev) // the revision just replaced is still compiled
	if l == nil || l.err != nil {
		l = m.loadStored(ctx, wait, tenant, rev, true)
	}
	if l.err != nil {
		var re *core.RetryError
		if errors.As(l.err, &re) {
			return control.TenantPolicy{}, l.err
		}
		return control.TenantPolicy{}, fmt.Errorf("tenantpolicy: stored revision %s: %w", rev, l.err)
	}
	return m.activate(ctx, tenant, rev, l, func() (control.TenantPolicy, error) {
		return m.opts.Plane.RollbackPolicy(ctx, tenant, rev)
	})
}

// activate makes l reachable before the control plane names it active
// (so no write ever finds the active revision missing), records, and
// then drops the compiled revisions that are neither active nor the one
// just replaced (a write that read the previous revision may still be
// looking it up).
func (m *Manager) activate(ctx context.Context, tenant, rev string, l *loaded, record func() (control.TenantPolicy, error)) (control.TenantPolicy, error) {
	prev := m.opts.Plane.ActivePolicy(tenant)
	m.put(tenant, rev, l)
	tp, err := record()
	keep := map[string]bool{prev: true, m.opts.Plane.ActivePolicy(tenant): true}
	m.gmu.Lock()
	for r := range m.gates[tenant] {
		if !keep[r] {
			delete(m.gates[tenant], r)
		}
	}
	m.gmu.Unlock()
	return tp, err
}

func (m *Manager) put(tenant, rev string, l *loaded) {
	if m.sb != nil {
		m.sb.warm()
	}
	m.gmu.Lock()
	if m.gates[tenant] == nil {
		m.gates[tenant] = map[string]*loaded{}
	}
	m.gates[tenant][rev] = l
	m.gmu.Unlock()
}

func (m *Manager) get(tenant, rev string) *loaded {
	m.gmu.RLock()
	defer m.gmu.RUnlock()
	return m.gates[tenant][rev]
}

// check extracts data to a temporary directory, runs its tests (when
// test) and compiles it — in a sandbox's checker child when the manager
// isolates bundles, else here; the extraction keeps within lim. It first
// takes one of the tenant's share of check slots, waiting within wait:
// a *core.RetryError when wait ran out before ctx did. When charged (the
// tenant asked for the check), Options.OnCheck is told how long the
// slot was held, whatever the outcome.
func (m *Manager) check(ctx, wait context.Context, tenant string, data []byte, test, charged bool, lim Limits) (*loaded, error) {
	release, err := m.checks.Take(wait, tenant, 0)
	if err != nil {
		return nil, busy(ctx, err, "policy bundle checks (server.policy_checks): every slot this tenant may take is busy")
	}
	defer release()
	if charged && m.opts.OnCheck != nil {
		held := time.Now()
		defer func() { m.opts.OnCheck(tenant, time.Since(held)) }()
	}
	tmp, err := os.MkdirTemp(m.opts.Dir, ".bundle-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := Extract(bytes.NewReader(data), tmp, lim); err != nil {
		return nil, err
	}
	testTimeout := min(opa.DefaultTestTimeout, m.opts.CheckTimeout)
	if m.sb == nil {
		g, err := checkDir(ctx, tmp, test, testTimeout, m.opts.Timeout, m.opts.CheckTimeout)
		if err != nil {
			return nil, err
		}
		return &loaded{adm: policy.NewAdmitter(g), paths: g.InputPaths()}, nil
	}
	r, err := m.sb.check(tmp, test, testTimeout, m.opts.Timeout, m.opts.CheckTimeout)
	var se *sandboxError
	switch {
	case errors.As(err, &se) && se.timeout > 0:
		return nil, &RejectedError{Stage: "tests", Errors: []string{fmt.Sprintf("the bundle's tests and compilation ran past %v (policy_bundle_check_timeout)", m.opts.CheckTimeout)}}
	case errors.As(err, &se) && se.memory > 0:
		return nil, &RejectedError{Stage: "tests", Errors: []string{fmt.Sprintf("the bundle's tests and compilation took more than %d MiB of memory (policy_memory)", se.memory>>20)}}
	case err != nil:
		return nil, err
	case r.Rejected != nil:
		return nil, r.Rejected
	case r.Err != "":
		return nil, errors.New(r.Err)
	}
	g := newIsolatedGate(m.sb, data, m.opts.Timeout, m.opts.CheckTimeout, r)
	return &loaded{adm: policy.NewAdmitter(g), iso: g, paths: r.Paths}, nil
}

// checkDir runs the checks of the bundle extracted in dir — built-ins and
// numbers a tenant bundle may not use, its tests (when test), its
// compilation — within checkTimeout, and returns it compiled, or a
// *RejectedError whose lines do not name dir.
func checkDir(ctx context.Context, dir string, test bool, testTimeout, timeout, checkTimeout time.Duration) (*opa.Gate, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	timedOut := func() error {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && context.Cause(ctx) == context.DeadlineExceeded {
			return &RejectedError{Stage: "tests", Errors: []string{fmt.Sprintf("the bundle's tests and compilation ran past %v (policy_bundle_check_timeout)", checkTimeout)}}
		}
		return nil
	}
	scrub := func(lines []string) []string {
		for i, l := range lines {
			// Paths inside the bundle lose the directory ("a/w.rego");
			// the directory itself, as OPA names the bundle ("bundle
			// DIR: …"), becomes "<bundle>".
			l = strings.ReplaceAll(l, dir+string(filepath.Separator), "")
			lines[i] = strings.ReplaceAll(l, dir, "<bundle>")
		}
		return lines
	}
	if refused, err := refuseBuiltins(dir); err != nil {
		return nil, err
	} else if len(refused) > 0 {
		return nil, &RejectedError{Stage: "compile", Errors: refused}
	}
	if test {
		// The tests' print() output is never shown: compiled out, so a
		// test printing in a loop holds no memory for it.
		results, err := opa.RunTests(ctx, dir, opa.TestOptions{Timeout: testTimeout, MaxOutputBytes: -1, Sandboxed: true})
		if terr := timedOut(); terr != nil {
			return nil, terr
		}
		if err != nil {
			if errors.Is(err, opa.ErrBundleLoad) || errors.Is(err, opa.ErrBundleCompile) {
				return nil, &RejectedError{Stage: "compile", Errors: scrub(opa.ErrorLines(err))}
			}
			return nil, err
		}
		var failed []string
		for _, r := range results {
			if r.Skipped || r.Passed {
				continue
			}
			line := r.Package + "." + r.Name + ": failed"
			if r.Err != nil {
				line = r.Package + "." + r.Name + ": error: " + strings.Join(opa.ErrorLines(r.Err), "; ")
			}
			failed = append(failed, line)
		}
		if len(failed) > 0 {
			return nil, &RejectedError{Stage: "tests", Errors: scrub(failed)}
		}
	}
	g, err := opa.Load(ctx, dir, opa.Options{Name: "tenant", Timeout: timeout, Sandboxed: true})
	if terr := timedOut(); terr != nil {
		return nil, terr
	}
	if err != nil {
		lines := opa.ErrorLines(err)
		if len(lines) == 0 {
			lines = []string{err.Error()}
		}
		return nil, &RejectedError{Stage: "compile", Errors: scrub(lines)}
	}
	return g, nil
}

// loadStored compiles a stored revision (its tests passed at upload).
// It waits for a check slot within wait (a *core.RetryError when wait
// ran out before ctx did); charged: the tenant asked for it (a Rollback),
// and Options.OnCheck is told the check's time.
func (m *Manager) loadStored(ctx, wait context.Context, tenant, rev string, charged bool) *loaded {
	var data []byte
	var err error
	if m.opts.Blobs != nil {
		data, err = m.opts.Blobs.Get(rev)
	} else {
		data, err = durable.ReadFile(m.bundlePath(tenant, rev), storedLimits.MaxBundleBytes)
	}
	if err != nil {
		return &loaded{err: err}
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != rev {
		return &loaded{err: fmt.Errorf("%w: the stored bundle's SHA-256 is not its revision %s", errDamagedBundle, rev)}
	}
	// Extracted within storedLimits, not this node's upload limits: the
	// bundle passed the limits of the node that took its upload (on a
	// cluster, perhaps another node, configured with larger ones), and
	// lowering them later must not stop a tenant's accepted policy from
	// loading.
	l, err := m.check(ctx, wait, tenant, data, false, charged, storedLimits)
	if err != nil {
		return &loaded{err: err}
	}
	return l
}

// errDamagedBundle: a stored bundle whose bytes are not its revision.
var errDamagedBundle = errors.New("damaged bundle")

// bundleVerdict reports whether err is what a bundle itself makes of
// every load — refused (*RejectedError, *BundleError) or damaged — and
// so is kept as the revision's state until it changes, rather than tried
// again by the next write.
func bundleVerdict(err error) bool {
	var re *RejectedError
	var be *BundleError
	return errors.As(err, &re) || errors.As(err, &be) || errors.Is(err, errDamagedBundle)
}

// storedLimits bound the extraction of a bundle already accepted: the
// largest limits a node may be configured with (see Limits), so that
// every accepted bundle loads and a damaged one still cannot expand past
// them.
var storedLimits = Limits{MaxBundleBytes: 64 << 20, MaxFiles: 10000, MaxFileBytes: 16 << 20, MaxTotalBytes: 256 << 20}

// store writes the bundle to its content address, durably, unless it
// is there already.
func (m *Manager) store(ctx context.Context, tenant, rev string, data []byte) error {
	if m.opts.Blobs != nil {
		digest, err := m.opts.Blobs.Put(ctx, data)
		if err != nil {
			return fmt.Errorf("tenantpolicy: storing the bundle: %w", err)
		}
		if digest != rev {
			return fmt.Errorf("tenantpolicy: storing the bundle: stored as %s, not its revision %s", digest, rev)
		}
		return nil
	}
	if err := durable.WriteFile(m.bundlePath(tenant, rev), data); err != nil {
		return fmt.Errorf("tenantpolicy: storing the bundle: %w", err)
	}
	return nil
}

// Refresh loads the tenant's active revision as the control plane names
// it now, unless it is loaded already: what a node that did not make a
// change (a cluster follower, a later leader) calls when it learns of a
// policy.activated or policy.rolled_back change (control.Options.OnChange;
// never from the hook itself: it compiles). A revision that cannot be
// loaded is logged and kept as such: the tenant's writes are refused
// (POLICY_ERROR naming it) until a later Refresh loads it — a blob not
// yet applied on this node is retried by the next write's admission.
// Compiled revisions other than the active one and the one it replaced
// are dropped.
func (m *Manager) Refresh(ctx context.Context, tenant string) {
	rev := m.opts.Plane.ActivePolicy(tenant)
	if rev == "" {
		return
	}
	m.ensure(ctx, tenant, rev)
}

// ensure loads rev of tenant unless it is loaded (or failed to for a
// reason other than its bytes missing here), and returns it.
func (m *Manager) ensure(ctx context.Context, tenant, rev string) *loaded {
	settled := func(l *loaded) bool { return l != nil && (l.err == nil || !errors.Is(l.err, fs.ErrNotExist)) }
	if l := m.get(tenant, rev); settled(l) {
		return l
	}
	release, err := m.loads.lock(ctx, tenant)
	if err != nil {
		return &loaded{err: err}
	}
	defer release()
	if l := m.get(tenant, rev); settled(l) {
		return l
	}
	l := m.loadStored(ctx, ctx, tenant, rev, false)
	if l.err != nil && !errors.Is(l.err, fs.ErrNotExist) && (ctx.Err() != nil || !bundleVerdict(l.err)) {
		// The caller stopped waiting (for a check slot, or its request
		// ended, perhaps cutting the check short), or the load failed
		// for a reason other than the bundle (the disk, the sandbox):
		// nothing is known of the revision, and the next write or
		// Refresh loads it again.
		m.opts.Logger.Warn("a tenant's active policy revision did not load this time; the next write tries again",
			"tenant", tenant, "revision", rev, "error", l.err)
		return l
	}
	if m.sb != nil {
		m.sb.warm()
	}
	if l.err != nil {
		m.opts.Logger.Error("a tenant's active policy revision does not load: its writes are refused (POLICY_ERROR) until it does",
			"tenant", tenant, "revision", rev, "error", l.err)
	}
	m.gmu.Lock()
	if m.gates[tenant] == nil {
		m.gates[tenant] = map[string]*loaded{}
	}
	m.gates[tenant][rev] = l
	for r := range m.gates[tenant] {
		if r != rev && r != m.opts.Plane.ActivePolicy(tenant) {
			delete(m.gates[tenant], r)
		}
	}
	m.gmu.Unlock()
	return l
}

// Admission returns the admission of one tenant's store: the platform
// admitter's decision (nil: no platform policy) and then the tenant's
// active bundle, if any; the first refusal is returned as a
// *policy.Denial with Layer "platform" or "tenant" (the tenant's with
// its content revision). The active revision is looked up on every
// write, so a push or rollback applies to the next write; every item of
// a batch is judged by the revision active when the batch's judging
// began, whatever is pushed meanwhile. Maintenance
// (redact, erase, compact) is judged by the platform layer only.
func (m *Manager) Admission(tenant string, platform *opa.Gate) core.Admission {
	a := &admission{m: m, tenant: tenant}
	if platform != nil {
		a.platform, a.platformGate = policy.NewAdmitter(platform), platform
	}
	return a
}

// uploadWait is the longest an upload or a rollback waits for the
// tenant's previous change to finish and for a check slot, together (a
// variable for tests). With the check's own bound (CheckTimeout, 30s by
// default) an upload is answered within the server's write_timeout.
var uploadWait = 20 * time.Second

// beginChange takes tenant's change lock for an upload or a rollback,
// waiting at most uploadWait within ctx (a *core.RetryError when that ran
// out first). wait is what is left of that wait, for a check slot; end
// releases both.
func (m *Manager) beginChange(ctx context.Context, tenant string) (wait context.Context, end func(), err error) {
	wait, cancel := context.WithTimeout(ctx, uploadWait)
	release, err := m.changes.lock(wait, tenant)
	if err != nil {
		cancel()
		return nil, nil, busy(ctx, err, "the tenant's previous policy change is still running")
	}
	return wait, func() { release(); cancel() }, nil
}

// busy is err, a wait that ran out, as a *core.RetryError saying why,
// unless ctx (the request) ended: then ctx's error.
func busy(ctx context.Context, err error, why string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &core.RetryError{After: 5 * time.Second, Reason: why}
	}
	return err
}

// slotWait is the longest an evaluation waits for a slot (a variable for
// tests).
var slotWait = 2 * time.Second

// slot takes one of the tenant's share of evaluation slots, then one of
// the manager's (Options.MaxConcurrent), waiting at most slotWait in all
// within ctx (then a *core.RetryError); release gives both back.
func (m *Manager) slot(ctx context.Context, tenant string) (release func(), err error) {
	release, err = m.slots.Take(ctx, tenant, slotWait)
	if reason, busy := m.slots.Refusal(err, "policy evaluations"); busy {
		return nil, &core.RetryError{After: time.Second, Reason: reason}
	}
	return release, err
}

type admission struct {
	m            *Manager
	tenant       string
	platform     *policy.Admitter
	platformGate *opa.Gate
}

// Judging implements core.SwitchedAdmission: writes need judging while
// there is a platform policy or the tenant has an active bundle.
func (a *admission) Judging() bool {
	return a.platform != nil || a.m.opts.Plane.ActivePolicy(a.tenant) != ""
}

// Admit implements core.Admission.
func (a *admission) Admit(ctx context.Context, p *core.Proposal) error {
	return a.admit(ctx, p, &judgedBy{})
}

// judgedBy is the tenant revision that judges a write, or every item of
// a batch: read once, when the first of them is judged (within its
// evaluation slot, as a single write reads it), and kept with its
// compiled bundle, so that a push or rollback while a batch is judged
// cannot judge its items by two revisions. The bundle is held, not looked
// up again, so two activations during the batch do not unload it.
type judgedBy struct {
	read     bool
	rev      string
	resolved bool    // l was looked up (nil: rev is not loaded)
	l        *loaded // rev's compiled bundle, once resolved
}

// bundle is rev's compiled bundle, looked up the first time it is asked
// for (and loaded from the blobs when another node activated it).
func (j *judgedBy) bundle(ctx context.Context, a *admission) *loaded {
	if !j.resolved {
		j.l, j.resolved = a.m.get(a.tenant, j.rev), true
		if a.m.opts.Blobs != nil && (j.l == nil || (j.l.err != nil && errors.Is(j.l.err, fs.ErrNotExist))) {
			// A revision another node activated, not loaded here yet.
			j.l = a.m.ensure(ctx, a.tenant, j.rev)
		}
	}
	return j.l
}

// admit judges p by both layers, the tenant's by the revision j names (j
// reads the active one, when it has not yet, within p's evaluation slot).
func (a *admission) admit(ctx context.Context, p *core.Proposal, j *judgedBy) error {
	rev := j.rev
	if !j.read {
		rev = a.m.opts.Plane.ActivePolicy(a.tenant)
	}
	if a.platform == nil && rev == "" {
		return nil
	}
	release, err := a.m.slot(ctx, a.tenant)
	if err != nil {
		return err
	}
	defer release()
	if !j.read {
		// Read again: waiting for the slot can outlast two activations,
		// after which the revision read before is no longer compiled.
		j.rev, j.read = a.m.opts.Plane.ActivePolicy(a.tenant), true
	}
	rev = j.rev
	if a.platform != nil {
		if err := a.platform.Admit(ctx, p); err != nil {
			return a.log(ctx, p, withLayer(err, "platform", ""), a.platformGate.InputPaths())
		}
	}
	if rev == "" {
		a.sampleAllow(ctx, p, "", a.platformGate.InputPaths)
		return nil
	}
	l := j.bundle(ctx, a)
	if l == nil || l.err != nil {
		msg := "the tenant's policy revision " + rev + " is not loaded"
		if l != nil {
			msg += ": " + l.err.Error()
		}
		d := policy.Deny(policy.CodePolicyError, msg, nil)
		d.Gate, d.Layer, d.Revision = "tenant", "tenant", rev
		return a.log(ctx, p, d, nil)
	}
	if err := l.adm.Admit(ctx, p); err != nil {
		return a.log(ctx, p, withLayer(err, "tenant", rev), l.paths)
	}
	a.sampleAllow(ctx, p, rev, func() []string { return a.bothPaths(l) })
	return nil
}

// AdmitItems implements core.ItemsAdmission. Every item of the batch is
// judged by one tenant revision, the one active when its judging began
// (judgedBy). With that revision's bundle in the sandbox, the items are
// judged in one round trip to it (the platform layer first, item by
// item, in this process), within one evaluation slot; otherwise, or if
// that round trip fails (the items say nothing of which one ran past its
// timeout), one at a time, each in an evaluation slot of its own. Each
// item's decision is logged as Admit logs it.
func (a *admission) AdmitItems(ctx context.Context, ps []*core.Proposal) error {
	j := &judgedBy{}
	each := func(from int) error {
		for i := from; i < len(ps); i++ {
			if err := a.admit(ctx, ps[i], j); err != nil {
				return &core.BatchItemError{Index: i, Err: err}
			}
		}
		return nil
	}
	rev := a.m.opts.Plane.ActivePolicy(a.tenant)
	if l := a.m.get(a.tenant, rev); rev == "" || len(ps) < 2 || l == nil || l.iso == nil {
		return each(0)
	}
	release, err := a.m.slot(ctx, a.tenant)
	if err != nil {
		return err
	}
	// Read again within the slot (as admit does), and kept for the batch.
	rev = a.m.opts.Plane.ActivePolicy(a.tenant)
	l := a.m.get(a.tenant, rev)
	j.read, j.rev = true, rev
	if l != nil {
		j.l, j.resolved = l, true
	}
	if rev == "" || l == nil || l.iso == nil {
		release()
		return each(0)
	}
	// The platform layer up to its first refusal (item k), then the
	// tenant's over the items before it: the first item either refuses is
	// the one reported, as when each item is admitted in turn.
	k, platformErr := len(ps), error(nil)
	ins := make([]*policy.Input, 0, len(ps))
	for i, p := range ps {
		if a.platform != nil {
			if err := a.platform.Admit(ctx, p); err != nil {
				k, platformErr = i, err
				break
			}
		}
		ins = append(ins, policy.InputFromProposal(ctx, p))
	}
	var denials []*policy.Denial
	if len(ins) > 0 {
		denials, err = l.iso.EvaluateAll(ctx, ins)
	}
	release()
	if ctxErr := ctx.Err(); err != nil && ctxErr != nil {
		return ctxErr // the client went away: nothing more is judged
	}
	if err != nil {
		// One at a time, which tells which item failed (the platform's
		// decisions are cached), by the same revision.
		return each(0)
	}
	paths := sync.OnceValue(func() []string { return a.bothPaths(l) })
	for i, d := range denials {
		if d != nil {
			return &core.BatchItemError{Index: i, Err: a.log(ctx, ps[i], withLayer(d, "tenant", rev), l.paths)}
		}
		a.sampleAllow(ctx, ps[i], rev, paths)
	}
	if k < len(ps) && len(denials) == k {
		return &core.BatchItemError{Index: k, Err: a.log(ctx, ps[k], withLayer(platformErr, "platform", ""), a.platformGate.InputPaths())}
	}
	if len(denials) < len(ins) {
		return each(len(denials))
	}
	return nil
}

// bothPaths is the input paths of the platform's layer and l's: what an
// allowed write's decision log entry shows (worked out only for one the
// log samples).
func (a *admission) bothPaths(l *loaded) []string {
	if a.platform == nil {
		return l.paths
	}
	return unionPaths(a.platformGate.InputPaths(), l.paths)
}

// unionPaths is the input paths of both layers, each once; nil (the
// whole input) when either reads the input as a whole.
func unionPaths(a, b []string) []string {
	if len(a) == 0 || len(b) == 0 {
		return nil
	}
	out := slices.Clone(a)
	seen := make(map[string]bool, len(a))
	for _, p := range a {
		seen[p] = true
	}
	for _, p := range b {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// log records a denial in the tenant's decision log.
func (a *admission) log(ctx context.Context, p *core.Proposal, err error, paths []string) error {
	var d *policy.Denial
	if !errors.As(err, &d) {
		return err
	}
	return a.m.record(a.tenant, d, policy.InputFromProposal(ctx, p), paths)
}

// AdmitMaintenance implements core.MaintenanceAdmission: the platform
// layer's decision, or a grant naming the principal when there is none.
func (a *admission) AdmitMaintenance(ctx context.Context, p *core.MaintenanceProposal) (core.MaintenanceGrant, error) {
	if a.platform != nil {
		g, err := a.platform.AdmitMaintenance(ctx, p)
		return g, withLayer(err, "platform", "")
	}
	who, err := json.Marshal(policy.PrincipalFrom(ctx))
	if err != nil {
		return core.MaintenanceGrant{}, err
	}
	return core.MaintenanceGrant{Who: who}, nil
}

// withLayer returns a copy of err's denial (a gate may hand one denial to
// every writer) naming the layer, and the revision when rev is set.
func withLayer(err error, layer, rev string) error {
	var d *policy.Denial
	if err == nil || !errors.As(err, &d) {
		return err
	}
	c := *d
	c.Layer = layer
	if rev != "" {
		c.Revision = rev
	}
	return &c
}
