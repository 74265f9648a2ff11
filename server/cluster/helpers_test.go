package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

var kindA = core.MustKind(1, 1)

// fastTimeouts are raft timings for loopback tests: a leader is elected,
// and a lost one replaced, within a second or two. (A lease much shorter
// makes a leader on a loaded 2-core machine step down: a follower busy
// syncing a large append answers late. At 300 ms a CI run lost a leader
// in the middle of a test that does not expect it.)
// BATPAK_CLUSTER_RAFT_DEFAULTS=1 keeps raft's own timings instead.
func fastTimeouts(c *cluster.Config) {
	if os.Getenv("BATPAK_CLUSTER_RAFT_DEFAULTS") != "" {
		return
	}
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 500 * time.Millisecond
	if os.Getenv("BATPAK_RAFT_LOG") != "" {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
}

// memCluster is nodes on raft's in-memory transport; each node's data
// directory survives its Close so it can be restarted.
type memCluster struct {
	t      testing.TB
	root   string
	mu     sync.Mutex
	nodes  map[string]*cluster.Node
	trans  map[string]*raft.InmemTransport
	adjust func(*cluster.Config)
}

func newMemCluster(t testing.TB, n int, adjust func(*cluster.Config)) *memCluster {
	t.Helper()
	c := &memCluster{t: t, root: t.TempDir(), nodes: map[string]*cluster.Node{}, trans: map[string]*raft.InmemTransport{}, adjust: adjust}
	t.Cleanup(c.closeAll)
	var servers []cluster.Server
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		c.start(id)
		servers = append(servers, cluster.Server{ID: id, Address: id})
	}
	if err := c.nodes["n1"].Bootstrap(servers...); err != nil {
		t.Fatal(err)
	}
	c.leader(10 * time.Second)
	return c
}

// start opens (or reopens) node id, its address equal to its id, linked
// to every running node.
func (c *memCluster) start(id string) *cluster.Node {
	c.t.Helper()
	_, tr := raft.NewInmemTransport(raft.ServerAddress(id))
	cfg := cluster.Config{ID: id, Dir: filepath.Join(c.root, id), Transport: tr}
	fastTimeouts(&cfg)
	if c.adjust != nil {
		c.adjust(&cfg)
	}
	n, err := cluster.Open(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for other, ot := range c.trans {
		ot.Connect(raft.ServerAddress(id), tr)
		tr.Connect(raft.ServerAddress(other), ot)
	}
	c.nodes[id], c.trans[id] = n, tr
	return n
}

// stop closes node id (its data stays) and cuts its links.
func (c *memCluster) stop(id string) {
	c.t.Helper()
	c.mu.Lock()
	n, tr := c.nodes[id], c.trans[id]
	delete(c.nodes, id)
	delete(c.trans, id)
	for _, ot := range c.trans {
		ot.Disconnect(raft.ServerAddress(id))
	}
	c.mu.Unlock()
	if err := n.Close(); err != nil {
		c.t.Errorf("closing %s: %v", id, err)
	}
	tr.DisconnectAll()
}

// partition cuts every link between node id and the others.
func (c *memCluster) partition(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for other, ot := range c.trans {
		if other != id {
			ot.Disconnect(raft.ServerAddress(id))
			c.trans[id].Disconnect(raft.ServerAddress(other))
		}
	}
}

// heal restores node id's links.
func (c *memCluster) heal(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tr := c.trans[id]
	for other, ot := range c.trans {
		if other != id {
			ot.Connect(raft.ServerAddress(id), tr)
			tr.Connect(raft.ServerAddress(other), ot)
		}
	}
}

func (c *memCluster) closeAll() {
	c.mu.Lock()
	ids := make([]string, 0, len(c.nodes))
	for id := range c.nodes {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.stop(id)
	}
}

func (c *memCluster) list() []*cluster.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*cluster.Node
	for _, n := range c.nodes {
		out = append(out, n)
	}
	return out
}

// leader waits until one running node leads.
func (c *memCluster) leader(within time.Duration) *cluster.Node {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, n := range c.list() {
			if n.IsLeader() {
				return n
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("no leader within %s", within)
	return nil
}

// settled waits until every running node knows the same leader.
func (c *memCluster) settled(within time.Duration) *cluster.Node {
	c.t.Helper()
	l := c.leader(within)
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		agree := true
		for _, n := range c.list() {
			if addr, _ := n.Leader(); addr != l.Addr() {
				agree = false
			}
		}
		if agree {
			return l
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("nodes do not agree on leader %s within %s", l.ID(), within)
	return nil
}

// item is a write of payload to entity.
func item(entity, payload string, opts core.AppendOptions) core.BatchItem {
	return core.BatchItem{Coordinate: core.Coordinate{Entity: entity, Scope: "s"}, Kind: kindA, Payload: []byte(payload), Options: opts}
}

// mustAppend writes items through n and fails on any refusal.
func mustAppend(t testing.TB, n *cluster.Node, tenant string, items ...core.BatchItem) []cluster.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs, err := n.Append(ctx, tenant, items...)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	for i, r := range rs {
		if r.Err != nil {
			t.Fatalf("item %d: %v", i, r.Err)
		}
	}
	return rs
}

// image is everything replicas must agree on for one tenant: every event's
// sequence, coordinate, key and full header (id, timestamp, clock,
// correlation, causation, chain hashes).
func image(t testing.TB, n *cluster.Node, tenant string) string {
	t.Helper()
	var b strings.Builder
	err := n.View(tenant, func(s *core.Store) error {
		evs, err := s.Query(core.All())
		if err != nil {
			return err
		}
		for _, ev := range evs {
			fmt.Fprintf(&b, "%d %s %q %+v\n", ev.GlobalSequence, ev.Coordinate, ev.IdempotencyKey, ev.Header)
		}
		_, err = s.Verify()
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", n.ID(), err)
	}
	return b.String()
}

// assertIdentical waits for every node to apply index, then checks that
// each holds the same events as the first for every tenant, with Verify
// passing on each. A write whose caller stopped waiting for it (a client
// timeout during a fault) may still be in the leader's queue and commit
// after index was read: when the images differ and a node has applied
// past index, they are compared again at the newest index applied, until
// it stops moving. Images that differ at one applied index fail.
func assertIdentical(t testing.TB, nodes []*cluster.Node, index uint64, tenants ...string) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		for _, n := range nodes {
			// As long as settledBarrier allows: a follower restarted
			// far behind catches up from a snapshot once the leader's
			// replication back-off lets it, which on a loaded machine
			// takes seconds.
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			err := n.WaitApplied(ctx, index)
			cancel()
			if err != nil {
				t.Fatalf("%s: %v", n.ID(), err)
			}
		}
		diff := imagesDiffer(t, nodes, tenants)
		if diff == "" {
			return
		}
		newest := index
		for _, n := range nodes {
			newest = max(newest, n.AppliedIndex())
		}
		if newest > index && attempt < 20 {
			index = newest
			continue
		}
		var idx []string
		for _, m := range nodes {
			st := m.Status()
			idx = append(idx, fmt.Sprintf("%s: applied %d (raft %d, commit %d, last log %d, snapshot %d, %s)", m.ID(), m.AppliedIndex(), st.AppliedIndex, st.CommitIndex, st.LastLogIndex, st.LastSnapshotIndex, st.State))
		}
		t.Fatalf("after every node applied index %d (%s): %s", index, strings.Join(idx, "; "), diff)
	}
}

// imagesDiffer compares every node's image of each tenant with the first
// node's; it describes the first difference, or returns "".
func imagesDiffer(t testing.TB, nodes []*cluster.Node, tenants []string) string {
	t.Helper()
	for _, tenant := range tenants {
		want := image(t, nodes[0], tenant)
		if want == "" {
			t.Fatalf("%s: tenant %s is empty", nodes[0].ID(), tenant)
		}
		for _, n := range nodes[1:] {
			if got := image(t, n, tenant); got != want {
				return fmt.Sprintf("tenant %s: %s differs from %s:\n%s\n---\n%s", tenant, n.ID(), nodes[0].ID(), got, want)
			}
		}
	}
	return ""
}

// appendRetrying writes through whichever node leads, retrying refusals
// that name a leader change, until within ends.
func appendRetrying(nodes func() []*cluster.Node, tenant string, within time.Duration, items ...core.BatchItem) ([]cluster.Result, error) {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		for _, n := range nodes() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			rs, err := n.Append(ctx, tenant, items...)
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
	return nil, fmt.Errorf("no write accepted within %s: %w", within, last)
}

// retryableWrite reports whether a client should send a refused write
// again, to this node or another: the node does not lead, lost
// leadership before learning the outcome (the idempotency key makes the
// retry safe), was closed while the write waited in its queue (never
// proposed), or asked for a pause because its queue was full.
func retryableWrite(err error) bool {
	var re *core.RetryError
	return errors.Is(err, cluster.ErrNotLeader) || errors.Is(err, cluster.ErrOutcomeUnknown) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, cluster.ErrClosed) || errors.As(err, &re)
}

// loopUntil runs body(0), body(1), … on a goroutine counted in wg, until
// stop is closed or body returns false.
func loopUntil(wg *sync.WaitGroup, stop <-chan struct{}, body func(i int) bool) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if !body(i) {
				return
			}
		}
	}()
}
