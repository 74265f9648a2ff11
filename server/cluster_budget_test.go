package server_test

import (
	"testing"
	"time"
)

// TestClusterNewLeaderKeepsSpentBudget: a tenant's day budget of
// control-plane changes spent through one leader stays spent on the next:
// the new leader charges it from the replicated record when it begins to
// lead, so a failover does not hand the tenant a fresh day's budget.
func TestClusterNewLeaderKeepsSpentBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	nodes := startCluster3(t, t.TempDir())
	leader := leaderOf(t, nodes, 10*time.Second)
	admin, _ := clusterTenantKey(t, leader.base, "acme", `["admin"]`)
	if code, body := call(t, "PUT", leader.base+"/v1/admin/tenants/acme/quotas", clusterOperator, `{"control_changes_per_day":2}`); code != 200 {
		t.Fatalf("set quotas: %d %v", code, body)
	}
	for i := range 2 {
		if code, body := call(t, "POST", leader.base+"/v1/tenants/acme/keys", admin, `{"roles":["reader"]}`); code != 201 {
			t.Fatalf("change %d: %d %v", i+1, code, body)
		}
	}
	if code, body := call(t, "POST", leader.base+"/v1/tenants/acme/keys", admin, `{"roles":["reader"]}`); code != 429 || body["quota"] != "control_changes_per_day" {
		t.Fatalf("a 3rd change with a budget of 2: %d %v", code, body)
	}
	leader.stop()
	rest := without(nodes, leader)
	next := leaderOf(t, rest, 20*time.Second)
	// The new leader restores the budgets before it takes tenant changes
	// (within a leadership poll of being elected): a retried refusal is
	// all a client sees.
	var code int
	var body map[string]any
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, body = call(t, "POST", next.base+"/v1/tenants/acme/keys", admin, `{"roles":["reader"]}`); code != 503 {
			break
		}
	}
	if code != 429 || body["quota"] != "control_changes_per_day" {
		t.Fatalf("a 3rd change through the new leader: %d %v, want 429 control_changes_per_day", code, body)
	}
}
