package core_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Group commits with failing batches under a real SIGKILL: a batch that
// fails at its last item is cut out of its group — from the buffer, or
// unwritten from disk when a rotation inside it had already written its
// start — while the writes around it go on. A kill at any point of that
// leaves the failed batch absent and every acknowledged write whole.

func init() { helperModes["groupcrash"] = helperGroupCrash }

// helperGroupCrash is helperBatchCrash with one batch writer whose
// batches always fail at their last item (see groupCrashWriters).
func helperGroupCrash(dir string) error { return groupCrashWriters(dir, true) }

// A child whose groups hold good batches, singles and batches that fail
// at their last item (rolled back, often after a rotation inside them) is
// killed at random points: after each reopen no event of a failed batch
// is there, every batch is whole or absent, every acknowledged write is
// there, Verify passes and the store writes on.
func TestKill9GroupsWithFailingBatches(t *testing.T) {
	rng := crashRNG(t)
	var dir string
	var all []ackedBatch
	for round := 0; round < 8; round++ {
		if round%4 == 0 {
			dir, all = t.TempDir(), nil
		}
		everyN := []int{1, 1000}[round%2]
		target := 1 + rng.Intn(8)
		delay := time.Duration(rng.Intn(4000)) * time.Microsecond
		c := startHelper(t, "groupcrash", dir, "BATPAK_EVERYN="+strconv.Itoa(everyN),
			"BATPAK_ROUND="+strconv.Itoa(round), "BATPAK_SEED="+strconv.FormatInt(rng.Int63(), 10))
		acks := 0
		lines := c.killWhen(t, func(string) bool { acks++; return acks >= target }, delay)
		for _, ln := range lines {
			all = append(all, parseAckedBatch(t, ln))
		}
		ro, err := core.OpenReadOnly(crashConfig(dir))
		if err != nil {
			t.Fatalf("round %d: read-only open: %v", round, err)
		}
		for b := range checkBatchesWhole(t, ro) {
			if b%1_000_000/100_000 == doomedWriter {
				t.Fatalf("round %d: events of failed batch %d are in the log", round, b)
			}
		}
		ro.Close()
		checkAfterBatchCrash(t, dir, round, all)
	}
}
