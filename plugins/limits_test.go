package plugins_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/testmodules"
	"github.com/batpak-go/batpak/plugins"
)

// Tests of the sandbox's resource limits: each resource a module can grow
// (linear memory, tables, globals, segments, the call stack) is refused at
// Load or bounded at run time, a call over a limit is a *PluginFault, and
// the host's own heap stays bounded while it happens.

// u32s encodes little-endian u32s: the state the limit fixtures read their
// arguments from.
func u32s(vs ...uint32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], v)
	}
	return b
}

// heapGuard measures the Go heap around a test's hostile calls: check fails
// the test when the heap in use (after a collection) or the memory the heap
// took from the OS grew by more than limit bytes since the guard was made.
type heapGuard struct {
	before runtime.MemStats
}

func newHeapGuard() *heapGuard {
	g := &heapGuard{}
	runtime.GC()
	runtime.ReadMemStats(&g.before)
	return g
}

func (g *heapGuard) check(t *testing.T, what string, limit uint64) {
	t.Helper()
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := func(a, b uint64) uint64 {
		if b < a {
			return 0
		}
		return b - a
	}
	inUse, sys := grown(g.before.HeapAlloc, after.HeapAlloc), grown(g.before.HeapSys, after.HeapSys)
	t.Logf("%s: heap in use +%d KiB, heap from the OS +%d KiB", what, inUse>>10, sys>>10)
	if inUse > limit || sys > limit {
		t.Errorf("%s: the host heap grew by %d MiB in use, %d MiB from the OS; want at most %d MiB", what, inUse>>20, sys>>20, limit>>20)
	}
}

// checkInUse is check for the heap in use only: what the host still holds
// after GC, not what it took from the OS for calls that have ended.
func (g *heapGuard) checkInUse(t *testing.T, what string, limit uint64) {
	t.Helper()
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	inUse := int64(after.HeapAlloc) - int64(g.before.HeapAlloc)
	t.Logf("%s: heap in use %+d KiB (heap from the OS %+d KiB)", what, inUse>>10, (int64(after.HeapSys)-int64(g.before.HeapSys))>>10)
	if inUse > int64(limit) {
		t.Errorf("%s: the host holds %d MiB more heap; want at most %d MiB", what, inUse>>20, limit>>20)
	}
}

// stillServes checks that a healthy plugin on the same host answers.
func stillServes(t *testing.T, good *plugins.Plugin) {
	t.Helper()
	st, err := good.Fold(context.Background(), nil, []core.StoredEvent{oneEvent(kindA)})
	if err != nil || u64(t, st) != 1 {
		t.Fatalf("the healthy plugin after the hostile one: %x, %v", st, err)
	}
}

// TestTableGrowLimit: a table declared without a maximum grows to exactly
// limits.table_elements and no further: the refused table.grow returns -1
// to the guest (which reports it), and a guest that grows in a loop until
// refused ends quickly with the host heap bounded.
func TestTableGrowLimit(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	good := load(t, h, fixture(t, "counter"), projManifest("good"))
	ev := []core.StoredEvent{oneEvent(kindA)}

	const limit = 4096
	m := projManifest("tablegrow")
	m.Limits = faultLimits
	m.Limits.Timeout = plugins.Duration(10 * time.Second) // not what is tested (a loaded machine is slow)
	m.Limits.TableElements = limit
	p := load(t, h, fixture(t, "tablegrow"), m)
	// The table has 1 element: growing by limit-1 reaches the limit.
	st, err := p.Fold(ctx, u32s(limit-1), ev)
	if err != nil || u64(t, st) != limit {
		t.Fatalf("growing the table to exactly %d elements: %x, %v", limit, st, err)
	}
	// The same (pooled) instance grows by one more: refused.
	_, err = p.Fold(ctx, u32s(1), ev)
	if f := asFault(t, err); f.Kind != plugins.FaultGuest || !strings.Contains(err.Error(), "table.grow refused") {
		t.Fatalf("growing past %d elements: %v, want the guest to see table.grow refused", limit, err)
	}
	// A fresh instance (the faulted one was discarded) cannot take one
	// more than the limit in one step either.
	if _, err := p.Fold(ctx, u32s(limit), ev); err == nil || !strings.Contains(err.Error(), "table.grow refused") {
		t.Fatalf("growing a fresh table by %d: %v, want refused", limit, err)
	}

	// Growing in a loop until refused, with the default limit.
	guard := newHeapGuard()
	flood := load(t, h, fixture(t, "tablegrow"), projManifest("tableflood"))
	for i := 0; i < 3; i++ {
		start := time.Now()
		_, err := flood.Fold(ctx, nil, ev)
		if f := asFault(t, err); f.Kind != plugins.FaultGuest {
			t.Fatalf("table.grow in a loop: %v, want a guest error", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("table.grow in a loop took %v", d)
		}
	}
	guard.check(t, "table.grow in a loop, 3 calls", 64<<20)
	stillServes(t, good)
}

// TestDeclaredTableAndGlobalLimits: Load refuses a module whose tables,
// table elements or globals are over the manifest's limits (exactly the
// limit loads), without allocating what the module declares.
func TestDeclaredTableAndGlobalLimits(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	good := load(t, h, fixture(t, "counter"), projManifest("good"))

	guard := newHeapGuard()
	_, err := h.Load(ctx, fixture(t, "bigtable"), projManifest("bigtable"))
	if le := asLoadError(t, err); !strings.Contains(le.Error(), "4194304 table elements, over the limit of 131072") {
		t.Fatalf("a table of 4194304 elements: %v", err)
	}
	guard.check(t, "loading a module with a 32 MiB table", 16<<20)

	// manytables: 5 tables of 16 elements, 3 globals.
	cases := []struct {
		name    string
		limits  plugins.Limits
		refused string // "" loads
	}{
		{"default limits (4 tables)", plugins.Limits{}, "5 tables, over the limit of 4"},
		{"tables 5", plugins.Limits{Tables: 5}, ""},
		{"tables 5, 80 elements", plugins.Limits{Tables: 5, TableElements: 80}, ""},
		{"tables 5, 79 elements", plugins.Limits{Tables: 5, TableElements: 79}, "80 table elements, over the limit of 79"},
		{"tables 5, 3 globals", plugins.Limits{Tables: 5, Globals: 3}, ""},
		{"tables 5, 2 globals", plugins.Limits{Tables: 5, Globals: 2}, "3 globals, over the limit of 2"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := projManifest("manytables-" + string(rune('a'+i)))
			m.Limits = c.limits
			p, err := h.Load(ctx, fixture(t, "manytables"), m)
			if c.refused == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				st, err := p.Fold(ctx, nil, []core.StoredEvent{oneEvent(kindA)})
				if err != nil || u64(t, st) != 80 {
					t.Fatalf("fold: %x, %v; want the 5 tables' 80 elements", st, err)
				}
				return
			}
			if le := asLoadError(t, err); !strings.Contains(le.Error(), c.refused) {
				t.Fatalf("Load: %v, want %q", err, c.refused)
			}
		})
	}
	stillServes(t, good)
}

// TestDeepRecursion: a guest that recurses without end faults with
// FaultStack quickly, the host heap stays bounded, the instance is
// discarded and the host goes on serving; limits.call_depth is exact.
func TestDeepRecursion(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	good := load(t, h, fixture(t, "counter"), projManifest("good"))
	m := projManifest("recurse")
	m.Limits.MaxFaults = 100
	m.Limits.Timeout = plugins.Duration(10 * time.Second)
	p := load(t, h, fixture(t, "recurse"), m)
	guard := newHeapGuard()
	for i := 0; i < 3; i++ {
		start := time.Now()
		_, err := p.Fold(ctx, nil, []core.StoredEvent{oneEvent(kindA)})
		if f := asFault(t, err); f.Kind != plugins.FaultStack {
			t.Fatalf("unbounded recursion: %v, want a %s fault", err, plugins.FaultStack)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("unbounded recursion took %v to fault", d)
		}
	}
	guard.check(t, "unbounded recursion, 3 calls", 64<<20)
	stillServes(t, good)

	// limits.call_depth at the boundary: exactly the limit of nested
	// calls (the export itself included) returns, one more faults.
	for _, limit := range []uint32{2, 500} {
		m := projManifest(fmt.Sprintf("depth-%d", limit))
		m.Limits.CallDepth = limit
		m.Limits.Timeout = plugins.Duration(10 * time.Second)
		p := load(t, h, fixture(t, "recurse"), m)
		st, err := p.Fold(ctx, u32s(limit), []core.StoredEvent{oneEvent(kindA)})
		if err != nil || u64(t, st) != uint64(limit) {
			t.Fatalf("nesting exactly %d calls: %x, %v", limit, st, err)
		}
		_, err = p.Fold(ctx, u32s(limit+1), []core.StoredEvent{oneEvent(kindA)})
		if f := asFault(t, err); f.Kind != plugins.FaultStack || !strings.Contains(err.Error(), fmt.Sprintf("limit of %d nested calls", limit)) {
			t.Fatalf("nesting %d calls: %v, want a stack fault naming the limit", limit+1, err)
		}
		// The instance that faulted was discarded and the count returns to
		// zero after each call: the limit holds call after call.
		for i := 0; i < 2; i++ {
			if st, err := p.Fold(ctx, u32s(limit), []core.StoredEvent{oneEvent(kindA)}); err != nil || u64(t, st) != uint64(limit) {
				t.Fatalf("nesting %d calls after the fault (call %d): %x, %v", limit, i, st, err)
			}
		}
	}
}

// TestCallOverDeadlineIsAFault: a call that returns normally but long
// after Limits.Timeout (its work was not interruptible) is a timeout fault:
// its instance is discarded and it counts toward quarantine.
func TestCallOverDeadlineIsAFault(t *testing.T) {
	ctx := context.Background()
	m := projManifest("slowok")
	m.Limits.MemoryPages = 512
	m.Limits.Timeout = plugins.Duration(10 * time.Millisecond)
	m.Limits.MaxFaults = 2
	p := load(t, newHost(t), fixture(t, "slowok"), m)
	for i := 0; i < 2; i++ {
		start := time.Now()
		_, err := p.Fold(ctx, nil, []core.StoredEvent{oneEvent(kindA)})
		elapsed := time.Since(start)
		if elapsed < 10*time.Millisecond {
			t.Skipf("the slow call took only %v: this machine fills 256 MiB faster than the test can measure", elapsed)
		}
		if f := asFault(t, err); f.Kind != plugins.FaultTimeout {
			t.Fatalf("call %d took %v against a 10ms timeout: %v, want a timeout fault", i, elapsed, err)
		}
	}
	if !p.Quarantined() {
		t.Fatal("two calls over the deadline did not quarantine the plugin (max_faults 2)")
	}
}

// TestMemoryLimitExact: with limits.memory_pages N, a guest growing one
// page at a time reaches exactly N pages, and the growth to N+1 is refused
// and reported as FaultMemory — on the instance that reached N and on a
// fresh one.
func TestMemoryLimitExact(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	ev := []core.StoredEvent{oneEvent(kindA)}
	for _, n := range []uint32{2, 80} {
		m := projManifest("growpages")
		m.Limits = faultLimits
		m.Limits.Timeout = plugins.Duration(10 * time.Second) // not what is tested (a loaded machine is slow)
		m.Limits.MemoryPages = n
		p := load(t, h, fixture(t, "growpages"), m)
		st, err := p.Fold(ctx, u32s(n), ev)
		if err != nil || u64(t, st) != uint64(n) {
			t.Fatalf("growing to exactly %d pages: %x, %v", n, st, err)
		}
		for _, fresh := range []bool{false, true} {
			_, err = p.Fold(ctx, u32s(n+1), ev)
			f := asFault(t, err)
			if f.Kind != plugins.FaultMemory || !strings.Contains(err.Error(), fmt.Sprintf("limit of %d pages", n)) {
				t.Fatalf("growing to %d pages (fresh instance: %v): %v, want a memory fault naming the limit", n+1, fresh, err)
			}
		}
		if err := h.Unload(ctx, m.Name); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLoadRefusesWhatDecodingWouldAllocate: a module whose functions
// declare more locals than the host allows, or more functions, or a type
// with more results, is refused by name before wazero decodes it (which
// would allocate every local: the 77-byte module of four functions of
// 2^32 - 1 locals each asks 32 GiB, and the process dies).
func TestLoadRefusesWhatDecodingWouldAllocate(t *testing.T) {
	h := newHost(t)
	for name, c := range map[string]struct {
		wasm []byte
		want string
	}{
		"2^32 locals, four times": {testmodules.ManyLocals(4, 1<<32-1), "locals, over the limit of 50000"},
		"locals together":         {testmodules.ManyLocals(50, 49_000), "locals together, over the limit of 2000000"},
		"functions":               {testmodules.ManyLocals(plugins.MaxFunctions+1, 0), "functions, over the limit of 50000"},
		"types":                   {testmodules.ManyTypes(plugins.MaxTypes + 1), "function types, over the limit of 50000"},
		"results":                 {testmodules.SlowToValidate(plugins.MaxTypeArity+1, 1), "results, over the limit of 1000"},
		"typed reference locals":  {testmodules.TypedRefLocals(1<<32 - 2), "typed function references"},
	} {
		_, err := h.Load(context.Background(), c.wasm, projManifest("big"))
		if le := asLoadError(t, err); !strings.Contains(le.Reason, c.want) {
			t.Errorf("%s: %v, want a refusal naming %q", name, err, c.want)
		}
	}
	// At the limits: refused for what it lacks, not for its size.
	_, err := h.Load(context.Background(), testmodules.ManyLocals(2, plugins.MaxFunctionLocals), projManifest("ok"))
	if le := asLoadError(t, err); strings.Contains(le.Reason, "over the limit") {
		t.Errorf("at the limits: %v", err)
	}
}

// TestModulesClaimingMoreThanTheyHoldAreRefused: a module that declares a
// vector or a string longer than the bytes that follow — in the custom
// section "name" (which wazero decodes at every compile) or in a section
// of code — is refused by Load and by Inspect, naming what it claims,
// without the host allocating it (wazero allocates a vector whole from
// its declared count: the 270-byte module claiming 2^31 - 1 function
// names asks 48 GiB and the process dies; a module name of 2^32 - 16
// bytes takes 4 GiB).
func TestModulesClaimingMoreThanTheyHoldAreRefused(t *testing.T) {
	const huge = 1<<31 - 1
	u := testmodules.ULEB
	name := func(subs ...[]byte) []byte {
		var payload []byte
		for _, s := range subs {
			payload = append(payload, s...)
		}
		return testmodules.WithSection(testmodules.Small(), 0, testmodules.Custom("name", payload))
	}
	functionNames := testmodules.NameSubsection(1, append(u(nil, huge), 0, 1, 'a'))
	header := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	withType := testmodules.WithSection(header, 1, []byte{1, 0x60, 0, 0})
	for what, c := range map[string]struct {
		wasm []byte
		want string
	}{
		"2^31 - 1 function names": {name(functionNames), `section 0: custom section "name", subsection 1: the module declares more than its bytes hold: 2147483647 function names in 3 bytes`},
		"a module name of 2^32 - 16 bytes": {
			name(testmodules.NameSubsection(0, u(nil, 1<<32-16))), "the module name of 4294967280 bytes in 0"},
		"a function name of 2^32 - 16 bytes": {
			name(testmodules.NameSubsection(1, u([]byte{1, 0}, 1<<32-16))), "a name of 4294967280 bytes in 0"},
		"2^31 - 1 local names of one function": {
			name(testmodules.NameSubsection(2, append(u([]byte{1, 0}, huge), 0, 1, 'a'))), "2147483647 local names in 3 bytes"},
		"local names of 2^31 - 1 functions": {
			name(testmodules.NameSubsection(2, append(u(nil, huge), 0, 0))), "2147483647 functions' local names in 2 bytes"},
		"a subsection longer than the section": {
			name(append(u([]byte{1}, 1<<32-1), 1, 0, 0)), "a name subsection of 4294967295 bytes in 3"},
		"function names after a module name": {
			name(testmodules.NameSubsection(0, []byte{1, 'm'}), functionNames), "2147483647 function names"},
		"a custom section's name of 2^32 - 16 bytes": {
			testmodules.WithSection(testmodules.Small(), 0, u(nil, 1<<32-16)), "a custom section's name of 4294967280 bytes"},
		"a section longer than the module": {
			append(u(append(testmodules.Small(), 0), 1<<32-1), 0), "a custom section of 4294967295 bytes in 1"},
		"an export name of 2^32 - 16 bytes": {
			testmodules.WithSection(testmodules.WithSection(withType, 3, []byte{1, 0}), 7, u([]byte{1}, 1<<32-16)), "an export's name of 4294967280 bytes"},
		"2^31 - 1 functions": {
			testmodules.WithSection(withType, 3, u(nil, huge)), "2147483647 functions in 0 bytes"},
		"2^31 - 1 parameters": {
			testmodules.WithSection(header, 1, append(u([]byte{1, 0x60}, huge), 0)), "2147483647 parameters in 1 bytes"},
	} {
		guard := newHeapGuard()
		h := newHost(t)
		_, err := h.Load(context.Background(), c.wasm, projManifest("claims"))
		le := asLoadError(t, err)
		if le.Reason != "the module is not valid WebAssembly" || !errors.Is(err, plugins.ErrInvalidModule) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Load: %v, want a refusal naming %q", what, err, c.want)
		}
		_, err = plugins.Inspect(context.Background(), c.wasm)
		if !errors.Is(err, plugins.ErrNotAModule) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Inspect: %v, want ErrNotAModule naming %q", what, err, c.want)
		}
		guard.check(t, what, 64<<20)
	}

	// Within its bytes, a name section with all three subsections and one
	// the host does not know inspects.
	ok := name(testmodules.NameSubsection(0, []byte{1, 'm'}),
		testmodules.NameSubsection(1, []byte{1, 0, 3, 'r', 'u', 'n'}),
		testmodules.NameSubsection(2, []byte{1, 0, 1, 0, 1, 'x'}),
		testmodules.NameSubsection(7, []byte{0}))
	if _, err := plugins.Inspect(context.Background(), ok); err != nil {
		t.Errorf("a name section within its bytes: %v", err)
	}
}

// TestInspectRefusesWhatDecodingWouldAllocate: Inspect refuses, as Load
// does, a module whose functions declare more locals than the host
// allows, or that declares more functions or types, before wazero
// allocates them.
func TestInspectRefusesWhatDecodingWouldAllocate(t *testing.T) {
	guard := newHeapGuard()
	for what, c := range map[string]struct {
		wasm []byte
		want string
	}{
		"2^32 locals, four times": {testmodules.ManyLocals(4, 1<<32-1), "locals, over the limit of 50000"},
		"functions":               {testmodules.ManyLocals(plugins.MaxFunctions+1, 0), "functions, over the limit of 50000"},
		"types":                   {testmodules.ManyTypes(plugins.MaxTypes + 1), "function types, over the limit of 50000"},
	} {
		_, err := plugins.Inspect(context.Background(), c.wasm)
		if !errors.Is(err, plugins.ErrNotAModule) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Inspect: %v, want ErrNotAModule naming %q", what, err, c.want)
		}
	}
	guard.check(t, "inspecting", 64<<20)
}
