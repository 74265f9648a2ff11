package plugins

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/plugins/abi"
	"github.com/batpak-go/batpak/policy"
)

// Host loads and runs plugins. Each plugin gets its own wazero runtime
// (so its memory limit is its own); all share one compilation cache.
type Host struct {
	// dirCache: compiled modules are kept in cacheDir (each version
	// compiles through a compilation cache of its own over it: see
	// versionCache).
	dirCache bool
	log      *slog.Logger
	// validator checks modules as their authors wrote them, before Load
	// rewrites them (see compile). It is an interpreter: compiling for it
	// decodes and validates without generating machine code (about 0.1 s
	// for a 2.7 MB Go guest). The digests of valid modules are remembered
	// in valid.
	validator wazero.Runtime
	valid     passed

	// compiler, when set, validates and compiles each module into
	// cacheDir first (HostOptions.Compiler); the modules it passed are
	// remembered in bounded.
	compiler   func(ctx context.Context, cacheDir string, original, rewritten []byte) error
	compilerID string
	cacheDir   string
	bounded    passed
	// uncached: the digests of modules the cache directory failed to give
	// back (in memory; see versionCache).
	uncached passed

	admit  func(ctx context.Context) (release func(), err error)      // HostOptions.Admit
	charge func(kind MemoryKind, n int64) (release func(), err error) // HostOptions.Charge

	mu      sync.Mutex
	plugins map[string]*Plugin
}

// HostOptions configures a Host.
type HostOptions struct {
	// CacheDir keeps compiled modules between runs and loads (a Go guest
	// compiles in about a second cold, ~50 ms from the cache). Empty:
	// nothing is kept, and every load compiles (each loaded version holds
	// its own machine code, let go when it is closed).
	// Do not share the directory with other wazero runtimes: wazero keys
	// its cache by module only, and code compiled by a runtime without
	// WithCloseOnContextDone cannot be interrupted, so Limits.Timeout
	// would not stop a loop. The host also records there (batpak-valid/)
	// the digests of modules it has validated, so a cached Load skips
	// validating again (about 0.1 s for a Go guest). A module the cache
	// fails to give back (an entry damaged on disk fails its checksum;
	// wazero keeps the entry) is compiled again in memory: it loads, at
	// the cost of a cold compile at every load until the entry is removed.
	CacheDir string
	// Compiler, when set, validates each module as written (original)
	// and compiles it as the host rewrote it (rewritten; nil when only
	// validation is asked) before the host does, into CacheDir (which it
	// then requires), somewhere the time and memory they take can be
	// bounded: wazero's compiler and validator cannot be interrupted, and
	// a module of a few kilobytes can take minutes and gigabytes there
	// (loops nested deep over many locals; a br_table over many targets of
	// a type with many results). The host then compiles the rewritten
	// module itself, usually from the cache the Compiler filled, and never
	// validates it apart: wazero's decoding and validation at that compile
	// take no longer than they took in the Compiler. An error refuses the
	// module (a *LoadError whose Cause is the error; one wrapping
	// ErrInvalidModule is reported as a module not valid WebAssembly). A
	// module the Compiler passed is remembered (in memory and in
	// CacheDir/batpak-bounded, per wazero version) and not given to it
	// again. CompileInto is what a Compiler runs in its own process. nil:
	// the host validates and compiles in its own process, unbounded —
	// trusted modules only. Either way the host first reads the module's
	// sections itself, and a module declaring more than its bytes hold
	// (see Inspect) is refused as not valid WebAssembly without being
	// given to wazero or the Compiler.
	Compiler func(ctx context.Context, cacheDir string, original, rewritten []byte) error
	// CompilerID names what the Compiler's pass vouches for (its limits):
	// a module passed under another CompilerID is given to it again.
	CompilerID string
	// Logger receives plugins' log calls. Default slog.Default().
	Logger *slog.Logger
	// Admit, when set, is asked before every call of a plugin and the
	// call waits for it; release is called when the call ends. A server
	// hosting many tenants' plugins bounds with it the calls running at
	// once, so that each has a processor: Limits.Timeout is wall-clock
	// time and starts only once the call is admitted, so a call never
	// times out (and faults toward quarantine) for waiting behind other
	// tenants' calls. An error refuses the call without a fault: the call
	// returns it as it is (ctx's end: as an abandoned call). nil: every
	// call runs at once.
	Admit func(ctx context.Context) (release func(), err error)
	// Charge, when set, is asked before the host keeps memory of its own
	// between calls, outside any plugin's memory limit, and what it
	// allows is given back (release) when that memory is let go. kind
	// says what for:
	//   - MemoryCode: a module's compiled code, n its estimate
	//     (CodeEstimate) before the module is compiled, then what was
	//     compiled beyond it (or, when less, what was compiled in its
	//     place), all given back once that version is closed (unloaded,
	//     or swapped out once its calls end) and its machine code
	//     unmapped, after the garbage collections the host runs for it.
	//     A refusal refuses the load: a *LoadError whose Cause is
	//     Charge's error (a load refused once compiled returns once its
	//     code is unmapped; one refused for want of room first waits for
	//     closed versions' code to be unmapped and asks again).
	//   - MemoryIdle: an instance kept idle in its plugin's pool for the
	//     next call, n its linear memory plus IdleInstanceOverhead, its
	//     tables at their limit (8 bytes an element), its copy of the
	//     element segments and its globals, asked
	//     when a call hands it back and given back when a call takes it
	//     or it is closed. A refusal closes the instance instead (the next
	//     call instantiates another).
	// It must be safe for concurrent use. A server hosting many tenants'
	// plugins bounds with it the memory their loaded plugins hold
	// together. nil: nothing is charged.
	Charge func(kind MemoryKind, n int64) (release func(), err error)
}

// MemoryKind says what a HostOptions.Charge is for.
type MemoryKind int

// The kinds of memory a plugin host charges (HostOptions.Charge).
const (
	MemoryCode MemoryKind = iota // a loaded module's compiled code
	MemoryIdle                   // an idle instance in a plugin's pool
)

// versionCache is a compilation cache for one version: over the host's
// directory when it has one, else in memory.
//
// A module whose entry the directory failed to give back is compiled in
// memory from then on: wazero v1.12.0 maps the code of an entry before
// it checks it, and does not unmap it when the check fails, so every load
// from a damaged entry would leave its size mapped.
func (h *Host) versionCache(digest string) (wazero.CompilationCache, error) {
	if h.dirCache && !h.uncached.has(digest) {
		return wazero.NewCompilationCacheWithDir(h.cacheDir)
	}
	return wazero.NewCompilationCache(), nil
}

// closeCompiled closes a version's runtime, its compiled module (if
// any) and its cache, whose engine holds the module's machine code.
func closeCompiled(ctx context.Context, rt wazero.Runtime, mod wazero.CompiledModule, cache wazero.CompilationCache) error {
	err := rt.Close(ctx)
	if mod != nil {
		err = errors.Join(err, mod.Close(ctx))
	}
	return errors.Join(err, cache.Close(ctx))
}

// noRoom is the reason a load is refused for want of room for n bytes
// of compiled code.
func noRoom(n int64) string {
	return fmt.Sprintf("no room for its compiled code (about %d MiB)", (n+1<<20-1)>>20)
}

// IdleInstanceOverhead is what an idle instance is charged beside its
// linear memory (HostOptions.Charge, MemoryIdle): the call stacks it may
// keep (a few, of at most about twice keepStackBytes) and its own
// bookkeeping.
const IdleInstanceOverhead = 2*keepStackBytes + 64<<10

// NewHost returns a plugin host.
func NewHost(opts HostOptions) (*Host, error) {
	h := &Host{log: opts.Logger, plugins: map[string]*Plugin{},
		compiler: opts.Compiler, compilerID: opts.CompilerID, cacheDir: opts.CacheDir, admit: opts.Admit, charge: opts.Charge}
	if h.log == nil {
		h.log = slog.Default()
	}
	if opts.Compiler != nil && opts.CacheDir == "" {
		return nil, errors.New("batpak: a plugin host's Compiler needs a CacheDir to compile into")
	}
	if opts.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(opts.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("batpak: plugin compilation cache: %w", err)
		}
		_ = c.Close(context.Background()) // the directory works: each version opens its own
		h.dirCache = true
		h.valid.dir = filepath.Join(opts.CacheDir, "batpak-valid")
		h.bounded.dir = filepath.Join(opts.CacheDir, "batpak-bounded", wazeroVersion)
	}
	h.validator = wazero.NewRuntimeWithConfig(context.Background(), wazero.NewRuntimeConfigInterpreter().WithDebugInfoEnabled(false))
	return h, nil
}

// Close unloads every plugin.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	ps := h.plugins
	h.plugins = map[string]*Plugin{}
	h.mu.Unlock()
	var errs []error
	for _, p := range ps {
		errs = append(errs, p.close(ctx))
	}
	errs = append(errs, h.validator.Close(ctx))
	return errors.Join(errs...)
}

// Plugin is a loaded plugin. It is safe for concurrent use: calls check
// out an instance from a pool (instances are not goroutine-safe).
type Plugin struct {
	h      *Host
	name   string
	owner  policy.Principal // on whose behalf it was loaded (LoadFor); zero for Load
	cur    atomic.Pointer[version]
	faults atomic.Int32 // consecutive
	// unloaded is set by Unload and Close: Swap is refused, and calls
	// fail with ErrUnloaded.
	unloaded atomic.Bool

	logLines, logBytes               atomic.Uint64
	droppedLogLines, droppedLogBytes atomic.Uint64
}

// version is one loaded module of a plugin; Swap replaces it.
type version struct {
	m      Manifest
	digest string
	// manifestSum is a digest of the manifest as loaded (its limits,
	// grants and environment change what a fold computes): a projection's
	// name carries it, so a version deleted and pushed again with another
	// manifest never meets the states the first one made.
	manifestSum string
	rt          wazero.Runtime
	mod         wazero.CompiledModule
	cfg         wazero.ModuleConfig
	exports     map[string]bool
	pool        chan *instance

	cache       wazero.CompilationCache                                    // the version's own (see compile)
	charge      func(kind MemoryKind, n int64) (release func(), err error) // HostOptions.Charge
	releaseCode func()                                                     // gives back the code's charge (once)
	perInstance int64                                                      // an idle instance's charge beside its linear memory
	codeBytes   int64                                                      // what the compiled code is charged (Plugin.CodeBytes)
	code        *codeHold                                                  // its machine code, watched until unmapped (nil: not found)
	// mu guards running and the setting of closed: a version's runtime
	// is closed (finish) once it is closed and no call runs in it.
	mu         sync.Mutex
	running    int
	closed     atomic.Bool // close began: no call enters, nothing stays in the pool
	finishOnce sync.Once
	finishErr  error

	log      *slog.Logger
	logAttrs []any // plugin and version, on every log line
}

// instance is one instance of a module and the linear memory that
// enforces its limit.
type instance struct {
	mod   api.Module
	mem   *limitedMemory
	logs  *logBudget
	funcs map[string]api.Function // looked up once: a lookup allocates
	// The counters Load adds (module.go): nested calls, the call stack
	// charged and its peak.
	depth, stack api.Global
	peak         api.MutableGlobal
	// idle gives back the charge of the instance while it waits in the
	// pool (HostOptions.Charge, MemoryIdle); nil when none is held.
	idle func()
}

// takeOut gives back the instance's idle charge, if it holds one.
func (i *instance) takeOut() {
	if i.idle != nil {
		i.idle()
		i.idle = nil
	}
}

// keepStackBytes is the peak call stack (as the counters charge it) up to
// which an instance goes back to the pool with its function handles.
// wazero keeps the stack a call grew with the handle, so after a call
// that went higher the handles are dropped (and looked up again on the
// next call): an idle instance holds at most a few stacks of about twice
// this size.
const keepStackBytes = 256 << 10

// fn returns the exported function name (the instance is used by one
// goroutine at a time, so the cache needs no lock).
func (i *instance) fn(name string) api.Function {
	f, ok := i.funcs[name]
	if !ok {
		f = i.mod.ExportedFunction(name)
		i.funcs[name] = f
	}
	return f
}

// Load compiles wasm as the plugin described by m and registers it under
// m.Name (replacing nothing: use Plugin.Swap to replace). It refuses a
// digest that does not match m.SHA256, a module that is not valid
// WebAssembly as written, one over m.Limits, one whose ABI version is not
// abi.Version, and one missing the exports its kind needs.
func (h *Host) Load(ctx context.Context, wasm []byte, m Manifest) (*Plugin, error) {
	return h.load(ctx, wasm, m, policy.Principal{})
}

func (h *Host) load(ctx context.Context, wasm []byte, m Manifest, owner policy.Principal) (*Plugin, error) {
	v, err := h.compile(ctx, wasm, m)
	if err != nil {
		return nil, err
	}
	p := &Plugin{h: h, name: v.m.Name, owner: owner}
	p.cur.Store(v)
	h.mu.Lock()
	if _, dup := h.plugins[p.name]; dup {
		h.mu.Unlock()
		_ = v.close(ctx)
		return nil, &LoadError{Plugin: p.name, Reason: "a plugin of that name is loaded (use Swap)"}
	}
	h.plugins[p.name] = p
	h.mu.Unlock()
	return p, nil
}

// Plugin returns the loaded plugin called name.
func (h *Host) Plugin(name string) (*Plugin, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.plugins[name]
	return p, ok
}

// Unload removes a plugin: later calls fail with ErrUnloaded, calls
// running finish first. Its machine code's charge (HostOptions.Charge)
// is given back once the code is unmapped, after the garbage
// collections the host runs for it (see codeFreer); a load refused for
// want of room meanwhile waits for them and asks again.
func (h *Host) Unload(ctx context.Context, name string) error {
	h.mu.Lock()
	p, ok := h.plugins[name]
	delete(h.plugins, name)
	h.mu.Unlock()
	if !ok {
		return fmt.Errorf("batpak: no plugin %q", name)
	}
	return p.close(ctx)
}

func (h *Host) compile(ctx context.Context, wasm []byte, m Manifest) (*version, error) {
	if err := m.normalize(); err != nil {
		return nil, &LoadError{Plugin: m.Name, Reason: "invalid manifest", Cause: err}
	}
	refuse := func(reason string, cause error) (*version, error) {
		return nil, &LoadError{Plugin: m.Name, Reason: reason, Cause: cause}
	}
	digest := Digest(wasm)
	if m.SHA256 != "" && m.SHA256 != digest {
		return refuse(fmt.Sprintf("sha256 %s does not match the pinned %s", digest, m.SHA256), nil)
	}
	// The memory limit is not wazero's WithMemoryLimitPages: that refuses
	// memory.grow silently, and a module that then traps would look like any
	// other trap. limitedMemory enforces it and remembers the refusal.
	// Each version compiles through a cache of its own (over the host's
	// directory, if any): wazero keeps a module's machine code as long as
	// its cache's engine lives, so a cache shared by the host's versions
	// would keep every module it ever compiled mapped until the host
	// closed — an unloaded, swapped-out or refused one too.
	cache, err := h.versionCache(digest)
	if err != nil {
		return refuse("opening the compilation cache", err)
	}
	rt, err := h.runtime(ctx, cache)
	if err != nil {
		_ = cache.Close(ctx)
		return refuse("instantiating the host's modules", err)
	}
	var mod wazero.CompiledModule
	var releaseCode func() // the code's charge (nil: none held)
	var code *codeHold     // once compiled: the machine code, watched until unmapped
	discard := func() {
		closeCompiled(ctx, rt, mod, cache)
		// A load refused once compiled returns only once its code is
		// unmapped (and then gives back what it held for it), so refused
		// uploads cannot pile up code no charge counts.
		waitFreed(ctx, freer.free(code, releaseCode))
	}
	fail := func(reason string, cause error) (*version, error) {
		discard()
		return refuse(reason, cause)
	}
	// Measure what the module declares before wazero allocates it (see
	// module.go), and bound its tables' growth.
	shape, err := readModule(wasm)
	if errors.Is(err, errOverclaim) {
		// Not for a Compiler either: wazero would allocate what the module
		// claims there.
		return fail("the module is not valid WebAssembly", fmt.Errorf("%w: %w", ErrInvalidModule, err))
	}
	if errors.Is(err, errTypedRefs) {
		return fail(errTypedRefs.Error(), nil)
	}
	if err != nil {
		// wazero's reason, if it has one, from the Compiler; never from
		// wazero here: what the host cannot read, it cannot bound (a
		// function's locals, say, which wazero allocates one by one).
		if h.compiler != nil {
			if verr := h.validateFirst(ctx, wasm, digest, nil); verr != nil {
				return fail(refusal(verr))
			}
		}
		return fail("the host cannot read the module's sections (not valid WebAssembly, or what it does not support)", err)
	}
	if !shape.memDefined {
		return fail("the module defines no memory of its own (the host passes inputs in it)", nil)
	}
	if reason := shape.check(m.Limits); reason != "" {
		return fail(reason, nil)
	}
	// The compiled code lives in the host's memory while the version is
	// loaded: its estimate is charged before anything is compiled, and
	// what was compiled once it is (see below).
	estimate := shape.codeEstimate()
	if h.charge != nil {
		release, err := h.charge(MemoryCode, estimate)
		if err != nil && freer.settle(ctx) {
			release, err = h.charge(MemoryCode, estimate) // closed versions' code let go meanwhile
		}
		if err != nil {
			return fail(noRoom(estimate), err)
		}
		releaseCode = sync.OnceFunc(release)
	}
	// Validate the module as written, as well as compiling it rewritten:
	// the rewrite appends globals, so a module that uses a global index it
	// does not declare would otherwise become valid and reach the host's
	// counters. With a Compiler both happen there, bounded, and the
	// rewritten module's decoding and validation here (which wazero does
	// at every compile, a cached one too) then take no more than they took
	// there.
	counted, cerr := addStackCounters(shape.boundTables(wasm, uint64(m.Limits.TableElements)), m.Limits)
	if cerr != nil {
		counted = nil
	}
	if err := h.validateFirst(ctx, wasm, digest, counted); err != nil {
		return fail(refusal(err))
	}
	if cerr != nil {
		return fail("the host cannot add its call-stack counters to the module", cerr)
	}
	mod, err = rt.CompileModule(ctx, counted)
	if err != nil && h.dirCache {
		// The file cache may be what failed (an entry damaged on disk fails
		// its checksum and wazero does not replace it; the directory may be
		// full): compile again in memory. A module that does not compile
		// fails again, without the cache's paths in its error.
		closeCompiled(ctx, rt, nil, cache)
		h.uncached.add(digest)
		cache = wazero.NewCompilationCache()
		if rt, err = h.runtime(ctx, cache); err != nil {
			_ = cache.Close(ctx)
			if releaseCode != nil {
				releaseCode()
			}
			return refuse("instantiating the host's modules", err)
		}
		mod, err = rt.CompileModule(ctx, counted)
	}
	if err != nil {
		mod = nil
		return fail("module does not compile", err)
	}
	// What the compiler made can be far more than the estimate (a
	// br_table whose targets carry many values compiles to a copy of them
	// per target): the charge becomes what was compiled.
	codeBytes := estimate
	if compiled, exec, ok := compiledBytes(mod); ok {
		codeBytes = shape.heapEstimate() + compiled
		if exec != nil {
			code = freer.watch(exec)
		}
	}
	switch {
	case h.charge == nil:
	case codeBytes > estimate:
		// The estimate stays held, with what was compiled beyond it; a
		// refusal keeps the estimate until the code is unmapped.
		extra, err := h.charge(MemoryCode, codeBytes-estimate)
		if err != nil && freer.settle(ctx) {
			extra, err = h.charge(MemoryCode, codeBytes-estimate)
		}
		if err != nil {
			return fail(noRoom(codeBytes), err)
		}
		est := releaseCode
		releaseCode = sync.OnceFunc(func() { est(); extra() })
	default:
		releaseCode() // the estimate
		release, err := h.charge(MemoryCode, codeBytes)
		if err != nil && freer.settle(ctx) {
			release, err = h.charge(MemoryCode, codeBytes)
		}
		if err != nil {
			releaseCode = nil
			return fail(noRoom(codeBytes), err)
		}
		releaseCode = sync.OnceFunc(release)
	}
	exports := map[string]bool{}
	defs := mod.ExportedFunctions()
	for n := range defs {
		exports[n] = true
	}
	need := []string{abi.ExportABIVersion, abi.ExportAlloc}
	if m.Kind == KindProjection {
		need = append(need, abi.ExportFold)
	} else {
		need = append(need, abi.ExportHandle)
	}
	for _, n := range need {
		if !exports[n] {
			return fail(fmt.Sprintf("the module does not export %s (a %s plugin needs %s)", n, m.Kind, strings.Join(need, ", ")), nil)
		}
	}
	if err := checkSignatures(defs); err != nil && !skipSignatureCheck {
		return fail(err.Error(), nil)
	}
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions().
		WithStdout(io.Discard)
	if exports["_initialize"] {
		cfg = cfg.WithStartFunctions("_initialize")
	}
	if m.Grants.Clock {
		cfg = cfg.WithSysWalltime().WithSysNanotime()
	} else {
		// A fixed instant (the Go runtime refuses a monotonic clock of 0).
		cfg = cfg.WithWalltime(func() (int64, int32) { return fixedEpoch, 0 }, 1).
			WithNanotime(func() int64 { return fixedEpoch * 1e9 }, 1)
	}
	if m.Grants.Random {
		cfg = cfg.WithRandSource(rand.Reader)
	} else {
		cfg = cfg.WithRandSource(zeroReader{})
	}
	for k, val := range m.Grants.Env {
		cfg = cfg.WithEnv(k, val)
	}
	v := &version{m: m, digest: digest, manifestSum: manifestSum(m), rt: rt, mod: mod, cfg: cfg, exports: exports, pool: make(chan *instance, m.Limits.PoolSize),
		cache: cache, charge: h.charge, releaseCode: releaseCode, code: code, codeBytes: codeBytes, perInstance: shape.instanceEstimate(uint64(m.Limits.TableElements)), log: h.log, logAttrs: []any{"plugin", m.Name, "version", m.Version}}
	// Instantiate once now: the ABI version is checked and the first
	// instance is ready for the first call. Both are bounded by the call
	// timeout (a start function or _initialize could loop).
	tctx, cancel := context.WithTimeout(ctx, time.Duration(m.Limits.Timeout))
	defer cancel()
	inst, err := v.instantiate(tctx)
	if err != nil {
		if tctx.Err() != nil && ctx.Err() == nil {
			return fail(fmt.Sprintf("instantiating the module took longer than the %v timeout", time.Duration(m.Limits.Timeout)), err)
		}
		return fail("instantiating the module", err)
	}
	res, err := inst.fn(abi.ExportABIVersion).Call(tctx)
	if err != nil || len(res) != 1 {
		inst.mod.Close(ctx)
		return fail("calling "+abi.ExportABIVersion, err)
	}
	if got := api.DecodeI32(res[0]); got != abi.Version {
		inst.mod.Close(ctx)
		return fail(fmt.Sprintf("ABI version %d, this host speaks version %d", got, abi.Version), nil)
	}
	v.put(inst, true)
	return v, nil
}

// runtime is a runtime for one plugin version compiling through cache,
// with WASI and the host's functions instantiated.
func (h *Host) runtime(ctx context.Context, cache wazero.CompilationCache) (wazero.Runtime, error) {
	rt := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(cache))
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, err
	}
	_, err := rt.NewHostModuleBuilder(abi.ImportModule).
		NewFunctionBuilder().
		WithFunc(func(ctx context.Context, mod api.Module, level, ptr, n uint32) {
			b, _ := ctx.Value(logBudgetKey{}).(*logBudget)
			if b == nil {
				return // not a call of this host (cannot happen)
			}
			keep := b.take(uint64(n))
			if keep == 0 {
				return
			}
			text, ok := mod.Memory().Read(ptr, uint32(keep))
			if !ok {
				return
			}
			lvl := slog.LevelInfo
			switch level {
			case abi.LogDebug:
				lvl = slog.LevelDebug
			case abi.LogWarn:
				lvl = slog.LevelWarn
			case abi.LogError:
				lvl = slog.LevelError
			}
			b.log.Log(ctx, lvl, printable.String(string(text)), append(b.attrs[:len(b.attrs):len(b.attrs)], "stream", "log")...)
		}).Export(abi.ImportLog).
		Instantiate(ctx)
	if err != nil {
		rt.Close(ctx)
		return nil, err
	}
	return rt, nil
}

// passed remembers the modules that passed a check: in memory (at most
// 4,096, then it starts over) and, with a dir, as empty files named by
// their keys there, which are as trusted as the compiled code beside
// them. Safe for concurrent use.
type passed struct {
	dir string
	mu  sync.Mutex
	m   map[string]bool
}

// has reports whether key passed before.
func (p *passed) has(key string) bool {
	p.mu.Lock()
	known := p.m[key]
	p.mu.Unlock()
	if !known && p.dir != "" {
		_, err := os.Stat(filepath.Join(p.dir, key))
		known = err == nil
	}
	return known
}

// add records that key passed (on disk at best effort: without the file
// the next run checks again).
func (p *passed) add(key string) {
	if p.dir != "" && os.MkdirAll(p.dir, 0o755) == nil {
		_ = os.WriteFile(filepath.Join(p.dir, key), nil, 0o644)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil || len(p.m) >= 4096 {
		p.m = map[string]bool{}
	}
	p.m[key] = true
}

// validate decodes and validates wasm as written, unless a module of the
// same digest was found valid before (see Host.validator).
func (h *Host) validate(ctx context.Context, wasm []byte, digest string) error {
	if h.valid.has(digest) {
		return nil
	}
	mod, err := h.validator.CompileModule(ctx, wasm)
	if err != nil {
		return err
	}
	if err := mod.Close(ctx); err != nil {
		return err
	}
	h.valid.add(digest)
	return nil
}

// ErrInvalidModule: a module is not valid WebAssembly as written (the
// error wraps wazero's reason, or the host's for a module declaring more
// than its bytes hold, which wazero is never given). A Compiler returns it, wrapped, for such a
// module (CompileInto does).
var ErrInvalidModule = errors.New("not valid WebAssembly")

// refusal is the reason and cause a load refuses with for an error of
// validateFirst.
func refusal(err error) (string, error) {
	if errors.Is(err, ErrInvalidModule) {
		return "the module is not valid WebAssembly", err
	}
	return "compiling the module", err
}

// validateFirst validates wasm as written and, unless rewritten is nil,
// compiles the rewritten module: with a Compiler both in it (once per
// module: what it passed is remembered, in memory and under
// boundedDir, per wazero version), bounded; without one, it validates
// wasm here (Host.validate) and leaves the compile to the caller. Errors
// wrap ErrInvalidModule for a module that is not valid.
func (h *Host) validateFirst(ctx context.Context, wasm []byte, digest string, rewritten []byte) error {
	if h.compiler == nil {
		if err := h.validate(ctx, wasm, digest); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidModule, err)
		}
		return nil
	}
	if rewritten == nil {
		return h.compiler(ctx, h.cacheDir, wasm, nil)
	}
	key := Digest([]byte(digest + Digest(rewritten) + h.compilerID))
	if h.bounded.has(key) {
		return nil
	}
	if err := h.compiler(ctx, h.cacheDir, wasm, rewritten); err != nil {
		return err
	}
	h.bounded.add(key)
	return nil
}

// wazeroVersion names the compiler the bounded markers vouch for: a
// module that compiled within the limits with one version of wazero is
// given to the Compiler again under another.
var wazeroVersion = func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/tetratelabs/wazero" {
				return "wazero-" + d.Version
			}
		}
	}
	return "wazero-unknown"
}()

// CompileInto does what a Host with that CacheDir and a Compiler asks of
// the Compiler: it validates original as written (wazero's interpreter,
// as Host.validate), then, unless rewritten is nil, compiles rewritten
// into the compiled-code cache in dir exactly as the Host compiles it
// (the same runtime configuration, so the Host then finds it there). It
// is what a HostOptions.Compiler runs in a process of its own, with the
// bytes it was given. A module not valid as written fails with
// ErrInvalidModule wrapping wazero's reason; one that does not compile
// with wazero's error. One that compiles although the cache cannot keep
// it (a damaged entry, a full disk) is not an error: the Host then
// compiles it in memory, in no longer than it took here.
func CompileInto(ctx context.Context, dir string, original, rewritten []byte) error {
	v := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter().WithDebugInfoEnabled(false))
	mod, err := v.CompileModule(ctx, original)
	if err == nil {
		err = mod.Close(ctx)
	}
	v.Close(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidModule, err)
	}
	if rewritten == nil {
		return nil
	}
	cache, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		return fmt.Errorf("batpak: plugin compilation cache: %w", err)
	}
	defer cache.Close(ctx)
	compile := func(cache wazero.CompilationCache) error {
		rt := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(cache))
		defer rt.Close(ctx)
		_, err := rt.CompileModule(ctx, rewritten)
		return err
	}
	if compile(cache) == nil {
		return nil
	}
	mem := wazero.NewCompilationCache()
	defer mem.Close(ctx)
	return compile(mem)
}

// runtimeConfig is the configuration of every runtime that runs plugins:
// compiled (the cache keys compiled code by module and by this
// configuration's interruptibility) and interruptible, so Limits.Timeout
// stops a loop. Without debug information, as every runtime the host
// makes (see below).
func runtimeConfig(cache wazero.CompilationCache) wazero.RuntimeConfig {
	return wazero.NewRuntimeConfig().WithCompilationCache(cache).WithCloseOnContextDone(true).WithDebugInfoEnabled(false)
}

// Every runtime the host makes has wazero's debug information off: with it
// on, wazero parses a module's DWARF custom sections (debug/dwarf, whose
// memory grows with the square of what a module declares: a 152 KB
// module asked gigabytes and the process died) and keeps the result
// with the compiled module, uncharged. A trap's stack trace then names
// functions (from the "name" section), not source lines.

// fixedEpoch is the time a plugin without the clock grant sees:
// 2020-01-01T00:00:00Z, always.
const fixedEpoch = 1577836800

// logBudgetKey is the context key of the running call's *logBudget.
type logBudgetKey struct{}

// logFloodFactor is how many times its log budget a call may ask to log
// before it faults.
const logFloodFactor = 16

// logBudget is an instance's log budget for the call it is running (reset
// at each call) and what the call has asked for and been given. An
// instance runs one call at a time, so it needs no lock.
type logBudget struct {
	log   *slog.Logger
	attrs []any // plugin and version; the plugin's own lines add "stream" (log or stderr)

	maxLines, maxBytes    uint64
	lines, bytes          uint64 // asked for
	keptLines, keptBytes  uint64
	droppedLines, dropped uint64 // dropped: bytes
	flooded               bool
	stderr                []byte // a partial stderr line
}

// errLogFlood is what a log call over logFloodFactor × the budget panics
// with; the call then faults with FaultLogLimit.
var errLogFlood = errors.New("the plugin asked to log over 16 times its budget")

// reset starts a call.
func (b *logBudget) reset(l Limits) {
	*b = logBudget{log: b.log, attrs: b.attrs, maxLines: uint64(l.LogLines), maxBytes: uint64(l.LogBytes)}
}

// take accounts for a line of n bytes and returns how many of them to log
// (0: drop the line). Over logFloodFactor × the budget it panics with
// errLogFlood, which ends the guest's call.
func (b *logBudget) take(n uint64) uint64 {
	b.lines++
	b.bytes += n
	if b.lines > logFloodFactor*b.maxLines || b.bytes > logFloodFactor*b.maxBytes {
		b.flooded = true
		b.droppedLines++
		b.dropped += n
		panic(errLogFlood)
	}
	if b.keptLines >= b.maxLines || b.keptBytes >= b.maxBytes {
		b.droppedLines++
		b.dropped += n
		return 0
	}
	keep := min(n, b.maxBytes-b.keptBytes)
	b.keptLines++
	b.keptBytes += keep
	b.dropped += n - keep
	return keep
}

// Write implements io.Writer for the instance's stderr: each line (ending
// at a newline, or 4 KiB without one) is a log line at warning level,
// within the budget.
func (b *logBudget) Write(p []byte) (int, error) {
	for _, c := range p {
		if c == '\n' {
			b.stderrLine()
			continue
		}
		b.stderr = append(b.stderr, c)
		if len(b.stderr) == 4096 {
			b.stderrLine()
		}
	}
	return len(p), nil
}

// stderrLine logs the buffered stderr line.
func (b *logBudget) stderrLine() {
	line := b.stderr
	b.stderr = b.stderr[:0]
	if keep := b.take(uint64(len(line))); keep > 0 {
		b.log.Warn(printable.String(string(line[:keep])), append(b.attrs[:len(b.attrs):len(b.attrs)], "stream", "stderr")...)
	}
}

// finish ends a call: a partial stderr line is logged, and a note if lines
// were dropped.
func (b *logBudget) finish() {
	if len(b.stderr) > 0 && !b.flooded {
		func() {
			defer func() { _ = recover() }() // a flood here is already counted
			b.stderrLine()
		}()
	}
	if b.droppedLines > 0 || b.dropped > 0 {
		b.log.Warn("batpak: plugin call over its log budget; the excess was dropped", append(b.attrs[:len(b.attrs):len(b.attrs)],
			"dropped_lines", b.droppedLines, "dropped_bytes", b.dropped, "log_lines", b.maxLines, "log_bytes", b.maxBytes)...)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// instantiate makes a new instance whose linear memory enforces
// Limits.MemoryPages.
func (v *version) instantiate(ctx context.Context) (*instance, error) {
	mem := &limitedMemory{limit: uint64(v.m.Limits.MemoryPages) * 65536}
	logs := &logBudget{log: v.log, attrs: v.logAttrs}
	logs.reset(v.m.Limits) // initialization logs within a call's budget
	ctx = experimental.WithMemoryAllocator(ctx, experimental.MemoryAllocatorFunc(
		func(_, _ uint64) experimental.LinearMemory { return mem }))
	ctx = context.WithValue(ctx, logBudgetKey{}, logs)
	mod, err := v.rt.InstantiateModule(ctx, v.mod, v.cfg.WithStderr(logs))
	logs.finish()
	if err != nil {
		return &instance{mem: mem, logs: logs}, err
	}
	if uint64(len(mem.buf)) > mem.limit {
		mod.Close(ctx)
		return &instance{mem: mem, logs: logs}, fmt.Errorf("its initial memory (%d bytes) is over the limit of %d pages", len(mem.buf), v.m.Limits.MemoryPages)
	}
	inst := &instance{mod: mod, mem: mem, logs: logs, funcs: map[string]api.Function{},
		depth: mod.ExportedGlobal(depthExport), stack: mod.ExportedGlobal(stackExport)}
	inst.peak, _ = mod.ExportedGlobal(peakExport).(api.MutableGlobal)
	if inst.depth == nil || inst.stack == nil || inst.peak == nil {
		mod.Close(ctx)
		return &instance{mem: mem, logs: logs}, errors.New("the host's call-stack counters are missing from the instance")
	}
	return inst, nil
}

// releaseStacks drops the instance's function handles, and the call
// stacks wazero keeps with them, if the last calls' stack went over
// keepStackBytes; it starts the peak over.
func (i *instance) releaseStacks() {
	if i.peak.Get() > keepStackBytes {
		i.funcs = map[string]api.Function{}
	}
	i.peak.Set(0)
}

// limitedMemory is an instance's linear memory (a wazero
// experimental.LinearMemory). It refuses to grow past limit bytes and
// records that it did, so that the trap a refused memory.grow usually
// leads to (a Go guest's "out of memory", a C guest's abort) is reported
// as FaultMemory rather than FaultTrap.
type limitedMemory struct {
	limit     uint64
	buf       []byte
	allocated bool
	refused   atomic.Bool // a grow was refused during the current call
}

// Reallocate implements experimental.LinearMemory. The first call, for the
// module's initial size, always succeeds (wazero cannot take a refusal
// there); Load refuses a module whose initial memory is over the limit
// before instantiating it, and instantiate checks it again after.
func (m *limitedMemory) Reallocate(size uint64) []byte {
	if m.allocated && size > m.limit {
		m.refused.Store(true)
		return nil
	}
	m.allocated = true
	if size <= uint64(cap(m.buf)) {
		// Memory never shrinks: the bytes up to cap were never exposed and
		// are still zero.
		m.buf = m.buf[:size]
		return m.buf
	}
	b := make([]byte, size, max(size, min(2*uint64(cap(m.buf)), m.limit)))
	copy(b, m.buf)
	m.buf = b
	return b
}

// Free implements experimental.LinearMemory; the garbage collector frees
// the buffer with the instance.
func (m *limitedMemory) Free() {}

// close closes the version: no call enters it any more, its idle
// instances are closed now, and its runtime (with its compiled code and
// charge, given back once the code is unmapped: see codeFreer) once the
// calls running in it have returned. Closing a wazero runtime under a
// running call races the call's memory.
func (v *version) close(ctx context.Context) error {
	v.mu.Lock()
	v.closed.Store(true)
	idle := v.running == 0
	v.mu.Unlock()
	v.drain()
	if idle {
		return v.finish(ctx)
	}
	return nil
}

// finish closes the runtime and gives back the code's charge, once.
func (v *version) finish(ctx context.Context) error {
	v.finishOnce.Do(func() {
		v.drain()
		v.finishErr = closeCompiled(ctx, v.rt, v.mod, v.cache)
		freer.free(v.code, v.releaseCode) // given back once unmapped
	})
	return v.finishErr
}

// enter counts a call into the version; false once it is closed.
func (v *version) enter() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed.Load() {
		return false
	}
	v.running++
	return true
}

// leave ends a call entered; the last call out of a closed version
// finishes it.
func (v *version) leave() {
	v.mu.Lock()
	v.running--
	last := v.running == 0 && v.closed.Load()
	v.mu.Unlock()
	if last {
		_ = v.finish(context.Background())
	}
}

// close unloads the plugin: it is marked unloaded (a later Swap is
// refused) and its version closed.
func (p *Plugin) close(ctx context.Context) error {
	p.unloaded.Store(true)
	return p.cur.Load().close(ctx)
}

// waitFreed waits, within ctx and at most freeWait, until a closed
// version's machine code is unmapped and its charge given back. A load
// refused once compiled waits so, so that refused loads cannot pile up
// code no charge counts.
func waitFreed(ctx context.Context, freed <-chan struct{}) {
	t := time.NewTimer(freeWait)
	defer t.Stop()
	select {
	case <-freed:
	case <-ctx.Done():
	case <-t.C:
	}
}

// freeWait bounds how long a refused load waits for its code to be
// unmapped, and one refused for want of room for others' (codeFreer.settle).
const freeWait = 10 * time.Second

// Name is the plugin's name.
func (p *Plugin) Name() string { return p.name }

// Manifest is the loaded version's manifest (defaults filled in).
func (p *Plugin) Manifest() Manifest { return p.cur.Load().m }

// CodeBytes is what the loaded version's compiled code holds in the
// host's memory, as HostOptions.Charge is charged for it: the machine
// code wazero mapped and the module's part on the heap (see
// CodeBytesPerModule), or CodeEstimate when the compiled code cannot be
// measured.
func (p *Plugin) CodeBytes() int64 { return p.cur.Load().codeBytes }

// Digest is the loaded module's SHA-256.
func (p *Plugin) Digest() string { return p.cur.Load().digest }

// Quarantined reports whether the plugin refuses calls after too many
// consecutive faults (Swap, or Reset, lifts it).
func (p *Plugin) Quarantined() bool {
	return int(p.faults.Load()) >= p.cur.Load().m.Limits.MaxFaults
}

// Reset lifts a quarantine and forgets the fault count.
func (p *Plugin) Reset() { p.faults.Store(0) }

// Swap replaces the plugin's module with a new version without stopping
// callers: calls in progress finish on the old version, new calls use the
// new one. The new manifest's name must match. Faults are forgotten. A
// plugin unloaded (Host.Unload, Host.Close) cannot be swapped: ErrUnloaded,
// and the new version is closed.
func (p *Plugin) Swap(ctx context.Context, wasm []byte, m Manifest) error {
	if m.Name != p.name {
		return &LoadError{Plugin: p.name, Reason: fmt.Sprintf("swap to a manifest named %q", m.Name)}
	}
	v, err := p.h.compile(ctx, wasm, m)
	if err != nil {
		return err
	}
	if p.unloaded.Load() {
		_ = v.close(ctx)
		return fmt.Errorf("%w: %s", ErrUnloaded, p.name)
	}
	old := p.cur.Swap(v)
	if p.unloaded.Load() {
		// Unloaded while it swapped: whichever version the unload closed,
		// both are closed now.
		_ = v.close(ctx)
		_ = old.close(ctx)
		return fmt.Errorf("%w: %s", ErrUnloaded, p.name)
	}
	p.faults.Store(0)
	// Its idle instances are closed now, its runtime once the calls
	// running on it return (instances they hand back are closed: see put).
	_ = old.close(context.Background())
	return nil
}

// call runs export with inputs copied into guest memory and returns a
// copy of the output. check, if not nil, validates the output: its error
// is a FaultOutput. Faults discard the instance and count toward
// quarantine; only a call whose output passed check resets the count.
func (p *Plugin) call(ctx context.Context, export string, check func(out []byte) error, in callInput) ([]byte, error) {
	return p.callOn(ctx, nil, export, check, in)
}

// callInput is what a call passes the module: a fold's state first
// (withState), then the events in the ABI's batch layout — encoded only
// once the call holds its turn and its version (so calls waiting for a
// slot hold their events, not a copy of them).
type callInput struct {
	state     []byte
	withState bool
	evs       []core.StoredEvent
}

// encode returns the inputs and the func that gives their buffer back.
func (in callInput) encode() ([][]byte, func()) {
	batch := encodeBatch(in.evs)
	done := func() { batchBufs.Put(batch) }
	if in.withState {
		return [][]byte{in.state, *batch}, done
	}
	return [][]byte{*batch}, done
}

// callOn is call on version pin of the module, or (pin nil) on the
// version current once the call is admitted (HostOptions.Admit): a call
// that waited for its turn while the plugin was swapped runs the new
// version, never the old one Swap closed. A pinned call whose version is
// no longer current when admitted returns ErrSwapped (its caller folds
// again from the start); a call of an unloaded plugin, ErrUnloaded.
func (p *Plugin) callOn(ctx context.Context, pin *version, export string, check func(out []byte) error, in callInput) ([]byte, error) {
	v := pin
	if v == nil {
		v = p.cur.Load()
	}
	fault := func(kind FaultKind, cause error) error {
		if kind != FaultQuarantined {
			p.faults.Add(1)
		}
		return &PluginFault{Plugin: v.m.Name, Version: v.m.Version, Kind: kind, Cause: cause}
	}
	if p.Quarantined() {
		return nil, fault(FaultQuarantined, fmt.Errorf("%d consecutive faults; reload the plugin", p.faults.Load()))
	}
	// A call the caller gave up on (its context ended) is not the plugin's
	// fault: it is neither reported as a timeout nor counted.
	parent := ctx
	abandoned := func() error {
		return fmt.Errorf("batpak: plugin %s@%s: call abandoned: %w", v.m.Name, v.m.Version, context.Cause(parent))
	}
	if p.h.admit != nil {
		release, err := p.h.admit(ctx)
		if err != nil {
			if parent.Err() != nil {
				return nil, abandoned()
			}
			return nil, err
		}
		defer release()
		// While it waited the plugin may have been swapped (and the
		// version it would have run closed) or quarantined.
		switch cur := p.cur.Load(); {
		case pin == nil:
			v = cur
		case cur != pin:
			return nil, ErrSwapped
		}
		if p.Quarantined() {
			return nil, fault(FaultQuarantined, fmt.Errorf("%d consecutive faults; reload the plugin", p.faults.Load()))
		}
	}
	// The version stays open while the call runs in it (see close).
	if !v.enter() {
		cur := p.cur.Load()
		switch {
		case p.unloaded.Load():
			return nil, fmt.Errorf("%w: %s", ErrUnloaded, p.name)
		case pin != nil:
			return nil, ErrSwapped
		case cur == v || !cur.enter():
			return nil, fmt.Errorf("%w: %s", ErrUnloaded, p.name)
		}
		v = cur // swapped since it was read
	}
	defer v.leave()
	// The timeout covers a fresh instance's initialization too.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(v.m.Limits.Timeout))
	defer cancel()
	inst, err := v.checkout(ctx)
	if err != nil {
		if parent.Err() != nil {
			return nil, abandoned()
		}
		kind, err := v.classifyErr(ctx, inst, err)
		return nil, fault(kind, fmt.Errorf("instantiating: %w", err))
	}
	inputs, done := in.encode()
	defer done()
	out, kind, err := v.invoke(ctx, inst, export, inputs)
	inst.logs.finish()
	p.logLines.Add(inst.logs.keptLines)
	p.logBytes.Add(inst.logs.keptBytes)
	p.droppedLogLines.Add(inst.logs.droppedLines)
	p.droppedLogBytes.Add(inst.logs.dropped)
	if err != nil {
		inst.mod.Close(context.Background())
		if parent.Err() != nil {
			return nil, abandoned()
		}
		return nil, fault(kind, err)
	}
	// A call that returned but outran its deadline (work wazero could not
	// interrupt) is a timeout all the same. The clock decides, not ctx.Err:
	// the context's timer may not have fired yet when the guest's code
	// held the thread.
	if dl, _ := ctx.Deadline(); time.Now().After(dl) && parent.Err() == nil {
		inst.mod.Close(context.Background())
		return nil, fault(FaultTimeout, fmt.Errorf("the call returned after its %v timeout", time.Duration(v.m.Limits.Timeout)))
	}
	if check != nil {
		if err := check(out); err != nil {
			inst.mod.Close(context.Background())
			kind := FaultOutput
			if errors.Is(err, errOutputLimit) {
				kind = FaultOutputLimit
			}
			return nil, fault(kind, err)
		}
	}
	p.faults.Store(0)
	inst.releaseStacks()
	v.put(inst, p.cur.Load() == v)
	return out, nil
}

func (v *version) checkout(ctx context.Context) (*instance, error) {
	select {
	case inst := <-v.pool:
		inst.takeOut()
		return inst, nil
	default:
		return v.instantiate(ctx)
	}
}

// put hands inst back after a call: kept idle in the pool if the version
// is current, the pool has room and the host's Charge allows its memory,
// else closed.
func (v *version) put(inst *instance, current bool) {
	if !current {
		inst.mod.Close(context.Background())
		return
	}
	if v.charge != nil {
		release, err := v.charge(MemoryIdle, int64(cap(inst.mem.buf))+v.perInstance)
		if err != nil {
			inst.mod.Close(context.Background())
			return
		}
		inst.idle = sync.OnceFunc(release)
	}
	select {
	case v.pool <- inst:
		if v.closed.Load() {
			// Closed while the call ran (Unload): nothing waits in the
			// pool of a closed version (close set closed before it emptied
			// the pool, so one of the two takes inst out).
			v.drain()
		}
	default:
		inst.takeOut()
		inst.mod.Close(context.Background())
	}
}

// drain closes the idle instances, giving back their charges.
func (v *version) drain() {
	for {
		select {
		case inst := <-v.pool:
			inst.takeOut()
			inst.mod.Close(context.Background())
		default:
			return
		}
	}
}

// invoke passes inputs, calls export and reads the packed result. A
// panic in the host's part of the call (a result it did not expect) is
// the module's fault, FaultOutput: the instance is discarded as for any
// other, and the host goes on.
func (v *version) invoke(ctx context.Context, inst *instance, export string, inputs [][]byte) (out []byte, kind FaultKind, err error) {
	defer func() {
		if p := recover(); p != nil {
			v.log.Error("plugin call: host panic", append(v.logAttrs, "export", export, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))...)
			out, kind, err = nil, FaultOutput, fmt.Errorf("%s: the host could not use what the module returned", export)
		}
	}()
	inst.mem.refused.Store(false)
	inst.logs.reset(v.m.Limits)
	ctx = context.WithValue(ctx, logBudgetKey{}, inst.logs)
	mem := inst.mod.Memory()
	alloc := inst.fn(abi.ExportAlloc)
	params := make([]uint64, 0, 2*len(inputs))
	for _, in := range inputs {
		ptr := uint32(0)
		if len(in) > 0 {
			res, err := alloc.Call(ctx, uint64(len(in)))
			if err != nil {
				kind, err := v.classifyErr(ctx, inst, err)
				return nil, kind, err
			}
			if len(res) != 1 {
				// Load checks the signature; this guards the host all
				// the same.
				return nil, FaultOutput, fmt.Errorf("%s returned %d values, want one i32", abi.ExportAlloc, len(res))
			}
			ptr = uint32(res[0])
			if ptr == 0 && inst.mem.refused.Load() {
				return nil, FaultMemory, fmt.Errorf("%s(%d) failed: the module was refused memory beyond its limit of %d pages", abi.ExportAlloc, len(in), v.m.Limits.MemoryPages)
			}
			if ptr == 0 || !mem.Write(ptr, in) {
				return nil, FaultOutput, fmt.Errorf("%s(%d) returned an unusable buffer %#x", abi.ExportAlloc, len(in), ptr)
			}
		}
		params = append(params, uint64(ptr), uint64(len(in)))
	}
	res, err := inst.fn(export).Call(ctx, params...)
	if err != nil {
		kind, err := v.classifyErr(ctx, inst, err)
		return nil, kind, err
	}
	if len(res) != 1 {
		return nil, FaultOutput, fmt.Errorf("%s returned %d values, want one i64", export, len(res))
	}
	ptr, n, isErr := abi.UnpackResult(res[0])
	if n > v.m.Limits.MaxOutputBytes {
		return nil, FaultOutputLimit, fmt.Errorf("%s returned %d bytes, the limit is %d", export, n, v.m.Limits.MaxOutputBytes)
	}
	b, ok := mem.Read(ptr, n)
	if !ok {
		return nil, FaultOutput, fmt.Errorf("%s returned bytes [%#x, +%d) outside its memory (%d bytes)", export, ptr, n, mem.Size())
	}
	out = bytes.Clone(b)
	if isErr {
		return nil, FaultGuest, errors.New(printable.String(string(out)))
	}
	return out, "", nil
}

// classifyErr names a failed call: a timeout (the context), memory
// exhaustion (the module was refused memory during the call, or reports
// running out), or another trap.
func (v *version) classifyErr(ctx context.Context, inst *instance, err error) (FaultKind, error) {
	if inst.logs != nil && inst.logs.flooded {
		return FaultLogLimit, fmt.Errorf("it asked to log %d lines, %d bytes: over 16 times its budget of %d lines, %d bytes per call",
			inst.logs.lines, inst.logs.bytes, v.m.Limits.LogLines, v.m.Limits.LogBytes)
	}
	if inst.depth != nil && inst.depth.Get() > uint64(v.m.Limits.CallDepth) {
		return FaultStack, fmt.Errorf("the call went deeper than its limit of %d nested calls (limits.call_depth)", v.m.Limits.CallDepth)
	}
	if inst.stack != nil && inst.stack.Get() > uint64(v.m.Limits.StackBytes) {
		return FaultStack, fmt.Errorf("the call needed more call stack than its limit of %d bytes (limits.stack_bytes; %d nested calls)",
			v.m.Limits.StackBytes, inst.depth.Get())
	}
	if strings.Contains(err.Error(), "stack overflow") {
		return FaultStack, fmt.Errorf("the call stack ran out: %w", err)
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded, sys.ExitCodeContextCanceled:
			if ctx.Err() != nil {
				return FaultTimeout, fmt.Errorf("the call did not finish within %v", time.Duration(v.m.Limits.Timeout))
			}
		}
	}
	if ctx.Err() != nil {
		return FaultTimeout, fmt.Errorf("the call did not finish within %v: %w", time.Duration(v.m.Limits.Timeout), err)
	}
	if inst.mem.refused.Load() {
		return FaultMemory, fmt.Errorf("the module was refused memory beyond its limit of %d pages: %w", v.m.Limits.MemoryPages, err)
	}
	if strings.Contains(err.Error(), "out of memory") {
		return FaultMemory, err
	}
	return FaultTrap, err
}

// Stats are a plugin's running totals since it was loaded.
type Stats struct {
	// LogLines and LogBytes are what its calls logged; DroppedLogLines and
	// DroppedLogBytes what was over their budgets and dropped.
	LogLines, LogBytes               uint64
	DroppedLogLines, DroppedLogBytes uint64
}

// Stats returns the plugin's running totals.
func (p *Plugin) Stats() Stats {
	return Stats{
		LogLines: p.logLines.Load(), LogBytes: p.logBytes.Load(),
		DroppedLogLines: p.droppedLogLines.Load(), DroppedLogBytes: p.droppedLogBytes.Load(),
	}
}
