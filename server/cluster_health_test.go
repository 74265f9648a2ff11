package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
)

// TestClusterStatusHealthOfEveryNode: GET /v1/cluster?nodes=all, asked of
// any node, judges every member's health from its own view: all three
// healthy with one failure to spare; with a follower stopped, that one is
// unreachable with the reason and none more may fail.
func TestClusterStatusHealthOfEveryNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	nodes := startCluster3(t, t.TempDir())
	leader := leaderOf(t, nodes, 10*time.Second)
	var followers []*clusterServer
	for _, n := range nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	ctx := context.Background()
	cl, err := client.New(followers[0].base, clusterOperator)
	if err != nil {
		t.Fatal(err)
	}
	var st client.ClusterStatus
	// Followers hear of the leader within a heartbeat of its election.
	waitFor(t, 10*time.Second, "every member healthy", func() bool {
		st, err = cl.Cluster().StatusAllNodes(ctx)
		return err == nil && st.Health != nil && st.Health.HealthyVoters == 3
	})
	h := st.Health
	if h.Leader != leader.id || h.Voters != 3 || h.Quorum != 2 || h.FailureTolerance != 1 || h.Answered != 3 || h.Unanswered != 0 || len(h.Nodes) != 3 {
		t.Fatalf("health asked of %s: %+v, want 3 healthy voters led by %s, one failure to spare", followers[0].id, h, leader.id)
	}
	for _, n := range h.Nodes {
		if !n.Reachable || !n.Healthy || !n.Voter || n.Leader != leader.id || n.Term == 0 || len(n.Problems) != 0 || n.Lag > 256 {
			t.Fatalf("%s: %+v, want a healthy voter following %s", n.ID, n, leader.id)
		}
		if (n.ID == leader.id) != (n.State == "leader") {
			t.Fatalf("%s's state %q; the leader is %s", n.ID, n.State, leader.id)
		}
	}
	// Without ?nodes, the status as before: no other member asked.
	if plain, err := cl.Cluster().Status(ctx); err != nil || plain.Health != nil {
		t.Fatalf("status without ?nodes: %v, health %+v; want none", err, plain.Health)
	}
	if code, body := call(t, "GET", leader.base+"/v1/cluster?nodes=some", clusterOperator, ""); code != 400 || body["field"] != "nodes" {
		t.Fatalf("?nodes=some: %d %v, want 400 naming nodes", code, body)
	}
	tenant, _ := clusterTenantKey(t, leader.base, "acme", `["admin"]`)
	if code, body := call(t, "GET", leader.base+"/v1/cluster?nodes=all", tenant, ""); code != 401 && code != 403 {
		t.Fatalf("a tenant's key: %d %v, want refused", code, body)
	}

	// A follower stopped: unreachable, and the cluster has no failure to
	// spare.
	down := followers[1]
	down.stop()
	st, err = cl.Cluster().StatusAllNodes(ctx)
	if err != nil || st.Health == nil {
		t.Fatalf("with %s down: %v %+v", down.id, err, st)
	}
	h = st.Health
	if h.HealthyVoters != 2 || h.FailureTolerance != 0 || h.Answered != 2 || h.Unanswered != 1 || h.Leader != leader.id {
		t.Fatalf("with %s down: %+v, want 2 healthy voters and no failure to spare", down.id, h)
	}
	for _, n := range h.Nodes {
		if n.ID == down.id {
			if n.Reachable || n.Healthy || n.Error != "unreachable" || len(n.Problems) == 0 {
				t.Fatalf("%s, stopped: %+v, want unreachable", n.ID, n)
			}
		} else if !n.Healthy {
			t.Fatalf("%s with %s down: %+v, want healthy", n.ID, down.id, n)
		}
	}
}
