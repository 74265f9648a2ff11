package core_test

import (
	"context"
	"io"
	"runtime"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// TestExportHoldsOneStep: an export of a long log holds about one read
// step in memory, not a plan of every event of the log (12 bytes each:
// 100 million small events would be 1.2 GB per export).
func TestExportHoldsOneStep(t *testing.T) {
	if testing.Short() {
		t.Skip("appends 200k events")
	}
	s := openStore(t)
	c := mustCoord(t, "e:1", "s")
	items := make([]core.BatchItem, 256)
	for i := range items {
		items[i] = core.BatchItem{Coordinate: c, Kind: kindA, Payload: []byte(`{}`)}
	}
	const batches = 800
	for range batches {
		if _, err := s.AppendBatch(context.Background(), items); err != nil {
			t.Fatal(err)
		}
	}
	live := func() int64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	before := live()
	var during int64
	n, err := s.Export(io.Discard, core.All(), func(n int) {
		if n == batches*len(items)/2 {
			during = live()
		}
	})
	if err != nil || n != batches*len(items) {
		t.Fatalf("Export: %d, %v", n, err)
	}
	held := during - before
	t.Logf("an export of %d events holds %d KiB midway", n, held>>10)
	if held > 1<<20 {
		t.Fatalf("an export of %d events holds %d KiB midway, want at most 1 MiB", n, held>>10)
	}
}
