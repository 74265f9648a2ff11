package core_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// A read-only store opened at every point of a compaction's commit
// (journal written, new segments being renamed, old ones being deleted)
// sees the events as they were before it or as they are after it, never
// a false corruption, and Verify passes.
func TestReadOnlyDuringCompactionCommit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cc     core.CompactConfig
		merges bool
	}{
		// Removing most events lets merges put several segments in one;
		// several new segments come out.
		{"merge and remove", core.CompactConfig{Merge: true, Keep: func(ev core.StoredEvent) bool { return ev.GlobalSequence%4 == 0 }}, true},
		{"tombstone", core.CompactConfig{Tombstone: func(ev core.StoredEvent) bool { return ev.GlobalSequence%5 == 0 }}, false},
		{"merge", core.Merge(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t.TempDir())
			smallSegments(&cfg)
			s := openWith(t, cfg)
			pad := strings.Repeat("x", 1000)
			for i := 0; i < 400; i++ {
				mustAppend(t, s, mustCoord(t, fmt.Sprintf("acct:%d", i%5), "eu"), kindA, fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad))
			}
			before := ids(mustQuery(t, s, core.All()))
			type seen struct {
				stage string
				ids   []core.EventID
			}
			var views []seen
			var failures []string
			core.SetCompactHook(s, func(stage string) {
				ro, err := core.OpenReadOnly(cfg)
				if err != nil {
					failures = append(failures, stage+": open: "+err.Error())
					return
				}
				defer ro.Close()
				if _, err := ro.Verify(); err != nil {
					failures = append(failures, stage+": verify: "+err.Error())
				}
				evs, err := ro.Query(core.All())
				if err != nil {
					failures = append(failures, stage+": query: "+err.Error())
				}
				// The compaction's audit record is written before any
				// stage: what is compared is the events around it.
				views = append(views, seen{stage, ids(withoutNewAudit(evs, nil))})
			})
			rep, err := s.Compact(context.Background(), tc.cc)
			if err != nil {
				t.Fatal(err)
			}
			core.SetCompactHook(s, nil)
			after := ids(withoutNewAudit(mustQuery(t, s, core.All()), nil))
			t.Logf("%+v", rep)
			if rep.SegmentsRewritten < 4 {
				t.Fatalf("%d segments rewritten: nothing to test", rep.SegmentsRewritten)
			}
			if tc.merges && (rep.SegmentsRemoved < 1 || rep.SegmentsRewritten-rep.SegmentsRemoved < 2) {
				t.Fatalf("%d segments merged into %d: want a merge with several new segments", rep.SegmentsRewritten, rep.SegmentsRewritten-rep.SegmentsRemoved)
			}
			for _, f := range failures {
				t.Error(f)
			}
			if len(views) < 6 {
				t.Fatalf("read at %d stages of the commit, want 6", len(views))
			}
			for _, v := range views {
				if fmt.Sprint(v.ids) != fmt.Sprint(before) && fmt.Sprint(v.ids) != fmt.Sprint(after) {
					t.Errorf("%s: a read-only store sees %d events, neither the %d before nor the %d after", v.stage, len(v.ids), len(before), len(after))
				}
			}
		})
	}
}

// liveSeconds is how long the read-beside-a-writer campaigns run:
// BATPAK_LIVE_SECONDS, 4 by default.
func liveSeconds(t *testing.T) time.Duration {
	if v := os.Getenv("BATPAK_LIVE_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("BATPAK_LIVE_SECONDS=%q: want a whole number of seconds", v)
		}
		return time.Duration(n) * time.Second
	}
	return 4 * time.Second
}

// A read-only open and Verify in a loop beside a writer that appends,
// compacts (merges, removals, tombstones) and seals (packs) in a loop
// never report damage that is not there. It runs for liveSeconds and
// until at least 5 compactions and 10 reads are done (at most 5 times as
// long on a loaded machine).
func TestReadOnlyVerifyBesideCompactingWriter(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.SegmentMaxBytes = 64 << 10
	cfg.Compression = core.CompressionS2
	w := openWith(t, cfg)
	defer w.Close()
	ctx := context.Background()
	r := rand.New(rand.NewSource(21))
	for i := 0; i < 600; i++ {
		mustAppend(t, w, mustCoord(t, fmt.Sprintf("order:%d", i%40), "shop"), kindA, orderJSON(r, i))
	}
	// Slow file work (a loaded disk): both generations of a segment stay
	// in place longer than a reader's listing, and longer than a few
	// retries of it.
	core.SetCompactHook(w, func(stage string) {
		if stage == "renaming" || stage == "deleting" {
			time.Sleep(100 * time.Millisecond)
		}
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var compactions, seals atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 600; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for k := 0; k < 40; k++ {
				mustAppend(t, w, mustCoord(t, fmt.Sprintf("order:%d", i%40), "shop"), kindA, orderJSON(r, i))
			}
			cc := core.CompactConfig{Merge: true, Tombstone: func(ev core.StoredEvent) bool { return ev.GlobalSequence%7 == 0 }}
			if i%2 == 0 {
				cc = core.CompactConfig{Merge: true, MaxPerEntity: 15}
			}
			if _, err := w.Compact(ctx, cc); err != nil {
				t.Errorf("compact: %v", err)
				return
			}
			compactions.Add(1)
			if err := w.SealSegments(ctx); err != nil {
				t.Errorf("seal: %v", err)
				return
			}
			seals.Add(1)
		}
	}()
	d := liveSeconds(t)
	start := time.Now()
	rounds, failures := 0, map[string]int{}
	for {
		el := time.Since(start)
		if el > 5*d || (el > d && rounds >= 10 && compactions.Load() >= 5) {
			break
		}
		rounds++
		ro, err := core.OpenReadOnly(cfg)
		if err != nil {
			failures["open: "+err.Error()]++
			continue
		}
		if _, err := ro.Verify(); err != nil {
			failures["verify: "+err.Error()]++
		}
		ro.Close()
	}
	close(stop)
	wg.Wait()
	var failed int
	for f, n := range failures {
		t.Errorf("%d×: %s", n, f)
		failed += n
	}
	dg := w.Diagnostics()
	t.Logf("%d read-only opens and verifies beside %d compactions and %d seals in %v (%d segments, %d packed); %d failed",
		rounds, compactions.Load(), seals.Load(), time.Since(start).Round(time.Millisecond), dg.Segments, dg.PackedSegments, failed)
	if rounds < 10 || compactions.Load() < 5 {
		t.Fatalf("%d rounds beside %d compactions: too few to test anything", rounds, compactions.Load())
	}
}

// Damage stays damage: two generations of one segment with no journal to
// explain them fail a read-only open (after a few listings) and Verify.
func TestReadOnlyTwoGenerationsWithoutJournal(t *testing.T) {
	cfg := checkpointBase(t, t.TempDir())
	segs := segmentFiles(t, cfg.Dir)
	writeFile(t, filepath.Join(cfg.Dir, segGenName(segs[1], 1)), regenerate(t, segs[1], 1))
	_, err := core.OpenReadOnly(cfg)
	var ce *core.CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("OpenReadOnly beside two generations: %v, want a *CorruptionError", err)
	}
	t.Logf("refused: %v", err)
}
