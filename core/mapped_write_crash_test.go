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

// mappedPayload is the payload of batch i's items.
func mappedPayload(i int) string {
	return fmt.Sprintf(`{"i":%d,"p":"%s"}`, i, strings.Repeat("x", 140+i%120))
}

// helperMappedBatch writes small two-item batches (a group of 750..1000
// bytes: begin record, two items, commit record) as fast as it can,
// printing "ACK i seq id0 id1" once batch i is acknowledged.
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
		p := []byte(mappedPayload(i))
		rs, err := s.AppendBatch(context.Background(), []core.BatchItem{
			{Coordinate: c, Kind: kindA, Payload: p},
			{Coordinate: c, Kind: kindB, Payload: p},
		})
		if err != nil {
			return err
		}
		// One write each: a line is whole or absent (the parent ignores a
		// line the kill cut).
		if _, err := fmt.Printf("ACK %d %d %s %s\n", i, rs[0].GlobalSequence, rs[0].ID, rs[1].ID); err != nil {
			return err
		}
	}
}

// Every acknowledged batch survives the kill whole, at its sequences and
// with its payloads; nothing else of the log is half there.
func TestKillDuringMappedBatchWrite(t *testing.T) {
	rng := crashRNG(t)
	for round := 0; round < 12; round++ {
		dir := t.TempDir()
		c := startHelper(t, "mappedbatch", dir)
		// A random moment once writing is under way.
		lines := c.killWhen(t, func(ln string) bool { return strings.HasPrefix(ln, "ACK ") }, time.Duration(10+rng.Intn(60))*time.Millisecond)
		s, err := core.Open(testConfig(dir))
		if err != nil {
			t.Fatalf("round %d: Open after SIGKILL during mapped writes: %v", round, err)
		}
		acked := 0
		for _, ln := range lines[1:] {
			var i int
			var seq uint64
			var id0, id1 string
			if _, err := fmt.Sscanf(ln, "ACK %d %d %s %s", &i, &seq, &id0, &id1); err != nil {
				t.Fatalf("round %d: helper said %q", round, ln)
			}
			if i != acked {
				t.Fatalf("round %d: acknowledgement %d is for batch %d", round, acked, i)
			}
			acked++
			for k, id := range []string{id0, id1} {
				eid, err := core.ParseEventID(id)
				if err != nil {
					t.Fatal(err)
				}
				ev, err := s.Get(eid)
				if err != nil {
					t.Fatalf("round %d: item %d of acknowledged batch %d (%s) lost: %v", round, k, i, id, err)
				}
				if ev.GlobalSequence != seq+uint64(k) || string(ev.Payload) != mappedPayload(i) || ev.Header.Kind != []core.Kind{kindA, kindB}[k] {
					t.Fatalf("round %d: item %d of acknowledged batch %d read back as sequence %d (want %d), kind %v, payload %s",
						round, k, i, ev.GlobalSequence, seq+uint64(k), ev.Header.Kind, ev.Payload)
				}
			}
		}
		rep := mustVerify(t, s)
		if rep.Events%2 != 0 || rep.Events < 2*acked {
			t.Fatalf("round %d: %d events after %d acknowledged batches: a batch is half there or lost", round, rep.Events, acked)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
