package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// idleAfter makes nodes close unused stores after d.
func idleAfter(d time.Duration) func(*cluster.Config) {
	return func(c *cluster.Config) { c.StoreIdleTimeout = d }
}

// closedStore reports whether s was closed (its reads fail with
// core.ErrClosed).
func closedStore(s *core.Store) bool {
	_, err := s.Query(core.All())
	return errors.Is(err, core.ErrClosed)
}

// events counts tenant's events on n (through View, which holds the store).
func events(t *testing.T, n *cluster.Node, tenant string) int {
	t.Helper()
	var got int
	if err := n.View(tenant, func(s *core.Store) error {
		evs, err := s.Query(core.All())
		got = len(evs)
		return err
	}); err != nil {
		t.Fatalf("%s: %v", n.ID(), err)
	}
	return got
}

// TestIdleStoresCloseOnEveryNodeAndReopen: a tenant written and then left
// alone has its store closed on the leader and on the followers (which
// opened theirs applying) after the idle timeout; writing and reading it
// again reopens it with every event there, identical on every node, and
// Verify passing.
func TestIdleStoresCloseOnEveryNodeAndReopen(t *testing.T) {
	c := newMemCluster(t, 3, idleAfter(100*time.Millisecond))
	l := c.settled(10 * time.Second)
	for i := 0; i < 5; i++ {
		mustAppend(t, l, "acme", item(fmt.Sprintf("e%d", i), `{"a":1}`, core.AppendOptions{}))
	}
	last := mustAppend(t, l, "acme", item("e", `{"a":2}`, core.AppendOptions{}))[0].Index
	assertIdentical(t, c.list(), last, "acme")

	before := map[*cluster.Node]*core.Store{}
	for _, n := range c.list() {
		s, err := n.Store("acme")
		if err != nil {
			t.Fatal(err)
		}
		if !n.ReleaseStore(s) {
			t.Fatalf("%s: releasing the store Store returned: nothing to release", n.ID())
		}
		if n.ReleaseStore(s) {
			t.Fatalf("%s: a second release of one hold released something", n.ID())
		}
		before[n] = s
	}
	for _, n := range c.list() {
		waitFor(t, 5*time.Second, n.ID()+" closes the idle store", func() bool {
			st := n.StoreStats()
			return st.Open == 0 && st.IdleCloses >= 1 && closedStore(before[n])
		})
	}

	last = mustAppend(t, l, "acme", item("again", `{"a":3}`, core.AppendOptions{}))[0].Index
	assertIdentical(t, c.list(), last, "acme")
	for _, n := range c.list() {
		if got := events(t, n, "acme"); got != 7 {
			t.Fatalf("%s: %d events after the reopen, want 7", n.ID(), got)
		}
		s, err := n.Store("acme")
		if err != nil {
			t.Fatal(err)
		}
		if s == before[n] || closedStore(s) {
			t.Fatalf("%s: Store after the close returned the closed store", n.ID())
		}
		n.ReleaseStore(s)
		if st := n.StoreStats(); st.Opens < 2 {
			t.Fatalf("%s: %+v, want the store opened twice", n.ID(), st)
		}
	}
}

// TestMaxOpenStoresBoundsEveryNode: with at most 3 stores open, writing
// to 7 tenants leaves at most 3 open on every node (followers included:
// they open stores applying), every tenant's events readable everywhere;
// when every open store is held, an apply opens one more anyway and
// counts it.
func TestMaxOpenStoresBoundsEveryNode(t *testing.T) {
	const maxOpen, tenants = 3, 7
	c := newMemCluster(t, 3, func(cfg *cluster.Config) {
		cfg.MaxOpenStores = maxOpen
		cfg.StoreIdleTimeout = -1 // only the bound closes stores
	})
	l := c.settled(10 * time.Second)
	names := make([]string, tenants)
	var last uint64
	for i := range names {
		names[i] = fmt.Sprintf("t%d", i)
		mustAppend(t, l, names[i], item("a", `{"a":1}`, core.AppendOptions{}))
		last = mustAppend(t, l, names[i], item("b", `{"b":1}`, core.AppendOptions{}))[0].Index
	}
	for _, n := range c.list() {
		if err := n.WaitApplied(context.Background(), last); err != nil {
			t.Fatal(err)
		}
		if st := n.StoreStats(); st.Open > maxOpen || st.Evictions == 0 || st.OverBound != 0 {
			t.Fatalf("%s after writing %d tenants: %+v, want at most %d open, evictions, none over the bound", n.ID(), tenants, st, maxOpen)
		}
	}
	assertIdentical(t, c.list(), last, names...)
	for _, n := range c.list() {
		for _, name := range names {
			if got := events(t, n, name); got != 2 {
				t.Fatalf("%s: tenant %s has %d events, want 2", n.ID(), name, got)
			}
		}
		if st := n.StoreStats(); st.Open > maxOpen {
			t.Fatalf("%s after reading every tenant: %d open, want at most %d", n.ID(), st.Open, maxOpen)
		}
	}

	// Every open store held on a follower: the apply of a write to a
	// fourth tenant opens it anyway (raft's apply never waits for a
	// holder), and it is counted.
	f := follower(c, l)
	var held []*core.Store
	for _, name := range names[:maxOpen] {
		s, err := f.Store(name)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, s)
	}
	last = mustAppend(t, l, "fresh", item("a", `{"a":1}`, core.AppendOptions{}))[0].Index
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.WaitApplied(ctx, last); err != nil {
		t.Fatal(err)
	}
	if st := f.StoreStats(); st.OverBound == 0 || st.Open != maxOpen+1 {
		t.Fatalf("%s with every open store held: %+v, want one open over the bound", f.ID(), st)
	}
	for _, s := range held {
		if closedStore(s) {
			t.Fatal("a held store was closed to make room")
		}
		f.ReleaseStore(s)
	}
	if got := events(t, f, names[maxOpen]); got != 2 {
		t.Fatalf("tenant %s: %d events", names[maxOpen], got)
	}
	if st := f.StoreStats(); st.Open > maxOpen {
		t.Fatalf("%s once the holds ended: %d open, want back within %d", f.ID(), st.Open, maxOpen)
	}
}

// TestHeldStoresStayOpen: with a 20ms idle timeout, a store held through
// Node.Store (with a live subscription on it), or in use by a View callback,
// is not closed however long it is held; it stays the object Store
// returns; and it closes once let go.
func TestHeldStoresStayOpen(t *testing.T) {
	c := newMemCluster(t, 3, idleAfter(20*time.Millisecond))
	l := c.settled(10 * time.Second)
	mustAppend(t, l, "acme", item("a", `{"a":1}`, core.AppendOptions{}))
	last := mustAppend(t, l, "globex", item("a", `{"a":1}`, core.AppendOptions{}))[0].Index
	f := follower(c, l)
	if err := f.WaitApplied(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	held, err := f.Store("acme")
	if err != nil {
		t.Fatal(err)
	}
	sub := held.SubscribeLossy(core.All())
	defer sub.Close()

	// A View running for ten idle timeouts keeps globex open.
	viewed := make(chan error, 1)
	go func() {
		viewed <- f.View("globex", func(s *core.Store) error {
			time.Sleep(200 * time.Millisecond)
			_, err := s.Query(core.All())
			return err
		})
	}()
	if err := <-viewed; err != nil {
		t.Fatalf("a View held for 10 idle timeouts: %v", err)
	}
	if closedStore(held) {
		t.Fatal("a held store was closed for idleness")
	}
	if again, err := f.Store("acme"); err != nil || again != held {
		t.Fatalf("Store while held returned another store (%v)", err)
	} else {
		f.ReleaseStore(again)
	}
	// The subscription still delivers new writes.
	mustAppend(t, l, "acme", item("b", `{"a":2}`, core.AppendOptions{}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := sub.Recv(ctx); err != nil {
		t.Fatalf("the subscription on the held store: %v", err)
	}
	f.ReleaseStore(held)
	waitFor(t, 5*time.Second, "the released store closes", func() bool { return closedStore(held) })
	if got := events(t, f, "acme"); got != 2 {
		t.Fatalf("acme reopened: %d events, want 2", got)
	}
}

// TestSnapshotOfClosedStores: a snapshot taken while every store is
// closed carries every tenant and leaves them closed; a follower that
// installs it has every tenant's events (a store it holds is caught up in
// place, the others replaced), and every replica ends identical.
func TestSnapshotOfClosedStores(t *testing.T) {
	c := newMemCluster(t, 3, func(cfg *cluster.Config) {
		smallSnapshots(cfg)
		cfg.StoreIdleTimeout = 50 * time.Millisecond
	})
	l := c.settled(10 * time.Second)
	names := []string{"acme", "globex", "initech", "umbrella"}
	var last uint64
	for _, name := range names {
		last = mustAppend(t, l, name, item("a", `{"a":1}`, core.AppendOptions{}))[0].Index
	}
	f := follower(c, l)
	if err := f.WaitApplied(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	held, err := f.Store("acme")
	if err != nil {
		t.Fatal(err)
	}
	defer f.ReleaseStore(held)
	c.partition(f.ID())
	l = c.settled(10 * time.Second)
	for i := 0; i < 40; i++ {
		last = mustAppend(t, l, names[i%len(names)], item(fmt.Sprintf("e%d", i), `{"b":1}`, core.AppendOptions{}))[0].Index
	}
	// A named cursor committed on the leader: the snapshot carries it.
	g, err := l.Store("globex")
	if err != nil {
		t.Fatal(err)
	}
	named, err := g.NamedCursor("billing", core.All())
	if err != nil {
		t.Fatal(err)
	}
	if evs, err := named.Poll(3); err != nil || len(evs) != 3 {
		t.Fatalf("poll: %d events, %v", len(evs), err)
	}
	if err := named.Commit(); err != nil {
		t.Fatal(err)
	}
	l.ReleaseStore(g)
	waitFor(t, 5*time.Second, "the leader closes its idle stores", func() bool { return l.StoreStats().Open == 0 })
	opens := l.StoreStats().Opens
	if err := l.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if st := l.StoreStats(); st.Open != 0 || st.Opens != opens {
		t.Fatalf("the snapshot of closed stores opened %d of them and left %d open (%+v)", st.Opens-opens, st.Open, st)
	}
	snapIdx := statIndex(l, "last_snapshot_index")
	waitFor(t, 5*time.Second, "the cut-off follower closes its unheld stores", func() bool { return f.StoreStats().Open == 1 })
	c.heal(f.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.WaitApplied(ctx, last); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the follower installs the leader's snapshot", func() bool {
		return statIndex(f, "last_snapshot_index") >= snapIdx
	})
	assertIdentical(t, c.list(), last, names...)
	for _, name := range names {
		if got := events(t, f, name); got != 11 {
			t.Fatalf("tenant %s on the restored follower: %d events, want 11", name, got)
		}
	}
	if err := f.View("globex", func(s *core.Store) error {
		nc, err := s.NamedCursor("billing", core.All())
		if err == nil && nc.Committed() != 3 {
			err = fmt.Errorf("committed at %d, want 3", nc.Committed())
		}
		return err
	}); err != nil {
		t.Fatalf("the named cursor on the restored follower: %v", err)
	}
	if closedStore(held) {
		t.Fatal("the store held across the restore was closed")
	}
	if evs, err := held.Query(core.All()); err != nil || len(evs) != 11 {
		t.Fatalf("the held store after the restore: %d events (%v), want 11", len(evs), err)
	}
}

// TestIdleClosesRaceWritesAndReads: appends (through Node.Append and
// through a held store's own Append), reads and Store/ReleaseStore on
// every node hammer three tenants while the janitor closes stores idle
// for 1ms and at most two may be open: no acknowledged write is lost,
// and every node ends identical.
func TestIdleClosesRaceWritesAndReads(t *testing.T) {
	c := newMemCluster(t, 3, func(cfg *cluster.Config) {
		cfg.StoreIdleTimeout = time.Millisecond
		cfg.MaxOpenStores = 2
	})
	l := c.settled(10 * time.Second)
	names := []string{"acme", "globex", "initech"}
	nodes := c.list()
	var (
		mu    sync.Mutex
		acked = map[string][]core.EventID{}
		last  atomic.Uint64
	)
	ack := func(tenant string, id core.EventID, index uint64) {
		mu.Lock()
		acked[tenant] = append(acked[tenant], id)
		mu.Unlock()
		for {
			cur := last.Load()
			if index <= cur || last.CompareAndSwap(cur, index) {
				return
			}
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < 3; w++ {
		loopUntil(&wg, stop, func(i int) bool {
			tenant := names[(w+i)%len(names)]
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			rs, err := l.Append(ctx, tenant, item(fmt.Sprintf("w%d", w), `{"i":1}`, core.AppendOptions{}))
			cancel()
			if err != nil || rs[0].Err != nil {
				errs <- fmt.Errorf("append: %v %v", err, rs)
				return false
			}
			ack(tenant, rs[0].Receipt.ID, rs[0].Index)
			return true
		})
	}
	loopUntil(&wg, stop, func(i int) bool { // writes through a held store's own API
		tenant := names[i%len(names)]
		s, err := l.Store(tenant)
		if err != nil {
			errs <- err
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := s.Append(ctx, core.Coordinate{Entity: "held", Scope: "s"}, kindA, []byte(`{"h":1}`))
		cancel()
		l.ReleaseStore(s)
		if err != nil {
			errs <- fmt.Errorf("append through a held store: %w", err)
			return false
		}
		mu.Lock()
		acked[tenant] = append(acked[tenant], r.ID)
		mu.Unlock()
		return true
	})
	for _, n := range nodes {
		loopUntil(&wg, stop, func(i int) bool { // reads and holds on every node
			tenant := names[i%len(names)]
			err := n.View(tenant, func(s *core.Store) error {
				_, err := s.Query(core.All())
				return err
			})
			if err != nil && !errors.Is(err, cluster.ErrNoTenant) {
				errs <- fmt.Errorf("%s: view: %w", n.ID(), err)
				return false
			}
			if s, err := n.Store(tenant); err == nil {
				if _, err := s.Query(core.All()); err != nil {
					errs <- fmt.Errorf("%s: read of a held store: %w", n.ID(), err)
					return false
				}
				n.ReleaseStore(s)
			}
			time.Sleep(time.Millisecond)
			return true
		})
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The last write, so every node has applied what was acknowledged.
	final := mustAppend(t, l, "acme", item("final", `{}`, core.AppendOptions{}))[0].Index
	assertIdentical(t, nodes, max(final, last.Load()), names...)
	for _, n := range nodes {
		for _, tenant := range names {
			err := n.View(tenant, func(s *core.Store) error {
				for _, id := range acked[tenant] {
					if _, err := s.Get(id); err != nil {
						return fmt.Errorf("acknowledged event %s: %w", id, err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s, tenant %s: %v", n.ID(), tenant, err)
			}
		}
		st := n.StoreStats()
		t.Logf("%s: %+v", n.ID(), st)
		if st.IdleCloses+st.Evictions == 0 {
			t.Fatalf("%s: no store was closed during the run (%+v): the test raced nothing", n.ID(), st)
		}
	}
	total := 0
	for _, ids := range acked {
		total += len(ids)
	}
	if total < 30 {
		t.Fatalf("only %d acknowledged writes in 2s", total)
	}
}
