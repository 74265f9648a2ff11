package plugins

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/batpak-go/batpak/plugins/abi"
)

// Host loads and runs plugins. Each plugin gets its own wazero runtime
// (so its memory limit is its own); all share one compilation cache.
type Host struct {
	cache wazero.CompilationCache
	log   *slog.Logger

	mu      sync.Mutex
	plugins map[string]*Plugin
}

// HostOptions configures a Host.
type HostOptions struct {
	// CacheDir keeps compiled modules between runs (a Go guest compiles in
	// about a second cold, ~50 ms from the cache). Empty: in memory only.
	CacheDir string
	// Logger receives plugins' log calls. Default slog.Default().
	Logger *slog.Logger
}

// NewHost returns a plugin host.
func NewHost(opts HostOptions) (*Host, error) {
	h := &Host{log: opts.Logger, plugins: map[string]*Plugin{}}
	if h.log == nil {
		h.log = slog.Default()
	}
	if opts.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(opts.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("batpak: plugin compilation cache: %w", err)
		}
		h.cache = c
	} else {
		h.cache = wazero.NewCompilationCache()
	}
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
	errs = append(errs, h.cache.Close(ctx))
	return errors.Join(errs...)
}

// Plugin is a loaded plugin. It is safe for concurrent use: calls check
// out an instance from a pool (instances are not goroutine-safe).
type Plugin struct {
	h      *Host
	name   string
	cur    atomic.Pointer[version]
	faults atomic.Int32 // consecutive
}

// version is one loaded module of a plugin; Swap replaces it.
type version struct {
	m       Manifest
	digest  string
	rt      wazero.Runtime
	mod     wazero.CompiledModule
	cfg     wazero.ModuleConfig
	exports map[string]bool
	pool    chan api.Module
}

// Load compiles wasm as the plugin described by m and registers it under
// m.Name (replacing nothing: use Plugin.Swap to replace). It refuses a
// digest that does not match m.SHA256, a module whose ABI version is not
// abi.Version, and one missing the exports its kind needs.
func (h *Host) Load(ctx context.Context, wasm []byte, m Manifest) (*Plugin, error) {
	v, err := h.compile(ctx, wasm, m)
	if err != nil {
		return nil, err
	}
	p := &Plugin{h: h, name: v.m.Name}
	p.cur.Store(v)
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, dup := h.plugins[p.name]; dup {
		v.close(ctx)
		return nil, &LoadError{Plugin: p.name, Reason: "a plugin of that name is loaded (use Swap)"}
	}
	h.plugins[p.name] = p
	return p, nil
}

// Plugin returns the loaded plugin called name.
func (h *Host) Plugin(name string) (*Plugin, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.plugins[name]
	return p, ok
}

// Unload removes a plugin.
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
		return nil, err
	}
	refuse := func(reason string, cause error) (*version, error) {
		return nil, &LoadError{Plugin: m.Name, Reason: reason, Cause: cause}
	}
	digest := Digest(wasm)
	if m.SHA256 != "" && m.SHA256 != digest {
		return refuse(fmt.Sprintf("sha256 %s does not match the pinned %s", digest, m.SHA256), nil)
	}
	rc := wazero.NewRuntimeConfig().
		WithCompilationCache(h.cache).
		WithMemoryLimitPages(m.Limits.MemoryPages).
		WithCloseOnContextDone(true)
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	fail := func(reason string, cause error) (*version, error) {
		rt.Close(ctx)
		return refuse(reason, cause)
	}
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		return fail("instantiating WASI", err)
	}
	name := m.Name
	_, err := rt.NewHostModuleBuilder(abi.ImportModule).
		NewFunctionBuilder().
		WithFunc(func(ctx context.Context, mod api.Module, level, ptr, n uint32) {
			b, ok := mod.Memory().Read(ptr, min(n, 4096))
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
			h.log.Log(ctx, lvl, string(b), "plugin", name)
		}).Export(abi.ImportLog).
		Instantiate(ctx)
	if err != nil {
		return fail("instantiating host functions", err)
	}
	mod, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		return fail("module does not compile", err)
	}
	exports := map[string]bool{}
	for n := range mod.ExportedFunctions() {
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
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions().
		WithStdout(io.Discard).WithStderr(&logWriter{log: h.log, plugin: m.Name})
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
	v := &version{m: m, digest: digest, rt: rt, mod: mod, cfg: cfg, exports: exports, pool: make(chan api.Module, m.Limits.PoolSize)}
	// Instantiate once now: the ABI version is checked and the first
	// instance is ready for the first call.
	inst, err := v.instantiate(ctx)
	if err != nil {
		return fail("instantiating the module", err)
	}
	res, err := inst.ExportedFunction(abi.ExportABIVersion).Call(ctx)
	if err != nil || len(res) != 1 {
		inst.Close(ctx)
		return fail("calling "+abi.ExportABIVersion, err)
	}
	if got := api.DecodeI32(res[0]); got != abi.Version {
		inst.Close(ctx)
		return fail(fmt.Sprintf("ABI version %d, this host speaks version %d", got, abi.Version), nil)
	}
	v.pool <- inst
	return v, nil
}

// fixedEpoch is the time a plugin without the clock grant sees:
// 2020-01-01T00:00:00Z, always.
const fixedEpoch = 1577836800

// logWriter turns a plugin's stderr into log lines (at most 4 KiB a line).
type logWriter struct {
	mu     sync.Mutex
	log    *slog.Logger
	plugin string
	buf    []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > 4096 {
				i = 4096
			} else {
				return len(p), nil
			}
		}
		w.log.Warn(string(w.buf[:i]), "plugin", w.plugin, "stream", "stderr")
		w.buf = w.buf[min(i+1, len(w.buf)):]
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func (v *version) instantiate(ctx context.Context) (api.Module, error) {
	return v.rt.InstantiateModule(ctx, v.mod, v.cfg)
}

func (v *version) close(ctx context.Context) error {
	for {
		select {
		case inst := <-v.pool:
			inst.Close(ctx)
		default:
			return v.rt.Close(ctx)
		}
	}
}

func (p *Plugin) close(ctx context.Context) error { return p.cur.Load().close(ctx) }

// Name is the plugin's name.
func (p *Plugin) Name() string { return p.name }

// Manifest is the loaded version's manifest (defaults filled in).
func (p *Plugin) Manifest() Manifest { return p.cur.Load().m }

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
// new one. The new manifest's name must match. Faults are forgotten.
func (p *Plugin) Swap(ctx context.Context, wasm []byte, m Manifest) error {
	if m.Name != p.name {
		return &LoadError{Plugin: p.name, Reason: fmt.Sprintf("swap to a manifest named %q", m.Name)}
	}
	v, err := p.h.compile(ctx, wasm, m)
	if err != nil {
		return err
	}
	old := p.cur.Swap(v)
	p.faults.Store(0)
	// Instances checked out of the old pool are closed when returned (see
	// put); idle ones now.
	go func() {
		time.Sleep(time.Duration(old.m.Limits.Timeout) + time.Second)
		old.close(context.Background())
	}()
	return nil
}

// call runs export with inputs copied into guest memory and returns a
// copy of the output. Faults discard the instance and count toward
// quarantine.
func (p *Plugin) call(ctx context.Context, export string, inputs ...[]byte) ([]byte, error) {
	v := p.cur.Load()
	fault := func(kind FaultKind, cause error) error {
		if kind != FaultQuarantined {
			p.faults.Add(1)
		}
		return &PluginFault{Plugin: v.m.Name, Version: v.m.Version, Kind: kind, Cause: cause}
	}
	if p.Quarantined() {
		return nil, fault(FaultQuarantined, fmt.Errorf("%d consecutive faults; reload the plugin", p.faults.Load()))
	}
	inst, err := v.checkout(ctx)
	if err != nil {
		return nil, fault(FaultTrap, err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(v.m.Limits.Timeout))
	defer cancel()
	out, kind, err := v.invoke(ctx, inst, export, inputs)
	if err != nil {
		inst.Close(context.Background())
		return nil, fault(kind, err)
	}
	p.faults.Store(0)
	v.put(inst, p.cur.Load() == v)
	return out, nil
}

func (v *version) checkout(ctx context.Context) (api.Module, error) {
	select {
	case inst := <-v.pool:
		return inst, nil
	default:
		return v.instantiate(ctx)
	}
}

func (v *version) put(inst api.Module, current bool) {
	if !current {
		inst.Close(context.Background())
		return
	}
	select {
	case v.pool <- inst:
	default:
		inst.Close(context.Background())
	}
}

// invoke passes inputs, calls export and reads the packed result.
func (v *version) invoke(ctx context.Context, inst api.Module, export string, inputs [][]byte) ([]byte, FaultKind, error) {
	mem := inst.Memory()
	alloc := inst.ExportedFunction(abi.ExportAlloc)
	params := make([]uint64, 0, 2*len(inputs))
	for _, in := range inputs {
		ptr := uint32(0)
		if len(in) > 0 {
			res, err := alloc.Call(ctx, uint64(len(in)))
			if err != nil {
				kind, err := v.classifyErr(ctx, inst, err)
				return nil, kind, err
			}
			ptr = uint32(res[0])
			if ptr == 0 || !mem.Write(ptr, in) {
				return nil, FaultOutput, fmt.Errorf("%s(%d) returned an unusable buffer %#x", abi.ExportAlloc, len(in), ptr)
			}
		}
		params = append(params, uint64(ptr), uint64(len(in)))
	}
	res, err := inst.ExportedFunction(export).Call(ctx, params...)
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
	out := bytes.Clone(b)
	if isErr {
		return nil, FaultGuest, errors.New(string(out))
	}
	return out, "", nil
}

// classifyErr names a failed call: a timeout (the context), memory
// exhaustion (a trap with memory at its cap, or an out-of-memory exit), or
// another trap.
func (v *version) classifyErr(ctx context.Context, inst api.Module, err error) (FaultKind, error) {
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
	if mem := inst.Memory(); mem != nil && uint64(mem.Size())+4*65536 > uint64(v.m.Limits.MemoryPages)*65536 {
		return FaultMemory, fmt.Errorf("memory at its limit of %d pages: %w", v.m.Limits.MemoryPages, err)
	}
	if strings.Contains(err.Error(), "out of memory") {
		return FaultMemory, err
	}
	return FaultTrap, err
}
