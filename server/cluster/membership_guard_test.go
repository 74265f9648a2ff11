package cluster_test

import (
	"errors"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

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
