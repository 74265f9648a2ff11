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

// With n3 down, removing n2 would leave voters {n1, n3}, a quorum of
// which needs n3: the leader refuses it (409, naming n3 and the way
// out), changes nothing, and the cluster keeps taking writes. Removing
// the member that is down is accepted: {n1, n2} are both reachable.
func TestClusterRefusesARemovalThatWouldLeaveNoQuorum(t *testing.T) {
	root := t.TempDir()
	nodes := startCluster3(t, root)
	n1, n3 := nodes[0], nodes[2]
	n3.stop()
	time.Sleep(2 * time.Second) // past the contact window (2 heartbeat timeouts of 500 ms)

	code, b := callOnce(t, "DELETE", n1.base+"/v1/cluster/nodes/n2", clusterOperator, "")
	detail, _ := b["detail"].(string)
	if code != 409 || b["code"] != "CONFLICT" {
		t.Fatalf("removing n2 with n3 down: %d %v, want 409 CONFLICT", code, b)
	}
	for _, want := range []string{"n3", "quorum", "force=true"} {
		if !strings.Contains(detail, want) {
			t.Errorf("the refusal does not name %q: %s", want, detail)
		}
	}
	if code, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, ""); code != 200 || len(memberIDs(st)) != 3 {
		t.Fatalf("members after the refusal: %d %v, want n1, n2, n3", code, memberIDs(st))
	}
	if code, b := call(t, "POST", n1.base+"/v1/admin/tenants", clusterOperator, `{"id":"after-refusal"}`); code != 201 {
		t.Fatalf("a write after the refused removal: %d %v", code, b)
	}

	if code, b := callOnce(t, "DELETE", n1.base+"/v1/cluster/nodes/n3", clusterOperator, ""); code != 204 {
		t.Fatalf("removing n3, the member that is down: %d %v", code, b)
	}
	if code, b := call(t, "POST", n1.base+"/v1/admin/tenants", clusterOperator, `{"id":"after-removal"}`); code != 201 {
		t.Fatalf("a write after removing n3: %d %v", code, b)
	}
}

// With force, the leader removes n2 all the same; the new configuration
// {n1, n3} cannot commit while n3 is down, the leader steps down, and the
// answer says the removal may or may not have taken effect (503
// OUTCOME_UNKNOWN), not 500. Once n3 is back, the cluster elects a
// leader, and its member list says what happened.
func TestClusterForcedRemovalWithoutQuorumAnswersOutcomeUnknown(t *testing.T) {
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

	code, b := callOnce(t, "DELETE", n1.base+"/v1/cluster/nodes/n2?force=true", clusterOperator, "")
	detail, _ := b["detail"].(string)
	if code != 503 || b["code"] != "OUTCOME_UNKNOWN" || !strings.Contains(detail, "batpak cluster status") {
		t.Fatalf("forced removal of n2 with n3 down: %d %v, want 503 OUTCOME_UNKNOWN naming batpak cluster status", code, b)
	}

	startClusterServer(t, root, "n3", false, "", func(c *server.Config) { c.Cluster.Bind = addr3 })
	if code, b := call(t, "POST", n1.base+"/v1/admin/tenants", clusterOperator, `{"id":"after"}`); code != 201 {
		t.Fatalf("a write once n3 is back: %d %v", code, b)
	}
	if code, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, ""); code != 200 || strings.Join(memberIDs(st), ",") != "n1,n3" {
		t.Fatalf("members once n3 is back: %d %v, want n1,n3 (the forced removal took effect)", code, memberIDs(st))
	}
}

// An unknown force value is refused before anything is done.
func TestClusterRemovalRefusesAnUnknownForceValue(t *testing.T) {
	n1 := startClusterLeader(t, t.TempDir())
	if code, b := call(t, "DELETE", n1.base+"/v1/cluster/nodes/n1?force=yes", clusterOperator, ""); code != 400 || b["field"] != "force" {
		t.Fatalf("force=yes: %d %v, want 400 naming force", code, b)
	}
}
