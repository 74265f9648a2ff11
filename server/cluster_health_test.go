package server_test

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
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
	// Operators asking at once (consoles refreshing) share one gathering:
	// none is refused as busy.
	var wg sync.WaitGroup
	codes := make([]int, 12)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body := callOnce(t, "GET", followers[0].base+"/v1/cluster?nodes=all", clusterOperator, "")
			if body["health"] == nil {
				code = -code
			}
			codes[i] = code
		}()
	}
	wg.Wait()
	for _, code := range codes {
		if code != 200 {
			t.Fatalf("operators asking at once: %v, want every one answered with the health", codes)
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

// metricOf reads one metric line (name with its labels) from a node's
// /metrics; false when the node exports none.
func metricOf(t *testing.T, base, name string) (float64, bool) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+clusterOperator)
	res, err := clusterClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q", name, sc.Text())
			}
			return f, true
		}
	}
	return 0, false
}

// TestClusterHealthWatch: the leader judges every member's health every
// cluster.health_check_every on its own: /metrics on the leader says all
// three are healthy with one failure to spare, a follower exports no
// judgement; a follower stopped is logged as unhealthy and its gauge goes
// to 0, the failure tolerance to 0.
func TestClusterHealthWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	logs, access := &testenv.Buffer{}, &testenv.Buffer{}
	nodes := startCluster3(t, t.TempDir(), func(c *server.Config) {
		c.Cluster.HealthCheckEvery = 150 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		c.Stderr = access // the access log
	})
	leader := leaderOf(t, nodes, 10*time.Second)
	var followers []*clusterServer
	for _, n := range nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	waitFor(t, 10*time.Second, "the leader's judgement: all healthy", func() bool {
		v, ok := metricOf(t, leader.base, "batpak_cluster_failure_tolerance")
		return ok && v == 1
	})
	for _, n := range nodes {
		if v, ok := metricOf(t, leader.base, `batpak_cluster_member_healthy{node="`+n.id+`"}`); !ok || v != 1 {
			t.Fatalf("member_healthy of %s on the leader: %v %v, want 1", n.id, v, ok)
		}
	}
	if v, ok := metricOf(t, leader.base, "batpak_cluster_healthy_voters"); !ok || v != 3 {
		t.Fatalf("healthy_voters on the leader: %v %v, want 3", v, ok)
	}
	if _, ok := metricOf(t, followers[0].base, "batpak_cluster_failure_tolerance"); ok {
		t.Fatal("a follower exports a judgement of the cluster's health; only the leader does")
	}
	// The watch's requests are not in the access log at its default
	// level: a few rounds add no line.
	statusLines := func() int { return strings.Count(access.String(), `route="GET /v1/cluster"`) }
	before, rounds := statusLines(), func() float64 { v, _ := metricOf(t, leader.base, "batpak_cluster_health_checks_total"); return v }
	r0 := rounds()
	waitFor(t, 10*time.Second, "three more rounds", func() bool { return rounds() >= r0+3 })
	if after := statusLines(); after != before {
		t.Fatalf("the health watch's rounds added %d access log lines", after-before)
	}

	down := followers[1]
	down.stop()
	waitFor(t, 10*time.Second, "the leader's judgement: "+down.id+" unhealthy", func() bool {
		v, ok := metricOf(t, leader.base, `batpak_cluster_member_healthy{node="`+down.id+`"}`)
		return ok && v == 0
	})
	if v, _ := metricOf(t, leader.base, "batpak_cluster_failure_tolerance"); v != 0 {
		t.Fatalf("failure_tolerance with %s down: %v, want 0", down.id, v)
	}
	if out := logs.String(); !strings.Contains(out, "cluster: member is unhealthy") || !strings.Contains(out, "node="+down.id) || !strings.Contains(out, "unreachable") {
		t.Fatalf("the leader's log does not say %s is unhealthy:\n%s", down.id, out)
	}
}

// BenchmarkClusterStatusHealth: a cluster status asked of a follower,
// its own view (as before) against every member's health (?nodes=all:
// two members asked in parallel over loopback), on a 3-node cluster.
//
//	go test ./server -run '^$' -bench ClusterStatusHealth -benchtime 2s -count 3
func BenchmarkClusterStatusHealth(b *testing.B) {
	nodes := startCluster3(b, b.TempDir())
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, q := range []string{"", "?nodes=all"} {
		name := "this-node"
		if q != "" {
			name = "all-nodes"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				benchGet(b, hc, nodes[1].base+"/v1/cluster"+q, "Authorization", "Bearer "+clusterOperator)
			}
		})
	}
}

// TestClusterReadiness: /readyz on a cluster node says whether it leads
// and serves tenant requests itself; a node that knows no leader (cut
// off from the majority) is not ready, so a balancer sends requests
// elsewhere.
func TestClusterReadiness(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	nodes := startCluster3(t, t.TempDir())
	leader := leaderOf(t, nodes, 10*time.Second)
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.id+" ready", func() bool {
			code, body := callOnce(t, "GET", n.base+"/readyz", "", "")
			cl, _ := body["cluster"].(map[string]any)
			return code == 200 && cl != nil && cl["leading"] == (n == leader) && cl["current"] == true
		})
	}
	var rest []*clusterServer
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	// The leader and one follower stop: the last one knows no leader.
	leader.stop()
	rest[0].stop()
	alone := rest[1]
	waitFor(t, 15*time.Second, alone.id+" not ready without a leader", func() bool {
		code, body := callOnce(t, "GET", alone.base+"/readyz", "", "")
		return code == 503 && body["code"] == "NOT_LEADER"
	})
}
