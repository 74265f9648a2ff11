package core_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// A read-only store beside a writer that rotates and packs segments all
// the time (tiny segments, zstd): opening, reading every event and
// verifying never fail, though files are renamed and deleted under them.
func TestReadOnlyBesideCompressingWriter(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.SegmentMaxBytes = 64 << 10
	cfg.Compression = core.CompressionZstd
	w := openWith(t, cfg)
	defer w.Close()
	ctx := context.Background()
	var written atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(7, 8))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c := mustCoord(t, fmt.Sprintf("order:%d", i%40), "shop")
			if _, err := w.Append(ctx, c, kindA, orderJSON(r, i)); err != nil {
				t.Errorf("append: %v", err)
				return
			}
			written.Add(1)
		}
	}()
	deadline := time.Now().Add(3 * time.Second)
	rounds, failures := 0, map[string]int{}
	for time.Now().Before(deadline) {
		rounds++
		ro, err := core.OpenReadOnly(cfg)
		if err != nil {
			failures["open: "+err.Error()]++
			continue
		}
		n := ro.Stats().Events
		evs, err := ro.Query(core.All())
		if err != nil {
			failures["query: "+err.Error()]++
		} else if uint64(len(evs)) != n {
			failures[fmt.Sprintf("query: %d events, Stats says %d", len(evs), n)]++
		}
		if _, err := ro.Verify(); err != nil {
			failures["verify: "+err.Error()]++
		}
		ro.Close()
	}
	close(stop)
	wg.Wait()
	d := w.Diagnostics()
	t.Logf("%d read-only rounds beside %d appends; %d segments, %d packed", rounds, written.Load(), d.Segments, d.PackedSegments)
	if d.PackedSegments < 5 {
		t.Fatalf("only %d segments packed: the test did not exercise packing", d.PackedSegments)
	}
	for f, n := range failures {
		t.Errorf("%d×: %s", n, f)
	}
}
