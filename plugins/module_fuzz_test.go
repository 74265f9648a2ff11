package plugins

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/batpak-go/batpak/internal/testmodules"
)

// What wazero may allocate to decode, validate and compile (interpreted)
// a module the host's reader accepted: decodeAllocPerByte per byte of the
// module, decodeAllocPerLocal per local its functions declare (bounded by
// decodeBounds) and decodeAllocFixed. Measured with wazero 1.12: up to
// about 220 bytes per byte (testdata, and modules crafted to compile
// slowly), about 72 per local; a length read from bytes the host did not
// check asks gigabytes of a module of 30 bytes.
const (
	decodeAllocPerByte  = 1024
	decodeAllocPerLocal = 256
	decodeAllocFixed    = 16 << 20
)

// FuzzReadModuleBoundsDecoding: whatever bytes readModule accepts (within
// decodeBounds, as Inspect and Load check before wazero sees them),
// wazero's decoding, validation and compiling of them allocates at most
// decodeAllocPerByte per byte of the module, decodeAllocPerLocal per local
// and decodeAllocFixed: a
// count or a length wazero allocates from is one the host read and
// checked against the bytes that hold it (errOverclaim), never one read
// from bytes the host read as something else (errUnreadForm). The seeds
// are the modules in testdata and ones crafted so that a reader taking
// every type for one byte parts from wazero's; a plain go test runs only
// them.
func FuzzReadModuleBoundsDecoding(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.wasm"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range testmodules.ReadDifferently() {
		f.Add(b)
	}
	f.Add(testmodules.Small())
	f.Add(testmodules.PassiveElements(1000))
	f.Add(testmodules.ManyLocals(2, 1000))
	f.Add(testmodules.ManyLocals(40, MaxFunctionLocals))
	f.Add(testmodules.TypedRefLocals(3))
	f.Add(testmodules.WideBranches(2, 3, 4))
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, wasm []byte) {
		if len(wasm) > 1<<20 {
			t.Skip("over 1 MiB")
		}
		s, err := readModule(wasm)
		if err != nil || s.decodeBounds() != "" {
			return
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
		_, _ = rt.CompileModule(ctx, wasm)
		runtime.ReadMemStats(&after)
		_ = rt.Close(ctx)
		allocated := after.TotalAlloc - before.TotalAlloc
		if bound := uint64(len(wasm))*decodeAllocPerByte + s.locals*decodeAllocPerLocal + decodeAllocFixed; allocated > bound {
			t.Fatalf("a module of %d bytes the host reads had wazero allocate %d bytes, over %d: %x", len(wasm), allocated, bound, wasm[:min(len(wasm), 256)])
		}
		t.Logf("%d bytes: wazero allocated %d (%.1f per byte)", len(wasm), allocated, float64(allocated)/float64(len(wasm)))
	})
}
