package cluster_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// replicationFilter is an in-memory transport whose node, while drop is
// set, refuses the leader's replication requests but still takes its
// heartbeats: what a node sees after an outage, while the leader backs
// off replicating to it but its heartbeats get through.
type replicationFilter struct {
	*raft.InmemTransport
	drop *atomic.Bool
	out  chan raft.RPC
	stop chan struct{}
	once sync.Once
}

func newReplicationFilter(tr *raft.InmemTransport, drop *atomic.Bool) *replicationFilter {
	f := &replicationFilter{InmemTransport: tr, drop: drop, out: make(chan raft.RPC), stop: make(chan struct{})}
	go func() {
		for {
			select {
			case rpc := <-tr.Consumer():
				if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok && drop.Load() &&
					(len(req.Entries) > 0 || req.PrevLogEntry > 0 || req.LeaderCommitIndex > 0) {
					rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term}, errors.New("replication refused by the test"))
					continue
				}
				select {
				case f.out <- rpc:
				case <-f.stop:
					return
				}
			case <-f.stop:
				return
			}
		}
	}()
	return f
}

func (f *replicationFilter) Consumer() <-chan raft.RPC { return f.out }

func (f *replicationFilter) Close() error {
	f.once.Do(func() { close(f.stop) })
	return f.InmemTransport.Close()
}

// A follower the leader is not replicating to keeps hearing its
// heartbeats (LastContact stays recent) but is not caught up: CaughtUpAt
// stays at the last moment it held everything committed, so a server
// stops judging credentials on its state (a revocation committed since
// may be missing). Once replication resumes it catches up, and
// CaughtUpAt moves past the moment the missing writes were committed.
func TestCaughtUpNeedsReplicationNotHeartbeats(t *testing.T) {
	drops := map[string]*atomic.Bool{}
	for _, id := range []string{"n1", "n2", "n3"} {
		drops[id] = new(atomic.Bool)
	}
	c := newMemCluster(t, 3, func(cfg *cluster.Config) {
		cfg.Transport = newReplicationFilter(cfg.Transport.(*raft.InmemTransport), drops[cfg.ID])
	})
	l, f := caughtUpFollower(t, c)

	drops[f.ID()].Store(true)
	cut := time.Now()
	mustAppend(t, l, "t1", item("e", `{"n":2}`, core.AppendOptions{}))
	time.Sleep(time.Second)
	if lc := f.LastContact(); time.Since(lc) > 300*time.Millisecond {
		t.Fatalf("the follower's last contact is %s old: heartbeats should still reach it", time.Since(lc))
	}
	if at := f.CaughtUpAt(); at.After(cut) {
		t.Fatalf("CaughtUpAt %s is after replication to the follower stopped (%s)", at, cut)
	}
	if st := f.Status(); st.CaughtUp < 900*time.Millisecond || st.LastContact > 300*time.Millisecond {
		t.Fatalf("status caught_up %s, last_contact %s: want caught_up ≥ 900ms while contact is recent", st.CaughtUp, st.LastContact)
	}

	drops[f.ID()].Store(false)
	resumed := time.Now()
	waitFor(t, 15*time.Second, "the follower caught up again", func() bool { return f.CaughtUpAt().After(resumed) })
	s, err := f.Store("t1")
	if err != nil {
		t.Fatal(err)
	}
	defer f.ReleaseStore(s)
	if evs, err := s.Stream("e"); err != nil || len(evs) != 2 {
		t.Fatalf("caught up, the follower holds %d of the 2 events (%v)", len(evs), err)
	}
}

// A follower that stopped applying (its stores cannot take an entry: a
// full or failing disk, a command format it does not know) is not
// caught up, however many of the leader's later commits raft hands on to
// its apply queue: its stores, on which a server judges credentials, lack
// every change since — a revocation among them.
func TestCaughtUpStopsWhenTheFollowerHalts(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l, f := caughtUpFollower(t, c)
	// Tenant t2's store cannot be created on the follower: a file stands
	// where its directory goes.
	if err := os.WriteFile(filepath.Join(c.root, f.ID(), "tenants", "t2"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "t2", item("e", `{"n":1}`, core.AppendOptions{}))
	waitFor(t, 5*time.Second, "the follower halted", func() bool { return f.Err() != nil })
	halted := time.Now()
	// The leader goes on committing (a key's revocation, say), a write
	// every 20 ms.
	for time.Since(halted) < 2*time.Second {
		mustAppend(t, l, "t1", item("e", `{"n":2}`, core.AppendOptions{}))
		time.Sleep(20 * time.Millisecond)
	}
	if at := f.CaughtUpAt(); at.After(halted) {
		t.Fatalf("a halted follower (%v) counts as caught up at %s, %s after it halted (applied %d, leader %d)",
			f.Err(), at.Format(time.StampMilli), at.Sub(halted), f.AppliedIndex(), l.AppliedIndex())
	}
	if st := f.Status(); st.CaughtUp < 2*time.Second {
		t.Fatalf("status of a halted follower: caught_up %s, want ≥ 2s", st.CaughtUp)
	}
}

// Entries that change no store — a new leader's no-op, the barriers of
// linearizable reads — do not keep an idle follower from being caught up,
// nor does a snapshot it installed whose last entries were such ones.
func TestCaughtUpPastEntriesThatWriteNothing(t *testing.T) {
	c := newMemCluster(t, 3, func(cfg *cluster.Config) { cfg.TrailingLogs = 1 })
	l := c.settled(10 * time.Second)
	var f *cluster.Node
	for _, n := range c.list() {
		if n != l {
			f = n
		}
	}
	caughtUp := func(what string) {
		t.Helper()
		since := time.Now()
		waitFor(t, 10*time.Second, what, func() bool { return f.CaughtUpAt().After(since) })
	}
	caughtUp("an idle follower caught up")
	mustAppend(t, l, "t1", item("e", `{"n":1}`, core.AppendOptions{}))
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := l.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	caughtUp("a follower caught up past barriers")

	id := f.ID()
	c.stop(id)
	mustAppend(t, l, "t1", item("e", `{"n":2}`, core.AppendOptions{}))
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := l.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	if err := l.Snapshot(); err != nil {
		t.Fatal(err)
	}
	f = c.start(id)
	caughtUp("a restarted follower caught up from the leader's snapshot")
	if st := f.Status(); st.LastSnapshotIndex == 0 {
		t.Fatalf("the follower installed no snapshot: %+v", st)
	}
}

// plainTransport is a transport with raft's required methods only (no
// pre-vote): what a Config.Transport of one's own may be.
type plainTransport struct{ raft.Transport }

// A Config.Transport without pre-vote works: raft holds plain elections
// over it, as it would without the node watching its requests.
func TestTransportWithoutPreVote(t *testing.T) {
	c := newMemCluster(t, 3, func(cfg *cluster.Config) {
		cfg.Transport = plainTransport{cfg.Transport}
	})
	l := c.settled(10 * time.Second)
	mustAppend(t, l, "t1", item("e", `{"n":1}`, core.AppendOptions{}))
	c.stop(l.ID())
	l = c.settled(10 * time.Second)
	mustAppend(t, l, "t1", item("e", `{"n":2}`, core.AppendOptions{}))
}

// Replication requests of a term the follower has moved past — a deposed
// leader that has not noticed yet, or a peer replaying old requests — are
// refused by raft and do not make the follower caught up: cut off from
// its leader, it stops judging requests however many of them it gets.
func TestCaughtUpIgnoresStaleTerms(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	_, f := caughtUpFollower(t, c)
	c.partition(f.ID())
	cut := time.Now()
	_, old := raft.NewInmemTransport("old")
	c.mu.Lock()
	old.Connect(raft.ServerAddress(f.ID()), c.trans[f.ID()])
	c.mu.Unlock()
	refused := 0
	for time.Since(cut) < time.Second {
		var resp raft.AppendEntriesResponse
		err := old.AppendEntries("old", raft.ServerAddress(f.ID()), &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("old"), Addr: []byte("old")}, Term: 1, LeaderCommitIndex: 1}, &resp)
		if err == nil && !resp.Success {
			refused++
		}
		time.Sleep(20 * time.Millisecond)
	}
	if refused == 0 {
		t.Fatal("raft took the stale requests")
	}
	if at := f.CaughtUpAt(); at.After(cut) {
		t.Fatalf("cut off from its leader, the follower counts as caught up at %s (%s after the cut) from %d refused requests of term 1", at.Format(time.StampMilli), at.Sub(cut), refused)
	}
}

// caughtUpFollower waits for c's leader, writes one event to tenant t1
// ({"n":1} on entity e) and waits until a follower has applied it and is
// caught up; it returns the leader and that follower.
func caughtUpFollower(t *testing.T, c *memCluster) (l, f *cluster.Node) {
	t.Helper()
	l = c.settled(10 * time.Second)
	for _, n := range c.list() {
		if n != l {
			f = n
		}
	}
	mustAppend(t, l, "t1", item("e", `{"n":1}`, core.AppendOptions{}))
	waitFor(t, 5*time.Second, "the follower caught up", func() bool {
		return time.Since(f.CaughtUpAt()) < 200*time.Millisecond && f.AppliedIndex() >= l.AppliedIndex()
	})
	return l, f
}
