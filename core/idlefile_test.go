package core_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// openSegmentFDs counts this process's descriptors open on segment files
// in dir (Linux: /proc/self/fd).
func openSegmentFDs(t testing.TB, dir string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("needs /proc/self/fd:", err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && filepath.Dir(target) == dir && strings.HasSuffix(target, ".seg") {
			n++
		}
	}
	return n
}

// waitSegmentFDs waits up to 5 s for the count of descriptors on dir's
// segment files to become want.
func waitSegmentFDs(t testing.TB, dir string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := openSegmentFDs(t, dir)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("descriptors open on segments of %s: %d, want %d", dir, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An idle writer releases the active segment's descriptor and takes it
// again for the next write: writes, reads and reopening see every event.
func TestIdleWriterReleasesSegmentFD(t *testing.T) {
	defer core.SetActiveFileIdle(50 * time.Millisecond)()
	for _, tc := range []struct {
		name string
		sync core.SyncConfig
	}{
		{"durable", core.SyncConfig{EveryNEvents: 1}},
		{"buffered", core.SyncConfig{EveryNEvents: 1000, Interval: time.Second}},
		{"sync-on-close-only", core.SyncConfig{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := filepath.EvalSymlinks(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(dir)
			cfg.Sync = tc.sync
			s, err := core.Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			c := mustCoord(t, "order:1", "shop")
			var want []core.EventID
			for round := 0; round < 3; round++ {
				if got := openSegmentFDs(t, dir); round > 0 && got != 0 {
					t.Fatalf("round %d: %d descriptors on segments before the write", round, got)
				}
				fsyncs := s.Stats().Fsyncs
				r := mustAppend(t, s, c, kindA, payloadN(round))
				want = append(want, r.ID)
				if got := openSegmentFDs(t, dir); got != 1 {
					t.Fatalf("round %d: %d descriptors on segments after a write, want 1", round, got)
				}
				waitSegmentFDs(t, dir, 0)
				// Released only once synced, whatever the sync setting.
				if s.Stats().Fsyncs == fsyncs {
					t.Fatalf("round %d: the idle release did not sync", round)
				}
				if _, err := s.Get(r.ID); err != nil {
					t.Fatalf("round %d: Get after release: %v", round, err)
				}
			}
			if got := ids(mustQuery(t, s, core.All())); !equalIDs(got, want) {
				t.Fatalf("events %v, want %v", got, want)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close of an idle store: %v", err)
			}
			s2 := openWith(t, cfg)
			if got := ids(mustQuery(t, s2, core.All())); !equalIDs(got, want) {
				t.Fatalf("after reopen %v, want %v", got, want)
			}
			if d := s2.Diagnostics().Open.Path; d != "checkpoint" {
				t.Fatalf("reopen path %q, want checkpoint (Close wrote one)", d)
			}
		})
	}
}

// A writer with a fence open keeps its segment: the fence's writes go on
// into the same file.
func TestIdleWriterKeepsSegmentWhileFenceOpen(t *testing.T) {
	defer core.SetActiveFileIdle(30 * time.Millisecond)()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := openWith(t, testConfig(dir))
	ctx := context.Background()
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := openSegmentFDs(t, dir); got != 1 {
		t.Fatalf("%d descriptors on segments with a fence open, want 1", got)
	}
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitSegmentFDs(t, dir, 0)
}

func equalIDs(a, b []core.EventID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
