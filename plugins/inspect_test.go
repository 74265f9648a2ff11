package plugins_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testmodules"
	"github.com/batpak-go/batpak/plugins"
)

// Inspect: what a module exports and imports, its declared memory
// limits, the plugin kinds its exports allow, and its ABI version as the
// module itself answers (after _initialize), without loading it.

// items renders exports or imports as "module.name(params)->results".
func items(list []plugins.ModuleItem) string {
	var out []string
	for _, it := range list {
		s := it.Name
		if it.Module != "" {
			s = it.Module + "." + s
		}
		if it.Kind == "function" {
			s += "(" + strings.Join(it.Params, ",") + ")->" + strings.Join(it.Results, ",")
		} else {
			s += ":" + it.Kind
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

func memory(m *plugins.MemoryLimits) string {
	switch {
	case m == nil:
		return "none"
	case m.MaxPages == nil:
		return fmt.Sprintf("%d..", m.MinPages)
	}
	return fmt.Sprintf("%d..%d", m.MinPages, *m.MaxPages)
}

func TestInspectReportsTheModulesShape(t *testing.T) {
	ctx := context.Background()
	wasm := fixture(t, "inspect")
	ins, err := plugins.Inspect(ctx, wasm)
	if err != nil {
		t.Fatal(err)
	}
	if ins.Size != len(wasm) || ins.SHA256 != plugins.Digest(wasm) {
		t.Errorf("size %d sha256 %s, want %d %s", ins.Size, ins.SHA256, len(wasm), plugins.Digest(wasm))
	}
	// 1, not 0: _initialize ran before batpak_abi_version.
	if ins.ABIError != nil || ins.ABIVersion != 1 {
		t.Errorf("abi version %d (%v), want 1", ins.ABIVersion, ins.ABIError)
	}
	if fmt.Sprint(ins.Kinds) != "[handler]" {
		t.Errorf("kinds %v, want [handler]", ins.Kinds)
	}
	if got := memory(ins.Memory); got != "2..16" {
		t.Errorf("memory %s, want 2..16", got)
	}
	wantExports := "_initialize()-> batpak_abi_version()->i32 batpak_alloc(i32)->i32 batpak_handle(i32,i32)->i64 memory:memory"
	if got := items(ins.Exports); got != wantExports {
		t.Errorf("exports\n got %s\nwant %s", got, wantExports)
	}
	wantImports := "wasi_snapshot_preview1.fd_write(i32,i32,i32,i32)->i32 batpak.log(i32,i32,i32)->"
	if got := items(ins.Imports); got != wantImports {
		t.Errorf("imports\n got %s\nwant %s", got, wantImports)
	}

	cases := []struct {
		fixture, kinds, memory string
		abi                    int32
	}{
		{"counter", "[projection handler]", "1..", 1},
		{"abi2", "[projection]", "1..", 2},
		{"noexport", "[]", "1..", 1},
		{"nomemory", "[projection]", "none", 1},
	}
	for _, tc := range cases {
		ins, err := plugins.Inspect(ctx, fixture(t, tc.fixture))
		if err != nil {
			t.Fatalf("%s: %v", tc.fixture, err)
		}
		if got := fmt.Sprint(ins.Kinds); got != tc.kinds {
			t.Errorf("%s: kinds %s, want %s", tc.fixture, got, tc.kinds)
		}
		if got := memory(ins.Memory); got != tc.memory {
			t.Errorf("%s: memory %s, want %s", tc.fixture, got, tc.memory)
		}
		if ins.ABIError != nil || ins.ABIVersion != tc.abi {
			t.Errorf("%s: abi version %d (%v), want %d", tc.fixture, ins.ABIVersion, ins.ABIError, tc.abi)
		}
	}
}

func TestInspectExplainsAnUnknownABIVersion(t *testing.T) {
	// The smallest module: nothing exported, nothing imported.
	empty := []byte("\x00asm\x01\x00\x00\x00")
	ins, err := plugins.Inspect(context.Background(), empty)
	if err != nil {
		t.Fatal(err)
	}
	if ins.ABIError == nil || ins.ABIError.Error() != "the module does not export batpak_abi_version" {
		t.Errorf("abi error %v", ins.ABIError)
	}
	if len(ins.Kinds) != 0 || len(ins.Exports) != 0 || len(ins.Imports) != 0 || ins.Memory != nil {
		t.Errorf("empty module: %+v", ins)
	}

	// A start function that never returns: instantiating is bounded by
	// the caller's context, and the module still inspects.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	ins, err = plugins.Inspect(ctx, fixture(t, "startloop"))
	if err != nil {
		t.Fatal(err)
	}
	if ins.ABIError == nil || !strings.HasPrefix(ins.ABIError.Error(), "instantiating: ") {
		t.Errorf("abi error %v, want the failed instantiation", ins.ABIError)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("inspecting a module whose start never returns took %v", d)
	}
}

func TestInspectRefusesWhatIsNotAModule(t *testing.T) {
	for _, junk := range [][]byte{nil, []byte("not wasm"), []byte("\x00asm\x02\x00\x00\x00"), fixture(t, "counter")[:40]} {
		_, err := plugins.Inspect(context.Background(), junk)
		if !errors.Is(err, plugins.ErrNotAModule) {
			t.Fatalf("Inspect(%q) = %v, want ErrNotAModule", junk, err)
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "batpak: not a WebAssembly module wazero accepts: ") || len(msg) <= len("batpak: not a WebAssembly module wazero accepts: ") {
			t.Fatalf("error %q does not give wazero's reason", msg)
		}
	}
}

// Inspect a module before loading it: its ABI version, the kinds its
// exports allow and its declared memory.
func ExampleInspect() {
	wasm, err := os.ReadFile(filepath.Join("testdata", "inspect.wasm"))
	if err != nil {
		panic(err)
	}
	ins, err := plugins.Inspect(context.Background(), wasm)
	if err != nil {
		panic(err)
	}
	fmt.Println("abi version", ins.ABIVersion, ins.ABIError)
	fmt.Println("kinds", ins.Kinds)
	fmt.Println("memory pages", ins.Memory.MinPages, *ins.Memory.MaxPages)
	for _, imp := range ins.Imports {
		fmt.Println("imports", imp.Module+"."+imp.Name)
	}
	// Output:
	// abi version 1 <nil>
	// kinds [handler]
	// memory pages 2 16
	// imports wasi_snapshot_preview1.fd_write
	// imports batpak.log
}

// totalAlloc is what the process has allocated on its heap so far.
func totalAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// TestInspectBoundsWhatItInstantiates: Inspect instantiates a module (to
// ask its ABI version) only within the limits Load applies at the most a
// manifest allows, and bounds its tables' growth as Load does: a module
// declaring 64 tables of 2^27 elements (64 GiB on the host's heap) is not
// instantiated and ABIError says why; one whose batpak_abi_version grows
// its table by 2^27 elements four times sees every such table.grow fail.
func TestInspectBoundsWhatItInstantiates(t *testing.T) {
	ctx := context.Background()
	before := totalAlloc()
	ins, err := plugins.Inspect(ctx, testmodules.Tables(64, 1<<27))
	if err != nil {
		t.Fatal(err)
	}
	if ins.ABIError == nil || !strings.Contains(ins.ABIError.Error(), "not instantiated: its tables declare 8589934592 table elements, over the limit of 4194304") {
		t.Errorf("64 tables of 2^27: ABI version %d, error %v; want it not instantiated, naming its table elements", ins.ABIVersion, ins.ABIError)
	}
	for what, c := range map[string]struct {
		wasm []byte
		want string
	}{
		"65 tables":              {testmodules.Tables(65, 1), "it declares 65 tables, over the limit of 64"},
		"4194305 table elements": {testmodules.Tables(1, 1<<22+1), "over the limit of 4194304"},
	} {
		ins, err := plugins.Inspect(ctx, c.wasm)
		if err != nil {
			t.Fatal(err)
		}
		if ins.ABIError == nil || !strings.Contains(ins.ABIError.Error(), c.want) {
			t.Errorf("%s: ABI error %v, want one naming %q", what, ins.ABIError, c.want)
		}
	}
	// At the limits: instantiated.
	ins, err = plugins.Inspect(ctx, testmodules.Tables(64, 1<<16))
	if err != nil || ins.ABIError != nil || ins.ABIVersion != 1 {
		t.Errorf("64 tables of 2^16 elements: ABI version %d (%v, %v), want 1", ins.ABIVersion, ins.ABIError, err)
	}
	// Grown: the four grows of 2^27 fail, the last grow of 1 finds the
	// table empty.
	ins, err = plugins.Inspect(ctx, testmodules.TableGrowth(4, 1<<27))
	if err != nil || ins.ABIError != nil || ins.ABIVersion != 0 {
		t.Errorf("table grown by 2^27 four times: the last grow answered %d (%v, %v), want 0 (the grows before it failed)", ins.ABIVersion, ins.ABIError, err)
	}
	if grown := totalAlloc() - before; grown > 256<<20 {
		t.Errorf("inspecting allocated %d MiB", grown>>20)
	}
}
