package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server/cluster"
)

// TestHealthWatchLogsChanges: a member turning unhealthy is logged once,
// again when its problems change, and once when it is healthy again; a
// member that left is forgotten.
func TestHealthWatchLogsChanges(t *testing.T) {
	var logs bytes.Buffer
	w := newClusterHealthWatch(nil, slog.New(slog.NewTextHandler(&logs, nil)), DefaultHealthCheckEvery, "t", nil)
	judged := func(n2 cluster.NodeHealth) cluster.Health {
		n2.ID = "n2"
		return cluster.Health{Nodes: []cluster.NodeHealth{{ID: "n1", Healthy: true}, n2}}
	}
	count := func(s string) int { return strings.Count(logs.String(), s) }
	w.report(judged(cluster.NodeHealth{Problems: []string{"unreachable"}}))
	w.report(judged(cluster.NodeHealth{Problems: []string{"unreachable"}}))
	if n := count("member is unhealthy"); n != 1 {
		t.Fatalf("logged unhealthy %d times for the same problems, want once:\n%s", n, logs.String())
	}
	w.report(judged(cluster.NodeHealth{Problems: []string{"300 committed entries behind the leader"}}))
	if n := count("member is unhealthy"); n != 2 {
		t.Fatalf("new problems logged %d times in all, want 2:\n%s", n, logs.String())
	}
	w.report(judged(cluster.NodeHealth{Healthy: true}))
	w.report(judged(cluster.NodeHealth{Healthy: true}))
	if n := count("member is healthy again"); n != 1 || !strings.Contains(logs.String(), "node=n2") {
		t.Fatalf("healthy again logged %d times, want once for n2:\n%s", n, logs.String())
	}
	w.report(judged(cluster.NodeHealth{Problems: []string{"unreachable"}}))
	w.report(cluster.Health{Nodes: []cluster.NodeHealth{{ID: "n1", Healthy: true}}})
	if len(w.unhealthy) != 0 {
		t.Fatalf("a member that left is still remembered: %v", w.unhealthy)
	}
}
