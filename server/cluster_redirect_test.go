package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server"
)

// TestClusterRedirectKeepsEscapedPath: a follower's redirect names the
// same route on the leader, with the path's escapes kept: an entity
// whose name holds a "/" (sent as %2F) is still that entity there, not a
// path one segment longer.
func TestClusterRedirectKeepsEscapedPath(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	n2 := startClusterServer(t, root, "n2", false, n1.base)
	waitFor(t, 20*time.Second, "n2 a member that knows the leader's URL", func() bool {
		code, st := call(t, "GET", n2.base+"/v1/cluster", clusterOperator, "")
		ms, _ := st["members"].([]any)
		return code == 200 && len(ms) == 2 && st["state"] == "follower"
	})
	if code, body := call(t, "POST", n1.base+"/v1/admin/tenants", clusterOperator, `{"id":"acme"}`); code != 201 {
		t.Fatalf("create tenant: %d %v", code, body)
	}
	code, key := call(t, "POST", n1.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["writer","reader"]}`)
	if code != 201 {
		t.Fatalf("issue key: %d %v", code, key)
	}
	token := key["key"].(string)
	if code, rc := call(t, "POST", n1.base+"/v1/tenants/acme/events", token, `{"entity":"a/b","scope":"s","kind":"1:1","payload":{}}`); code != 201 {
		t.Fatalf("append: %d %v", code, rc)
	}
	path := "/v1/tenants/acme/entities/a%2Fb/events?consistency=linearizable"
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var loc string
	waitFor(t, 10*time.Second, "n2 redirects a linearizable read to n1", func() bool {
		req, _ := http.NewRequest("GET", n2.base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		loc = res.Header.Get("Location")
		return res.StatusCode == http.StatusTemporaryRedirect && loc != ""
	})
	if want := n1.base + path; loc != want {
		t.Fatalf("Location %q, want %q", loc, want)
	}
	code, body := call(t, "GET", n2.base+path, token, "")
	if evs, _ := body["events"].([]any); code != 200 || len(evs) != 1 {
		t.Fatalf("linearizable read of entity a/b through the follower: %d %v", code, body)
	}
}

// TestClusterBootstrapAndJoinRefused: a node configured both to form a
// new cluster and to join one is refused at start: it would otherwise
// bootstrap a cluster of its own, never join, and acknowledge writes a
// second, independent leader takes.
func TestClusterBootstrapAndJoinRefused(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.Root = filepath.Join(t.TempDir(), "n1")
	cfg.Listen = "127.0.0.1:0"
	cfg.OperatorToken = clusterOperator
	cfg.Stderr = io.Discard
	cfg.Cluster = &server.ClusterConfig{NodeID: "n1", Bind: "127.0.0.1:0", Bootstrap: true, Join: "http://127.0.0.1:1"}
	srv, err := server.New(context.Background(), cfg)
	if err == nil {
		srv.Shutdown(context.Background())
		t.Fatal("a node with both cluster.bootstrap and cluster.join started")
	}
	if !strings.Contains(err.Error(), "cluster.bootstrap") || !strings.Contains(err.Error(), "cluster.join") {
		t.Fatalf("error %q does not name cluster.bootstrap and cluster.join", err)
	}
}

// TestClusterJoinWithAnotherCredentialEnds: a node joining with an
// operator credential the cluster does not hold is refused (401) for
// good: its Serve ends with an error saying every node takes the same
// credential, instead of retrying for ever, and the cluster is unchanged.
func TestClusterJoinWithAnotherCredentialEnds(t *testing.T) {
	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	n2 := startClusterServer(t, root, "n2", false, n1.base, func(c *server.Config) {
		c.OperatorToken = "bpko_" + strings.Repeat("z", 52)
	})
	select {
	case err := <-n2.done:
		n2.done <- err
		if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "same operator credential") {
			t.Fatalf("n2's Serve ended with %v, want the refusal naming the operator credential", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a node joining with another operator credential still runs after 30s")
	}
	if code, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, ""); code != 200 || len(st["members"].([]any)) != 1 {
		t.Fatalf("the cluster after the refused join: %d %v", code, st)
	}
}

// TestClusterJoinRedirectKeepsHTTPS: a join request carries the operator
// credential; a member's redirect to its leader (307 NOT_LEADER) is
// followed with it, but never from https to plain http, and no other
// redirect is.
func TestClusterJoinRedirectKeepsHTTPS(t *testing.T) {
	// redirect makes r the hop a member's 307 NOT_LEADER answer leads to.
	redirect := func(r *http.Request) *http.Request {
		r.Response = &http.Response{StatusCode: http.StatusTemporaryRedirect,
			Body: io.NopCloser(strings.NewReader(`{"code":"NOT_LEADER","detail":"this cluster node does not lead"}`))}
		return r
	}
	first, _ := http.NewRequest("POST", "https://n1.example:7070/v1/cluster/nodes", nil)
	first.Header.Set("Authorization", "Bearer "+clusterOperator)
	down, _ := http.NewRequest("POST", "http://n2.example:7070/v1/cluster/nodes", nil)
	if err := server.JoinRedirect(redirect(down), []*http.Request{first}); err == nil || down.Header.Get("Authorization") != "" {
		t.Fatalf("https → http: %v, Authorization %q; want refused, without the credential", err, down.Header.Get("Authorization"))
	}
	up, _ := http.NewRequest("POST", "https://n2.example:7070/v1/cluster/nodes", nil)
	if err := server.JoinRedirect(redirect(up), []*http.Request{first}); err != nil || up.Header.Get("Authorization") != "Bearer "+clusterOperator {
		t.Fatalf("https → https: %v, Authorization %q; want followed with the credential", err, up.Header.Get("Authorization"))
	}
	other, _ := http.NewRequest("POST", "https://elsewhere.example/v1/cluster/nodes", nil)
	other.Response = &http.Response{StatusCode: http.StatusFound, Body: io.NopCloser(strings.NewReader("moved"))}
	if err := server.JoinRedirect(other, []*http.Request{first}); err == nil || other.Header.Get("Authorization") != "" {
		t.Fatalf("a redirect that is not NOT_LEADER: %v, Authorization %q; want refused, without the credential", err, other.Header.Get("Authorization"))
	}
	plain, _ := http.NewRequest("POST", "http://n1.example:7070/v1/cluster/nodes", nil)
	plain.Header.Set("Authorization", "Bearer "+clusterOperator)
	next, _ := http.NewRequest("POST", "http://n2.example:7070/v1/cluster/nodes", nil)
	if err := server.JoinRedirect(redirect(next), []*http.Request{plain}); err != nil || next.Header.Get("Authorization") == "" {
		t.Fatalf("http → http: %v; want followed with the credential", err)
	}
	hops := []*http.Request{first, up, up, up}
	if err := server.JoinRedirect(up, hops); err == nil {
		t.Fatal("a fifth hop was followed")
	}
}

// TestClusterMemberRecordsAreNotTenants: the records a node keeps of the
// members' URLs (in the system store, beside the control plane's) are
// not read as control-plane changes: no phantom tenant appears.
func TestClusterMemberRecordsAreNotTenants(t *testing.T) {
	root := t.TempDir()
	n1 := startClusterServer(t, root, "n1", true, "")
	waitFor(t, 10*time.Second, "n1 leads and knows its URL", func() bool {
		code, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
		ms, _ := st["members"].([]any)
		if code != 200 || st["state"] != "leader" || len(ms) != 1 {
			return false
		}
		u, _ := ms[0].(map[string]any)["url"].(string)
		return u != ""
	})
	code, body := call(t, "GET", n1.base+"/v1/admin/tenants", clusterOperator, "")
	if code != 200 {
		t.Fatalf("list tenants: %d %v", code, body)
	}
	if ts, _ := body["tenants"].([]any); len(ts) != 0 {
		t.Fatalf("tenants of a cluster nobody created a tenant in: %v", ts)
	}
}

// TestClusterLeaveSticks: a node the operator removed stays removed,
// though it still runs with cluster.join: joining is what a node does on
// its first start, not whenever it finds itself outside the cluster. The
// removed node says so: its status is removed, its tenant requests and
// /readyz answer 421 NOT_A_MEMBER (not 503 NOT_LEADER, which clients
// retry for ever, nor its stale reads). The cluster's last voter cannot
// be removed: 409, not 500.
func TestClusterLeaveSticks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	n2 := startClusterServer(t, root, "n2", false, n1.base)
	token, _ := clusterTenantKey(t, n1.base, "acme", `["reader"]`)
	members := func() int {
		_, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
		ms, _ := st["members"].([]any)
		return len(ms)
	}
	waitFor(t, 20*time.Second, "n2 joined", func() bool { return members() == 2 })
	// A member is one that has caught up with its leader since it was
	// added (one removed before that is not told it was: its first
	// configurations may be from before its addition).
	waitFor(t, 20*time.Second, "n2 caught up", func() bool {
		_, st := callOnce(t, "GET", n2.base+"/v1/cluster", clusterOperator, "")
		c, ok := st["caught_up"].(float64)
		return ok && c >= 0
	})
	if code, body := call(t, "DELETE", n1.base+"/v1/cluster/nodes/n2", clusterOperator, ""); code != 204 {
		t.Fatalf("leave n2: %d %v", code, body)
	}
	waitFor(t, 5*time.Second, "n2 removed", func() bool { return members() == 1 })
	time.Sleep(5 * time.Second) // n2's join loop asks every 2 s
	if n := members(); n != 1 {
		t.Fatalf("%d members 5 s after n2 left, want n2 to stay out", n)
	}
	if code, st := callOnce(t, "GET", n2.base+"/v1/cluster", clusterOperator, ""); code != 200 || st["removed"] != true {
		t.Fatalf("the removed node's status: %d removed=%v, want it to say it was removed", code, st["removed"])
	}
	for _, path := range []string{"/v1/tenants/acme/stats", "/readyz"} {
		token := token
		if path == "/readyz" {
			token = ""
		}
		if code, p := callOnce(t, "GET", n2.base+path, token, ""); code != http.StatusMisdirectedRequest || p["code"] != "NOT_A_MEMBER" {
			t.Fatalf("GET %s on the removed node: %d %v, want 421 NOT_A_MEMBER", path, code, p)
		}
	}
	if code, p := call(t, "DELETE", n1.base+"/v1/cluster/nodes/n1", clusterOperator, ""); code != http.StatusConflict || !strings.Contains(fmt.Sprint(p["detail"]), "last voting member") {
		t.Fatalf("removing the last voter: %d %v, want 409 naming it", code, p)
	}
	if code, _ := call(t, "GET", n1.base+"/v1/tenants/acme/stats", token, ""); code != 200 {
		t.Fatalf("the remaining member after the refused removal: %d", code)
	}
}

// TestClusterMinSeqWaitsCountAsSubscriptions: a read waiting for a
// sequence not yet written holds its connection like a stream, so it
// takes one of the tenant's max_subscriptions while it waits: a tenant
// cannot hold the server's connections with such reads.
func TestClusterMinSeqWaitsCountAsSubscriptions(t *testing.T) {
	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	if code, body := call(t, "POST", n1.base+"/v1/admin/tenants", clusterOperator, `{"id":"acme","quotas":{"max_subscriptions":1}}`); code != 201 {
		t.Fatalf("create tenant: %d %v", code, body)
	}
	code, key := call(t, "POST", n1.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["reader"]}`)
	if code != 201 {
		t.Fatalf("issue key: %d %v", code, key)
	}
	token := key["key"].(string)
	url := n1.base + "/v1/tenants/acme/stats?min_seq=1000000"
	first := make(chan int, 1)
	go func() {
		code, _ := callOnce(t, "GET", url, token, "")
		first <- code
	}()
	time.Sleep(300 * time.Millisecond) // the first read is waiting
	start := time.Now()
	code, body := callOnce(t, "GET", url, token, "")
	if code != http.StatusTooManyRequests || time.Since(start) > 2*time.Second {
		t.Fatalf("a second waiting read with max_subscriptions 1: %d %v after %s, want 429 at once", code, body, time.Since(start))
	}
	if code := <-first; code != http.StatusServiceUnavailable {
		t.Fatalf("the first waiting read: %d, want 503 NOT_CAUGHT_UP after read_wait", code)
	}
}

// TestClusterPlainRaftNeedsLoopback: node-to-node traffic without TLS
// lets anyone who reaches the raft port append to the log; like the API's
// listen address, a non-loopback cluster.bind without cluster TLS is
// refused unless server.allow_insecure_remote says so.
func TestClusterPlainRaftNeedsLoopback(t *testing.T) {
	for _, bind := range []string{"0.0.0.0:0", ":0"} {
		cfg := server.DefaultConfig()
		cfg.Root = filepath.Join(t.TempDir(), "n1")
		cfg.Listen = "127.0.0.1:0"
		cfg.OperatorToken = clusterOperator
		cfg.Stderr = io.Discard
		cfg.Cluster = &server.ClusterConfig{NodeID: "n1", Bind: bind, Advertise: "127.0.0.1:7999", Bootstrap: true}
		srv, err := server.New(context.Background(), cfg)
		if err == nil {
			srv.Shutdown(context.Background())
			t.Fatalf("cluster.bind %s without TLS started", bind)
		}
		if !strings.Contains(err.Error(), "cluster.bind") || !strings.Contains(err.Error(), "allow_insecure_remote") {
			t.Fatalf("cluster.bind %s: error %q does not name cluster.bind and the way out", bind, err)
		}
		cfg.AllowInsecureRemote = true
		srv, err = server.New(context.Background(), cfg)
		if err != nil {
			t.Fatalf("cluster.bind %s with allow_insecure_remote: %v", bind, err)
		}
		srv.Shutdown(context.Background())
	}
}

// TestClusterStalePlaneFailsClosed: a node whose control plane stopped
// applying the system store (a change kind from a newer server, a damaged
// record) cannot learn of revoked keys or suspended tenants: it refuses
// authenticated requests (503, not ready) instead of answering them from
// credentials that may no longer be valid.
func TestClusterStalePlaneFailsClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	n2 := startClusterServer(t, root, "n2", false, n1.base)
	if code, body := call(t, "POST", n1.base+"/v1/admin/tenants", clusterOperator, `{"id":"acme"}`); code != 201 {
		t.Fatalf("create tenant: %d %v", code, body)
	}
	code, key := call(t, "POST", n1.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["reader"]}`)
	if code != 201 {
		t.Fatalf("issue key: %d %v", code, key)
	}
	token := key["key"].(string)
	waitFor(t, 20*time.Second, "the key works on n2", func() bool {
		code, _ := callOnce(t, "GET", n2.base+"/v1/tenants/acme/stats", token, "")
		return code == 200
	})
	// A change this version does not know, as a newer leader would write.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n1.srv.ClusterSystemStore().Append(ctx, core.Coordinate{Entity: "tenant:acme", Scope: "control"}, core.MustKind(0xE, 0x1), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "n2 refuses the key's reads", func() bool {
		code, _ := callOnce(t, "GET", n2.base+"/v1/tenants/acme/stats", token, "")
		return code == http.StatusServiceUnavailable
	})
	if code, _ := callOnce(t, "GET", n2.base+"/readyz", "", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("n2 /readyz: %d, want 503", code)
	}
}

// startPairWithSourceBuckets starts a leader n1 and a follower n2 whose
// per-source buckets (server.anonymous_requests_per_second) hold burst
// requests and refill at one a second.
func startPairWithSourceBuckets(t *testing.T, burst int) (n1, n2 *clusterServer) {
	t.Helper()
	root := t.TempDir()
	slow := func(c *server.Config) { c.AnonymousRequestsPerSecond, c.AnonymousRequestsBurst = 1, burst }
	n1 = startClusterLeader(t, root, slow)
	n2 = startClusterServer(t, root, "n2", false, n1.base, slow)
	waitFollowerOf(t, n2, 2)
	return n1, n2
}

// TestClusterRefusalsBeforeTheCredentialAreCharged: on a cluster node, a
// request refused before its credential is looked at (a consistency the
// cluster does not take) or redirected to the leader with a credential
// this node does not know is charged to its source
// (server.anonymous_requests_per_second) like any request without a
// valid credential: past the bucket, 429 TOO_MANY_REQUESTS.
func TestClusterRefusalsBeforeTheCredentialAreCharged(t *testing.T) {
	n1, n2 := startPairWithSourceBuckets(t, 3)
	unknown := "bpk_" + strings.Repeat("a", 12) + "_" + strings.Repeat("b", 43)
	for _, n := range []*clusterServer{n1, n2} {
		for i := range 3 {
			path := "/v1/tenants/acme/events?consistency=bogus"
			token := ""
			if n == n2 && i == 2 {
				// A write with a key n2 does not know: sent to the leader.
				path, token = "/v1/tenants/acme/cursors/c1", unknown
			}
			req, _ := http.NewRequest("GET", n.base+path, nil)
			if token != "" {
				req, _ = http.NewRequest("DELETE", n.base+path, nil)
				req.Header.Set("Authorization", "Bearer "+token)
			}
			res, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode == 429 {
				t.Fatalf("%s: request %d of a bucket of 3 refused", n.id, i+1)
			}
		}
		code, body := call(t, "GET", n.base+"/v1/tenants/acme/events?consistency=bogus", "", "")
		if code != 429 || body["code"] != "TOO_MANY_REQUESTS" {
			t.Fatalf("%s: past the source's bucket: %d %v", n.id, code, body)
		}
	}
}
