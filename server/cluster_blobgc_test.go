package server_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server"
)

// withCustomSection returns wasm with a custom section carrying tag
// appended: a valid module with other bytes (another digest).
func withCustomSection(wasm []byte, tag string) []byte {
	name := "batpak-test"
	content := append([]byte{byte(len(name))}, name...)
	content = append(content, tag...)
	out := append([]byte{}, wasm...)
	out = append(out, 0x00, byte(len(content))) // content < 128 bytes: one LEB128 byte
	return append(out, content...)
}

// metricValue reads one unlabelled metric from a node's /metrics.
func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	v, ok := metricOf(t, base, name)
	if !ok {
		t.Fatalf("%s/metrics has no %s", base, name)
	}
	return v
}

// TestClusterBlobCollection: on a three-node cluster, a deleted plugin
// version's module leaves every node's cluster/blobs/ once older than
// the grace period, while the active version's module and the policy
// bundle stay; a module deleted within the grace period is still there;
// the deleted version's module uploaded again is back on every node and
// stays; deleting the tenant removes its bundle and modules from every
// node; a tenant's loop of uploading a new version and deleting it
// leaves nothing behind; /metrics counts the removals.
func TestClusterBlobCollection(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	const grace = 3 * time.Second
	root := t.TempDir()
	nodes := startCluster3(t, root, func(c *server.Config) {
		c.Cluster.BlobGrace = grace
		c.Cluster.BlobCollectEvery = 200 * time.Millisecond
	})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	blobFile := func(n *clusterServer, d string) string { return filepath.Join(root, n.id, "cluster", "blobs", d) }
	held := func(n *clusterServer, d string) bool {
		_, err := os.Stat(blobFile(n, d))
		return err == nil
	}
	onEvery := func(d string, want bool) bool {
		for _, n := range nodes {
			if held(n, d) != want {
				return false
			}
		}
		return true
	}
	tenant := func(id string) string {
		if code, body := call(t, "POST", n2.base+"/v1/admin/tenants", clusterOperator, `{"id":"`+id+`"}`); code != 201 {
			t.Fatalf("create tenant: %d %v", code, body)
		}
		code, k := call(t, "POST", n3.base+"/v1/admin/tenants/"+id+"/keys", clusterOperator, `{"roles":["admin"]}`)
		if code != 201 {
			t.Fatalf("issue key: %d %v", code, k)
		}
		key := k["key"].(string)
		waitFor(t, 5*time.Second, "the key works on every node", func() bool {
			for _, n := range nodes {
				if code, _ := call(t, "GET", n.base+"/v1/tenants/"+id+"/stats", key, ""); code != 200 {
					return false
				}
			}
			return true
		})
		return key
	}
	counter := fixture(t, "counter")
	push := func(id, key, version string, wasm []byte, activate bool) string {
		t.Helper()
		up, _ := json.Marshal(map[string]any{"manifest": manifestOf(t, "count", version, "projection", wasm, nil),
			"module": base64.StdEncoding.EncodeToString(wasm), "activate": activate})
		if code, body := callBytes(t, "POST", n3.base+"/v1/tenants/"+id+"/plugins", key, "application/json", up); code != 200 {
			t.Fatalf("upload of count %s: %d %v", version, code, body)
		}
		return plugins.Digest(wasm)
	}
	deleteVersion := func(id, key, version string) {
		t.Helper()
		if code, body := call(t, "DELETE", n2.base+"/v1/tenants/"+id+"/plugins/count?version="+version, key, ""); code/100 != 2 {
			t.Fatalf("delete of count %s: %d %v", version, code, body)
		}
	}

	admin := tenant("acme")
	v1, v2 := withCustomSection(counter, "v1"), withCustomSection(counter, "v2")
	d1 := push("acme", admin, "1.0.0", v1, true)
	d2 := push("acme", admin, "2.0.0", v2, true)
	bundle := tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", "secret:"))
	rev := revisionOf(bundle)
	if code, body := callBytes(t, "PUT", n2.base+"/v1/tenants/acme/policy", admin, "application/gzip", bundle); code != 200 || body["active"] != rev {
		t.Fatalf("policy upload: %d %v", code, body)
	}
	for _, d := range []string{d1, d2, rev} {
		waitFor(t, 10*time.Second, "every node holds "+d, func() bool { return onEvery(d, true) })
	}

	// Within the grace period a deleted version's module stays.
	put := time.Now()
	d3 := push("acme", admin, "3.0.0", withCustomSection(counter, "v3"), false)
	waitFor(t, 10*time.Second, "every node holds the third module", func() bool { return onEvery(d3, true) })
	deleteVersion("acme", admin, "3.0.0")
	time.Sleep(1500 * time.Millisecond) // collections run (every 200ms, and after the deletion)
	if held, age := onEvery(d3, true), time.Since(put); age < grace && !held {
		t.Fatalf("a module deleted %s after its upload was removed within the grace period (%s)", age, grace)
	} else if age >= grace {
		t.Logf("the check of a young deleted module ran %s after its upload, past the grace period: skipped", age)
	}

	// Past it, deleted versions' modules leave every node; the active
	// version's module and the bundle stay.
	deleteVersion("acme", admin, "1.0.0")
	for _, d := range []string{d1, d3} {
		waitFor(t, grace+15*time.Second, "every node removes "+d, func() bool { return onEvery(d, false) })
	}
	for _, d := range []string{d2, rev} {
		if !onEvery(d, true) {
			t.Fatalf("a referenced blob %s was removed from a node", d)
		}
	}

	// The deleted version uploaded again: back on every node, and kept
	// past the grace period (referenced).
	if d := push("acme", admin, "1.0.0", v1, false); d != d1 {
		t.Fatalf("upload again: digest %s, want %s", d, d1)
	}
	waitFor(t, 10*time.Second, "every node holds the module uploaded again", func() bool { return onEvery(d1, true) })
	time.Sleep(grace + time.Second)
	for _, d := range []string{d1, d2, rev} {
		if !onEvery(d, true) {
			t.Fatalf("a referenced blob %s was removed from a node", d)
		}
	}
	if got := metricValue(t, n1.base, "batpak_cluster_blobs_collected_total"); got < 2 {
		t.Fatalf("batpak_cluster_blobs_collected_total on %s is %v, want at least 2", n1.id, got)
	}

	// A loop of uploads and deletions leaves nothing behind.
	loopKey := tenant("beta")
	base := push("beta", loopKey, "base", withCustomSection(counter, "beta"), true)
	var loop []string
	most := 0
	for i := 0; i < 12; i++ {
		v := fmt.Sprintf("l%d", i)
		loop = append(loop, push("beta", loopKey, v, withCustomSection(counter, "loop "+v), false))
		deleteVersion("beta", loopKey, v)
		ents, _ := os.ReadDir(filepath.Join(root, n1.id, "cluster", "blobs"))
		most = max(most, len(ents))
	}
	for _, d := range loop {
		waitFor(t, grace+15*time.Second, "every node removes the loop's module "+d, func() bool { return onEvery(d, false) })
	}
	if !onEvery(base, true) {
		t.Fatal("the loop tenant's active module was removed")
	}
	t.Logf("the upload/delete loop held at most %d blobs on %s; none of its modules is left", most, n1.id)

	// The tenant deleted: its bundle and modules leave every node.
	if code, body := call(t, "DELETE", n1.base+"/v1/admin/tenants/acme?confirm=acme", clusterOperator, ""); code/100 != 2 {
		t.Fatalf("delete tenant: %d %v", code, body)
	}
	for _, d := range []string{d1, d2, rev} {
		waitFor(t, grace+15*time.Second, "every node removes the deleted tenant's "+d, func() bool { return onEvery(d, false) })
	}
	if !onEvery(base, true) {
		t.Fatal("another tenant's module was removed with the deleted tenant's")
	}
	for _, n := range nodes {
		ents, err := os.ReadDir(filepath.Join(root, n.id, "cluster", "blobs"))
		if err != nil || len(ents) != 1 {
			t.Fatalf("%s holds %d blobs (%v), want only the live tenant's module", n.id, len(ents), err)
		}
	}
}
