package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

func TestWritesReachEveryReplicaIdentically(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.leader(5 * time.Second)
	ctx := context.Background()

	// Several independent appends in one entry; CAS and idempotency.
	rs := mustAppend(t, l, "acme",
		item("order-1", `{"n":1}`, core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}),
		item("order-1", `{"n":2}`, core.AppendOptions{ExpectedClock: core.ExpectClock(0)}),
		item("order-2", `{"n":3}`, core.AppendOptions{IdempotencyKey: "pay-2"}),
	)
	if rs[0].Receipt.Clock != 0 || rs[1].Receipt.Clock != 1 || rs[2].Receipt.GlobalSequence != 2 {
		t.Fatalf("receipts %+v", rs)
	}
	if rs[0].Receipt.CorrelationID != rs[0].Receipt.ID {
		t.Errorf("correlation %s, want the event's own id %s", rs[0].Receipt.CorrelationID, rs[0].Receipt.ID)
	}
	miss, err := l.Append(ctx, "acme",
		item("order-1", `{"n":4}`, core.AppendOptions{ExpectedClock: core.ExpectClock(0)}), // stale: refused
		item("order-2", `{"n":3}`, core.AppendOptions{IdempotencyKey: "pay-2"}),            // retry: deduplicated
	)
	if err != nil {
		t.Fatal(err)
	}
	var ce *core.ConflictError
	if !errors.As(miss[0].Err, &ce) || ce.Actual != core.ExpectClock(1) {
		t.Fatalf("stale CAS: %v, want a conflict naming clock 1", miss[0].Err)
	}
	if miss[1].Err != nil || !miss[1].Receipt.Deduplicated || miss[1].Receipt.ID != rs[2].Receipt.ID {
		t.Fatalf("retry: %+v, want the original receipt %+v, deduplicated", miss[1], rs[2].Receipt)
	}
	// An atomic batch with a prior-item cause, and a refused one.
	batch := []core.BatchItem{item("order-3", `{"b":1}`, core.AppendOptions{}), item("order-3", `{"b":2}`, core.AppendOptions{})}
	batch[1].Causation = core.PriorItem(0)
	brs, err := l.AppendBatch(ctx, "acme", batch)
	if err != nil || brs[0].Err != nil || brs[1].Err != nil {
		t.Fatalf("batch: %v %+v", err, brs)
	}
	bad, err := l.AppendBatch(ctx, "acme", []core.BatchItem{
		item("order-4", `{}`, core.AppendOptions{}),
		item("order-1", `{}`, core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}),
	})
	if err != nil || !errors.Is(bad[0].Err, core.ErrConflict) || !errors.Is(bad[1].Err, core.ErrConflict) {
		t.Fatalf("refused batch: %v %+v, want every item to carry the conflict", err, bad)
	}

	// Concurrent writers on two tenants: group commits in raft and in the stores.
	var wg sync.WaitGroup
	var mu sync.Mutex
	last := bad[0].Index
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			tenant := []string{"acme", "globex"}[w%2]
			for i := 0; i < 20; i++ {
				rs, err := l.Append(ctx, tenant, item("w"+strconv.Itoa(w), fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{ExpectedClock: core.ExpectClock(uint64(i - 1))}))
				if i == 0 {
					rs, err = l.Append(ctx, tenant, item("w"+strconv.Itoa(w), `{"i":0}`, core.AppendOptions{}))
				}
				if err != nil || rs[0].Err != nil {
					t.Errorf("writer %d: %v %+v", w, err, rs)
					return
				}
				mu.Lock()
				last = max(last, rs[0].Index)
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	assertIdentical(t, c.list(), last, "acme", "globex")
	for _, n := range c.list() {
		var events int
		if err := n.View("acme", func(s *core.Store) error { events = len(mustQuery(t, s)); return nil }); err != nil {
			t.Fatal(err)
		}
		if want := 3 + 2 + 4*20; events != want {
			t.Errorf("%s holds %d events of acme, want %d", n.ID(), events, want)
		}
	}
}

func mustQuery(t testing.TB, s *core.Store) []core.StoredEvent {
	t.Helper()
	evs, err := s.Query(core.All())
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestFollowerRefusesNamingTheLeader(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(5 * time.Second)
	for _, n := range c.list() {
		if n == l {
			continue
		}
		_, err := n.Append(context.Background(), "acme", item("e", `1`, core.AppendOptions{}))
		var nl *cluster.NotLeaderError
		if !errors.As(err, &nl) || !errors.Is(err, cluster.ErrNotLeader) {
			t.Fatalf("%s: %v, want a *NotLeaderError", n.ID(), err)
		}
		if nl.Leader != l.Addr() || nl.LeaderID != l.ID() {
			t.Fatalf("%s names leader %s/%s, want %s/%s", n.ID(), nl.LeaderID, nl.Leader, l.ID(), l.Addr())
		}
		if err := n.Join("x", "x"); !errors.Is(err, cluster.ErrNotLeader) {
			t.Fatalf("Join on a follower: %v, want ErrNotLeader", err)
		}
	}
	// Nothing was proposed: no node has the tenant.
	for _, n := range c.list() {
		if err := n.View("acme", func(*core.Store) error { return nil }); !errors.Is(err, cluster.ErrNoTenant) {
			t.Fatalf("%s: %v, want ErrNoTenant", n.ID(), err)
		}
	}
	if _, err := l.Append(context.Background(), "Not/A/Tenant", item("e", `1`, core.AppendOptions{})); err == nil {
		t.Fatal("an invalid tenant id was accepted")
	}
}

func TestLeaderLossFailoverAndCatchUp(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	old := c.leader(5 * time.Second)
	var acked []core.EventID
	var last uint64
	write := func(within time.Duration, i int) {
		t.Helper()
		rs, err := appendRetrying(c.list, "acme", within, item("e"+strconv.Itoa(i%5), fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{IdempotencyKey: "k" + strconv.Itoa(i)}))
		if err != nil || rs[0].Err != nil {
			t.Fatalf("write %d: %v %+v", i, err, rs)
		}
		acked = append(acked, rs[0].Receipt.ID)
		last = max(last, rs[0].Index)
	}
	for i := 0; i < 50; i++ {
		write(time.Second, i)
	}
	oldID := old.ID()
	start := time.Now()
	c.stop(oldID)
	write(10*time.Second, 50) // the first write a new leader accepts
	failover := time.Since(start)
	nl := c.leader(time.Second)
	t.Logf("leader %s lost; %s accepted a write %s later", oldID, nl.ID(), failover)
	if failover > 5*time.Second {
		t.Errorf("failover took %s, want under 5s", failover)
	}
	for i := 51; i < 100; i++ {
		write(5*time.Second, i)
	}
	assertIdentical(t, c.list(), last, "acme")

	// The old leader comes back: it replays its log, catches up from the
	// new leader, and ends identical.
	start = time.Now()
	back := c.start(oldID)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := back.WaitApplied(ctx, last); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s caught up to index %d in %s", oldID, last, time.Since(start))
	assertIdentical(t, c.list(), last, "acme")
	for _, n := range c.list() {
		err := n.View("acme", func(s *core.Store) error {
			for _, id := range acked {
				if _, err := s.Get(id); err != nil {
					return fmt.Errorf("acknowledged %s: %w", id, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", n.ID(), err)
		}
	}
}

func TestNewNodeRestoredFromSnapshot(t *testing.T) {
	c := newMemCluster(t, 3, func(cfg *cluster.Config) {
		cfg.SnapshotThreshold = 8
		cfg.TrailingLogs = 4
	})
	l := c.leader(5 * time.Second)
	var last uint64
	for i := 0; i < 60; i++ {
		rs := mustAppend(t, l, []string{"acme", "globex"}[i%2], item("e"+strconv.Itoa(i%7), fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{}))
		last = rs[0].Index
	}
	if err := l.Snapshot(); err != nil {
		t.Fatal(err)
	}
	snapIdx, _ := strconv.ParseUint(l.Stats()["last_snapshot_index"], 10, 64)
	if snapIdx < last-1 {
		t.Fatalf("leader's snapshot at index %d, want about %d", snapIdx, last)
	}
	// Writes after the snapshot come from the log.
	for i := 60; i < 70; i++ {
		rs := mustAppend(t, l, "acme", item("late", fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{}))
		last = rs[0].Index
	}
	start := time.Now()
	n4 := c.start("n4")
	if err := l.Join("n4", "n4"); err != nil {
		t.Fatal(err)
	}
	assertIdentical(t, []*cluster.Node{l, n4}, last, "acme", "globex")
	t.Logf("n4 joined and caught up to index %d in %s", last, time.Since(start))
	if got, _ := strconv.ParseUint(n4.Stats()["last_snapshot_index"], 10, 64); got < snapIdx {
		t.Fatalf("n4's last snapshot index is %d, want at least %d: it was not restored from a snapshot", got, snapIdx)
	}
	assertIdentical(t, c.list(), last, "acme", "globex")
	if got := l.Stats()["num_peers"]; got != "3" {
		t.Fatalf("the leader has %s peers with n4, want 3", got)
	}
	if err := l.Leave("n4"); err != nil {
		t.Fatal(err)
	}
	if got := l.Stats()["num_peers"]; got != "2" {
		t.Fatalf("the leader has %s peers after n4 left, want 2", got)
	}
	if ts, err := n4.Tenants(); err != nil || fmt.Sprint(ts) != "[acme globex]" {
		t.Fatalf("n4 holds tenants %v (%v), want [acme globex]", ts, err)
	}
}

func TestReadYourWritesAndLinearizableReads(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(5 * time.Second)
	rs := mustAppend(t, l, "acme", item("e", `1`, core.AppendOptions{}))
	for _, n := range c.list() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.WaitApplied(ctx, rs[0].Index); err != nil {
			t.Fatalf("%s: %v", n.ID(), err)
		}
		cancel()
		if err := n.View("acme", func(s *core.Store) error { _, err := s.Get(rs[0].Receipt.ID); return err }); err != nil {
			t.Fatalf("%s after WaitApplied: %v", n.ID(), err)
		}
		if n == l {
			if err := n.Barrier(context.Background()); err != nil {
				t.Fatalf("Barrier on the leader: %v", err)
			}
		} else if err := n.Barrier(context.Background()); !errors.Is(err, cluster.ErrNotLeader) {
			t.Fatalf("Barrier on follower %s: %v, want ErrNotLeader", n.ID(), err)
		}
		// An index not yet written: the wait is bounded by ctx.
		ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := n.WaitApplied(ctx, rs[0].Index+1000)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: WaitApplied for a future index: %v, want the deadline", n.ID(), err)
		}
	}
}

func TestClusterOverTCP(t *testing.T) {
	root := t.TempDir()
	var nodes []*cluster.Node
	var servers []cluster.Server
	for i := 1; i <= 3; i++ {
		cfg := cluster.Config{ID: fmt.Sprintf("t%d", i), Dir: filepath.Join(root, strconv.Itoa(i)), Bind: "127.0.0.1:0"}
		fastTimeouts(&cfg)
		n, err := cluster.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
		servers = append(servers, cluster.Server{ID: cfg.ID, Address: n.Addr()})
	}
	if err := nodes[0].Bootstrap(servers...); err != nil {
		t.Fatal(err)
	}
	var l *cluster.Node
	for deadline := time.Now().Add(5 * time.Second); l == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, n := range nodes {
			if n.IsLeader() {
				l = n
			}
		}
	}
	if l == nil {
		t.Fatal("no leader over TCP within 5s")
	}
	var last uint64
	for i := 0; i < 20; i++ {
		rs := mustAppend(t, l, "acme", item("e", fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{ExpectedClock: expectAfter(i)}))
		last = rs[0].Index
	}
	assertIdentical(t, nodes, last, "acme")
}

// expectAfter is the expectation of the i-th write to a fresh entity.
func expectAfter(i int) core.Expectation {
	if i == 0 {
		return core.ExpectNoEvents()
	}
	return core.ExpectClock(uint64(i - 1))
}

func TestMinorityLeaderRefusesWrites(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	old := c.settled(5 * time.Second)
	rs := mustAppend(t, old, "acme", item("e", `{"before":true}`, core.AppendOptions{}))
	c.partition(old.ID())

	// The cut-off leader never acknowledges a write: it answers with a
	// retryable error once it sees it has lost its quorum.
	lost := core.NewEventID()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := old.Append(ctx, "acme", item("e", `{"lost":true}`, core.AppendOptions{ID: lost}))
	if !errors.Is(err, cluster.ErrNotLeader) && !errors.Is(err, cluster.ErrOutcomeUnknown) {
		t.Fatalf("a write to a leader cut off from its majority: %v, want ErrNotLeader or ErrOutcomeUnknown", err)
	}
	t.Logf("cut-off leader answered: %v", err)
	// The majority elects a leader and goes on.
	var last uint64
	for i := 0; i < 10; i++ {
		rs, err := appendRetrying(func() []*cluster.Node { return majority(c, old.ID()) }, "acme", 5*time.Second, item("e", fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{}))
		if err != nil || rs[0].Err != nil {
			t.Fatalf("majority write %d: %v %+v", i, err, rs)
		}
		last = rs[0].Index
	}
	c.heal(old.ID())
	assertIdentical(t, c.list(), max(last, rs[0].Index), "acme")
	for _, n := range c.list() {
		err := n.View("acme", func(s *core.Store) error {
			if _, err := s.Get(lost); !errors.Is(err, core.ErrNotFound) {
				return fmt.Errorf("the refused write is there: %v", err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", n.ID(), err)
		}
	}
}

// majority is the running nodes but one.
func majority(c *memCluster, except string) []*cluster.Node {
	var out []*cluster.Node
	for _, n := range c.list() {
		if n.ID() != except {
			out = append(out, n)
		}
	}
	return out
}

func TestNodeWithWipedDiskRejoins(t *testing.T) {
	c := newMemCluster(t, 3, func(cfg *cluster.Config) {
		cfg.SnapshotThreshold = 8
		cfg.TrailingLogs = 4
	})
	l := c.settled(5 * time.Second)
	var last uint64
	for i := 0; i < 30; i++ {
		last = mustAppend(t, l, "acme", item("e"+strconv.Itoa(i%3), fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{}))[0].Index
	}
	if err := l.Snapshot(); err != nil {
		t.Fatal(err)
	}
	var victim string
	for _, n := range c.list() {
		if n != l {
			victim = n.ID()
		}
	}
	c.stop(victim)
	if err := os.RemoveAll(filepath.Join(c.root, victim)); err != nil {
		t.Fatal(err)
	}
	for i := 30; i < 40; i++ {
		last = mustAppend(t, l, "acme", item("e"+strconv.Itoa(i%3), fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{}))[0].Index
	}
	start := time.Now()
	c.start(victim) // same id and address, empty disk: the leader sends a snapshot, then the log
	assertIdentical(t, c.list(), last, "acme")
	t.Logf("%s rejoined with a wiped disk and caught up to index %d in %s", victim, last, time.Since(start))
}

func TestEntryLimits(t *testing.T) {
	c := newMemCluster(t, 1, func(cfg *cluster.Config) {
		cfg.MaxItems = 3
		cfg.MaxBytes = 10
	})
	l := c.settled(5 * time.Second)
	ctx := context.Background()
	three := []core.BatchItem{item("e", `1`, core.AppendOptions{}), item("e", `2`, core.AppendOptions{}), item("e", `3`, core.AppendOptions{})}
	if _, err := l.AppendBatch(ctx, "acme", three); err != nil {
		t.Fatalf("exactly MaxItems: %v", err)
	}
	four := append(three, item("e", `4`, core.AppendOptions{}))
	if _, err := l.Append(ctx, "acme", four...); !errors.Is(err, cluster.ErrTooLarge) {
		t.Fatalf("MaxItems+1: %v, want ErrTooLarge", err)
	}
	if _, err := l.Append(ctx, "acme", item("e", `"12345678"`, core.AppendOptions{})); err != nil {
		t.Fatalf("exactly MaxBytes: %v", err)
	}
	if _, err := l.Append(ctx, "acme", item("e", `"123456789"`, core.AppendOptions{})); !errors.Is(err, cluster.ErrTooLarge) {
		t.Fatalf("MaxBytes+1: %v, want ErrTooLarge", err)
	}
	for _, bad := range []cluster.Config{{MaxItems: cluster.MaxMaxItems + 1}, {MaxBytes: -1}} {
		bad.ID, bad.Dir, bad.Bind = "x", t.TempDir(), "127.0.0.1:0"
		if _, err := cluster.Open(bad); err == nil {
			t.Fatalf("Open accepted %+v", bad)
		}
	}
}

func TestSecondOpenOfADirInUseFails(t *testing.T) {
	c := newMemCluster(t, 1, nil)
	l := c.settled(5 * time.Second)
	last := mustAppend(t, l, "acme", item("e", `1`, core.AppendOptions{}))[0].Index
	_, tr := raft.NewInmemTransport("again")
	if n, err := cluster.Open(cluster.Config{ID: "n1", Dir: filepath.Join(c.root, "n1"), Transport: tr}); err == nil {
		n.Close()
		t.Fatal("a second node opened a Dir in use")
	}
	assertIdentical(t, []*cluster.Node{l, l}, last, "acme") // the running node's store is intact
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Append(context.Background(), "acme", item("e", `2`, core.AppendOptions{})); !errors.Is(err, cluster.ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	if err := l.View("acme", func(*core.Store) error { return nil }); !errors.Is(err, cluster.ErrClosed) {
		t.Fatalf("View after Close: %v, want ErrClosed", err)
	}
}

// TestWritesSurviveRepeatedLeaderLoss: clients append (single events with
// idempotency keys, compare-and-set chains, batches) while the leader is
// stopped and restarted, round after round. Every acknowledged write is on
// every replica afterwards, each compare-and-set chain has no gap, and the
// replicas are identical.
func TestWritesSurviveRepeatedLeaderLoss(t *testing.T) {
	rounds := 3
	if v, _ := strconv.Atoi(os.Getenv("BATPAK_CLUSTER_ROUNDS")); v > 0 {
		rounds = v
	}
	c := newMemCluster(t, 3, func(cfg *cluster.Config) {
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 16
		cfg.SnapshotInterval = 200 * time.Millisecond
	})
	var (
		mu    sync.Mutex
		acked = map[core.EventID]bool{}
		last  uint64
	)
	record := func(rs []cluster.Result) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range rs {
			if r.Err == nil {
				acked[r.Receipt.ID] = true
				last = max(last, r.Index)
			}
		}
	}
	for round := 0; round < rounds; round++ {
		stopWriters := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				entity := fmt.Sprintf("r%d-w%d", round, w)
				for i := 0; ; i++ {
					select {
					case <-stopWriters:
						return
					default:
					}
					var rs []cluster.Result
					var err error
					switch w % 3 {
					case 0: // idempotent single: retried until acknowledged
						rs, err = appendRetrying(c.list, "acme", 10*time.Second, item(entity, fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{IdempotencyKey: fmt.Sprintf("%s-%d", entity, i)}))
					case 1: // a compare-and-set chain: clock i follows clock i-1
						rs, err = appendRetrying(c.list, "acme", 10*time.Second, item(entity, fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{ExpectedClock: expectAfter(i), IdempotencyKey: fmt.Sprintf("%s-%d", entity, i)}))
					default: // batches of 5 under idempotency keys
						items := make([]core.BatchItem, 5)
						for j := range items {
							items[j] = item(entity, fmt.Sprintf(`{"i":%d,"j":%d}`, i, j), core.AppendOptions{IdempotencyKey: fmt.Sprintf("%s-%d-%d", entity, i, j)})
						}
						rs, err = batchRetrying(c.list, "acme", 10*time.Second, items)
					}
					if err != nil {
						t.Errorf("writer %s: %v", entity, err)
						return
					}
					for _, r := range rs {
						if r.Err != nil {
							t.Errorf("writer %s write %d refused: %v", entity, i, r.Err)
							return
						}
					}
					record(rs)
				}
			}(w)
		}
		time.Sleep(300 * time.Millisecond)
		l := c.leader(5 * time.Second)
		id := l.ID()
		c.stop(id)
		time.Sleep(300 * time.Millisecond)
		c.start(id)
		time.Sleep(200 * time.Millisecond)
		close(stopWriters)
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	c.settled(5 * time.Second)
	assertIdentical(t, c.list(), last, "acme")
	for _, n := range c.list() {
		err := n.View("acme", func(s *core.Store) error {
			for id := range acked {
				if _, err := s.Get(id); err != nil {
					return fmt.Errorf("acknowledged %s: %w", id, err)
				}
			}
			evs, err := s.Query(core.All())
			if len(evs) != len(acked) {
				return fmt.Errorf("%d events, %d acknowledged: a write was applied twice or unacknowledged", len(evs), len(acked))
			}
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", n.ID(), err)
		}
	}
	t.Logf("%d rounds, %d acknowledged events, identical on %d nodes", rounds, len(acked), len(c.list()))
}

// batchRetrying is appendRetrying for an atomic batch.
func batchRetrying(nodes func() []*cluster.Node, tenant string, within time.Duration, items []core.BatchItem) ([]cluster.Result, error) {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		for _, n := range nodes() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			rs, err := n.AppendBatch(ctx, tenant, items)
			cancel()
			if err == nil {
				return rs, nil
			}
			last = err
			if !retryableWrite(err) {
				return nil, err
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil, fmt.Errorf("no batch accepted within %s: %w", within, last)
}

// TestBarrierAndAppendEndWithCtx: a leader cut off from its majority
// cannot commit; Barrier and Append return when ctx ends instead of
// waiting for raft (which, if the node shuts down with the entry
// committed but not applied, never answers).
func TestBarrierAndAppendEndWithCtx(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(5 * time.Second)
	mustAppend(t, l, "acme", item("e", `1`, core.AppendOptions{}))
	c.partition(l.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := l.Barrier(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Barrier on a cut-off leader with a 30ms ctx: %v, want the deadline", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel2()
	_, err := l.Append(ctx2, "acme", item("e", `2`, core.AppendOptions{}))
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("Append on a cut-off leader with a 30ms ctx: %v, want the deadline", err)
	}
	// Closed while waiting: Barrier answers ErrClosed, not never.
	done := make(chan error, 1)
	go func() { done <- l.Barrier(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	c.stop(l.ID())
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Barrier succeeded on a leader cut off from its majority")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Barrier did not return within 5s of Close")
	}
}

// TestBarrierOnDeposedLeader: a leader cut off from its majority steps
// down while a Barrier waits; the Barrier answers ErrNotLeader (a read
// can go to the new leader), not raft's leadership-lost error.
func TestBarrierOnDeposedLeader(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(5 * time.Second)
	mustAppend(t, l, "acme", item("e", `1`, core.AppendOptions{}))
	c.partition(l.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := l.Barrier(ctx)
	var nl *cluster.NotLeaderError
	if !errors.Is(err, cluster.ErrNotLeader) || !errors.As(err, &nl) {
		t.Fatalf("Barrier on a leader that lost its majority: %v, want ErrNotLeader", err)
	}
}
