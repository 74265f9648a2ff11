package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
)

// pluginNodes is the part of GET …/plugins/{name}?nodes=all these tests
// read.
type pluginNodes struct {
	Active      string `json:"active"`
	Quarantined bool   `json:"quarantined"`
	Loaded      bool   `json:"loaded"`
	Answered    int    `json:"answered"`
	Unanswered  int    `json:"unanswered"`
	Stats       struct {
		Requests uint64 `json:"requests"`
		Faults   uint64 `json:"faults"`
	} `json:"stats"`
	Nodes []struct {
		Node        string `json:"node"`
		Error       string `json:"error"`
		Active      string `json:"active"`
		Loaded      bool   `json:"loaded"`
		Quarantined bool   `json:"quarantined"`
		Stats       struct {
			Requests uint64 `json:"requests"`
			Faults   uint64 `json:"faults"`
		} `json:"stats"`
		Faults []struct {
			Kind string `json:"kind"`
		} `json:"faults"`
	} `json:"nodes"`
}

// Each node counts the faults of the plugins it runs, so a tenant asking
// one node sees that node's part only; ?nodes=all gathers every node's
// part (asked of the other members with the tenant's own credential) and
// sums their counters: a plugin quarantined on one follower shows as
// quarantined whichever node is asked. A node that cannot be reached
// gets an error in its place, and the answer still comes.
func TestClusterPluginStatusOfEveryNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	nodes := startCluster3(t, t.TempDir())
	admin, _ := clusterTenantKey(t, nodes[0].base, "acme", `["admin"]`)
	code, k := call(t, "POST", nodes[0].base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["reader"]}`)
	if code != 201 {
		t.Fatalf("issue key: %d %v", code, k)
	}
	reader := k["key"].(string)
	other, _ := clusterTenantKey(t, nodes[0].base, "other", `["admin"]`)
	seq := pushTrap(t, nodes[0].base, admin, admin)
	leader := leaderOf(t, nodes, 10*time.Second)
	var followers []*clusterServer
	for _, n := range nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	faulty, quiet := followers[0], followers[1]
	project := func(n *clusterServer) string {
		_, body := call(t, "GET", fmt.Sprintf("%s/v1/tenants/acme/projections/trap/order:1?min_seq=%d", n.base, seq), admin, "")
		c, _ := body["code"].(string)
		return c
	}
	waitFor(t, 10*time.Second, faulty.id+" quarantines the plugin", func() bool { return project(faulty) == "PLUGIN_QUARANTINED" })
	if c := project(leader); c != "PLUGIN_FAULT" {
		t.Fatalf("projection on the leader: %s, want PLUGIN_FAULT", c)
	}

	all := func(n *clusterServer, token string) (int, pluginNodes) {
		t.Helper()
		code, body := call(t, "GET", n.base+"/v1/tenants/acme/plugins/trap?nodes=all", token, "")
		var pn pluginNodes
		b, _ := json.Marshal(body)
		if err := json.Unmarshal(b, &pn); err != nil {
			t.Fatal(err)
		}
		return code, pn
	}
	// The node that ran nothing, asked with a reader's key, sees all
	// (once every node has loaded the plugin: a node loads it when it
	// learns of the push, compiling it in a child, which takes a while on
	// a loaded machine).
	waitFor(t, 20*time.Second, "every node loads the plugin", func() bool {
		_, pn := all(quiet, reader)
		for _, p := range pn.Nodes {
			if !p.Loaded {
				return false
			}
		}
		return len(pn.Nodes) == 3
	})
	code, pn := all(quiet, reader)
	if code != 200 || pn.Answered != 3 || pn.Unanswered != 0 || len(pn.Nodes) != 3 {
		t.Fatalf("?nodes=all on %s: %d %+v, want every node's part", quiet.id, code, pn)
	}
	if pn.Nodes[0].Node != quiet.id {
		t.Fatalf("first part is %q's, want the asked node's (%s)", pn.Nodes[0].Node, quiet.id)
	}
	part := map[string]int{}
	for i, p := range pn.Nodes {
		if p.Error != "" || p.Active != "1" || !p.Loaded {
			t.Fatalf("%s's part: %+v, want the plugin loaded at version 1", p.Node, p)
		}
		part[p.Node] = i
	}
	f, l, q := pn.Nodes[part[faulty.id]], pn.Nodes[part[leader.id]], pn.Nodes[part[quiet.id]]
	if !f.Quarantined || f.Stats.Faults != 2 || len(f.Faults) != 2 {
		t.Fatalf("%s's part: %+v, want quarantined after 2 faults", faulty.id, f)
	}
	if l.Quarantined || l.Stats.Faults != 1 || q.Quarantined || q.Stats.Faults != 0 || q.Stats.Requests != 0 {
		t.Fatalf("leader %s's part %+v, %s's part %+v: want 1 fault and none", leader.id, l, quiet.id, q)
	}
	if !pn.Quarantined || pn.Stats.Faults != 3 || pn.Stats.Requests != f.Stats.Requests+l.Stats.Requests || !pn.Loaded || pn.Active != "1" {
		t.Fatalf("the whole: %+v, want quarantined somewhere, 3 faults, the requests summed", pn)
	}
	// Without ?nodes=all, the node answers for itself, as before.
	if code, st := call(t, "GET", quiet.base+"/v1/tenants/acme/plugins/trap", reader, ""); code != 200 || st["quarantined"] != false || st["node"] != quiet.id || st["nodes"] != nil {
		t.Fatalf("this node's status: %d %v", code, st)
	}

	// The Go client asks for the same.
	cl, err := client.New(leader.base, reader)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := cl.Tenant("acme").PluginStatusAllNodes(context.Background(), "trap")
	if err != nil || cs.Answered != 3 || !cs.Quarantined || cs.Stats.Faults != 3 || len(cs.Nodes) != 3 || cs.Nodes[0].Node != leader.id {
		t.Fatalf("PluginStatusAllNodes on the leader: %v %+v", err, cs)
	}
	if own, err := cl.Tenant("acme").PluginStatus(context.Background(), "trap"); err != nil || own.Node != leader.id || own.Quarantined {
		t.Fatalf("PluginStatus on the leader: %v %+v, want the leader's own part", err, own)
	}

	// The list: the asked node's state, or every node's.
	if code, l := call(t, "GET", quiet.base+"/v1/tenants/acme/plugins", reader, ""); code != 200 || l["node"] != quiet.id || l["plugins"].([]any)[0].(map[string]any)["quarantined"] != false {
		t.Fatalf("this node's list: %d %v", code, l)
	}
	pl, err := cl.Tenant("acme").PluginsAllNodes(context.Background())
	if err != nil || pl.Answered != 3 || len(pl.Plugins) != 1 || !pl.Plugins[0].Quarantined || !slices.Equal(pl.Plugins[0].QuarantinedOn, []string{faulty.id}) ||
		!pl.Plugins[0].Loaded || !slices.Equal(pl.Plugins[0].NotLoadedOn, []string{}) {
		t.Fatalf("PluginsAllNodes: %v %+v, want trap quarantined on %s only", err, pl, faulty.id)
	}

	// Another tenant's credential gets nothing of it, on no node.
	if code, body := call(t, "GET", quiet.base+"/v1/tenants/acme/plugins/trap?nodes=all", other, ""); code != 401 && code != 403 {
		t.Fatalf("another tenant's key: %d %v, want refused", code, body)
	}
	if code, body := call(t, "GET", quiet.base+"/v1/tenants/acme/plugins/trap?nodes=some", reader, ""); code != 400 || body["field"] != "nodes" {
		t.Fatalf("?nodes=some: %d %v, want 400 naming nodes", code, body)
	}

	// A member that is down: its part says so, the others still come.
	faulty.stop()
	code, pn = all(leader, reader)
	if code != 200 || pn.Answered != 2 || pn.Unanswered != 1 || pn.Quarantined || pn.Stats.Faults != 1 {
		t.Fatalf("with %s down: %d %+v, want two parts and its error", faulty.id, code, pn)
	}
	for _, p := range pn.Nodes {
		if (p.Node == faulty.id) != (p.Error != "") {
			t.Fatalf("with %s down, %s's part: %+v", faulty.id, p.Node, p)
		}
	}
	pl, err = cl.Tenant("acme").PluginsAllNodes(context.Background())
	if err != nil || pl.Answered != 2 || pl.Unanswered != 1 || pl.Plugins[0].Quarantined || !pl.Plugins[0].Loaded {
		t.Fatalf("PluginsAllNodes with %s down: %v %+v", faulty.id, err, pl)
	}
}

// BenchmarkClusterPluginStatus: a plugin's status from the node asked
// (this node's part) against every node's (?nodes=all: two members asked
// in parallel over loopback), on a 3-node cluster.
func BenchmarkClusterPluginStatus(b *testing.B) {
	nodes := startCluster3(b, b.TempDir())
	if code, body := call(b, "POST", nodes[0].base+"/v1/admin/tenants", clusterOperator, `{"id":"acme"}`); code != 201 {
		b.Fatalf("create tenant: %d %v", code, body)
	}
	code, k := call(b, "POST", nodes[0].base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["admin"]}`)
	if code != 201 {
		b.Fatalf("issue key: %d %v", code, k)
	}
	key := k["key"].(string)
	wasm := fixture(b, "counter")
	up, _ := json.Marshal(map[string]any{"manifest": manifestOf(b, "count", "1", "projection", wasm, nil), "module": base64.StdEncoding.EncodeToString(wasm)})
	if code, body := call(b, "POST", nodes[0].base+"/v1/tenants/acme/plugins", key, string(up)); code != 200 {
		b.Fatalf("plugin upload: %d %v", code, body)
	}
	for _, n := range nodes {
		waitFor(b, 10*time.Second, n.id+" runs the plugin", func() bool {
			code, st := call(b, "GET", n.base+"/v1/tenants/acme/plugins/count", key, "")
			return code == 200 && st["loaded"] == true
		})
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, q := range []string{"", "?nodes=all"} {
		name := "this-node"
		if q != "" {
			name = "all-nodes"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				benchGet(b, hc, nodes[1].base+"/v1/tenants/acme/plugins/count"+q, "Authorization", "Bearer "+key)
			}
		})
	}
}
