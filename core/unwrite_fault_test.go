package core_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/vfs/errorfs"
)

// A batch that fails after a segment rotation inside it is unwritten from
// the segment it started in: the bytes it had written there are zeroed.
// A process that dies part-way through that zeroing (the kill lands
// between two of its writes) must leave a log that opens: what the batch
// wrote still reads as a batch without its commit record (discarded), and
// never as zeros with the batch's frames after them (damage in the middle
// of the log, which Open refuses).
func TestBatchUnwriteCutShortLeavesARecoverableLog(t *testing.T) {
	for _, nth := range []int{1, 2, 3, 50} {
		t.Run(fmt.Sprintf("write %d of the zeroing fails", nth), func(t *testing.T) {
			ctx := context.Background()
			s, efs, cfg := openFaulty(t, func(c *core.Config) {
				c.SegmentMaxBytes = 4 << 20
				c.Batch.MaxBytes = 4 << 20
				c.Sync.EveryNEvents = 1000
			})
			filler := mustAppend(t, s, mustCoord(t, "uw:a", "s"), kindA, `{"p":"`+strings.Repeat("f", 5<<19)+`"}`) // 2.5 MiB
			items := make([]core.BatchItem, 30)
			for i := range items {
				items[i] = core.BatchItem{Coordinate: mustCoord(t, "uw:b", "s"), Kind: kindB, Payload: taggedPayload(1, i, len(items), 60<<10)}
			}
			var fault *errorfs.Fault
			core.SetBatchFault(s, func(p core.FaultPoint, _ int) error {
				if p != core.FaultAfterItems {
					return nil
				}
				segs := segmentFiles(t, cfg.Dir)
				if len(segs) != 2 {
					return fmt.Errorf("%d segments after the batch's items, want 2 (a rotation inside the batch)", len(segs))
				}
				// The next writes to the first segment are the unwrite's zeroing.
				fault = efs.Inject(errorfs.Fault{Op: errorfs.OpWrite, Pattern: filepath.Base(segs[0]), Nth: nth})
				return errInjected
			})
			if _, err := s.AppendBatch(ctx, items); err == nil {
				t.Fatal("the batch was written")
			}
			if nth <= 3 && efs.Fired(fault) == 0 {
				t.Fatalf("the zeroing took fewer than %d writes", nth)
			}
			core.SetBatchFault(s, nil)
			_ = s.Close() // the writer may have stopped: what is on disk is what a kill would leave
			s2, err := core.Open(cfg)
			if err != nil {
				t.Fatalf("Open after the cut-short unwrite: %v", err)
			}
			defer s2.Close()
			all := mustQuery(t, s2, core.All())
			if len(all) != 1 || all[0].Header.ID != filler.ID {
				t.Fatalf("%d events after reopen, want only the filler", len(all))
			}
			if rep := mustVerify(t, s2); rep.Events != 1 {
				t.Fatalf("Verify: %+v", rep)
			}
			rs := mustBatch(t, s2, items[:3])
			if rs[0].GlobalSequence != 1 || rs[0].Clock != 0 {
				t.Fatalf("batch after reopen: %+v", rs[0])
			}
		})
	}
}
