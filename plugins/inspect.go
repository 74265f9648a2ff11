package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/batpak-go/batpak/plugins/abi"
)

// ErrNotAModule: Inspect was given bytes wazero does not accept as a
// WebAssembly module, or that the host does not give to wazero (see
// Inspect); the error wraps the reason.
var ErrNotAModule = errors.New("batpak: not a WebAssembly module wazero accepts")

// Inspection is what a module offers the plugin host, read without
// loading it as a plugin (Host.Load says whether the host would).
type Inspection struct {
	Size   int    // bytes
	SHA256 string // hex, as Digest
	// ABIVersion is what the module's batpak_abi_version answers; valid
	// when ABIError is nil.
	ABIVersion int32
	// ABIError says why the ABI version is unknown: the module does not
	// export it, is over inspectLimits (not instantiated), does not
	// instantiate, or the call fails.
	ABIError error
	// Kinds are the plugin kinds the exports allow: KindProjection for
	// batpak_fold, KindHandler for batpak_handle (a Go guest exports
	// both; its manifest says which it is). Empty when neither.
	Kinds []Kind
	// Memory is the linear memory's declared limits (exported or
	// imported); nil when the module has none.
	Memory *MemoryLimits
	// Exports: the functions, sorted by name, then the memories.
	Exports []ModuleItem
	// Imports, in the module's order.
	Imports []ModuleItem
}

// MemoryLimits are a linear memory's declared size limits, in 64 KiB
// pages.
type MemoryLimits struct {
	MinPages uint32  // initial size
	MaxPages *uint32 // nil: no declared maximum
}

// ModuleItem is one export or import of a module.
type ModuleItem struct {
	Module  string   // the importing module's name ("" for exports)
	Name    string   // the export's or import's name
	Kind    string   // "function" or "memory"
	Params  []string // a function's parameter types (i32, i64, f32, f64, …)
	Results []string // a function's result types
}

// Inspect reads a module's exports, imports, declared memory limits and
// the plugin kinds its exports allow, and asks it its ABI version: the
// module is instantiated in a sandbox of its own (WASI without files,
// network or environment, batpak.log and output discarded, at most 64 MiB
// of memory, 10 s), its _initialize run first if it exports one (a Go
// guest), and batpak_abi_version called. Only a module within the limits
// Load applies, at the most a manifest allows (64 tables, 4194304 table
// elements declared and grown together, as many element entries, 65536
// globals), is instantiated; ABIError names what another is over. A module that fails there still
// inspects; ABIError says why (a ctx that ends during the call too). The
// only error is ErrNotAModule, wrapping the reason: wazero does not
// accept the bytes, or the host does not give them to wazero, as Load
// does not: it cannot read their sections (malformed, or a construct it
// does not support: among them any written in a form wazero reads with
// other bytes than the host, such as a reference type other than funcref
// and externref, or a typed function reference), or decoding them would
// take memory out of proportion to their size (a count or a length over
// the bytes that hold it, in any section or in the custom section
// "name"; more than MaxTypes, MaxFunctions, MaxFunctionLocals,
// MaxModuleLocals or MaxTypeArity).
func Inspect(ctx context.Context, wasm []byte) (*Inspection, error) {
	ins := &Inspection{Size: len(wasm), SHA256: Digest(wasm), Kinds: []Kind{}, Exports: []ModuleItem{}, Imports: []ModuleItem{}}
	// wazero reads a section's entries from the whole module, so only
	// what the host read whole is bounded (see errOverclaim).
	shape, err := readModule(wasm)
	if err != nil {
		return nil, fmt.Errorf("%w: the host cannot read its sections: %w", ErrNotAModule, err)
	}
	if reason := shape.decodeBounds(); reason != "" {
		return nil, fmt.Errorf("%w: %s", ErrNotAModule, reason)
	}

	// Instantiating allocates the module's tables, globals and element
	// segments on the host's heap, outside the memory limit: bounded as
	// Load bounds them, tables' growth too.
	overLimits := shape.check(inspectLimits)
	if overLimits == "" {
		wasm = shape.boundTables(wasm, uint64(inspectLimits.TableElements))
	}

	// The interpreter compiles fastest, and this runtime shares no cache
	// with a Host's (whose code must be interruptible).
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter().
		WithCloseOnContextDone(true).WithMemoryLimitPages(inspectMemoryPages).WithDebugInfoEnabled(false))
	defer rt.Close(ctx)
	mod, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotAModule, err)
	}
	exports := mod.ExportedFunctions()
	names := make([]string, 0, len(exports))
	for n := range exports {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		d := exports[n]
		ins.Exports = append(ins.Exports, ModuleItem{Name: n, Kind: "function", Params: valueTypes(d.ParamTypes()), Results: valueTypes(d.ResultTypes())})
	}
	for n, m := range mod.ExportedMemories() {
		ins.Exports = append(ins.Exports, ModuleItem{Name: n, Kind: "memory"})
		ins.Memory = memoryLimits(m)
	}
	for _, d := range mod.ImportedFunctions() {
		mn, n, _ := d.Import()
		ins.Imports = append(ins.Imports, ModuleItem{Module: mn, Name: n, Kind: "function", Params: valueTypes(d.ParamTypes()), Results: valueTypes(d.ResultTypes())})
	}
	for _, m := range mod.ImportedMemories() {
		mn, n, _ := m.Import()
		ins.Imports = append(ins.Imports, ModuleItem{Module: mn, Name: n, Kind: "memory"})
		ins.Memory = memoryLimits(m)
	}
	if _, ok := exports[abi.ExportFold]; ok {
		ins.Kinds = append(ins.Kinds, KindProjection)
	}
	if _, ok := exports[abi.ExportHandle]; ok {
		ins.Kinds = append(ins.Kinds, KindHandler)
	}

	if _, ok := exports[abi.ExportABIVersion]; !ok {
		ins.ABIError = errors.New("the module does not export " + abi.ExportABIVersion)
	} else if overLimits != "" {
		ins.ABIError = fmt.Errorf("not instantiated: %s", overLimits)
	} else {
		ins.ABIVersion, ins.ABIError = callABIVersion(ctx, rt, mod, exports)
	}
	if err := checkSignatures(exports); err != nil && ins.ABIError == nil {
		ins.ABIError = err
	}
	return ins, nil
}

// inspectLimits are the limits Inspect instantiates a module within:
// Load's, at the most a manifest allows, and Inspect's memory.
var inspectLimits = Limits{MemoryPages: inspectMemoryPages, TableElements: maxTableElements, Tables: maxTables, Globals: maxGlobals}

// inspectMemoryPages is the memory Inspect gives a module, in 64 KiB
// pages.
const inspectMemoryPages = 1024

func valueTypes(ts []api.ValueType) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = api.ValueTypeName(t)
	}
	return out
}

func memoryLimits(m api.MemoryDefinition) *MemoryLimits {
	ml := &MemoryLimits{MinPages: m.Min()}
	if mx, ok := m.Max(); ok {
		ml.MaxPages = &mx
	}
	return ml
}

// callABIVersion instantiates mod in rt (sandboxed: WASI without files,
// network or environment, batpak.log discarded; _initialize first if the
// module has it) and returns what batpak_abi_version answers.
func callABIVersion(ctx context.Context, rt wazero.Runtime, mod wazero.CompiledModule, exports map[string]api.FunctionDefinition) (int32, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		return 0, err
	}
	if _, err := rt.NewHostModuleBuilder(abi.ImportModule).NewFunctionBuilder().
		WithFunc(func(context.Context, api.Module, uint32, uint32, uint32) {}).
		Export(abi.ImportLog).Instantiate(ctx); err != nil {
		return 0, err
	}
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions().WithStdout(io.Discard).WithStderr(io.Discard)
	if _, ok := exports["_initialize"]; ok {
		cfg = cfg.WithStartFunctions("_initialize")
	}
	inst, err := rt.InstantiateModule(ctx, mod, cfg)
	if err != nil {
		return 0, fmt.Errorf("instantiating: %v", err)
	}
	defer inst.Close(ctx)
	res, err := inst.ExportedFunction(abi.ExportABIVersion).Call(ctx)
	if err != nil {
		return 0, fmt.Errorf("calling %s: %v", abi.ExportABIVersion, err)
	}
	if len(res) != 1 {
		return 0, fmt.Errorf("%s returned %d values, want one i32", abi.ExportABIVersion, len(res))
	}
	return api.DecodeI32(res[0]), nil
}
