package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// burst sends 64 writes to l at once, from 64 goroutines: every 8th
// expects its entity to have no events although it has one (a conflict),
// every 8th+1 repeats an idempotency key of an earlier write, the rest
// are plain appends. It returns each write's result and the number of raft
// log entries the burst took.
func burst(t *testing.T, l *cluster.Node, tenant string) ([]cluster.Result, uint64) {
	t.Helper()
	ctx := context.Background()
	// Entities the conflicting writes expect empty, and the write whose
	// key the retries repeat.
	for i := 0; i < 64; i += 8 {
		mustAppend(t, l, tenant, item("busy:"+strconv.Itoa(i), `{"seed":true}`, core.AppendOptions{}))
	}
	first := mustAppend(t, l, tenant, item("keyed", `{"n":1}`, core.AppendOptions{IdempotencyKey: "once"}))
	before, _ := strconv.ParseUint(l.Stats()["last_log_index"], 10, 64)

	res := make([]cluster.Result, 64)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var it core.BatchItem
			switch i % 8 {
			case 0:
				it = item("busy:"+strconv.Itoa(i), `{"late":true}`, core.AppendOptions{ExpectedClock: core.ExpectNoEvents()})
			case 1:
				it = item("keyed", `{"n":1}`, core.AppendOptions{IdempotencyKey: "once"})
			default:
				it = item("w:"+strconv.Itoa(i), fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{})
			}
			rs, err := l.Append(ctx, tenant, it)
			if err != nil {
				t.Errorf("write %d: %v", i, err)
				return
			}
			res[i] = rs[0]
		}()
	}
	close(start)
	wg.Wait()
	after, _ := strconv.ParseUint(l.Stats()["last_log_index"], 10, 64)
	for i, r := range res {
		switch i % 8 {
		case 0:
			var ce *core.ConflictError
			if !errors.As(r.Err, &ce) {
				t.Errorf("write %d expected an empty entity that has an event: %v, want a conflict", i, r.Err)
			}
		case 1:
			if r.Err != nil || r.Receipt.ID != first[0].Receipt.ID {
				t.Errorf("write %d repeats key once: %+v, want the first write's receipt %s", i, r, first[0].Receipt.ID)
			}
		default:
			if r.Err != nil || r.Receipt.ID.IsZero() {
				t.Errorf("write %d: %+v", i, r)
			}
		}
	}
	return res, after - before
}

// TestWritesShareRaftEntries: 64 writes proposed at once reach a quorum in
// far fewer raft entries than 64 (the leader gathers writes proposed while
// earlier entries are in flight into one), each write still gets its own
// result (a conflict or an idempotent repeat in the same entry refuses or
// answers only that write), and every replica holds the same events and
// verifies.
func TestWritesShareRaftEntries(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(5 * time.Second)
	res, entries := burst(t, l, "acme")
	if entries > 32 {
		t.Fatalf("64 writes at once took %d raft entries, want them to share entries", entries)
	}
	t.Logf("64 writes in %d entries", entries)
	seen := map[core.EventID]bool{}
	var last uint64
	for i, r := range res {
		if i%8 > 1 {
			if seen[r.Receipt.ID] {
				t.Fatalf("write %d got a receipt already given: %s", i, r.Receipt.ID)
			}
			seen[r.Receipt.ID] = true
		}
		last = max(last, r.Index)
	}
	assertIdentical(t, c.list(), last, "acme")
}

// TestSingleWriteEntries: with Config.SingleWriteEntries every write takes
// a raft entry of its own (what nodes of versions before write groups
// read), with the same results.
func TestSingleWriteEntries(t *testing.T) {
	c := newMemCluster(t, 3, func(cfg *cluster.Config) { cfg.SingleWriteEntries = true })
	l := c.settled(5 * time.Second)
	res, entries := burst(t, l, "acme")
	if entries != 64 {
		t.Fatalf("64 writes took %d raft entries, want one each", entries)
	}
	var last uint64
	for _, r := range res {
		last = max(last, r.Index)
	}
	assertIdentical(t, c.list(), last, "acme")
}
