package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/certroots"
	"github.com/batpak-go/batpak/internal/testca"
	"github.com/batpak-go/batpak/server"
)

// trustTestCA makes a private CA for the test and has the test's cluster
// client (clusterClient, which call uses) trust it until the test ends.
func trustTestCA(t *testing.T) testca.Files {
	t.Helper()
	ca := testca.New(t, t.TempDir())
	roots, err := certroots.Load(ca.CA)
	if err != nil {
		t.Fatal(err)
	}
	plain := clusterClient
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	clusterClient = &http.Client{Timeout: 20 * time.Second, Transport: tr}
	t.Cleanup(func() { tr.CloseIdleConnections(); clusterClient = plain })
	return ca
}

// TestClusterMembersOverHTTPSWithAPrivateCA: members whose https
// certificates (server.tls_cert) a private CA signed, given that CA as
// cluster.api_ca, join through a member's https URL, the leader's replica
// check reads the followers' digests over https, and a follower's console
// forwards a change to the https leader.
func TestClusterMembersOverHTTPSWithAPrivateCA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	ca := trustTestCA(t)

	// startCluster3 waits until n2 and n3 have joined through n1's https
	// URL and every member's URL is recorded.
	nodes := startCluster3(t, t.TempDir(), func(c *server.Config) {
		c.TLSCert, c.TLSKey = ca.Cert, ca.Key
		c.Cluster.APICA = ca.CA
		c.Cluster.ReplicaCheckEvery = 150 * time.Millisecond
	})
	for _, n := range nodes {
		if !strings.HasPrefix(n.base, "https://") {
			t.Fatalf("%s serves %s, want https", n.id, n.base)
		}
	}
	key, _ := clusterTenantKey(t, nodes[0].base, "acme", `["writer"]`)
	for i := range 5 {
		body := fmt.Sprintf(`{"entity":"order:%d","scope":"shop","kind":"1:1","payload":{"n":%d}}`, i, i)
		if code, r := call(t, "POST", nodes[0].base+"/v1/tenants/acme/events", key, body); code != 201 {
			t.Fatalf("append %d: %d %v", i, code, r)
		}
	}
	waitFor(t, 20*time.Second, "the replica check compared both followers' copies over https", func() bool {
		code, st := call(t, "GET", nodes[0].base+"/v1/cluster", clusterOperator, "")
		rc, _ := st["replica_check"].(map[string]any)
		return code == 200 && rc != nil && rc["copies"] == float64(4) && rc["agreeing"] == float64(4)
	})

	// A change through a follower's console is forwarded to the leader.
	f := nodes[1]
	cookie, csrf := consoleSignIn(t, clusterClient.Transport, f.base)
	var res *http.Response
	var b []byte
	waitFor(t, 10*time.Second, "the follower's console forwards to the https leader", func() bool {
		res, b = consoleDo(t, clusterClient.Transport, "POST", f.base+"/console/api/v1/admin/tenants", f.base, cookie, csrf, `{"id":"beta"}`)
		return res.StatusCode != http.StatusServiceUnavailable
	})
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("a change through the follower's console: %d %s, want 201 from the leader", res.StatusCode, b)
	}
	if code, _ := call(t, "GET", nodes[0].base+"/v1/admin/tenants/beta", clusterOperator, ""); code != 200 {
		t.Fatalf("the tenant made through the follower's console is not on the leader: %d", code)
	}

	// The session lives on n2; n3 relays it there over https, trusting
	// the private CA, and a change through n3 is made.
	other := nodes[2]
	if res, b := consoleDo(t, clusterClient.Transport, "GET", other.base+"/console/overview", other.base, cookie, csrf, ""); res.StatusCode != 200 {
		t.Fatalf("%s's session through %s over https: %d %s", f.id, other.id, res.StatusCode, b)
	}
	if res, b := consoleDo(t, clusterClient.Transport, "POST", other.base+"/console/api/v1/admin/tenants", other.base, cookie, csrf, `{"id":"gamma"}`); res.StatusCode != http.StatusCreated {
		t.Fatalf("a change through %s of %s's session: %d %s", other.id, f.id, res.StatusCode, b)
	}
}

// Without cluster.api_ca, members trust the CA of their node-to-node TLS
// (cluster.tls_ca) for each other's https certificates too.
func TestClusterAPICAFallsBackToTLSCA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	ca := trustTestCA(t)
	// startCluster3 waits until n2 and n3 have joined through n1's https URL.
	startCluster3(t, t.TempDir(), func(c *server.Config) {
		c.TLSCert, c.TLSKey = ca.Cert, ca.Key
		c.Cluster.TLSCert, c.Cluster.TLSKey, c.Cluster.TLSCA = ca.Cert, ca.Key, ca.CA
	})
}

// A cluster.api_ca that cannot be used stops the server at start, naming
// the setting and the file.
func TestClusterAPICAThatCannotBeUsed(t *testing.T) {
	dir := t.TempDir()
	notCA := filepath.Join(dir, "not-a-ca.pem")
	if err := os.WriteFile(notCA, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{notCA, filepath.Join(dir, "missing.pem")} {
		cfg := server.DefaultConfig()
		cfg.Root, cfg.Listen, cfg.OperatorToken, cfg.Stderr = t.TempDir(), "127.0.0.1:0", clusterOperator, io.Discard
		cfg.Cluster = &server.ClusterConfig{NodeID: "n1", Bind: "127.0.0.1:0", Bootstrap: true, APICA: file}
		srv, err := server.New(context.Background(), cfg)
		if err == nil {
			_ = srv.Shutdown(context.Background())
			t.Fatalf("cluster.api_ca %s: the server started", file)
		}
		if !strings.Contains(err.Error(), "cluster.api_ca") || !strings.Contains(err.Error(), file) {
			t.Fatalf("cluster.api_ca %s: %v, want an error naming the setting and the file", file, err)
		}
	}
}
