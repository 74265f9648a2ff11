package plugins

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// TestHostSurvivesAResultItDidNotExpect: were a module whose
// batpak_alloc returns nothing let through (Load refuses it), each call
// is a fault of the module — counted toward quarantine, its instance
// discarded — not a panic of the host that leaks the instance (16 MiB
// of memory each here).
func TestHostSurvivesAResultItDidNotExpect(t *testing.T) {
	skipSignatureCheck = true
	defer func() { skipSignatureCheck = false }()
	ctx := context.Background()
	wasm, err := os.ReadFile(filepath.Join("testdata", "badalloc.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(HostOptions{CacheDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	m := Manifest{Name: "badalloc", Version: "1.0.0", Kind: KindProjection}
	m.Limits.MaxFaults = 100
	p, err := h.Load(ctx, wasm, m)
	if err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	evs := []core.StoredEvent{{Payload: []byte(`{}`)}}
	before := heap()
	const calls = 20
	for range calls {
		_, err := p.Fold(ctx, []byte("state"), evs)
		var pf *PluginFault
		if !errors.As(err, &pf) || pf.Kind != FaultOutput {
			t.Fatalf("Fold: %v, want a %s fault", err, FaultOutput)
		}
	}
	if got := p.faults.Load(); got != calls {
		t.Fatalf("faults counted: %d, want %d", got, calls)
	}
	if grew := int64(heap()) - int64(before); grew > 64<<20 {
		t.Fatalf("the heap grew %d MiB over %d faulted calls: instances leaked", grew>>20, calls)
	}
}
