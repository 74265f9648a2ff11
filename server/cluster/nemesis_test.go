package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/batpak-go/batpak/internal/casmodel"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// The nemesis campaign: seeded rounds, each applying one fault to a
// 3-node in-process cluster while clients append (idempotent singles with
// retries, idempotent batches, compare-and-set) and read (linearizable on
// the leader, read-your-writes on followers). After each round the cluster
// is healed and caught up, and the round's history is checked against
// every replica and, for compare-and-set and reads, with porcupine.
//
// BATPAK_NEMESIS_ROUNDS sets the number of rounds (default 50);
// BATPAK_NEMESIS_SEED the first round's seed (round r uses seed+r), so
// BATPAK_NEMESIS_SEED=<a failing round's seed> BATPAK_NEMESIS_ROUNDS=1
// replays that round's faults and client choices.

type nemesisFault int

const (
	faultStopLeader      nemesisFault = iota // Close the leader, restart it from its directory
	faultStopFollower                        // Close a follower, restart it
	faultPartitionLeader                     // cut the leader from the majority both ways, then heal
	faultPauseNode                           // cut every link of any node for a while
	faultWipeNode                            // Close a node, delete its directory, start it empty
	numFaults
)

func (f nemesisFault) String() string {
	return [...]string{"stop-leader", "stop-follower", "partition-leader", "pause-node", "wipe-node"}[f]
}

func envInt(name string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil {
		return v
	}
	return def
}

func TestNemesis(t *testing.T) {
	rounds := int(envInt("BATPAK_NEMESIS_ROUNDS", 50))
	seed := envInt("BATPAK_NEMESIS_SEED", time.Now().UnixNano()%1_000_000_000)
	t.Logf("BATPAK_NEMESIS_SEED=%d BATPAK_NEMESIS_ROUNDS=%d", seed, rounds)
	c := newMemCluster(t, 3, func(cfg *cluster.Config) {
		cfg.SnapshotThreshold = 16
		cfg.TrailingLogs = 8
		cfg.SnapshotInterval = 100 * time.Millisecond
	})
	start := time.Now()
	faults := map[nemesisFault]int{}
	var acked, ops int
	for r := 0; r < rounds; r++ {
		rs := seed + int64(r)
		f, st := nemesisRound(t, c, r, rs)
		if t.Failed() {
			t.FailNow()
		}
		faults[f]++
		acked += st.acked
		ops += st.casOps
	}
	t.Logf("%d rounds in %s: faults %v; %d acknowledged events, %d compare-and-set/read operations checked for linearizability",
		rounds, time.Since(start).Round(time.Millisecond), faults, acked, ops)
}

// nemesisHistory is what one round's clients saw.
type nemesisHistory struct {
	mu      sync.Mutex
	acked   map[core.EventID]bool // receipts' event ids
	refused map[core.EventID]bool // attempts definitely not written
	maybe   map[core.EventID]bool // attempts with an unknown outcome
	keys    map[string]bool       // every idempotency key used
	ops     []porcupine.Operation // compare-and-set appends and linearizable reads
	errs    []string
}

func (h *nemesisHistory) failf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errs = append(h.errs, fmt.Sprintf(format, args...))
}

type roundStats struct{ acked, casOps int }

// nemesisRound runs one round: clients start, the fault chosen by seed is
// applied and healed, clients stop, then the history is checked.
func nemesisRound(t *testing.T, c *memCluster, round int, seed int64) (nemesisFault, roundStats) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	fault := nemesisFault(rng.Intn(int(numFaults)))
	defer func() {
		if t.Failed() {
			t.Logf("round %d failed: fault %s; replay with BATPAK_NEMESIS_SEED=%d BATPAK_NEMESIS_ROUNDS=1", round, fault, seed)
		}
	}()
	tenant := fmt.Sprintf("t%d", round%8)
	prefix := fmt.Sprintf("r%03d-", round)
	h := &nemesisHistory{acked: map[core.EventID]bool{}, refused: map[core.EventID]bool{}, maybe: map[core.EventID]bool{}, keys: map[string]bool{}}
	t0 := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	casEntities := []string{prefix + "cas-a", prefix + "cas-b"}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cl := &nemesisClient{c: c, h: h, tenant: tenant, rng: rand.New(rand.NewSource(seed*10 + int64(w))), stop: stop, t0: t0, id: w}
			switch w {
			case 0:
				cl.singles(prefix + "single")
			case 1:
				cl.batches(prefix + "batch")
			default:
				cl.casAndReads(casEntities)
			}
		}(w)
	}
	time.Sleep(time.Duration(30+rng.Intn(50)) * time.Millisecond)
	hold := time.Duration(30+rng.Intn(170)) * time.Millisecond
	tFault := time.Now()
	applyFault(t, c, fault, rng, hold)
	tHeal := time.Now()
	// Agreement on a leader after the heal: elections with the tests'
	// 300 ms timings can go several rounds on a machine whose cores every
	// test package shares (the time to a new leader is measured, on its
	// own, by TestFailoverTimeProcess).
	c.settled(20 * time.Second)
	tSettled := time.Now()
	time.Sleep(30 * time.Millisecond)
	close(stop)
	wg.Wait()
	tStopped := time.Now()

	// Healed: every node applies the leader's last index.
	l := settledBarrier(t, c, 15*time.Second)
	last := l.AppliedIndex()
	if len(h.errs) > 0 {
		t.Errorf("clients saw:\n%s", strings.Join(h.errs, "\n"))
	}
	nodes := c.list()
	if len(nodes) != 3 {
		t.Fatalf("%d nodes running after the round, want 3", len(nodes))
	}
	assertIdentical(t, nodes, last, tenant)
	for _, n := range nodes {
		checkReplica(t, n, tenant, prefix, h)
	}
	checkLinearizable(t, h.ops)
	t.Logf("round %d (seed %d) %s: clients %s, fault %s (hold %s), settle %s, stop %s, checks %s; %d acknowledged, %d linearizability ops",
		round, seed, fault, tFault.Sub(t0).Round(time.Millisecond), tHeal.Sub(tFault).Round(time.Millisecond), hold,
		tSettled.Sub(tHeal).Round(time.Millisecond), tStopped.Sub(tSettled).Round(time.Millisecond), time.Since(tStopped).Round(time.Millisecond), len(h.acked), len(h.ops))
	return fault, roundStats{acked: len(h.acked), casOps: len(h.ops)}
}

// applyFault applies f for about hold and heals it; it returns with every
// node running and linked.
func applyFault(t *testing.T, c *memCluster, f nemesisFault, rng *rand.Rand, hold time.Duration) {
	t.Helper()
	l := c.leader(10 * time.Second)
	var followers []string
	var all []string
	for _, n := range c.list() {
		all = append(all, n.ID())
		if n != l {
			followers = append(followers, n.ID())
		}
	}
	anyNode := all[rng.Intn(len(all))]
	switch f {
	case faultStopLeader:
		c.stop(l.ID())
		time.Sleep(hold)
		c.start(l.ID())
	case faultStopFollower:
		id := followers[rng.Intn(len(followers))]
		c.stop(id)
		time.Sleep(hold)
		c.start(id)
	case faultPartitionLeader:
		c.partition(l.ID())
		time.Sleep(hold + 300*time.Millisecond) // past the lease: the majority elects a new leader
		c.heal(l.ID())
	case faultPauseNode:
		c.partition(anyNode)
		time.Sleep(hold + 100*time.Millisecond)
		c.heal(anyNode)
	case faultWipeNode:
		c.stop(anyNode)
		// Replacing a disk is safe only once every entry the lost node
		// helped commit is on the survivors (raft counts a wiped node as
		// a new one): wait for both to apply the leader's last index.
		sl := settledBarrier(t, c, 15*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, n := range c.list() {
			if err := n.WaitApplied(ctx, sl.AppliedIndex()); err != nil {
				t.Fatalf("%s before wiping %s: %v", n.ID(), anyNode, err)
			}
		}
		if err := os.RemoveAll(filepath.Join(c.root, anyNode)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(hold / 2)
		c.start(anyNode)
	}
}

// nemesisClient is one client goroutine of a round.
type nemesisClient struct {
	c      *memCluster
	h      *nemesisHistory
	tenant string
	rng    *rand.Rand
	stop   chan struct{}
	t0     time.Time
	id     int
}

// nemesisOpsPerClient bounds a client's operations in one round; clients
// pause nemesisPause between operations so that they span the fault.
const (
	nemesisOpsPerClient = 40
	nemesisPause        = 8 * time.Millisecond
)

// stopped reports whether the round is over; otherwise it pauses up to
// nemesisPause first.
func (cl *nemesisClient) stopped() bool {
	select {
	case <-cl.stop:
		return true
	case <-time.After(time.Duration(cl.rng.Int63n(int64(nemesisPause)))):
		return false
	}
}

func (cl *nemesisClient) now() int64 { return int64(time.Since(cl.t0)) }

// leaderGuess is the node that believes it leads, or any running node.
func (cl *nemesisClient) leaderGuess() *cluster.Node {
	nodes := cl.c.list()
	for _, n := range nodes {
		if n.IsLeader() {
			return n
		}
	}
	if len(nodes) == 0 {
		return nil
	}
	return nodes[cl.rng.Intn(len(nodes))]
}

// outcome is what one logical write (all its attempts under one set of
// idempotency keys) became.
type outcome struct {
	rs       []cluster.Result // the definite answer, nil if none
	attempts [][]core.EventID // event ids of each attempt, per item
	maybe    bool             // some attempt's outcome is unknown
	node     *cluster.Node    // the node that answered
}

// write sends items (with fresh event ids on each attempt) until a
// definite answer, retrying the same idempotency keys after NotLeader,
// ErrOutcomeUnknown, a closed node or a timeout; it gives up once the
// round stops. It records every attempt's ids as refused or maybe.
func (cl *nemesisClient) write(items []core.BatchItem, batch bool) outcome {
	var o outcome
	for {
		ids := make([]core.EventID, len(items))
		for i := range items {
			ids[i] = core.NewEventID()
			items[i].Options.ID = ids[i]
		}
		n := cl.leaderGuess()
		if n == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		o.attempts = append(o.attempts, ids)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		var rs []cluster.Result
		var err error
		if batch {
			rs, err = n.AppendBatch(ctx, cl.tenant, items)
		} else {
			rs, err = n.Append(ctx, cl.tenant, items...)
		}
		cancel()
		cl.h.mu.Lock()
		switch {
		case err == nil:
			o.rs, o.node = rs, n
			for i, r := range rs {
				if r.Err == nil {
					cl.h.acked[r.Receipt.ID] = true
					if r.Receipt.ID != ids[i] && !r.Receipt.Deduplicated {
						cl.h.errs = append(cl.h.errs, fmt.Sprintf("receipt id %s, the write carried %s", r.Receipt.ID, ids[i]))
					}
				}
				if r.Receipt.ID != ids[i] {
					cl.h.refused[ids[i]] = true
				}
			}
			// A definite answer fixes the earlier attempts: entries commit
			// in log order, so an earlier attempt either was applied first
			// (and this one deduplicated to it) or never will be.
			for _, prev := range o.attempts[:len(o.attempts)-1] {
				for i, id := range prev {
					if rs[i].Err == nil && rs[i].Receipt.ID == id {
						continue
					}
					delete(cl.h.maybe, id)
					cl.h.refused[id] = true
				}
			}
			cl.h.mu.Unlock()
			return o
		case errors.Is(err, cluster.ErrNotLeader):
			for _, id := range ids {
				cl.h.refused[id] = true
			}
		case errors.Is(err, cluster.ErrOutcomeUnknown), errors.Is(err, context.DeadlineExceeded), errors.Is(err, cluster.ErrClosed):
			o.maybe = true
			for _, id := range ids {
				cl.h.maybe[id] = true
			}
		default:
			cl.h.errs = append(cl.h.errs, fmt.Sprintf("client %d: write to %s: %v", cl.id, n.ID(), err))
			cl.h.mu.Unlock()
			return o
		}
		cl.h.mu.Unlock()
		if cl.stopped() {
			return o
		}
		time.Sleep(time.Duration(5+cl.rng.Intn(20)) * time.Millisecond)
	}
}

// singles appends one idempotent event at a time and reads each
// acknowledged one back on another node after WaitApplied.
func (cl *nemesisClient) singles(entity string) {
	for i := 0; i < nemesisOpsPerClient && !cl.stopped(); i++ {
		key := fmt.Sprintf("%s-%d", entity, i)
		cl.h.mu.Lock()
		cl.h.keys[key] = true
		cl.h.mu.Unlock()
		o := cl.write([]core.BatchItem{item(entity, fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{IdempotencyKey: key})}, false)
		if o.rs == nil || o.rs[0].Err != nil {
			if o.rs != nil {
				cl.h.failf("single %s refused: %v", key, o.rs[0].Err)
			}
			continue
		}
		cl.readYourWrite(o.node, o.rs[0])
	}
}

// readYourWrite reads r back on a node other than the one that answered,
// after waiting for it to apply r's index (skipped if that node is cut
// off or stopped and cannot).
func (cl *nemesisClient) readYourWrite(answered *cluster.Node, r cluster.Result) {
	var others []*cluster.Node
	for _, n := range cl.c.list() {
		if n != answered {
			others = append(others, n)
		}
	}
	if len(others) == 0 {
		return
	}
	n := others[cl.rng.Intn(len(others))]
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if n.WaitApplied(ctx, r.Index) != nil {
		return
	}
	err := n.View(cl.tenant, func(s *core.Store) error { _, err := s.Get(r.Receipt.ID); return err })
	if err != nil && !errors.Is(err, cluster.ErrClosed) {
		cl.h.failf("read-your-writes on %s after WaitApplied(%d): event %s: %v", n.ID(), r.Index, r.Receipt.ID, err)
	}
}

// batches appends atomic batches of 3 idempotent events.
func (cl *nemesisClient) batches(entity string) {
	for i := 0; i < nemesisOpsPerClient/2 && !cl.stopped(); i++ {
		items := make([]core.BatchItem, 3)
		for j := range items {
			key := fmt.Sprintf("%s-%d-%d", entity, i, j)
			cl.h.mu.Lock()
			cl.h.keys[key] = true
			cl.h.mu.Unlock()
			items[j] = item(entity, fmt.Sprintf(`{"i":%d,"j":%d}`, i, j), core.AppendOptions{IdempotencyKey: key})
		}
		o := cl.write(items, true)
		for _, r := range o.rs {
			if r.Err != nil {
				cl.h.failf("batch %s-%d refused: %v", entity, i, r.Err)
				break
			}
		}
	}
}

func expectCount(e core.Expectation) int {
	if c, ok := e.Clock(); ok {
		return int(c) + 1
	}
	return 0
}

func expectationFor(count int) core.Expectation {
	if count == 0 {
		return core.ExpectNoEvents()
	}
	return core.ExpectClock(uint64(count - 1))
}

// casAndReads mixes compare-and-set appends (expecting the count it last
// saw) and linearizable reads on entities shared with another client.
func (cl *nemesisClient) casAndReads(entities []string) {
	known := map[string]int{}
	for i := 0; i < nemesisOpsPerClient && !cl.stopped(); i++ {
		e := entities[cl.rng.Intn(len(entities))]
		if cl.rng.Intn(5) < 2 {
			cl.linearizableRead(e, known)
			continue
		}
		key := fmt.Sprintf("%s-c%d-%d", e, cl.id, i)
		cl.h.mu.Lock()
		cl.h.keys[key] = true
		cl.h.mu.Unlock()
		in := casmodel.In{Entity: e, Expect: known[e]}
		call := cl.now()
		o := cl.write([]core.BatchItem{item(e, fmt.Sprintf(`{"c":%d,"i":%d}`, cl.id, i), core.AppendOptions{ExpectedClock: expectationFor(in.Expect), IdempotencyKey: key})}, false)
		op := porcupine.Operation{ClientId: cl.id, Input: in, Call: call}
		var ce *core.ConflictError
		switch {
		case o.rs != nil && o.rs[0].Err == nil:
			op.Output, op.Return = casmodel.Out{Result: 'o', Count: int(o.rs[0].Receipt.Clock) + 1}, cl.now()
			known[e] = int(o.rs[0].Receipt.Clock) + 1
		case o.rs != nil && errors.As(o.rs[0].Err, &ce):
			op.Output, op.Return = casmodel.Out{Result: 'c', Count: expectCount(ce.Actual)}, cl.now()
			known[e] = expectCount(ce.Actual)
		case o.rs != nil:
			cl.h.failf("cas %s refused: %v", key, o.rs[0].Err)
			continue
		case o.maybe:
			op.Output, op.Return = casmodel.Out{Result: '?'}, casmodel.OpenEnded
		default: // never proposed
			continue
		}
		cl.h.mu.Lock()
		cl.h.ops = append(cl.h.ops, op)
		cl.h.mu.Unlock()
	}
}

// linearizableRead reads entity's count on the leader after a Barrier;
// a read that fails (no leader, leadership lost) is left out.
func (cl *nemesisClient) linearizableRead(entity string, known map[string]int) {
	n := cl.leaderGuess()
	if n == nil {
		return
	}
	call := cl.now()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if n.Barrier(ctx) != nil {
		time.Sleep(10 * time.Millisecond)
		return
	}
	count := 0
	err := n.View(cl.tenant, func(s *core.Store) error {
		evs, err := s.Query(core.Entity(entity))
		for _, ev := range evs {
			if ev.Coordinate.Entity == entity {
				count = max(count, int(ev.Header.Clock)+1)
			}
		}
		return err
	})
	switch {
	case errors.Is(err, cluster.ErrNoTenant):
	case err != nil:
		return
	}
	known[entity] = count
	cl.h.mu.Lock()
	cl.h.ops = append(cl.h.ops, porcupine.Operation{ClientId: cl.id, Input: casmodel.In{Entity: entity, Read: true}, Call: call, Output: casmodel.Out{Result: 'r', Count: count}, Return: cl.now()})
	cl.h.mu.Unlock()
}

// checkReplica checks one node's copy of the round's events: every
// acknowledged write is there, no refused attempt is, nothing else but
// attempts of unknown outcome is, and no idempotency key is used twice.
func checkReplica(t *testing.T, n *cluster.Node, tenant, prefix string, h *nemesisHistory) {
	t.Helper()
	err := n.View(tenant, func(s *core.Store) error {
		evs, err := s.Query(core.Entity(prefix))
		if err != nil {
			return err
		}
		present := map[core.EventID]bool{}
		keys := map[string]int{}
		for _, ev := range evs {
			present[ev.Header.ID] = true
			keys[ev.IdempotencyKey]++
			switch {
			case h.refused[ev.Header.ID]:
				return fmt.Errorf("event %s (key %s) was refused to its client, yet it is stored", ev.Header.ID, ev.IdempotencyKey)
			case !h.acked[ev.Header.ID] && !h.maybe[ev.Header.ID]:
				return fmt.Errorf("event %s (key %s) was never written by a client", ev.Header.ID, ev.IdempotencyKey)
			case !h.keys[ev.IdempotencyKey]:
				return fmt.Errorf("event %s has key %q no client used", ev.Header.ID, ev.IdempotencyKey)
			}
		}
		for k, c := range keys {
			if c > 1 {
				return fmt.Errorf("idempotency key %s is on %d events", k, c)
			}
		}
		for id := range h.acked {
			if !present[id] {
				return fmt.Errorf("acknowledged event %s is missing", id)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s, tenant %s: %v", n.ID(), tenant, err)
	}
}

func checkLinearizable(t *testing.T, ops []porcupine.Operation) {
	t.Helper()
	res, info := porcupine.CheckOperationsVerbose(casmodel.Model, ops, 10*time.Second)
	switch res {
	case porcupine.Illegal:
		var b strings.Builder
		for _, op := range ops {
			fmt.Fprintf(&b, "client %d [%d, %d] %s\n", op.ClientId, op.Call, op.Return, casmodel.Model.DescribeOperation(op.Input, op.Output))
		}
		if dir := os.Getenv("BATPAK_NEMESIS_VIS"); dir != "" {
			f, err := os.CreateTemp(dir, "nemesis-*.html")
			if err == nil {
				porcupine.Visualize(casmodel.Model, info, f)
				f.Close()
				t.Logf("visualization: %s", f.Name())
			}
		}
		t.Fatalf("compare-and-set/read history is not linearizable:\n%s", b.String())
	case porcupine.Unknown:
		t.Logf("porcupine timed out on %d operations", len(ops))
	}
}

// TestNemesisCheckerCatchesViolations feeds the linearizability model
// histories that are not linearizable (and ones that are), to show the
// campaign's checker can fail.
func TestNemesisCheckerCatchesViolations(t *testing.T) {
	cas := func(client int, expect int, out casmodel.Out, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: casmodel.In{Entity: "e", Expect: expect}, Call: call, Output: out, Return: ret}
	}
	read := func(client, count int, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: casmodel.In{Entity: "e", Read: true}, Call: call, Output: casmodel.Out{Result: 'r', Count: count}, Return: ret}
	}
	for _, tc := range []struct {
		name string
		ok   bool
		ops  []porcupine.Operation
	}{
		{"write then read", true, []porcupine.Operation{cas(0, 0, casmodel.Out{Result: 'o', Count: 1}, 0, 10), read(1, 1, 20, 30)}},
		{"stale read after an acknowledged write", false, []porcupine.Operation{cas(0, 0, casmodel.Out{Result: 'o', Count: 1}, 0, 10), read(1, 0, 20, 30)}},
		{"two writes win the same clock", false, []porcupine.Operation{cas(0, 0, casmodel.Out{Result: 'o', Count: 1}, 0, 10), cas(1, 0, casmodel.Out{Result: 'o', Count: 1}, 5, 15)}},
		{"conflict that names a count never held", false, []porcupine.Operation{cas(0, 0, casmodel.Out{Result: 'o', Count: 1}, 0, 10), cas(1, 0, casmodel.Out{Result: 'c', Count: 2}, 20, 30)}},
		{"reads going back in time", false, []porcupine.Operation{cas(0, 0, casmodel.Out{Result: 'o', Count: 1}, 0, 10), read(1, 1, 5, 15), read(1, 0, 20, 30)}},
		{"concurrent read may see either", true, []porcupine.Operation{cas(0, 0, casmodel.Out{Result: 'o', Count: 1}, 0, 10), read(1, 0, 5, 15)}},
		{"unknown write observed", true, []porcupine.Operation{cas(0, 0, casmodel.Out{Result: '?', Count: 0}, 0, casmodel.OpenEnded), read(1, 1, 20, 30)}},
		{"unknown write never observed", true, []porcupine.Operation{cas(0, 0, casmodel.Out{Result: '?', Count: 0}, 0, casmodel.OpenEnded), read(1, 0, 20, 30)}},
		{"unknown write applied twice", false, []porcupine.Operation{cas(0, 0, casmodel.Out{Result: '?', Count: 0}, 0, casmodel.OpenEnded), read(1, 2, 20, 30)}},
	} {
		if got := porcupine.CheckOperations(casmodel.Model, tc.ops); got != tc.ok {
			t.Errorf("%s: linearizable = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

// settledBarrier waits for a leader every running node knows and for a
// barrier on it, trying again while leadership moves (a loaded machine
// can lose a leader right after the cluster settled), until within ends.
func settledBarrier(t *testing.T, c *memCluster, within time.Duration) *cluster.Node {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		l := c.settled(within)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := l.Barrier(ctx)
		cancel()
		if err == nil {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("barrier on %s: %v", l.ID(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
