package cluster_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// diskFailCluster starts a 3-node cluster on diskFailTransports and
// returns its leader, a follower whose disk then fails and the other
// follower, once a write has reached all three.
func diskFailCluster(t *testing.T, adjust func(*cluster.Config)) (l *cluster.Node, failing *cluster.DiskFailTransport, failingID, healthyID string, nodes map[string]*cluster.Node) {
	t.Helper()
	l, trans, nodes := cluster.StartDiskFailCluster(t, func(c *cluster.Config) {
		fastTimeouts(c)
		if adjust != nil {
			adjust(c)
		}
	})
	rs := mustAppend(t, l, "t1", item("e", `{"n":1}`, core.AppendOptions{}))
	for id, n := range nodes {
		if id == l.ID() {
			continue
		}
		if failingID == "" {
			failingID = id
		} else {
			healthyID = id
		}
		for deadline := time.Now().Add(5 * time.Second); n.AppliedIndex() < rs[0].Index; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not apply the first write", id)
			}
		}
	}
	return l, trans[failingID], failingID, healthyID, nodes
}

// A forced removal that cannot commit (the one voter left besides the
// leader answers heartbeats but stores nothing) answers
// ErrMembershipUnknown once the apply timeout has passed: it does not
// hang its caller.
func TestClusterMembershipChangeThatCannotCommitAnswersWithinTheApplyTimeout(t *testing.T) {
	l, failing, failingID, healthyID, _ := diskFailCluster(t, func(c *cluster.Config) { c.ApplyTimeout = 2 * time.Second })
	failing.Fail(true)
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- l.ForceLeave(healthyID) }()
	select {
	case err := <-done:
		if !errors.Is(err, cluster.ErrMembershipUnknown) {
			t.Fatalf("ForceLeave(%s) with %s storing nothing: %v, want ErrMembershipUnknown", healthyID, failingID, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("ForceLeave answered after %s, want about the apply timeout (2s)", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("ForceLeave(%s) with %s storing nothing still waiting after 15s", healthyID, failingID)
	}
}

// Two removals sent to the leader at once are judged one after the
// other: 4 voters, one down, each removal of a live follower alone keeps
// a quorum (3 of 4 reachable, then 2 of 3), but both together would
// leave {leader, the one down}. The second is judged against the
// configuration the first made, and refused; the cluster keeps a leader
// and takes writes.
func TestClusterConcurrentRemovalsAreJudgedOneAfterTheOther(t *testing.T) {
	c := newMemCluster(t, 4, nil)
	l := c.settled(10 * time.Second)
	mustAppend(t, l, "t1", item("e", `{"n":1}`, core.AppendOptions{}))
	var others []string
	for _, n := range c.list() {
		if n.ID() != l.ID() {
			others = append(others, n.ID())
		}
	}
	c.stop(others[0])
	time.Sleep(2 * time.Second) // past the contact window (2 x 500ms)
	errs := make(chan error, 2)
	for _, id := range others[1:] {
		go func() { errs <- l.Leave(id) }()
	}
	var ok, refused int
	for range 2 {
		select {
		case err := <-errs:
			switch {
			case err == nil:
				ok++
			case errors.Is(err, cluster.ErrNoQuorum):
				refused++
			default:
				t.Errorf("Leave: %v, want nil or ErrNoQuorum", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a Leave hung")
		}
	}
	if ok != 1 || refused != 1 {
		t.Errorf("%d removals accepted, %d refused, want 1 and 1: the cluster is %v", ok, refused, l.Status().Servers)
	}
	if _, err := appendRetrying(c.list, "t1", 5*time.Second, item("e", `{"n":2}`, core.AppendOptions{})); err != nil {
		t.Errorf("a write after the removals: %v", err)
	}
}

// A follower whose disk fails still answers heartbeats (raft's followers
// answer them without their log store), but stores nothing: with it the
// only other voter left, removing the healthy follower could never
// commit. The leader refuses the removal (naming the failing follower as
// behind), although nothing was written since the disk failed, and the
// cluster keeps taking writes.
func TestClusterRefusesARemovalLeavingAFollowerThatCannotStoreEntries(t *testing.T) {
	l, failing, failingID, healthyID, nodes := diskFailCluster(t, nil)
	failing.Fail(true)
	time.Sleep(500 * time.Millisecond)
	err := l.Leave(healthyID)
	var qe *cluster.QuorumError
	if !errors.As(err, &qe) || len(qe.Behind) != 1 || qe.Behind[0] != failingID || !strings.Contains(err.Error(), "behind") {
		t.Fatalf("Leave(%s) with %s storing nothing: %v, want a *QuorumError naming %s behind", healthyID, failingID, err, failingID)
	}
	if _, err := appendRetrying(func() []*cluster.Node { return []*cluster.Node{nodes[l.ID()]} }, "t1", 5*time.Second, item("e", `{"n":2}`, core.AppendOptions{})); err != nil {
		t.Fatalf("a write after the refused removal: %v", err)
	}
	// Once it stores entries again, the removal is accepted.
	failing.Fail(false)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		err := l.Leave(healthyID)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Leave(%s) once %s stores entries again: %v", healthyID, failingID, err)
		}
	}
}

// A join raises the quorum with a node that stores nothing until it has
// caught up: with one of 3 voters down, 4 voters need 3 — the new one
// among them. The leader refuses the join (naming the member down and the
// new node), changes nothing and keeps taking writes; ForceJoin adds it
// all the same. A cluster of one voter still grows by a join.
func TestClusterRefusesAJoinWhileAMemberIsDown(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(10 * time.Second)
	mustAppend(t, l, "t1", item("e", `{"n":1}`, core.AppendOptions{}))
	var down string
	for _, n := range c.list() {
		if n.ID() != l.ID() {
			down = n.ID()
		}
	}
	c.stop(down)
	time.Sleep(2 * time.Second) // past the contact window (2 x 500ms)
	c.start("n4")
	err := l.Join("n4", "n4")
	var qe *cluster.QuorumError
	if !errors.As(err, &qe) || qe.Adding != "n4" || len(qe.Unheard) != 1 || qe.Unheard[0] != down || !strings.Contains(err.Error(), "n4 is new") {
		t.Fatalf("Join(n4) with %s down: %v, want a *QuorumError adding n4, naming %s", down, err, down)
	}
	if got := len(l.Status().Servers); got != 3 {
		t.Fatalf("%d members after the refused join, want 3", got)
	}
	mustAppend(t, l, "t1", item("e", `{"n":2}`, core.AppendOptions{}))
	if err := l.ForceJoin("n4", "n4"); err != nil {
		t.Fatalf("ForceJoin(n4) with %s down: %v", down, err)
	}
	if _, err := appendRetrying(c.list, "t1", 10*time.Second, item("e", `{"n":3}`, core.AppendOptions{})); err != nil {
		t.Fatalf("a write after the forced join: %v", err)
	}

	one := newMemCluster(t, 1, nil)
	l1 := one.settled(10 * time.Second)
	one.start("n2")
	if err := l1.Join("n2", "n2"); err != nil {
		t.Fatalf("a one-voter cluster joining its second: %v", err)
	}
}
