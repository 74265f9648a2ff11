package server_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// TestClusterReplicaCheck: the leader compares every follower's copy of a
// tenant's events with its own by itself, reports it in its cluster
// status (followers report nothing) and /metrics; a follower whose copy
// is damaged on disk is an alarm naming the tenant and the node within a
// few rounds, and the alarm lifts once the copy reads the same again; so
// is the leader's own copy, and a follower's copy of the control plane.
func TestClusterReplicaCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	root := t.TempDir()
	nodes := startCluster3(t, root, func(c *server.Config) { c.Cluster.ReplicaCheckEvery = 150 * time.Millisecond })
	key, _ := clusterTenantKey(t, nodes[0].base, "acme", `["writer"]`)
	for i := range 20 {
		body := fmt.Sprintf(`{"entity":"order:%d","scope":"shop","kind":"1:1","payload":{"total":5,"n":%d}}`, i%3, i)
		if code, r := call(t, "POST", nodes[0].base+"/v1/tenants/acme/events", key, body); code != 201 {
			t.Fatalf("append %d: %d %v", i, code, r)
		}
	}
	status := func(n *clusterServer) map[string]any {
		code, st := call(t, "GET", n.base+"/v1/cluster", clusterOperator, "")
		if code != 200 {
			t.Fatalf("%s: status %d %v", n.id, code, st)
		}
		rc, _ := st["replica_check"].(map[string]any)
		return rc
	}
	// Both followers' copies of acme's 20 events and of the control plane.
	// (A round between the tenant's creation and its first event finds
	// no store to compare: its copies agree until the next round.)
	var rc map[string]any
	waitFor(t, 20*time.Second, "every copy compared the same", func() bool {
		if metricValue(t, nodes[0].base, `batpak_cluster_replica_comparisons_total{result="same"}`) < 4 {
			return false
		}
		rc = status(nodes[0])
		return rc != nil && rc["copies"] == float64(4) && rc["agreeing"] == float64(4)
	})
	if rc["every"] != "150ms" || rc["last_round"] == nil || len(rc["diverged"].([]any)) != 0 {
		t.Fatalf("the leader's replica_check: %v", rc)
	}
	if d := metricValue(t, nodes[0].base, "batpak_cluster_replicas_diverged"); d != 0 {
		t.Fatalf("diverged %v on agreeing replicas", d)
	}
	for _, f := range nodes[1:] {
		if rc := status(f); rc != nil {
			t.Fatalf("%s (a follower) reports a replica check: %v", f.id, rc)
		}
	}

	// n3's copy is damaged on disk: a payload byte changes.
	seg, at := findPayload(t, filepath.Join(root, "n3"), "acme", `"total":5,"n":7`)
	overwrite(t, seg, at+len(`"total":`), "9")
	var alarm map[string]any
	waitFor(t, 20*time.Second, "an alarm for n3's copy of acme", func() bool {
		for _, a := range status(nodes[0])["diverged"].([]any) {
			alarm = a.(map[string]any)
			return true
		}
		return false
	})
	if alarm["tenant"] != "acme" || alarm["node"] != "n3" || alarm["result"] != "DAMAGED" || !strings.Contains(alarm["detail"].(string), "checksum") {
		t.Fatalf("alarm %v, want n3's copy of acme DAMAGED naming the checksum", alarm)
	}
	if d := metricValue(t, nodes[0].base, "batpak_cluster_replicas_diverged"); d != 1 {
		t.Fatalf("diverged %v, want 1", d)
	}
	// Appends go on meanwhile: the check does not stop the cluster.
	if code, r := call(t, "POST", nodes[0].base+"/v1/tenants/acme/events", key, `{"entity":"order:1","scope":"shop","kind":"1:1","payload":{"total":1}}`); code != 201 {
		t.Fatalf("append during the alarm: %d %v", code, r)
	}
	// The byte restored, the next comparison from the first event finds
	// the copy the same: the alarm lifts.
	overwrite(t, seg, at+len(`"total":`), "5")
	waitFor(t, 20*time.Second, "the alarm lifted", func() bool {
		return len(status(nodes[0])["diverged"].([]any)) == 0 && metricValue(t, nodes[0].base, "batpak_cluster_replicas_diverged") == 0
	})
	// The leader's own copy damaged is an alarm naming the leader.
	seg, at = findPayload(t, filepath.Join(root, "n1"), "acme", `"total":5,"n":3`)
	overwrite(t, seg, at+len(`"total":`), "8")
	waitFor(t, 20*time.Second, "an alarm for n1's own copy", func() bool {
		for _, a := range status(nodes[0])["diverged"].([]any) {
			alarm = a.(map[string]any)
			return true
		}
		return false
	})
	if alarm["node"] != "n1" || alarm["result"] != "DAMAGED" {
		t.Fatalf("alarm %v, want the leader's copy DAMAGED", alarm)
	}
	overwrite(t, seg, at+len(`"total":`), "5")
	waitFor(t, 20*time.Second, "the leader's alarm lifted", func() bool {
		return len(status(nodes[0])["diverged"].([]any)) == 0
	})
	// So is a follower's copy of the control plane: the store of tenants,
	// keys and the rest, which each node's API trusts.
	if code, d := call(t, "GET", nodes[1].base+"/v1/cluster/digest", clusterOperator, ""); code != 200 || d["tenant"] != "(control plane)" || d["events"].(float64) < 1 {
		t.Fatalf("n2's digest of the control plane: %d %v", code, d)
	}
	seg, at = findPayload(t, filepath.Join(root, "n2"), "_system", `"acme"`)
	overwrite(t, seg, at+1, "X")
	waitFor(t, 20*time.Second, "an alarm for n2's copy of the control plane", func() bool {
		for _, a := range status(nodes[0])["diverged"].([]any) {
			alarm = a.(map[string]any)
			return true
		}
		return false
	})
	if alarm["tenant"] != "(control plane)" || alarm["node"] != "n2" || alarm["result"] != "DAMAGED" {
		t.Fatalf("alarm %v, want n2's copy of the control plane DAMAGED", alarm)
	}
	overwrite(t, seg, at+1, "a")
	waitFor(t, 20*time.Second, "the control plane's alarm lifted", func() bool {
		return len(status(nodes[0])["diverged"].([]any)) == 0
	})
}

// findPayload finds, under root, the segment of tenant holding text, and
// where.
func findPayload(t *testing.T, root, tenant, text string) (string, int) {
	t.Helper()
	var seg string
	at := -1
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".seg") || filepath.Base(filepath.Dir(p)) != tenant {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil {
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

// overwrite writes s into file p at offset at.
func overwrite(t *testing.T, p string, at int, s string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(s), int64(at)); err != nil {
		t.Fatal(err)
	}
}

// TestClusterReplicaCheckRecreatedTenant: a follower a moment behind that
// still holds the old incarnation of a tenant the leader deleted and
// created again is not reported as diverged (its copy is of another
// incarnation: not compared), while the other follower's copy of the new
// incarnation agrees.
func TestClusterReplicaCheckRecreatedTenant(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	root := t.TempDir()
	every := func(c *server.Config) { c.Cluster.ReplicaCheckEvery = 100 * time.Millisecond }
	n1 := startClusterLeader(t, root, every)
	startClusterServer(t, root, "n2", false, n1.base, every)
	bind := freeAddr(t)
	link := newRaftCut(t, bind)
	n3 := startClusterServer(t, root, "n3", false, n1.base, every, func(c *server.Config) {
		c.Cluster.Bind, c.Cluster.Advertise = bind, link.ln.Addr().String()
	})
	waitFollowerOf(t, n3, 3)
	waitFor(t, 20*time.Second, "n3 has a URL", func() bool {
		_, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
		for _, m := range st["members"].([]any) {
			if m.(map[string]any)["id"] == "n3" && m.(map[string]any)["url"] != nil {
				return true
			}
		}
		return false
	})
	key, _ := clusterTenantKey(t, n1.base, "acme", `["writer"]`)
	for i := range 20 {
		if code, r := call(t, "POST", n1.base+"/v1/tenants/acme/events", key, fmt.Sprintf(`{"entity":"o-%d","scope":"s","kind":"1:1","payload":{"old":%d}}`, i, i)); code != 201 {
			t.Fatalf("append: %d %v", code, r)
		}
	}
	waitFor(t, 20*time.Second, "a clean round", func() bool {
		return metricValue(t, n1.base, `batpak_cluster_replica_comparisons_total{result="same"}`) >= 2
	})
	link.sever() // n3 lags from now on, but stays current for a few heartbeats
	if code, r := call(t, "DELETE", n1.base+"/v1/admin/tenants/acme?confirm=acme", clusterOperator, ""); code != 204 {
		t.Fatalf("delete: %d %v", code, r)
	}
	key, _ = clusterTenantKey(t, n1.base, "acme", `["writer"]`)
	for i := range 3 {
		if code, r := call(t, "POST", n1.base+"/v1/tenants/acme/events", key, fmt.Sprintf(`{"entity":"o-%d","scope":"s","kind":"1:1","payload":{"new":%d}}`, i, i)); code != 201 {
			t.Fatalf("append: %d %v", code, r)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		_, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
		rc, _ := st["replica_check"].(map[string]any)
		if d, _ := rc["diverged"].([]any); len(d) > 0 {
			t.Fatalf("an alarm for a follower merely behind: %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// n2 is not behind: its copies of the control plane and of the new
	// acme agree.
	waitFor(t, 20*time.Second, "n2's copy of the new acme compared the same", func() bool {
		_, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
		rc, _ := st["replica_check"].(map[string]any)
		return rc["agreeing"] == float64(2) && rc["copies"] == float64(4) && len(rc["diverged"].([]any)) == 0
	})
}

// TestClusterReplicaCheckCopyThatDoesNotOpen: a follower's copy damaged so
// that its store no longer opens (its segment cut short while the store
// was closed, idle) is an alarm naming it, like one it cannot read, and
// the follower's copies of the other tenants are still compared.
func TestClusterReplicaCheckCopyThatDoesNotOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	root := t.TempDir()
	nodes := startCluster3(t, root, func(c *server.Config) {
		c.Cluster.ReplicaCheckEvery = 500 * time.Millisecond
		c.TenantIdleTimeout = time.Second
	})
	key, _ := clusterTenantKey(t, nodes[0].base, "acme", `["writer"]`)
	key2, _ := clusterTenantKey(t, nodes[0].base, "zeta", `["writer"]`)
	for i := range 20 {
		for _, tk := range [][2]string{{"acme", key}, {"zeta", key2}} {
			body := fmt.Sprintf(`{"entity":"order:%d","scope":"shop","kind":"1:1","payload":{"total":5,"n":%d}}`, i%3, i)
			if code, r := call(t, "POST", nodes[0].base+"/v1/tenants/"+tk[0]+"/events", tk[1], body); code != 201 {
				t.Fatalf("append %d: %d %v", i, code, r)
			}
		}
	}
	waitFor(t, 30*time.Second, "every copy compared the same", func() bool {
		return metricValue(t, nodes[0].base, `batpak_cluster_replica_comparisons_total{result="same"}`) >= 4
	})
	closes := metricValue(t, nodes[2].base, "batpak_cluster_store_idle_closes_total")
	waitFor(t, 30*time.Second, "n3 closes its idle stores", func() bool {
		return metricValue(t, nodes[2].base, "batpak_cluster_store_idle_closes_total") >= closes+2
	})
	seg, at := findPayload(t, filepath.Join(root, "n3"), "acme", `"total":5,"n":10}`)
	if err := os.Truncate(seg, int64(at)); err != nil {
		t.Fatal(err)
	}
	if code, d := call(t, "GET", nodes[2].base+"/v1/admin/tenants/acme/digest", clusterOperator, ""); code != 200 || d["damaged"] == nil {
		t.Fatalf("n3's digest of a copy that does not open: %d %v, want 200 with damaged", code, d)
	}
	var alarm map[string]any
	waitFor(t, 20*time.Second, "an alarm for n3's copy of acme", func() bool {
		_, st := call(t, "GET", nodes[0].base+"/v1/cluster", clusterOperator, "")
		rc, _ := st["replica_check"].(map[string]any)
		for _, a := range rc["diverged"].([]any) {
			alarm = a.(map[string]any)
			return true
		}
		return false
	})
	if alarm["tenant"] != "acme" || alarm["node"] != "n3" || alarm["result"] != "DAMAGED" {
		t.Fatalf("alarm %v, want n3's copy of acme DAMAGED", alarm)
	}
	// zeta on n3 is still compared: appended to, its new events are.
	same := metricValue(t, nodes[0].base, `batpak_cluster_replica_comparisons_total{result="same"}`)
	if code, r := call(t, "POST", nodes[0].base+"/v1/tenants/zeta/events", key2, `{"entity":"order:1","scope":"shop","kind":"1:1","payload":{"total":1}}`); code != 201 {
		t.Fatalf("append: %d %v", code, r)
	}
	waitFor(t, 20*time.Second, "zeta's new event compared on both followers", func() bool {
		return metricValue(t, nodes[0].base, `batpak_cluster_replica_comparisons_total{result="same"}`) >= same+2
	})
}
