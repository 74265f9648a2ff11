package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
)

// The removal guard judges followers against an entry appended after the
// probe began, even while the leader's state machine is held up (here: a
// tenant's drop waiting for fsm.mu) past the contact window, so that the
// probe's barrier is not applied: a follower whose disk failed after it
// stored everything before the probe, and that still answers heartbeats,
// is named behind, and removing the only healthy follower is refused.
func TestGuardWithABusyLeaderCountsNoFollowerThatCannotStore(t *testing.T) {
	l, trans, nodes := StartDiskFailCluster(t, func(c *Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
		c.ApplyTimeout = 3 * time.Second
	})
	one := core.BatchItem{Coordinate: core.Coordinate{Entity: "e", Scope: "s"}, Kind: core.MustKind(1, 1), Payload: []byte(`{"n":1}`)}
	for _, tn := range []string{"t1", "t2"} {
		if _, err := l.Append(context.Background(), tn, one); err != nil {
			t.Fatal(err)
		}
	}
	var failingID, healthyID string
	for id := range nodes {
		if id == l.ID() {
			continue
		}
		if failingID == "" {
			failingID = id
		} else {
			healthyID = id
		}
	}
	// Hold the leader's FSM: a drop waits for fsm.mu.
	l.fsm.mu.RLock()
	released := false
	release := func() {
		if !released {
			released = true
			l.fsm.mu.RUnlock()
		}
	}
	defer release()
	go func() { _ = l.DropStore(context.Background(), "t2") }()
	// The drop entry reaches both followers' logs.
	last := l.raft.LastIndex()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("drop entry not replicated")
		}
		if l.raft.LastIndex() > last {
			k1, k2 := l.watch.contacts.of(raft.ServerID(failingID)), l.watch.contacts.of(raft.ServerID(healthyID))
			if k1.match >= l.raft.LastIndex() && k2.match >= l.raft.LastIndex() {
				break
			}
		}
	}
	trans[failingID].Fail(true) // its disk fails now; nothing written since
	t0 := time.Now()
	err := l.Leave(healthyID)
	t.Logf("Leave(%s) with %s's disk failed and the leader's FSM held: %v (after %v)", healthyID, failingID, err, time.Since(t0))
	release()
	if err == nil || !errors.Is(err, ErrNoQuorum) {
		// Show the consequence: no write commits.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, werr := l.Append(ctx, "t1", one)
		t.Errorf("guard allowed removing %s while the only other voter %s stores nothing (err=%v); a write afterwards: %v; members %+v",
			healthyID, failingID, err, werr, l.Status().Servers)
	}
}
