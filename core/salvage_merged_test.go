package core_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
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
