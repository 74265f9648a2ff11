package server_test

import (
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server"
)

// TestClusterReferencedBlobMissing: a policy bundle the control plane
// names as a tenant's active policy that is gone from the node's
// cluster/blobs/ (lost with a disk, removed by hand, a node restored from
// a snapshot without it) shows on /metrics as
// batpak_cluster_blobs_missing and in the log as an error naming the
// tenant and the digest, once; uploading the same bundle again brings it
// back and the gauge to 0. So does a kept plugin version's module, and
// the same version pushed again.
func TestClusterReferencedBlobMissing(t *testing.T) {
	root := t.TempDir()
	logs := &testenv.Buffer{}
	n1 := startClusterLeader(t, root, func(c *server.Config) {
		c.Cluster.BlobGrace = time.Hour
		c.Cluster.BlobCollectEvery = 100 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	if code, body := call(t, "POST", n1.base+"/v1/admin/tenants", clusterOperator, `{"id":"acme"}`); code != 201 {
		t.Fatalf("create tenant: %d %v", code, body)
	}
	code, k := call(t, "POST", n1.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["admin"]}`)
	if code != 201 {
		t.Fatalf("issue key: %d %v", code, k)
	}
	admin := k["key"].(string)
	bundle := tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", "secret:"))
	rev := revisionOf(bundle)
	upload := func() {
		t.Helper()
		if code, body := callBytes(t, "PUT", n1.base+"/v1/tenants/acme/policy", admin, "application/gzip", bundle); code != 200 || body["active"] != rev {
			t.Fatalf("policy upload: %d %v", code, body)
		}
	}
	upload()
	waitFor(t, 5*time.Second, "a collection finds nothing missing", func() bool {
		return metricValue(t, n1.base, "batpak_cluster_blobs_missing") == 0
	})
	if err := os.Remove(filepath.Join(root, "n1", "cluster", "blobs", rev)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the missing bundle is counted", func() bool {
		return metricValue(t, n1.base, "batpak_cluster_blobs_missing") == 1
	})
	time.Sleep(300 * time.Millisecond) // a few more collections
	out := logs.String()
	if n := strings.Count(out, "blobs the control plane references are missing"); n != 1 {
		t.Fatalf("the missing bundle logged %d times, want once:\n%s", n, out)
	}
	for _, want := range []string{rev, "tenant acme's active policy", "level=ERROR"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the log does not name %q:\n%s", want, out)
		}
	}
	// The active bundle pushed again is stored again, though it is
	// compiled and active: that is the repair the log names.
	upload()
	waitFor(t, 5*time.Second, "the bundle uploaded again is no longer missing", func() bool {
		return metricValue(t, n1.base, "batpak_cluster_blobs_missing") == 0
	})

	counter := withCustomSection(fixture(t, "counter"), "missing")
	digest := plugins.Digest(counter)
	up, _ := json.Marshal(map[string]any{"manifest": manifestOf(t, "count", "1.0.0", "projection", counter, nil),
		"module": base64.StdEncoding.EncodeToString(counter), "activate": true})
	pushPlugin := func() {
		t.Helper()
		if code, body := callBytes(t, "POST", n1.base+"/v1/tenants/acme/plugins", admin, "application/json", up); code != 200 {
			t.Fatalf("plugin upload: %d %v", code, body)
		}
	}
	pushPlugin()
	if err := os.Remove(filepath.Join(root, "n1", "cluster", "blobs", digest)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the missing module is counted", func() bool {
		return metricValue(t, n1.base, "batpak_cluster_blobs_missing") == 1
	})
	if out := logs.String(); !strings.Contains(out, "tenant acme's plugin count 1.0.0") {
		t.Fatalf("the log does not name the plugin version:\n%s", out)
	}
	pushPlugin()
	waitFor(t, 5*time.Second, "the module uploaded again is no longer missing", func() bool {
		return metricValue(t, n1.base, "batpak_cluster_blobs_missing") == 0
	})
}

// TestClusterBlobCollectionWaitsForQuorum: a node that knows no leader
// (the others stopped) removes nothing, however old its unreferenced
// blobs: an entry of its log may yet be committed by the next leader and
// reference one (an upload whose change waited for a quorum longer than
// the grace period); the skipped collections are counted.
func TestClusterBlobCollectionWaitsForQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	const grace = time.Second
	root := t.TempDir()
	nodes := startCluster3(t, root, func(c *server.Config) {
		c.Cluster.BlobGrace = grace
		c.Cluster.BlobCollectEvery = 100 * time.Millisecond
	})
	l := leaderOf(t, nodes, 10*time.Second)
	if code, body := call(t, "POST", l.base+"/v1/admin/tenants", clusterOperator, `{"id":"acme"}`); code != 201 {
		t.Fatalf("create tenant: %d %v", code, body)
	}
	code, k := call(t, "POST", l.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["admin"]}`)
	if code != 201 {
		t.Fatalf("issue key: %d %v", code, k)
	}
	admin := k["key"].(string)
	wasm := withCustomSection(fixture(t, "counter"), "quorum")
	digest := plugins.Digest(wasm)
	up, _ := json.Marshal(map[string]any{"manifest": manifestOf(t, "count", "1.0.0", "projection", wasm, nil),
		"module": base64.StdEncoding.EncodeToString(wasm), "activate": false})
	if code, body := callBytes(t, "POST", l.base+"/v1/tenants/acme/plugins", admin, "application/json", up); code != 200 {
		t.Fatalf("plugin upload: %d %v", code, body)
	}
	if code, body := call(t, "DELETE", l.base+"/v1/tenants/acme/plugins/count", admin, ""); code/100 != 2 {
		t.Fatalf("delete: %d %v", code, body)
	}
	var survivor *clusterServer
	for _, n := range nodes {
		if n != l {
			n.stop()
		} else {
			survivor = n
		}
	}
	file := filepath.Join(root, survivor.id, "cluster", "blobs", digest)
	waitFor(t, 10*time.Second, "the survivor knows no leader", func() bool {
		code, st := call(t, "GET", survivor.base+"/v1/cluster", clusterOperator, "")
		ld, _ := st["leader"].(map[string]any)
		return code == 200 && (ld == nil || ld["id"] == "" || ld["id"] == nil)
	})
	skipped := metricValue(t, survivor.base, "batpak_cluster_blob_collections_skipped_total")
	time.Sleep(3 * grace)
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("a node without a leader removed an unreferenced blob past the grace period: %v", err)
	}
	if got := metricValue(t, survivor.base, "batpak_cluster_blob_collections_skipped_total"); got <= skipped {
		t.Fatalf("skipped collections: %v, then %v; want more", skipped, got)
	}
}
