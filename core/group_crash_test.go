package core_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"sync"
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

// doomedWriter is the child's goroutine whose batches always fail.
const doomedWriter = 5

// helperGroupCrash writes, until killed, batches of 50-200 items from
// three goroutines, singles from a fourth, and from a fifth batches of
// 50-200 items whose last item expects a clock no entity has (so each is
// placed, often across a segment rotation, and then rolled back). It
// prints "ACKB batch n firstSeq id…" for each acknowledged write, and
// stops with an error if a doomed batch is acknowledged.
func helperGroupCrash(dir string) error {
	cfg := crashConfig(dir)
	var err error
	if cfg.Sync.EveryNEvents, err = strconv.Atoi(os.Getenv("BATPAK_EVERYN")); err != nil {
		return err
	}
	round, _ := strconv.Atoi(os.Getenv("BATPAK_ROUND"))
	seed, _ := strconv.ParseInt(os.Getenv("BATPAK_SEED"), 10, 64)
	s, err := core.Open(cfg)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	errs := make(chan error, 6)
	for _, g := range []int{0, 1, 2, 4, doomedWriter} {
		go func(g int) {
			ctx := context.Background()
			rng := rand.New(rand.NewSource(seed + int64(g)))
			for k := 0; ; k++ {
				b, n := crashBatchID(round, g, k), 50+rng.Intn(151)
				var rs []core.Receipt
				var err error
				switch g {
				case 4:
					n = 1
					it := crashBatchItems(b, n)[0]
					var r core.Receipt
					r, err = s.AppendWithOptions(ctx, it.Coordinate, it.Kind, it.Payload, it.Options)
					rs = []core.Receipt{r}
				case doomedWriter:
					items := crashBatchItems(b, n)
					items[n-1].Options.ExpectedClock = core.ExpectClock(1 << 40)
					_, err := s.AppendBatch(ctx, items)
					var ce *core.ConflictError
					if !errors.As(err, &ce) {
						errs <- fmt.Errorf("doomed batch %d: %v, want a conflict", b, err)
						return
					}
					continue
				default:
					rs, err = s.AppendBatch(ctx, crashBatchItems(b, n))
				}
				if err != nil {
					errs <- err
					return
				}
				if err := printAck(&mu, b, rs); err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	return <-errs
}

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
