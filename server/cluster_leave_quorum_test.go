package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// memberIDs is the ids of the members in a GET /v1/cluster answer.
func memberIDs(st map[string]any) []string {
	var ids []string
	ms, _ := st["members"].([]any)
	for _, m := range ms {
		if id, ok := m.(map[string]any)["id"].(string); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// With n3 down, removing n2 leaves voters {n1, n3}: the new
// configuration cannot commit while n3 is down, the leader steps down,
// and the answer says the removal may or may not have taken effect (503
// OUTCOME_UNKNOWN), not 500. Once n3 is back, the cluster elects a
// leader, and its member list says what happened.
func TestClusterRemovalLosingLeadershipAnswersOutcomeUnknown(t *testing.T) {
	root := t.TempDir()
	nodes := startCluster3(t, root)
	n1, n3 := nodes[0], nodes[2]
	_, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
	var addr3 string
	for _, m := range st["members"].([]any) {
		if m := m.(map[string]any); m["id"] == "n3" {
			addr3, _ = m["address"].(string)
		}
	}
	n3.stop()
	time.Sleep(2 * time.Second)

	code, b := callOnce(t, "DELETE", n1.base+"/v1/cluster/nodes/n2", clusterOperator, "")
	detail, _ := b["detail"].(string)
	if code != 503 || b["code"] != "OUTCOME_UNKNOWN" || !strings.Contains(detail, "batpak cluster status") {
		t.Fatalf("removal of n2 with n3 down: %d %v, want 503 OUTCOME_UNKNOWN naming batpak cluster status", code, b)
	}

	startClusterServer(t, root, "n3", false, "", func(c *server.Config) { c.Cluster.Bind = addr3 })
	if code, b := call(t, "POST", n1.base+"/v1/admin/tenants", clusterOperator, `{"id":"after"}`); code != 201 {
		t.Fatalf("a write once n3 is back: %d %v", code, b)
	}
	if code, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, ""); code != 200 || strings.Join(memberIDs(st), ",") != "n1,n3" {
		t.Fatalf("members once n3 is back: %d %v, want n1,n3 (the removal took effect)", code, memberIDs(st))
	}
}
