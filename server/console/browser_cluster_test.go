package console_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/batpak-go/batpak/server"
)

// startNode starts one node of a cluster under a fresh root (returned):
// the first bootstraps, the others join it. The replica check runs every
// 150ms.
func startNode(t *testing.T, id, join string) (*env, string) {
	t.Helper()
	var root string
	e := startWith(t, func(c *server.Config) {
		root = c.Root
		c.Cluster = &server.ClusterConfig{NodeID: id, Bind: "127.0.0.1:0", Bootstrap: join == "", Join: join,
			HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, LeaderLeaseTimeout: 500 * time.Millisecond,
			ReplicaCheckEvery: 150 * time.Millisecond}
	})
	return e, root
}

// TestConsoleClusterInABrowser: on a cluster node the operator's overview
// shows the cluster — the node's role, the members, and on the leader the
// replica check: every follower's copy agreeing, then an alert naming the
// tenant and node of a copy damaged on disk; a follower's console names
// the leader and sends the operator there for the check.
func TestConsoleClusterInABrowser(t *testing.T) {
	b := newBrowser(t)
	n1, _ := startNode(t, "n1", "")
	waitUntil(t, "n1 leads", func() bool {
		st := n1.do(nil, "GET", "/v1/cluster", nil, "Authorization", "Bearer "+opToken)
		return st.status == 200 && st.json(t)["state"] == "leader"
	})
	n2, _ := startNode(t, "n2", n1.base)
	n3, root3 := startNode(t, "n3", n1.base)
	waitUntil(t, "three members with URLs", func() bool {
		st := n1.do(nil, "GET", "/v1/cluster", nil, "Authorization", "Bearer "+opToken)
		ms, _ := st.json(t)["members"].([]any)
		urls := 0
		for _, m := range ms {
			if u, _ := m.(map[string]any)["url"].(string); u != "" {
				urls++
			}
		}
		return urls == 3
	})
	key := n1.tenant("acme")
	for i := range 5 {
		n1.appendEvent("acme", key, map[string]any{"entity": "order:" + itoa(i), "scope": "shop", "kind": "1:1", "payload": map[string]any{"total": 5, "n": i}})
	}

	b.goTo(n1.base + "/console/")
	b.run("sign-in form", visible("#credential"))
	b.run("sign in as the operator", chromedp.SendKeys(chromedp.CSS("#credential"), opToken), chromedp.Click(chromedp.CSS("#signin-submit")))
	b.waitText("#cluster-role", "This node (n1) is leader")
	b.waitText("#replica-check", "4 of 4 copies on other nodes (of the control plane and of each tenant's events) agree")
	for _, id := range []string{"n1 (this node)", "n2", "n3"} {
		b.waitText("#member-table", id)
	}
	// Every member's health, judged from its own view.
	b.waitText("#cluster-health", "3 of 3 voters healthy (a quorum is 2): 1 more member may fail")
	b.waitText(`[data-node="n2"]`, "healthy · follower · applied")
	b.waitText(`[data-node="n1"]`, "healthy · leader · applied")
	b.shot("20-cluster-leader")
	b.noErrors("cluster overview")

	// n3's copy damaged on disk: an alert names it.
	seg, at := findIn(t, root3, "acme", `"n":3,"total":5`)
	f, err := os.OpenFile(seg, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("9"), int64(at+len(`"n":3,"total":`))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b.waitText(`[data-diverged="acme/n3"]`, "Tenant acme on node n3: DAMAGED in events [0, 5)")
	if role := eval[string](b, `document.querySelector('[data-diverged="acme/n3"]').getAttribute("role")`); role != "alert" {
		t.Fatalf("the divergence is shown with role %q, want alert", role)
	}
	b.waitText("#replica-check", "3 of 4 copies")
	b.shot("21-cluster-diverged")
	b.noErrors("cluster overview with an alarm")

	// A follower's console: its role, the leader, no check of its own.
	// The browser sends n1's cookie to n2 too (cookies do not tell ports
	// apart, as they would all reach a balancer's one name): n2 relays
	// the session to n1, where it lives, and the page shows n1's view
	// with no second sign-in.
	b.goTo(n2.base + "/console/")
	b.waitText("#cluster-role", "This node (n1) is leader")
	b.waitText("#replica-check", "3 of 4 copies")
	b.noErrors("n1's session through n2")

	b2 := newBrowser(t)
	b2.goTo(n2.base + "/console/")
	b2.run("sign-in form", visible("#credential"))
	b2.run("sign in on the follower", chromedp.SendKeys(chromedp.CSS("#credential"), opToken), chromedp.Click(chromedp.CSS("#signin-submit")))
	b2.waitText("#cluster-role", "This node (n2) is follower; the leader is n1 at "+n1.base)
	b2.waitText("#replica-check", "The replica check runs on the leader: its console ("+n1.base+"/console/) shows it.")
	b2.noErrors("a follower's overview")

	// Each node runs the tenant's plugins and counts their faults: a
	// plugin quarantined on n2 shows as quarantined on n2 in a console
	// signed in on n3, with every node's counters.
	wasm, err := os.ReadFile(filepath.Join("..", "..", "plugins", "testdata", "trap.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(wasm)
	n1.must(n1.do(nil, "POST", "/v1/tenants/acme/plugins", map[string]any{"manifest": map[string]any{"name": "trap", "version": "1", "kind": "projection",
		"sha256": hex.EncodeToString(sum[:]), "limits": map[string]any{"max_faults": 2}}, "module": wasm}, "Authorization", "Bearer "+key), 200)
	waitUntil(t, "n2 quarantines the plugin", func() bool {
		r := n2.do(nil, "GET", "/v1/tenants/acme/projections/trap/order:1", nil, "Authorization", "Bearer "+key)
		return r.status == 424 && r.json(t)["code"] == "PLUGIN_QUARANTINED"
	})
	// The page reads the state once: wait until n3 has it all.
	waitUntil(t, "n3 sees the plugin quarantined on n2", func() bool {
		r := n3.do(nil, "GET", "/v1/tenants/acme/plugins/trap?nodes=all", nil, "Authorization", "Bearer "+key)
		if r.status != 200 {
			return false
		}
		st := r.json(t)
		return st["quarantined"] == true && st["answered"] == float64(3)
	})
	b3 := newBrowser(t)
	b3.goTo(n3.base + "/console/")
	b3.run("sign-in form", visible("#credential"))
	b3.run("sign in as the tenant on n3", chromedp.SendKeys(chromedp.CSS("#credential"), key), chromedp.Click(chromedp.CSS("#signin-submit")))
	// Signing in ends on the dashboard: navigating before it has would be
	// overtaken by it on a loaded machine.
	b3.waitText("main h1", "Tenant acme")
	b3.goTo(n3.base + "/console/#/plugins")
	b3.waitText("#plugin-trap", "quarantined on n2")
	b3.waitText("#plugin-trap", "2 faults on 3 nodes")
	b3.waitText("#plugin-trap", "n3: loaded, 0 calls, 0 faults")
	b3.shot("22-cluster-plugin")
	b3.noErrors("a plugin's status on every node")

	// The operator's overview, on n1 before n2 stops (b's page on n2
	// would fail to refresh once it does).
	b.goTo(n1.base + "/console/")
	b.waitText("#cluster-health", "3 of 3 voters healthy")

	// With n2 down, the page says whose state it shows.
	n2.stop()
	waitUntil(t, "n2 down, as n3 sees it", func() bool {
		r := n3.do(nil, "GET", "/v1/tenants/acme/plugins/trap?nodes=all", nil, "Authorization", "Bearer "+key)
		return r.status == 200 && r.json(t)["unanswered"] == float64(1)
	})
	b3.goTo(n3.base + "/console/#/")
	b3.goTo(n3.base + "/console/#/plugins")
	b3.waitText("#plugin-trap", "Partial: 2 of 3 nodes answered")
	b3.waitText("#plugin-trap", "n2: unreachable")
	b3.noErrors("a plugin's status with a node down")

	// The operator's overview on n1 shows n2 unreachable and no failure
	// to spare.
	b.waitText("#cluster-health", "2 of 3 voters healthy (a quorum is 2): no member may fail without stopping writes")
	b.waitText(`[data-node="n2"]`, "unreachable")
	b.waitText(`[data-node="n3"]`, "healthy · follower")
	b.shot("23-cluster-node-down")
	b.noErrors("the cluster's health with a node down")
}

// findIn finds, under root, the segment of tenant holding text, and where.
func findIn(t *testing.T, root, tenant, text string) (string, int) {
	t.Helper()
	var seg string
	at := -1
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".seg") || filepath.Base(filepath.Dir(p)) != tenant {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil {
			if i := bytes.Index(b, []byte(text)); i >= 0 {
				seg, at = p, i
				return fs.SkipAll
			}
		}
		return nil
	})
	if at < 0 {
		t.Fatalf("no segment of %s under %s holds %s", tenant, root, text)
	}
	return seg, at
}

// waitUntil polls cond for up to 20s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
