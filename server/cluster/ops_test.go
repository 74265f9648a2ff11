package cluster_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// committedOn opens the named cursor on n's store of tenant.
func committedOn(t *testing.T, n *cluster.Node, tenant, name string) uint64 {
	t.Helper()
	s, err := n.Store(tenant)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.NamedCursor(name, core.All())
	if err != nil {
		t.Fatalf("%s: %v", n.ID(), err)
	}
	return c.Committed()
}

// TestNamedCursorCommitsReplicate: a named cursor committed on the leader
// is at that position on every node; a follower's store refuses a commit
// naming the leader; after the leader is stopped, the new leader's
// NamedCursor resumes where it was committed.
func TestNamedCursorCommitsReplicate(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(10 * time.Second)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		mustAppend(t, l, "acme", item("e", `{}`, core.AppendOptions{}))
	}
	s, err := l.Store("acme")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := s.NamedCursor("billing", core.All())
	if err != nil {
		t.Fatal(err)
	}
	if evs, err := cur.Poll(7); err != nil || len(evs) != 7 {
		t.Fatalf("poll: %d, %v", len(evs), err)
	}
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	idx := l.AppliedIndex()
	for _, n := range c.list() {
		if err := n.WaitApplied(ctx, idx); err != nil {
			t.Fatal(err)
		}
		if got := committedOn(t, n, "acme", "billing"); got != 7 {
			t.Fatalf("%s: billing at %d, want 7", n.ID(), got)
		}
	}
	f := follower(c, l)
	fs, _ := f.Store("acme")
	fc, err := fs.NamedCursor("billing", core.All())
	if err != nil {
		t.Fatal(err)
	}
	fc.Seek(9)
	if err := fc.Commit(); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("commit on a follower: %v, want a *NotLeaderError", err)
	}
	if got := committedOn(t, l, "acme", "billing"); got != 7 {
		t.Fatalf("a refused commit moved billing to %d", got)
	}

	old := l.ID()
	c.stop(old)
	nl := c.settled(10 * time.Second)
	ns, err := nl.Store("acme")
	if err != nil {
		t.Fatal(err)
	}
	resumed, err := ns.NamedCursor("billing", core.All())
	if err != nil || resumed.Committed() != 7 {
		t.Fatalf("new leader %s: billing %v, want it at 7", nl.ID(), err)
	}
	evs, err := resumed.Poll(100)
	if err != nil || len(evs) != 3 || evs[0].GlobalSequence != 7 {
		t.Fatalf("resumed poll: %d events from %v, want 3 from 7", len(evs), err)
	}
	if err := resumed.Commit(); err != nil {
		t.Fatal(err)
	}
	c.start(old)
	idx = nl.AppliedIndex()
	for _, n := range c.list() {
		if err := n.WaitApplied(ctx, idx); err != nil {
			t.Fatal(err)
		}
		if got := committedOn(t, n, "acme", "billing"); got != 10 {
			t.Fatalf("%s: billing at %d, want 10", n.ID(), got)
		}
	}
}

// TestDropStoreReplicates: DropStore closes the tenant's store and removes
// its directory on every node; stores handed out before fail with
// ErrClosed; a later write creates it again, empty; other tenants are
// untouched. A follower cut off across a drop and a re-creation installs
// the snapshot holding the new store, and its old store is closed too.
func TestDropStoreReplicates(t *testing.T) {
	c := newMemCluster(t, 3, smallSnapshots)
	l := c.settled(10 * time.Second)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		mustAppend(t, l, "acme", item("e", `{}`, core.AppendOptions{IdempotencyKey: "k" + string(rune('a'+i))}))
	}
	last := mustAppend(t, l, "globex", item("g", `{}`, core.AppendOptions{}))[0].Index
	held := map[string]*core.Store{}
	for _, n := range c.list() {
		if err := n.WaitApplied(ctx, last); err != nil {
			t.Fatal(err)
		}
		s, err := n.Store("acme")
		if err != nil {
			t.Fatal(err)
		}
		held[n.ID()] = s
	}
	f := follower(c, l)
	if err := f.DropStore(ctx, "acme"); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("DropStore on a follower: %v, want a *NotLeaderError", err)
	}
	if err := l.DropStore(ctx, "bad/id"); err == nil {
		t.Fatal("DropStore of an invalid tenant id was accepted")
	}
	if err := l.DropStore(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	idx := l.AppliedIndex()
	for _, n := range c.list() {
		if err := n.WaitApplied(ctx, idx); err != nil {
			t.Fatal(err)
		}
		if _, err := held[n.ID()].Query(core.All()); !errors.Is(err, core.ErrClosed) {
			t.Fatalf("%s: the store held before the drop answers %v, want ErrClosed", n.ID(), err)
		}
		if ts, err := n.Tenants(); err != nil || slices.Contains(ts, "acme") {
			t.Fatalf("%s: tenants %v (%v) after the drop", n.ID(), ts, err)
		}
		if _, err := os.Stat(filepath.Join(c.root, n.ID(), "tenants", "acme")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: the dropped store's directory: %v", n.ID(), err)
		}
		if err := n.View("acme", func(*core.Store) error { return nil }); !errors.Is(err, cluster.ErrNoTenant) {
			t.Fatalf("%s: View of the dropped tenant: %v, want ErrNoTenant", n.ID(), err)
		}
	}
	// Dropping what is gone is not an error; globex is intact.
	if err := l.DropStore(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	// Created again, empty: the same idempotency key is new again.
	rs := mustAppend(t, l, "acme", item("e", `{"again":1}`, core.AppendOptions{IdempotencyKey: "ka"}))
	if rs[0].Receipt.Deduplicated || rs[0].Receipt.GlobalSequence != 0 || rs[0].Receipt.Clock != 0 {
		t.Fatalf("first write after the drop: %+v, want a new event at sequence 0", rs[0].Receipt)
	}
	assertIdentical(t, c.list(), rs[0].Index, "acme", "globex")

	// A follower cut off across a drop and a re-creation.
	f = follower(c, l)
	fHeld, err := f.Store("acme")
	if err != nil {
		t.Fatal(err)
	}
	c.partition(f.ID())
	if err := l.DropStore(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		last = mustAppend(t, l, "acme", item("new", `{}`, core.AppendOptions{}))[0].Index
	}
	if err := l.Snapshot(); err != nil {
		t.Fatal(err)
	}
	snapIdx := statIndex(l, "last_snapshot_index")
	c.heal(f.ID())
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := f.WaitApplied(wctx, last); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the follower installs the snapshot (the drop entry is no longer in the log)", func() bool {
		return statIndex(f, "last_snapshot_index") >= snapIdx
	})
	if _, err := fHeld.Query(core.All()); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("the follower's store of the dropped incarnation answers %v, want ErrClosed", err)
	}
	assertIdentical(t, c.list(), last, "acme", "globex")
	if s, err := f.Store("acme"); err != nil || s == fHeld {
		t.Fatalf("the follower's new store: %v (same object %v)", err, s == fHeld)
	} else if evs, err := s.Query(core.All()); err != nil || len(evs) != 40 {
		t.Fatalf("the follower's new store holds %d events (%v), want 40", len(evs), err)
	}
}
