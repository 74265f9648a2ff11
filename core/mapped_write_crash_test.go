package core_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// A group of up to 1 KiB is copied into the shared mapping of the active
// segment rather than written with write(2) (unless every event is
// synced). A SIGKILL in the middle of that copy must leave what a cut-short
// write would: a torn tail, never a later frame of the group without the
// ones before it, which Open would have to refuse as corruption. (Found by
// the compaction SIGKILL test: the runtime's memmove stores the middle of
// a copy over 256 bytes before its head.)

func init() { helperModes["mappedbatch"] = helperMappedBatch }

// helperMappedBatch writes small two-item batches (a group of 750..1000
// bytes: begin record, two items, commit record) as fast as it can.
func helperMappedBatch(dir string) error {
	cfg := testConfig(dir)
	cfg.Sync.EveryNEvents, cfg.Sync.Interval = 0, 0
	s, err := core.Open(cfg)
	if err != nil {
		return err
	}
	fmt.Println("READY")
	c, _ := core.NewCoordinate("m", "s")
	for i := 0; ; i++ {
		p := []byte(fmt.Sprintf(`{"i":%d,"p":"%s"}`, i, strings.Repeat("x", 140+i%120)))
		if _, err := s.AppendBatch(context.Background(), []core.BatchItem{
			{Coordinate: c, Kind: kindA, Payload: p},
			{Coordinate: c, Kind: kindB, Payload: p},
		}); err != nil {
			return err
		}
	}
}

func TestKillDuringMappedBatchWrite(t *testing.T) {
	rng := crashRNG(t)
	for round := 0; round < 12; round++ {
		dir := t.TempDir()
		c := startHelper(t, "mappedbatch", dir)
		c.killWhen(t, func(ln string) bool { return ln == "READY" }, time.Duration(10+rng.Intn(60))*time.Millisecond)
		s, err := core.Open(testConfig(dir))
		if err != nil {
			t.Fatalf("round %d: Open after SIGKILL during mapped writes: %v", round, err)
		}
		rep := mustVerify(t, s)
		if rep.Events%2 != 0 {
			t.Fatalf("round %d: %d events: a batch is half there", round, rep.Events)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
