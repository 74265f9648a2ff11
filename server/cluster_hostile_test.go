package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/httpapi"
)

// raftCut is a TCP proxy in front of one node's raft port: the node
// advertises the proxy's address, so every connection other nodes open to
// it passes here, and cut drops them all and refuses new ones — a network
// partition that keeps the node running.
type raftCut struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	cut    bool
}

func newRaftCut(t *testing.T, target string) *raftCut {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &raftCut{ln: ln, target: target}
	go p.accept()
	t.Cleanup(p.sever)
	return p
}

func (p *raftCut) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			u.Close()
			continue
		}
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); u.Close(); c.Close() }()
		go func() { _, _ = io.Copy(c, u); u.Close(); c.Close() }()
	}
}

// sever cuts the link for good.
func (p *raftCut) sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// freeAddr is a loopback address nothing listens on (a moment ago).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestClusterPartitionedFollowerHonoursRevocation: a follower cut off from
// the others cannot learn that a key was revoked (or a tenant deleted), so
// once it has heard from no leader for a while it must stop serving
// tenant data on its own say-so — a revoked key must not keep reading a
// tenant's events from the node the network split off.
func TestClusterPartitionedFollowerHonoursRevocation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	n2 := startClusterServer(t, root, "n2", false, n1.base)
	bind := freeAddr(t)
	link := newRaftCut(t, bind)
	n3 := startClusterServer(t, root, "n3", false, n1.base, func(c *server.Config) {
		c.Cluster.Bind, c.Cluster.Advertise = bind, link.ln.Addr().String()
	})
	waitFollowerOf(t, n3, 3)
	token, kid := clusterTenantKey(t, n1.base, "acme", `["writer","reader"]`)
	if code, rc := call(t, "POST", n1.base+"/v1/tenants/acme/events", token, `{"entity":"order-1","scope":"s","kind":"1:1","payload":{"secret":1}}`); code != 201 {
		t.Fatalf("append: %d %v", code, rc)
	}
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	readOn := func(n *clusterServer) int {
		req, _ := http.NewRequest("GET", n.base+"/v1/tenants/acme/events?entity=order-1&min_seq=0", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	waitFor(t, 10*time.Second, "n3 serves the key", func() bool { return readOn(n3) == 200 })

	link.sever()
	cut := time.Now()
	req, _ := http.NewRequest("DELETE", n1.base+"/v1/admin/tenants/acme/keys/"+kid, nil)
	req.Header.Set("Authorization", "Bearer "+clusterOperator)
	res, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 204 {
		t.Fatalf("revoke with n3 cut off: %d", res.StatusCode)
	}
	// n3's API answers, but it cannot apply the revocation: the answer
	// names it after the wait.
	if got := res.Header.Get(httpapi.UnconfirmedHeader); got != "n3" {
		t.Errorf("the revocation's %s: %q, want n3", httpapi.UnconfirmedHeader, got)
	}
	// How long the cut-off node goes on serving the revoked key: until it
	// no longer counts as current (5 heartbeat timeouts after it last
	// caught up; 2.5 s with this test's 500 ms).
	for readOn(n3) == 200 && time.Since(cut) < 10*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("n3, cut off, served the revoked key until %s after the cut", time.Since(cut).Round(time.Millisecond))
	waitFor(t, 5*time.Second, "n2, in the majority, refuses the revoked key", func() bool {
		code, _ := call(t, "GET", n2.base+"/v1/tenants/acme/events?entity=order-1", token, "")
		return code == 401
	})
	// Raft's timings here are 300 ms: n3 has heard from no leader for many
	// heartbeats by now, and never will while the link stays cut.
	time.Sleep(3 * time.Second)
	for i := 0; i < 5; i++ {
		if code := readOn(n3); code == 200 {
			t.Fatalf("n3, cut off from the cluster, still serves a key revoked %s ago: %d", 3*time.Second, code)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterURLOfWildcardListen: a node listening on every interface
// has no address of its own to name in the redirects followers send
// while it leads (http://[::]:7070 would send a client, with its
// credential, to a port on its own machine): it refuses to start unless
// cluster.url names one.
func TestClusterURLOfWildcardListen(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.Root = t.TempDir()
	cfg.Listen = "0.0.0.0:0"
	cfg.AllowInsecureRemote = true
	cfg.OperatorToken = clusterOperator
	cfg.Stderr = io.Discard
	cfg.Cluster = &server.ClusterConfig{NodeID: "n1", Bind: "127.0.0.1:0", Bootstrap: true}
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	err = srv.Listen()
	if err == nil || !strings.Contains(err.Error(), "cluster.url") {
		t.Fatalf("listening on 0.0.0.0 without cluster.url: %v, want an error naming cluster.url", err)
	}
}

// TestClusterPolicyUploadsBoundedOnDisk: on a cluster every policy upload
// is a raft entry and a blob on every node, and a revision dropped past
// policy_max_revisions keeps its blob for blob_grace (10m), so one tenant
// admin pushing distinct bundles in a loop used to fill every node's disk
// (measured: 60 bundles of 3.9 MB in 30 s, 226 MiB of blobs and 237 MiB
// of raft.db on each node, none of it charged to the tenant). Uploads are
// charged to the tenant's upload_bytes_per_hour before they are checked:
// past it a push is refused with 429 QUOTA_EXCEEDED and Retry-After, and
// stores nothing, so the blobs on every node stay within what the quota
// let through.
func TestClusterPolicyUploadsBoundedOnDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	root := t.TempDir()
	const maxRevisions = 2
	bundle := func(i int) []byte {
		return tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", fmt.Sprintf("secret-%03d:", i)))
	}
	size := len(bundle(0))
	const allowed = 4
	nodes := startCluster3(t, root, func(c *server.Config) {
		c.PolicyMaxRevisions = maxRevisions
		c.Quotas.UploadBytesPerHour = int64(allowed*size + size/2)
	})
	code, key := call(t, "POST", nodes[0].base+"/v1/admin/tenants", clusterOperator, `{"id":"evil"}`)
	if code != 201 {
		t.Fatal(code, key)
	}
	code, key = call(t, "POST", nodes[0].base+"/v1/admin/tenants/evil/keys", clusterOperator, `{"roles":["admin"]}`)
	if code != 201 {
		t.Fatal(code, key)
	}
	token := key["key"].(string)
	pushed := 0
	for i := 0; i < 10*maxRevisions; i++ {
		b := bundle(i)
		if len(b) != size {
			t.Fatalf("bundle %d is %d bytes, want %d like the others", i, len(b), size)
		}
		code, p := callBytes(t, "PUT", nodes[i%3].base+"/v1/tenants/evil/policy", token, "application/gzip", b)
		switch {
		case code == 200:
			pushed++
		case code == 429 && p["code"] == "QUOTA_EXCEEDED" && p["quota"] == "upload_bytes_per_hour":
		default:
			t.Fatalf("push %d: %d %v, want 200 or 429 QUOTA_EXCEEDED naming upload_bytes_per_hour", i, code, p)
		}
	}
	if pushed != allowed {
		t.Fatalf("%d pushes accepted, want the %d the quota pays for", pushed, allowed)
	}
	for _, n := range nodes {
		held, _ := os.ReadDir(filepath.Join(root, n.id, "cluster", "blobs"))
		if len(held) > allowed {
			t.Errorf("%s holds %d bundles after %d accepted uploads", n.id, len(held), pushed)
		}
	}
}

// TestClusterJoinRefusesBadMembers: a join naming an address no node can
// answer at (no port, a wildcard) or an id that is not one (a NUL, a
// newline) is refused with 400 naming the field, and the membership is
// unchanged: a member nobody answers for would count towards every
// quorum, leaving the cluster a failure short without anyone noticing.
func TestClusterJoinRefusesBadMembers(t *testing.T) {
	n1 := startClusterLeader(t, t.TempDir())
	for _, tc := range []struct{ body, field string }{
		{`{"id":"n9","address":"not an address"}`, "address"},
		{`{"id":"n9","address":"10.0.0.9"}`, "address"},
		{`{"id":"n9","address":"0.0.0.0:7071"}`, "address"},
		{`{"id":"n9","address":"10.0.0.9:0"}`, "address"},
		{`{"id":"n9","address":"` + freeAddr(t) + `"}`, "address"}, // nothing listens there
		{`{"id":"bad\u0000id","address":"127.0.0.1:17599"}`, "id"},
		{`{"id":"n9\n","address":"127.0.0.1:17599"}`, "id"},
		{`{"id":"n9","address":"127.0.0.1:17599","url":"http://0.0.0.0:7070"}`, "url"},
		{`{"id":"n9","address":"127.0.0.1:17599","url":"http://[::]:7070"}`, "url"},
	} {
		code, p := call(t, "POST", n1.base+"/v1/cluster/nodes", clusterOperator, tc.body)
		if code != 400 || p["field"] != tc.field {
			t.Errorf("join %s: %d %v, want 400 naming %s", tc.body, code, p, tc.field)
		}
	}
	code, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
	if ms, _ := st["members"].([]any); code != 200 || len(ms) != 1 {
		t.Fatalf("members after refused joins: %d %v, want n1 alone", code, st["members"])
	}
}

// TestClusterJoinFollowsOnlyLeaderRedirects: a joining node sends the
// operator credential to cluster.join, and follows a member's redirect to
// its leader (a 307 NOT_LEADER problem) with it — but no other redirect:
// a cluster.join that points at something else (a proxy or an old name
// that redirects elsewhere) must not hand the credential on. A join
// through a follower still works.
func TestClusterJoinFollowsOnlyLeaderRedirects(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	var mu sync.Mutex
	var stolen []string
	thief := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		stolen = append(stolen, r.Header.Get("Authorization"))
		mu.Unlock()
		http.Error(w, "thanks", http.StatusTeapot)
	}))
	defer thief.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, thief.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()

	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	n2 := startClusterServer(t, root, "n2", false, n1.base)
	startClusterServer(t, root, "n3", false, n2.base) // through a follower
	startClusterServer(t, root, "n4", false, redirector.URL)
	waitFor(t, 20*time.Second, "n3 joins through the follower n2", func() bool {
		code, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
		ms, _ := st["members"].([]any)
		return code == 200 && len(ms) == 3
	})
	time.Sleep(time.Second) // n4 asks every 2 s; its first ask is long done
	mu.Lock()
	defer mu.Unlock()
	for _, a := range stolen {
		if strings.Contains(a, clusterOperator) {
			t.Fatalf("a redirect that is not a member's NOT_LEADER carried the operator credential to %s", thief.URL)
		}
	}
}

// TestClusterLeaveOfNoMemberIsNotFound: removing a node id that is not a
// member answers 404 instead of 204 — in the disk replacement steps a
// mistyped removal that "succeeded" would let the wiped node rejoin as
// the member it was, still credited with the acknowledgements it lost.
func TestClusterLeaveOfNoMemberIsNotFound(t *testing.T) {
	n1 := startClusterLeader(t, t.TempDir())
	if code, p := call(t, "DELETE", n1.base+"/v1/cluster/nodes/n3", clusterOperator, ""); code != 404 {
		t.Fatalf("removing a node that is not a member: %d %v, want 404", code, p)
	}
	code, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
	if ms, _ := st["members"].([]any); code != 200 || len(ms) != 1 {
		t.Fatalf("members: %d %v", code, st["members"])
	}
}

// TestClusterRefusesDeeperJSONThanReplicasCheck: a cluster node's stores
// check payloads with the same settings on every node (depth 512), so a
// server.max_json_depth above it would be silently ignored there (a
// payload of depth 600 refused although the setting says 1000): the node
// refuses to start with it, naming the setting.
func TestClusterRefusesDeeperJSONThanReplicasCheck(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.Root = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.OperatorToken = clusterOperator
	cfg.Stderr = io.Discard
	cfg.MaxJSONDepth = 1000
	cfg.Cluster = &server.ClusterConfig{NodeID: "n1", Bind: "127.0.0.1:0", Bootstrap: true}
	srv, err := server.New(context.Background(), cfg)
	if err == nil {
		srv.Shutdown(context.Background())
		t.Fatal("a cluster node started with max_json_depth 1000")
	}
	if !strings.Contains(err.Error(), "max_json_depth") {
		t.Fatalf("error %q does not name server.max_json_depth", err)
	}
}

// TestClusterRestartedFollowerHonoursRevocation: a follower restarted
// after a key was revoked while it was down holds the key until the
// leader's replication reaches it (seconds after its heartbeats do): it
// never serves a request with that key meanwhile.
func TestClusterRestartedFollowerHonoursRevocation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	n2 := startClusterServer(t, root, "n2", false, n1.base)
	bind := freeAddr(t)
	fixed := func(c *server.Config) { c.Cluster.Bind = bind }
	n3 := startClusterServer(t, root, "n3", false, n1.base, fixed)
	_ = n2
	waitFollowerOf(t, n3, 3)
	token, kid := clusterTenantKey(t, n1.base, "acme", `["writer","reader"]`)
	code, key2 := call(t, "POST", n1.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["reader"]}`)
	if code != 201 {
		t.Fatalf("issue key: %d %v", code, key2)
	}
	kept := key2["key"].(string)
	if code, rc := call(t, "POST", n1.base+"/v1/tenants/acme/events", token, `{"entity":"order-1","scope":"s","kind":"1:1","payload":{"secret":1}}`); code != 201 {
		t.Fatalf("append: %d %v", code, rc)
	}
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	readOn := func(base string, token string) int {
		req, _ := http.NewRequest("GET", base+"/v1/tenants/acme/events?entity=order-1", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := noFollow.Do(req)
		if err != nil {
			return 0 // not listening yet
		}
		res.Body.Close()
		return res.StatusCode
	}
	waitFor(t, 10*time.Second, "n3 serves the key", func() bool { return readOn(n3.base, token) == 200 && readOn(n3.base, kept) == 200 })
	n3.stop()
	// Enough writes that n3 cannot catch up from the leader's first
	// replication request.
	for i := 0; i < 20; i++ {
		if code, rc := call(t, "POST", n1.base+"/v1/tenants/acme/events", token, `{"entity":"order-2","scope":"s","kind":"1:1","payload":{"n":1}}`); code != 201 {
			t.Fatalf("append: %d %v", code, rc)
		}
	}
	if code, body := call(t, "DELETE", n1.base+"/v1/admin/tenants/acme/keys/"+kid, clusterOperator, ""); code != 204 {
		t.Fatalf("revoke with n3 down: %d %v", code, body)
	}
	time.Sleep(2 * time.Second) // the leader backs off replicating to n3
	n3 = startClusterServer(t, root, "n3", false, n1.base, fixed)
	seen := map[int]int{}
	for start := time.Now(); time.Since(start) < 8*time.Second; time.Sleep(5 * time.Millisecond) {
		c := readOn(n3.base, token)
		seen[c]++
		if c == 200 {
			t.Fatalf("n3, restarted after the key's revocation, served it (%v)", seen)
		}
	}
	t.Logf("n3's answers after its restart: %v", seen)
	// Caught up, n3 serves the key still valid itself (the revoked one
	// it sends to the leader, which refuses it).
	if c := readOn(n3.base, kept); c != 200 {
		t.Fatalf("n3 does not serve a valid key %s after its restart: %d", 8*time.Second, c)
	}
}
