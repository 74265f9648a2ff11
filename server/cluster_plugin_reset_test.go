package server_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// Each node runs a tenant's projection plugins and counts their faults on
// its own, so a plugin quarantined on a follower is quarantined there
// only. A reset, sent to any node, is recorded in the control plane and
// lifts the quarantine on every node: the follower calls the plugin again.
func TestClusterPluginResetReachesEveryNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	nodes := startCluster3(t, t.TempDir())
	if code, body := call(t, "POST", nodes[1].base+"/v1/admin/tenants", clusterOperator, `{"id":"acme"}`); code != 201 {
		t.Fatalf("create tenant: %d %v", code, body)
	}
	key := func(roles string) string {
		code, k := call(t, "POST", nodes[2].base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":[`+roles+`]}`)
		if code != 201 {
			t.Fatalf("issue key: %d %v", code, k)
		}
		return k["key"].(string)
	}
	admin, writer := key(`"admin"`), key(`"writer"`)
	seq := pushTrap(t, nodes[1].base, admin, writer)
	leader := leaderOf(t, nodes, 10*time.Second)
	follower := nodes[0]
	if follower == leader {
		follower = nodes[1]
	}
	project := func(n *clusterServer) (int, string) {
		code, body := call(t, "GET", fmt.Sprintf("%s/v1/tenants/acme/projections/trap/order:1?min_seq=%d", n.base, seq), admin, "")
		c, _ := body["code"].(string)
		return code, c
	}
	waitFor(t, 10*time.Second, follower.id+" runs the plugin", func() bool {
		code, c := project(follower)
		return code == 424 && c == "PLUGIN_FAULT"
	})
	waitFor(t, 10*time.Second, follower.id+" quarantines it", func() bool {
		_, c := project(follower)
		return c == "PLUGIN_QUARANTINED"
	})
	status := func(n *clusterServer) bool {
		code, st := call(t, "GET", n.base+"/v1/tenants/acme/plugins/trap", admin, "")
		if code != 200 || st["node"] != n.id {
			t.Fatalf("%s: plugin status %d %v, want this node's (node %q)", n.id, code, st, n.id)
		}
		q, _ := st["quarantined"].(bool)
		return q
	}
	if !status(follower) {
		t.Fatalf("%s: a quarantined plugin's status says it is not", follower.id)
	}

	// The reset, sent to the follower, goes to the leader, which records it.
	if code, body := call(t, "POST", follower.base+"/v1/tenants/acme/plugins/trap/reset", admin, ""); code != 200 {
		t.Fatalf("reset: %d %v", code, body)
	}
	waitFor(t, 10*time.Second, "the reset lifts "+follower.id+"'s quarantine", func() bool { return !status(follower) })
	if code, c := project(follower); code != 424 || c != "PLUGIN_FAULT" {
		t.Fatalf("%s after the reset: %d %s, want the plugin called again (PLUGIN_FAULT)", follower.id, code, c)
	}
}

// pushTrap uploads through base, as admin, tenant acme's projection
// plugin "trap" (it faults on every event; quarantined after 2 faults)
// and appends one event to order:1 as writer; it returns the event's
// global sequence.
func pushTrap(t *testing.T, base, admin, writer string) int {
	t.Helper()
	trap := fixture(t, "trap")
	up, _ := json.Marshal(map[string]any{"manifest": manifestOf(t, "trap", "1", "projection", trap, map[string]any{"max_faults": 2}),
		"module": base64.StdEncoding.EncodeToString(trap)})
	if code, body := callBytes(t, "POST", base+"/v1/tenants/acme/plugins", admin, "application/json", up); code != 200 {
		t.Fatalf("plugin upload: %d %v", code, body)
	}
	code, rc := call(t, "POST", base+"/v1/tenants/acme/events", writer, `{"entity":"order:1","scope":"s","kind":"1:1","payload":{}}`)
	if code != 201 {
		t.Fatalf("append: %d %v", code, rc)
	}
	return int(rc["global_sequence"].(float64))
}
