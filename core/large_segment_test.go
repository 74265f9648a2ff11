package core_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
)

// largeSegmentStore writes about 5 MiB of events in batches into one
// segment, with payloads of varied sizes (one larger than the 1 MiB a
// chunked read takes at a time) so that frames straddle the chunks, and
// closes the store: its checkpoint covers the whole segment and its footer
// was written on Close. Segments of more than a chunk are read a chunk at
// a time by the sealer and by Open's checkpoint path; small ones are not.
func largeSegmentStore(t *testing.T) core.Config {
	t.Helper()
	cfg := testConfig(t.TempDir())
	cfg.Batch.MaxBytes = 4 << 20
	s := openWith(t, cfg)
	appendBatches(t, s, 60, 50, func(n int) (string, string) {
		note := strings.Repeat("x", (n*131)%3000)
		if n == 1700 {
			note = strings.Repeat("y", 1300<<10)
		}
		return fmt.Sprintf("order:%d", n%97), fmt.Sprintf(`{"n":%d,"note":%q}`, n, note)
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if segs := segmentFiles(t, cfg.Dir); len(segs) != 1 {
		t.Fatalf("want one segment, have %d", len(segs))
	}
	return cfg
}

// appendBatches appends batches batches of size events each, in scope
// "eu" with kind 1:1; event(n) gives the n-th event's entity and payload.
func appendBatches(t *testing.T, s *core.Store, batches, size int, event func(n int) (entity, payload string)) {
	t.Helper()
	for b := range batches {
		items := make([]core.BatchItem, size)
		for i := range items {
			entity, payload := event(b*size + i)
			items[i] = core.BatchItem{Coordinate: mustCoord(t, entity, "eu"), Kind: core.MustKind(1, 1), Payload: []byte(payload)}
		}
		if _, err := s.AppendBatch(context.Background(), items); err != nil {
			t.Fatal(err)
		}
	}
}

// A segment of several MiB opens by each path (checkpoint, footer, scan)
// to the same state, and its footer, built from chunked reads, is used.
func TestLargeSegmentOpensByEveryPath(t *testing.T) {
	cfg := largeSegmentStore(t)
	ref := cfg
	ref.Dir = filepath.Join(t.TempDir(), "ref")
	copyTree(t, cfg.Dir, ref.Dir, func(n string) bool { return n == checkpointFile || strings.HasSuffix(n, format.FooterSuffix) })
	rs, rep := openPath(t, ref)
	if rep.Path != "scan" {
		t.Fatalf("reference opened by %q", rep.Path)
	}
	want := captureState(t, rs)
	if err := rs.Close(); err != nil {
		t.Fatal(err)
	}
	fo := cfg
	fo.Dir = filepath.Join(t.TempDir(), "footer")
	copyTree(t, cfg.Dir, fo.Dir, func(n string) bool { return n == checkpointFile })
	for _, c := range []struct {
		cfg  core.Config
		path string
	}{{cfg, "checkpoint"}, {fo, "footers"}} {
		s, rep := openPath(t, c.cfg)
		if rep.Path != c.path || (c.path == "footers" && (rep.Footers != 1 || rep.SegmentsScanned != 0)) {
			t.Fatalf("opened by %q (%+v); want %q", rep.Path, rep, c.path)
		}
		sameState(t, c.path, captureState(t, s), want)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Damage to a frame the checkpoint covers fails Open with a
// *CorruptionError naming the frame, wherever the frame lies: in the
// first chunk read, far into the segment, across a chunk boundary, or in
// the frame larger than a chunk.
func TestLargeSegmentCoveredDamageFailsOpen(t *testing.T) {
	base := largeSegmentStore(t)
	path := segmentFiles(t, base.Dir)[0]
	_, frames := readFrames(t, path)
	var victims []int // frame indexes
	victims = append(victims, 3, len(frames)*2/3, len(frames)-2)
	for i, f := range frames {
		if f.Off < 1<<20 && f.end() > 1<<20 {
			victims = append(victims, i) // straddles the first chunk's end
		}
		if f.end()-f.Off > 1<<20 {
			victims = append(victims, i) // larger than a chunk
		}
	}
	for _, v := range victims {
		t.Run(fmt.Sprintf("frame %d of %d", v, len(frames)), func(t *testing.T) {
			cfg := base
			cfg.Dir = filepath.Join(t.TempDir(), "d")
			copyTree(t, base.Dir, cfg.Dir, nil)
			path := segmentFiles(t, cfg.Dir)[0]
			data, fs := readFrames(t, path)
			f := fs[v]
			data[f.end()-1] ^= 0x01 // the frame's last byte
			writeFile(t, path, data)
			coveredDamageFailsOpen(t, cfg, path, f.Off)
		})
	}
}

// allocatedMiB is how much fn allocated, in MiB.
func allocatedMiB(fn func()) float64 {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	fn()
	runtime.ReadMemStats(&m1)
	return float64(m1.TotalAlloc-m0.TotalAlloc) / (1 << 20)
}

// Reading segments in chunks holds a chunk and the largest frame at a
// time, not the segment: sealing (here, Close's footer) and opening ~90
// MiB of 3 MiB events, or opening hundreds of small segments by the
// checkpoint path, allocate a few MiB, as reading them through the
// mapping did. A client that appends a few small events and then large
// ones cannot make the sealer size its footer's buffer from the segment.
func TestChunkedReadsAllocateLittle(t *testing.T) {
	ctx := context.Background()
	kind := core.MustKind(1, 1)
	c := mustCoord(t, "order:1", "eu")
	t.Run("large events", func(t *testing.T) {
		cfg := testConfig(t.TempDir())
		s := openWith(t, cfg)
		for i := range 3 {
			mustAppend(t, s, c, kind, payloadN(i))
		}
		big := []byte(fmt.Sprintf(`{"note":%q}`, strings.Repeat("x", 3<<20)))
		for range 30 {
			if _, err := s.Append(ctx, c, kind, big); err != nil {
				t.Fatal(err)
			}
		}
		if mib := allocatedMiB(func() {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}); mib > 16 {
			t.Errorf("Close allocated %.1f MiB to footer a ~90 MiB segment of 33 events", mib)
		}
		if mib := allocatedMiB(func() { openWith(t, cfg).Close() }); mib > 16 {
			t.Errorf("Open by the checkpoint path allocated %.1f MiB over ~90 MiB of 3 MiB events", mib)
		}
	})
	t.Run("small segments", func(t *testing.T) {
		cfg := testConfig(t.TempDir())
		cfg.SegmentMaxBytes = 64 << 10
		s := openWith(t, cfg)
		p := fmt.Sprintf(`{"note":%q}`, strings.Repeat("x", 16<<10))
		for range 800 {
			mustAppend(t, s, c, kind, p)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		n := len(segmentFiles(t, cfg.Dir))
		if mib := allocatedMiB(func() { openWith(t, cfg).Close() }); mib > 16 {
			t.Errorf("Open by the checkpoint path allocated %.1f MiB over %d segments of 64 KiB", mib, n)
		}
	})
}

// Open maps the footers rather than copying them into the heap (twice,
// before: once to learn how far the log went, once to replay them): by
// the footers it allocates less than a full scan of the segments does
// plus one copy of the footers.
func TestOpenByFootersOrScanAllocatesLittle(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s := openWith(t, cfg)
	appendBatches(t, s, 500, 200, func(n int) (string, string) {
		return fmt.Sprintf("order:%d", n%1000), payloadN(n % 200)
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var indexMiB float64
	open := func(skip func(string) bool, want string) float64 {
		c := cfg
		c.Dir = filepath.Join(t.TempDir(), want)
		copyTree(t, cfg.Dir, c.Dir, skip)
		var s *core.Store
		mib := allocatedMiB(func() { s = openWith(t, c) })
		defer s.Close()
		if p := s.Diagnostics().Open.Path; p != want {
			t.Fatalf("opened by %q, want %q", p, want)
		}
		indexMiB = float64(s.Stats().IndexBytes) / (1 << 20)
		return mib
	}
	ckMiB := open(func(string) bool { return false }, "checkpoint")
	footerMiB := open(func(n string) bool { return n == checkpointFile }, "footers")
	scanMiB := open(func(n string) bool { return n == checkpointFile || strings.HasSuffix(n, format.FooterSuffix) }, "scan")
	var footers int64
	paths, _ := filepath.Glob(filepath.Join(cfg.Dir, "*"+format.FooterSuffix))
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		footers += st.Size()
	}
	t.Logf("allocated %.1f MiB by the checkpoint, %.1f MiB by the footers, %.1f MiB by a scan; the footers hold %.1f MiB", ckMiB, footerMiB, scanMiB, float64(footers)/(1<<20))
	// The walk itself keeps no event on the heap (it put each one there,
	// and copied every batch into a fresh array): a scan allocates about
	// what the index it builds holds, with the index's own growth.
	if scanMiB > 4*indexMiB {
		t.Errorf("Open by a scan allocated %.1f MiB for an index of %.1f MiB", scanMiB, indexMiB)
	}
	if footerMiB > scanMiB+float64(footers)/(1<<20) {
		t.Errorf("Open by the footer path allocated %.1f MiB, a scan %.1f MiB: more than one copy of the footers' %.1f MiB", footerMiB, scanMiB, float64(footers)/(1<<20))
	}
}
