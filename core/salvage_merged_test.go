package core_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
)

// TestSalvageOfAMergedStoreIsItsExport: a compaction that merges segments
// leaves gaps in the segment numbers (inputs 1 and 2 become 1.1, the next
// file is 3.1). Salvage of such a store, undamaged, writes exactly what
// Export writes: a committed fence or batch across a merged file's end is
// not taken for one damage cut.
func TestSalvageOfAMergedStoreIsItsExport(t *testing.T) {
	for _, atomic := range []string{"fence", "batch"} {
		t.Run(atomic, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			cfg := testConfig(dir)
			cfg.SegmentMaxBytes = 64 << 10
			s, err := core.Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			k := core.MustKind(1, 1)
			pad := strings.Repeat("x", 400)
			for i := range 150 {
				mustAppend(t, s, mustCoord(t, fmt.Sprintf("b:%d", i+1000), "s"), k, fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
			}
			if atomic == "fence" {
				f, err := s.BeginFence(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for i := range 600 {
					if _, err := f.Submit(ctx, mustCoord(t, fmt.Sprintf("f%d:%d", i%2, i), "s"), k, fmt.Appendf(nil, `{"f":%d,"pad":%q}`, i, pad)); err != nil {
						t.Fatal(err)
					}
				}
				if err := f.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			} else {
				var items []core.BatchItem
				for i := range 200 {
					items = append(items, core.BatchItem{Coordinate: mustCoord(t, fmt.Sprintf("f%d:%d", i%2, i), "s"), Kind: k, Payload: fmt.Appendf(nil, `{"f":%d,"pad":%q}`, i, pad)})
				}
				if _, err := s.AppendBatch(ctx, items); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 400 {
				mustAppend(t, s, mustCoord(t, fmt.Sprintf("b:%d", i), "s"), k, fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
			}
			keep := func(e core.StoredEvent) bool {
				return !strings.HasPrefix(e.Coordinate.Entity, "f1:") && !strings.HasPrefix(e.Coordinate.Entity, "b:")
			}
			if _, err := s.Compact(ctx, core.CompactConfig{Merge: true, Keep: keep}); err != nil {
				t.Fatal(err)
			}
			var want bytes.Buffer
			if _, err := s.Export(&want, core.All(), nil); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			rep, err := core.SalvageExport(dir, &got)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Fatalf("salvage of an undamaged merged store wrote %d lines, Export %d (unconfirmed %d, missing %v, partial %d)",
					bytes.Count(got.Bytes(), []byte("\n")), bytes.Count(want.Bytes(), []byte("\n")), rep.Unconfirmed, rep.Missing, rep.PartialBatches)
			}
		})
	}
}

// TestSalvageGapAfterARewrittenFileListedIsDamage: a crash cuts a batch
// after its first item (the writer rotated to a new segment for the
// second: the first segment, sealed, keeps the begin record and item).
// Reopened, the batch is retried (same sequences), its begin record and
// first items in segment 2, the rest and its commit in segment 3. A
// compaction rewrites the sealed segments (generation 1), and segment 2's
// rewritten file is then deleted. The gap after a rewritten file is
// damage because the index checkpoint (and the footer left behind) name
// the missing segment: salvage does not export the crashed attempt's
// items, never acknowledged, in place of the retried batch's.
func TestSalvageGapAfterARewrittenFileListedIsDamage(t *testing.T) {
	const max = 64 << 10
	ctx := context.Background()
	c := mustCoord(t, "order:1", "shop")
	k := core.MustKind(1, 1)
	filler := func(s *core.Store, i int) {
		mustAppend(t, s, mustCoord(t, fmt.Sprintf("fill:%06d", i), "shop"), k, fmt.Sprintf(`{"i":"%06d","pad":%q}`, i, strings.Repeat("x", 400)))
	}
	batch := func(tag string, size int) []core.BatchItem {
		items := make([]core.BatchItem, 3)
		for i := range items {
			items[i] = core.BatchItem{Coordinate: c, Kind: core.MustKind(1, 2), Payload: fmt.Appendf(nil, `{"batch":%q,"i":%d,"pad":%q}`, tag, i, strings.Repeat("y", size))}
		}
		return items
	}
	// Calibrate frame sizes.
	cal := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = max })
	filler(cal, 0)
	if _, err := cal.AppendBatch(ctx, batch("crashed", 2000)); err != nil {
		t.Fatal(err)
	}
	calDir := cal.Dir()
	if err := cal.Close(); err != nil {
		t.Fatal(err)
	}
	_, frs := readFrames(t, lastSegment(t, calDir))
	f, b, it := frs[0].end()-frs[0].Off, frs[1].end()-frs[1].Off, frs[2].end()-frs[2].Off
	F := (max - format.SegmentHeaderSize - b - 2*it) / f

	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = max })
	dir := s.Dir()
	for i := range F {
		filler(s, i)
	}
	rs, err := s.AppendBatch(ctx, batch("crashed", 2000))
	if err != nil {
		t.Fatal(err)
	}
	first := rs[0].GlobalSequence
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segmentFiles(t, dir)
	if len(segs) != 2 {
		t.Fatalf("segments %v, want 2", segs)
	}
	// The crash: right after the rotation, before item 1 reached segment 2.
	writeFile(t, segs[1], format.EncodeSegmentHeader(2))
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".seg") && !strings.HasSuffix(e.Name(), ".lock") {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	s = openWith(t, func() core.Config { c := testConfig(dir); c.SegmentMaxBytes = max; return c }())
	rs, err = s.AppendBatch(ctx, batch("acked", 28000))
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].GlobalSequence != first {
		t.Fatalf("retry took %d, want %d", rs[0].GlobalSequence, first)
	}
	for i := range 200 {
		filler(s, 100000+i)
	}
	if _, err := s.Compact(ctx, core.CompactConfig{Merge: true}); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if _, err := s.Export(&want, core.All(), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs = segmentFiles(t, dir)
	// Delete the rewritten file after the first (the retry's begin record and item 0).
	if err := os.Remove(segs[1]); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep, err := core.SalvageExport(dir, &out)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "crashed") {
		t.Errorf("salvage exported an item of the crashed (never acknowledged) attempt")
	}
	if len(rep.Missing) == 0 {
		t.Errorf("the deleted segment's sequences are not reported missing: %+v", rep)
	}
}
