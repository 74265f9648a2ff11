package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server"
)

// lockedLog is a log destination safe for the server's goroutines.
type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

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
	logs := &lockedLog{}
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
