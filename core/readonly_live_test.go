package core_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
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
		r := rand.New(rand.NewSource(7))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c := mustCoord(t, fmt.Sprintf("order:%d", i%40), "shop")
			if _, err := w.Append(ctx, c, kindA, []byte(orderJSON(r, i))); err != nil {
				t.Errorf("append: %v", err)
				return
			}
			written.Add(1)
		}
	}()
	rounds, failures := readOnlyRounds(cfg, 3*time.Second, func() bool { return w.Diagnostics().PackedSegments >= 5 }, func(ro *core.Store, fail func(string)) {
		n := ro.Stats().Events
		evs, err := ro.Query(core.All())
		if err != nil {
			fail("query: " + err.Error())
		} else if uint64(len(evs)) != n {
			fail(fmt.Sprintf("query: %d events, Stats says %d", len(evs), n))
		}
		if _, err := ro.Verify(); err != nil {
			fail("verify: " + err.Error())
		}
	})
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

// A read-only store beside a writer that merges and tombstones segments
// in a loop: opening and verifying never report damage that is not there
// (events caught twice or not at all while a compaction commits).
func TestReadOnlyBesideMergingWriter(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.SegmentMaxBytes = 64 << 10
	w := openWith(t, cfg)
	defer w.Close()
	ctx := context.Background()
	r := rand.New(rand.NewSource(9))
	for i := 0; i < 1500; i++ {
		mustAppend(t, w, mustCoord(t, fmt.Sprintf("order:%d", i%40), "shop"), kindA, orderJSON(r, i))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var compactions atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1500; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for k := 0; k < 50; k++ {
				mustAppend(t, w, mustCoord(t, fmt.Sprintf("order:%d", i%40), "shop"), kindA, orderJSON(r, i))
			}
			if _, err := w.Compact(ctx, core.CompactConfig{Merge: true, Tombstone: func(ev core.StoredEvent) bool { return ev.GlobalSequence%7 == 0 }}); err != nil {
				t.Errorf("compact: %v", err)
				return
			}
			compactions.Add(1)
		}
	}()
	rounds, failures := readOnlyRounds(cfg, 3*time.Second, func() bool { return compactions.Load() >= 5 }, func(ro *core.Store, fail func(string)) {
		if _, err := ro.Verify(); err != nil {
			fail("verify: " + err.Error())
		}
	})
	close(stop)
	wg.Wait()
	t.Logf("%d read-only rounds beside %d compactions", rounds, compactions.Load())
	if compactions.Load() < 5 {
		t.Fatalf("only %d compactions: the test did not exercise them", compactions.Load())
	}
	for f, n := range failures {
		t.Errorf("%d×: %s", n, f)
	}
}

// After Close, maintenance does nothing: no file in the directory changes
// (a Close writes its footer and checkpoint, releases the lock, and what
// it left is what the next Open finds).
func TestMaintenanceAfterClose(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.SegmentMaxBytes = 64 << 10
	cfg.Compression = core.CompressionZstd
	s := openWith(t, cfg)
	ctx := context.Background()
	r := rand.New(rand.NewSource(11))
	var ids []core.EventID
	for i := 0; i < 600; i++ {
		ids = append(ids, mustAppend(t, s, mustCoord(t, fmt.Sprintf("order:%d", i%10), "shop"), kindA, orderJSON(r, i)).ID)
	}
	if err := s.SealSegments(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := readDirFiles(t, cfg.Dir)
	if err := s.Redact(ctx, ids[3]); !errors.Is(err, core.ErrClosed) {
		t.Errorf("Redact after Close: %v, want ErrClosed", err)
	}
	if _, err := s.EraseEntity(ctx, "order:4"); !errors.Is(err, core.ErrClosed) {
		t.Errorf("EraseEntity after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Compact(ctx, core.Merge()); !errors.Is(err, core.ErrClosed) {
		t.Errorf("Compact after Close: %v, want ErrClosed", err)
	}
	if err := s.SealSegments(ctx); !errors.Is(err, core.ErrClosed) {
		t.Errorf("SealSegments after Close: %v, want ErrClosed", err)
	}
	after := readDirFiles(t, cfg.Dir)
	if len(after) != len(before) {
		t.Fatalf("files after Close changed: %d → %d", len(before), len(after))
	}
	for name, b := range before {
		if string(after[name]) != string(b) {
			t.Fatalf("%s changed after Close", name)
		}
	}
	s2, rep := openPath(t, cfg)
	if rep.Path != "checkpoint" {
		t.Fatalf("reopen: path %q", rep.Path)
	}
	if ev, err := s2.Get(ids[3]); err != nil || ev.Redacted {
		t.Fatalf("event after a refused Redact: %+v, %v", ev.Header, err)
	}
}

// readOnlyRounds opens cfg read-only again and again for d, running check
// on each open store, and counts the failures by message.
func readOnlyRounds(cfg core.Config, d time.Duration, enough func() bool, check func(ro *core.Store, fail func(string))) (int, map[string]int) {
	start := time.Now()
	rounds, failures := 0, map[string]int{}
	// At least d; longer (up to a minute) until the writer has done enough
	// beside the reads, which a loaded machine may take.
	for time.Since(start) < d || !enough() && time.Since(start) < time.Minute {
		rounds++
		ro, err := core.OpenReadOnly(cfg)
		if err != nil {
			failures["open: "+err.Error()]++
			continue
		}
		check(ro, func(msg string) { failures[msg]++ })
		ro.Close()
	}
	return rounds, failures
}
