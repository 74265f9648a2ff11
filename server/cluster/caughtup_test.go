package cluster_test

import (
	"errors"
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
	l := c.settled(10 * time.Second)
	var f *cluster.Node
	for _, n := range c.list() {
		if n != l {
			f = n
		}
	}
	mustAppend(t, l, "t1", item("e", `{"n":1}`, core.AppendOptions{}))
	waitFor(t, 5*time.Second, "the follower caught up", func() bool {
		return time.Since(f.CaughtUpAt()) < 200*time.Millisecond && f.AppliedIndex() >= l.AppliedIndex()
	})

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
