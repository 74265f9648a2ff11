package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// callBytes is call with a body of any media type.
func callBytes(t *testing.T, method, url, token, media string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", media)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := clusterClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return res.StatusCode, m
}

// startCluster3 starts three cluster servers (n1 bootstraps, the others
// join through it) and waits until every member has its URL recorded.
func startCluster3(t testing.TB, root string, adjust ...func(*server.Config)) []*clusterServer {
	t.Helper()
	n1 := startClusterLeader(t, root, adjust...)
	n2 := startClusterServer(t, root, "n2", false, n1.base, adjust...)
	n3 := startClusterServer(t, root, "n3", false, n1.base, adjust...)
	waitFor(t, 20*time.Second, "three members with URLs", func() bool {
		code, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
		ms, _ := st["members"].([]any)
		if code != 200 || len(ms) != 3 {
			return false
		}
		for _, m := range ms {
			if u, _ := m.(map[string]any)["url"].(string); u == "" {
				return false
			}
		}
		return true
	})
	return []*clusterServer{n1, n2, n3}
}

// without is nodes but n.
func without(nodes []*clusterServer, n *clusterServer) []*clusterServer {
	return slices.DeleteFunc(slices.Clone(nodes), func(m *clusterServer) bool { return m == n })
}

// leaderOf waits for a node among nodes that leads.
func leaderOf(t *testing.T, nodes []*clusterServer, within time.Duration) *clusterServer {
	t.Helper()
	var l *clusterServer
	waitFor(t, within, "a leader", func() bool {
		for _, n := range nodes {
			if code, st := call(t, "GET", n.base+"/v1/cluster", clusterOperator, ""); code == 200 && st["state"] == "leader" {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// TestClusterPoliciesPluginsWorkers: on a three-node cluster a tenant's
// policy bundle uploaded through a follower (redirected to the leader)
// judges writes on the leader, and on the next leader after the first
// stops (the same revision named in the denial), and another bundle and a
// rollback through a follower take effect there; a projection plugin
// uploaded through a follower serves the same version on every node; a
// hosted worker runs on the leader, and after the leader stops it
// resumes on the new leader from its replicated cursor, reacting exactly
// once to every input event (its reactions carry idempotency keys, so a
// batch delivered again writes nothing twice); a new plugin version and a
// swap back reach every node.
func TestClusterPoliciesPluginsWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	nodes := startCluster3(t, t.TempDir())
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	if code, body := call(t, "POST", n2.base+"/v1/admin/tenants", clusterOperator, `{"id":"acme"}`); code != 201 {
		t.Fatalf("create tenant: %d %v", code, body)
	}
	key := func(roles string) string {
		code, k := call(t, "POST", n3.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":[`+roles+`]}`)
		if code != 201 {
			t.Fatalf("issue key: %d %v", code, k)
		}
		return k["key"].(string)
	}
	admin, writer := key(`"admin"`), key(`"writer"`)
	waitFor(t, 5*time.Second, "the keys work on every node", func() bool {
		for _, n := range nodes {
			if code, _ := call(t, "GET", n.base+"/v1/tenants/acme/stats", admin, ""); code != 200 {
				return false
			}
		}
		return true
	})
	appendVia := func(n *clusterServer, entity string, kind string) (int, map[string]any) {
		return call(t, "POST", n.base+"/v1/tenants/acme/events", writer, fmt.Sprintf(`{"entity":%q,"scope":"s","kind":%q,"payload":{}}`, entity, kind))
	}
	wantDenied := func(what string, code int, body map[string]any, rev string) {
		t.Helper()
		if code != 403 || body["code"] != "POLICY_DENIED" || body["layer"] != "tenant" || body["revision"] != rev {
			t.Fatalf("%s: %d %v, want POLICY_DENIED by the tenant layer, revision %s", what, code, body, rev)
		}
	}

	// A policy bundle through a follower.
	bundle := tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", "secret:"), "policy_test.rego", tenantTests)
	rev := revisionOf(bundle)
	if code, body := callBytes(t, "PUT", n2.base+"/v1/tenants/acme/policy", admin, "application/gzip", bundle); code != 200 || body["active"] != rev {
		t.Fatalf("policy upload through a follower: %d %v", code, body)
	}
	code, body := appendVia(n3, "secret:1", "1:1")
	wantDenied("a write the bundle refuses, through a follower", code, body, rev)
	// The leader judged it, and its decision log answers through any node.
	waitFor(t, 5*time.Second, "the denial in the decision log, asked through a follower", func() bool {
		code, page := call(t, "GET", n2.base+"/v1/tenants/acme/policy/decisions?result=denied", admin, "")
		ds, _ := page["decisions"].([]any)
		return code == 200 && len(ds) == 1 && ds[0].(map[string]any)["decision_id"] == body["decision_id"]
	})

	// A projection plugin through a follower, served on every node.
	counter := fixture(t, "counter")
	up, _ := json.Marshal(map[string]any{"manifest": manifestOf(t, "count", "1.0.0", "projection", counter, nil), "module": base64.StdEncoding.EncodeToString(counter)})
	if code, body := callBytes(t, "POST", n3.base+"/v1/tenants/acme/plugins", admin, "application/json", up); code != 200 || body["active"] != "1.0.0" {
		t.Fatalf("plugin upload through a follower: %d %v", code, body)
	}
	inputs := 0
	var last float64
	for i := 0; i < 3; i++ {
		code, rc := appendVia(nodes[i], "order:1", "1:1")
		if code != 201 {
			t.Fatalf("append: %d %v", code, rc)
		}
		inputs++
		last = rc["global_sequence"].(float64)
	}
	projected := func(n *clusterServer) (uint64, string) {
		var count uint64
		var version string
		waitFor(t, 10*time.Second, n.id+" projects order:1", func() bool {
			code, p := call(t, "GET", fmt.Sprintf("%s/v1/tenants/acme/projections/count/order:1?min_seq=%d", n.base, int(last)), admin, "")
			if code != 200 {
				return false
			}
			var st []byte
			raw, _ := json.Marshal(p["state"])
			if json.Unmarshal(raw, &st) != nil || len(st) != 8 {
				return false
			}
			count, version = binary.LittleEndian.Uint64(st), p["version"].(string)
			return true
		})
		return count, version
	}
	for _, n := range nodes {
		if count, version := projected(n); count != 3 || version != "1.0.0" {
			t.Fatalf("%s projects %d events with version %q, want 3 with 1.0.0", n.id, count, version)
		}
	}

	// A hosted worker: started through a follower, it runs on the leader.
	double := fixture(t, "handler-double")
	up, _ = json.Marshal(map[string]any{"manifest": manifestOf(t, "echo", "1", "handler", double, nil), "module": base64.StdEncoding.EncodeToString(double)})
	if code, body := callBytes(t, "POST", n2.base+"/v1/tenants/acme/plugins", admin, "application/json", up); code != 200 {
		t.Fatalf("handler upload: %d %v", code, body)
	}
	if code, body := call(t, "PUT", n3.base+"/v1/tenants/acme/workers/echoer", admin, `{"plugin":"echo","region":{"category":1},"restart":{"backoff_min_ms":20}}`); code != 200 {
		t.Fatalf("worker start through a follower: %d %v", code, body)
	}
	// Every input event gets two reactions (handler-double), category 2.
	events := func(n *clusterServer) float64 {
		code, st := call(t, "GET", n.base+"/v1/tenants/acme/stats?consistency=linearizable", admin, "")
		if code != 200 {
			return -1
		}
		return st["events"].(float64)
	}
	waitFor(t, 15*time.Second, "the worker reacts to the first inputs", func() bool { return events(n2) == float64(3*inputs) })
	if code, st := call(t, "GET", n2.base+"/v1/tenants/acme/workers/echoer", admin, ""); code != 200 || st["state"] != "running" {
		t.Fatalf("worker status through a follower: %d %v, want running (the leader's)", code, st)
	}
	for i := 0; i < 5; i++ {
		if code, rc := appendVia(n1, fmt.Sprintf("in:%d", i), "1:1"); code != 201 {
			t.Fatalf("append: %d %v", code, rc)
		}
		inputs++
	}

	// The leader stops, with the worker mid-stream perhaps.
	stopped := time.Now()
	n1.stop()
	rest := []*clusterServer{n2, n3}
	l := leaderOf(t, rest, 15*time.Second)
	code, body = appendVia(l, "secret:2", "1:1")
	wantDenied("a write the bundle refuses, on the new leader", code, body, rev)
	for i := 5; i < 10; i++ {
		waitFor(t, 10*time.Second, "an append on the new leader", func() bool {
			code, _ := appendVia(l, fmt.Sprintf("in:%d", i), "1:1")
			return code == 201
		})
		inputs++
	}
	waitFor(t, 20*time.Second, "the worker resumes on the new leader and reacts to every input", func() bool { return events(l) >= float64(3*inputs) })
	t.Logf("the leader stopped; %s leads, judges with revision %.12s… and its worker has reacted to every input %s later", l.id, rev, time.Since(stopped).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond) // a duplicate, if any, would land now
	if got := events(l); got != float64(3*inputs) {
		t.Fatalf("%v events after the failover, want %d inputs and two reactions each (%d): reactions duplicated", got, inputs, 3*inputs)
	}
	if code, st := call(t, "GET", l.base+"/v1/tenants/acme/workers/echoer", admin, ""); code != 200 || st["state"] != "running" {
		t.Fatalf("worker on the new leader: %d %v, want running", code, st)
	}
	for _, n := range rest {
		if count, version := projected(n); count != 3 || version != "1.0.0" {
			t.Fatalf("%s after the failover projects %d events with %q", n.id, count, version)
		}
	}

	// Another bundle, then a rollback, each through a follower.
	follower := n2
	if l == n2 {
		follower = n3
	}
	bundleB := tarGz(t, "policy.rego", denyPrefix("NO_HIDDEN", "hidden:"))
	revB := revisionOf(bundleB)
	if code, body := callBytes(t, "PUT", follower.base+"/v1/tenants/acme/policy", admin, "application/gzip", bundleB); code != 200 || body["active"] != revB {
		t.Fatalf("second bundle: %d %v", code, body)
	}
	code, body = appendVia(follower, "hidden:1", "1:1")
	wantDenied("a write the second bundle refuses", code, body, revB)
	if code, body := call(t, "POST", follower.base+"/v1/tenants/acme/policy/rollback", admin, fmt.Sprintf(`{"revision":%q}`, rev)); code != 200 || body["active"] != rev {
		t.Fatalf("rollback: %d %v", code, body)
	}
	code, body = appendVia(follower, "secret:3", "1:1")
	wantDenied("a write the rolled-back-to bundle refuses", code, body, rev)

	// A new version, then a swap back, each through a follower: every
	// node serves the active one.
	counter2 := fixture(t, "counter2")
	up, _ = json.Marshal(map[string]any{"manifest": manifestOf(t, "count", "2.0.0", "projection", counter2, nil), "module": base64.StdEncoding.EncodeToString(counter2)})
	if code, body := callBytes(t, "POST", follower.base+"/v1/tenants/acme/plugins", admin, "application/json", up); code != 200 || body["active"] != "2.0.0" {
		t.Fatalf("a second version: %d %v", code, body)
	}
	for _, want := range []string{"2.0.0", "1.0.0"} {
		if want == "1.0.0" {
			if code, body := call(t, "POST", follower.base+"/v1/tenants/acme/plugins/count/swap", admin, `{"version":"1.0.0"}`); code != 200 {
				t.Fatalf("swap: %d %v", code, body)
			}
		}
		for _, n := range rest {
			waitFor(t, 10*time.Second, n.id+" serves version "+want, func() bool {
				code, p := call(t, "GET", n.base+"/v1/tenants/acme/projections/count/order:1", admin, "")
				return code == 200 && p["version"] == want
			})
		}
	}
}
