package plugins

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/tetratelabs/wazero"
)

// TestCompiledBytesReadsWazero: the measure of compiled code reads the
// wazero this module is built with (a wazero upgrade that changes its
// structures fails here, not silently in the charge), and grows with the
// code compiled.
func TestCompiledBytesReadsWazero(t *testing.T) {
	ctx := context.Background()
	measure := func(name string) int64 {
		t.Helper()
		wasm, err := os.ReadFile(filepath.Join("testdata", name+".wasm"))
		if err != nil {
			t.Fatal(err)
		}
		rt := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(wazero.NewCompilationCache()))
		defer rt.Close(ctx)
		mod, err := rt.CompileModule(ctx, wasm)
		if err != nil {
			t.Fatal(err)
		}
		n, exec, ok := compiledBytes(mod)
		if !ok || n <= 0 || exec == nil {
			t.Fatalf("compiledBytes(%s) = %d, %v, %v: wazero's structures are not what it reads", name, n, exec, ok)
		}
		return n
	}
	small, big := measure("counter"), measure("slowok")
	if big <= small {
		t.Fatalf("slowok (straight-line code filling 32 MiB) measured %d bytes, no more than counter's %d", big, small)
	}
	t.Logf("counter %d bytes, slowok %d bytes of machine code", small, big)
}
