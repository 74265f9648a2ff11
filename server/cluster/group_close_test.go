package cluster_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// TestStoreWritesInFlightAtCloseAreAnswered: a store's writes on their way
// through raft when the node closes are all answered (a receipt, or an
// error saying the outcome is unknown, the node closed or the leader's
// write queue was full): none waits for
// ever, even one whose entry was committed but not yet applied when raft
// shut down (raft never answers those).
func TestStoreWritesInFlightAtCloseAreAnswered(t *testing.T) {
	for round := range 3 {
		c := newMemCluster(t, 1, nil)
		n := c.settled(5 * time.Second)
		s, err := n.Store("acme")
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		var mu sync.Mutex
		var tickets []*core.Ticket
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 16 {
			loopUntil(&wg, stop, func(i int) bool {
				tk, err := s.Submit(ctx, core.Coordinate{Entity: "e" + strconv.Itoa(w), Scope: "s"}, kindA, []byte(`{"i":`+strconv.Itoa(i)+`}`))
				if err != nil {
					return false // closed
				}
				mu.Lock()
				tickets = append(tickets, tk)
				mu.Unlock()
				return true
			})
		}
		time.Sleep(150 * time.Millisecond)
		c.stop("n1")
		close(stop)
		wg.Wait()
		deadline := time.After(10 * time.Second)
		for i, tk := range tickets {
			select {
			case <-tk.Done():
			case <-deadline:
				t.Fatalf("round %d: write %d of %d never answered after Close", round, i, len(tickets))
			}
		}
		refused := 0
		for i, tk := range tickets {
			_, _, err := tk.TryCheck()
			var retry *core.RetryError
			switch {
			case err == nil:
			case errors.Is(err, cluster.ErrClosed), errors.Is(err, cluster.ErrOutcomeUnknown), errors.Is(err, core.ErrClosed):
				refused++
			case errors.As(err, &retry):
				// Submit loops outpace raft: the leader's write queue
				// is full (its bound), nothing proposed.
				refused++
			default:
				t.Fatalf("round %d: write %d: %v, want a receipt, ErrClosed, ErrOutcomeUnknown or a *core.RetryError (queue full)", round, i, err)
			}
		}
		t.Logf("round %d: %d writes answered, %d of them refused by the close", round, len(tickets), refused)
	}
}
