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

// smallSnapshots makes raft snapshot and truncate its log often.
func smallSnapshots(cfg *cluster.Config) {
	cfg.SnapshotThreshold = 16
	cfg.TrailingLogs = 8
}

// follower returns a running node other than l.
func follower(c *memCluster, l *cluster.Node) *cluster.Node {
	for _, n := range c.list() {
		if n != l {
			return n
		}
	}
	c.t.Fatal("no follower")
	return nil
}

// waitFor polls cond until it holds or within ends.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
	}
}

func statIndex(n *cluster.Node, name string) uint64 {
	v, _ := strconv.ParseUint(n.Stats()[name], 10, 64)
	return v
}

// TestSnapshotRestoreKeepsOpenStores: a follower cut off while the leader
// writes thousands of events and truncates its log installs a snapshot
// when it is back; the store the server took from it before (Node.Store),
// a subscription and a cursor on that store keep working and see every
// event exactly once; a named cursor committed meanwhile is at its
// position there; every replica ends identical; and the node restarted
// (stores rebuilt from raft) still works.
func TestSnapshotRestoreKeepsOpenStores(t *testing.T) {
	c := newMemCluster(t, 3, smallSnapshots)
	l := c.settled(10 * time.Second)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		mustAppend(t, l, "acme", item("e"+strconv.Itoa(i%5), fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{IdempotencyKey: "pre-" + strconv.Itoa(i)}))
	}
	sysItem := item("tenant:acme", `{"created":true}`, core.AppendOptions{})
	sysItem.Coordinate.Scope = "control"
	last := mustAppend(t, l, cluster.SystemStore, sysItem)[0].Index
	f := follower(c, l)
	if err := f.WaitApplied(ctx, last); err != nil {
		t.Fatal(err)
	}
	held, err := f.Store("acme")
	if err != nil {
		t.Fatal(err)
	}
	heldSys, err := f.Store(cluster.SystemStore)
	if err != nil {
		t.Fatal(err)
	}
	cur := held.Cursor(core.All())
	before := len(mustPollAll(t, cur))
	if before != 20 {
		t.Fatalf("the follower's store shows %d events, want 20", before)
	}
	sub := held.SubscribeLossy(core.All())
	defer sub.Close()
	var seenMu sync.Mutex
	var seen []core.Notification
	subDone := make(chan error, 1)
	go func() {
		for {
			n, err := sub.Recv(ctx)
			if err != nil {
				subDone <- err
				return
			}
			seenMu.Lock()
			seen = append(seen, n)
			seenMu.Unlock()
		}
	}()

	c.partition(f.ID())
	lead, err := l.Store("acme")
	if err != nil {
		t.Fatal(err)
	}
	// Thousands of events, independent appends and atomic batches (one
	// with a causation inside it), an idempotent retry, a new tenant.
	const rounds = 60
	for r := 0; r < rounds; r++ {
		items := make([]core.BatchItem, 40)
		for j := range items {
			items[j] = item("e"+strconv.Itoa(j%7), fmt.Sprintf(`{"r":%d,"j":%d}`, r, j), core.AppendOptions{Flags: uint16(j)})
		}
		if r%3 == 0 {
			items[1].Causation = core.PriorItem(0)
			items[2].Options.IdempotencyKey = "batch-" + strconv.Itoa(r)
			rs, err := l.AppendBatch(ctx, "acme", items)
			if err != nil || rs[0].Err != nil {
				t.Fatalf("batch %d: %v %v", r, err, rs)
			}
		} else {
			mustAppend(t, l, "acme", items...)
		}
	}
	if _, err := lead.AppendWithOptions(ctx, core.Coordinate{Entity: "e3", Scope: "s"}, kindA, []byte(`{"i":3}`), core.AppendOptions{IdempotencyKey: "pre-3"}); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "globex", item("g", `{"g":1}`, core.AppendOptions{}))
	last = mustAppend(t, l, cluster.SystemStore, sysItem)[0].Index
	// A named cursor committed on the leader meanwhile.
	named, err := lead.NamedCursor("billing", core.All())
	if err != nil {
		t.Fatal(err)
	}
	if evs, err := named.Poll(1234); err != nil || len(evs) != 1234 {
		t.Fatalf("poll: %d events, %v", len(evs), err)
	}
	if err := named.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := l.Snapshot(); err != nil {
		t.Fatal(err)
	}
	snapIdx := statIndex(l, "last_snapshot_index")
	if snapIdx < last {
		t.Fatalf("the leader's snapshot is at index %d, want %d", snapIdx, last)
	}
	fAppliedBefore := f.AppliedIndex()

	c.heal(f.ID())
	ctx5, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := f.WaitApplied(ctx5, last); err != nil {
		t.Fatal(err)
	}
	// raft records the installed snapshot just after the restore.
	waitFor(t, 5*time.Second, fmt.Sprintf("the follower (at index %d before) installs the snapshot at %d", fAppliedBefore, snapIdx), func() bool {
		return statIndex(f, "last_snapshot_index") >= snapIdx
	})
	total := 20 + rounds*40
	// The store held from before: same object, open, caught up.
	if again, err := f.Store("acme"); err != nil || again != held {
		t.Fatalf("Node.Store after the restore: %p (%v), want the same store %p", again, err, held)
	}
	evs, err := held.Query(core.All())
	if err != nil || len(evs) != total {
		t.Fatalf("the held store shows %d events (%v), want %d", len(evs), err, total)
	}
	if _, err := held.Verify(); err != nil {
		t.Fatal(err)
	}
	if evs, err := heldSys.Query(core.All()); err != nil || len(evs) != 2 {
		t.Fatalf("the held system store shows %d events (%v), want 2", len(evs), err)
	}
	// The cursor continues, every event once and in order.
	rest := mustPollAll(t, cur)
	if len(rest) != total-before {
		t.Fatalf("the cursor delivered %d more events, want %d", len(rest), total-before)
	}
	for i, ev := range rest {
		if ev.GlobalSequence != uint64(before+i) || ev.Header != evs[before+i].Header {
			t.Fatalf("cursor event %d: sequence %d, want %d with the store's header", i, ev.GlobalSequence, before+i)
		}
	}
	// The subscription saw every new event once, in order. It is lossy:
	// a receiver descheduled on a loaded machine while the catch-up
	// publishes more than the ring holds (1,024 notifications for a tenant
	// store) loses some, and they are counted in Dropped — never missing
	// uncounted, repeated or out of order.
	want := total - before
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		seenMu.Lock()
		n := len(seen)
		seenMu.Unlock()
		if n+int(sub.Dropped()) >= want {
			break
		}
		if time.Now().After(deadline) {
			var ended error
			select {
			case ended = <-subDone:
			default:
			}
			t.Fatalf("within 10s the subscription saw %d of %d events and dropped %d; its receiver ended with %v; the store holds %d",
				n, want, sub.Dropped(), ended, held.Usage().GlobalSequence)
		}
	}
	seenMu.Lock()
	if dropped := int(sub.Dropped()); len(seen)+dropped != want {
		t.Fatalf("the subscription saw %d events and dropped %d, want %d in all", len(seen), dropped, want)
	} else if dropped > 0 {
		t.Logf("the subscription's receiver fell behind and dropped %d of %d notifications", dropped, want)
	}
	next := before
	for i, n := range seen {
		at := int(n.GlobalSequence)
		if at < next || at >= total || n.ID != evs[at].Header.ID {
			t.Fatalf("notification %d: sequence %d id %s, want sequence ≥ %d with the store's id", i, n.GlobalSequence, n.ID, next)
		}
		next = at + 1
	}
	seenMu.Unlock()
	if nc, err := held.NamedCursor("billing", core.All()); err != nil || nc.Committed() != 1234 {
		t.Fatalf("billing on the restored follower: %v, want committed at 1234", err)
	}
	assertIdentical(t, c.list(), last, "acme", "globex", cluster.SystemStore)

	// Writes go on, the held store sees them.
	last = mustAppend(t, c.settled(10*time.Second), "acme", item("after", `{"a":1}`, core.AppendOptions{}))[0].Index
	if err := f.WaitApplied(ctx5, last); err != nil {
		t.Fatal(err)
	}
	if got := len(mustPollAll(t, cur)); got != 1 {
		t.Fatalf("the cursor delivered %d events after the restore, want 1", got)
	}

	// A restarted node rebuilds its stores from the snapshot and the log.
	id := f.ID()
	c.stop(id)
	select {
	case err := <-subDone:
		if !errors.Is(err, core.ErrSubscriptionClosed) {
			t.Fatalf("the subscription ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription did not end when its node closed")
	}
	f = c.start(id)
	l = c.settled(10 * time.Second)
	last = mustAppend(t, l, "acme", item("restarted", `{"a":2}`, core.AppendOptions{}))[0].Index
	assertIdentical(t, c.list(), last, "acme", "globex", cluster.SystemStore)
	if s, err := f.Store("acme"); err != nil {
		t.Fatal(err)
	} else if nc, err := s.NamedCursor("billing", core.All()); err != nil || nc.Committed() != 1234 {
		t.Fatalf("billing on the restarted node: %v", err)
	}
}

func mustPollAll(t *testing.T, c *core.Cursor) []core.StoredEvent {
	t.Helper()
	var out []core.StoredEvent
	for {
		evs, err := c.Poll(500)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
	}
}
