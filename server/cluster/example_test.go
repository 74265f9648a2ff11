package cluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// A one-node cluster: bootstrap, wait for leadership, append, read back on
// the node. Real nodes set Bind (TCP) instead of Transport, and the leader
// adds the others with Join.
func Example() {
	dir, _ := os.MkdirTemp("", "cluster-example")
	defer os.RemoveAll(dir)
	_, tr := raft.NewInmemTransport("node-1")
	n, err := cluster.Open(cluster.Config{ID: "node-1", Dir: filepath.Join(dir, "node-1"), Transport: tr})
	if err != nil {
		panic(err)
	}
	defer n.Close()
	if err := n.Bootstrap(cluster.Server{ID: "node-1", Address: "node-1"}); err != nil {
		panic(err)
	}
	for !n.IsLeader() {
		time.Sleep(10 * time.Millisecond)
	}
	rs, err := n.Append(context.Background(), "acme",
		core.BatchItem{Coordinate: core.Coordinate{Entity: "order-1", Scope: "orders"}, Kind: core.MustKind(1, 1), Payload: []byte(`{"total":12}`),
			Options: core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}})
	if err != nil || rs[0].Err != nil {
		panic(fmt.Sprint(err, rs))
	}
	_ = n.WaitApplied(context.Background(), rs[0].Index) // read-your-writes on any node
	_ = n.View("acme", func(s *core.Store) error {
		evs, err := s.Stream("order-1")
		fmt.Println(len(evs), "event, clock", evs[0].Header.Clock, string(evs[0].Payload))
		return err
	})
	// Output: 1 event, clock 0 {"total":12}
}

// A store held with Node.Store stays open (and the same object) until
// ReleaseStore; afterwards the node may close it once idle
// (Config.StoreIdleTimeout) and reopens it on the next use.
func ExampleNode_Store() {
	dir, _ := os.MkdirTemp("", "cluster-example")
	defer os.RemoveAll(dir)
	_, tr := raft.NewInmemTransport("node-1")
	n, err := cluster.Open(cluster.Config{ID: "node-1", Dir: filepath.Join(dir, "node-1"), Transport: tr, StoreIdleTimeout: 10 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	defer n.Close()
	if err := n.Bootstrap(cluster.Server{ID: "node-1", Address: "node-1"}); err != nil {
		panic(err)
	}
	for !n.IsLeader() {
		time.Sleep(10 * time.Millisecond)
	}
	s, err := n.Store("acme") // held: never closed for idleness
	if err != nil {
		panic(err)
	}
	if _, err := s.Append(context.Background(), core.Coordinate{Entity: "order-1", Scope: "orders"}, core.MustKind(1, 1), []byte(`{"total":12}`)); err != nil {
		panic(err)
	}
	n.ReleaseStore(s) // s must not be used after this
	for n.StoreStats().IdleCloses == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	_ = n.View("acme", func(s *core.Store) error { // reopened for the read
		evs, err := s.Stream("order-1")
		fmt.Println(len(evs), "event after the reopen")
		return err
	})
	// Output: 1 event after the reopen
}

// Comparing two copies of a store's events: the digest of a range of
// global sequences is the same on every replica that holds the same
// events; a check compares the events appended since its last round.
func ExampleDigest() {
	dir, _ := os.MkdirTemp("", "digest-example")
	defer os.RemoveAll(dir)
	s, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		panic(err)
	}
	defer s.Close()
	coord, _ := core.NewCoordinate("order-1", "orders")
	for _, p := range []string{`{"total":12}`, `{"total":13}`, `{"total":14}`} {
		if _, err := s.Append(context.Background(), coord, core.MustKind(1, 1), []byte(p)); err != nil {
			panic(err)
		}
	}
	all, _ := cluster.Digest(context.Background(), s, 0, 3)
	tail, _ := cluster.Digest(context.Background(), s, 2, 3)
	fmt.Println(all.Events, tail.Events, len(all.Digest), all.Digest != tail.Digest, all.Damaged == "")
	// Output: 3 1 64 true true
}

// Judging a cluster's health from its members' own views (what
// GET /v1/cluster?nodes=all and the leader's health watch do with each
// member's Status): one follower is far behind, one did not answer.
func ExampleAssess() {
	leader := &cluster.Status{ID: "n1", State: "leader", Term: 4, Leader: cluster.Member{ID: "n1"}, AppliedIndex: 9000, CommitIndex: 9000}
	behind := &cluster.Status{ID: "n2", State: "follower", Term: 4, Leader: cluster.Member{ID: "n1"}, AppliedIndex: 8000, CommitIndex: 9000,
		LastContact: 40 * time.Millisecond}
	h := cluster.Assess([]cluster.MemberView{
		{ID: "n1", Voter: true, Status: leader},
		{ID: "n2", Voter: true, Status: behind},
		{ID: "n3", Voter: true, Error: "unreachable"},
	})
	for _, n := range h.Nodes {
		fmt.Println(n.ID, n.Healthy, n.Problems)
	}
	fmt.Printf("leader %s, %d of %d voters healthy, failure tolerance %d\n", h.Leader, h.HealthyVoters, h.Voters, h.FailureTolerance)
	// Output:
	// n1 true []
	// n2 false [1000 committed entries behind the leader]
	// n3 false [unreachable]
	// leader n1, 1 of 3 voters healthy, failure tolerance -1
}
