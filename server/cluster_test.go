package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/server"
)

const clusterOperator = "bpko_" + "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst"

// clusterServer is one node of an in-process cluster of batpak servers
// over loopback TCP (raft) and HTTP (API).
type clusterServer struct {
	id     string
	srv    *server.Server
	base   string
	cancel context.CancelFunc
	done   chan error
}

func startClusterServer(t testing.TB, root, id string, bootstrap bool, join string, adjust ...func(*server.Config)) *clusterServer {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Root = filepath.Join(root, id)
	cfg.Listen = "127.0.0.1:0"
	cfg.OperatorToken = clusterOperator
	cfg.Stderr = io.Discard
	cfg.Cluster = &server.ClusterConfig{NodeID: id, Bind: "127.0.0.1:0", Bootstrap: bootstrap, Join: join,
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, LeaderLeaseTimeout: 500 * time.Millisecond}
	for _, a := range adjust {
		a(&cfg)
	}
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	cs := &clusterServer{id: id, srv: srv, base: scheme + "://" + srv.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { cs.done <- srv.Serve(ctx) }()
	t.Cleanup(cs.stop)
	return cs
}

// startClusterLeader starts node n1 bootstrapping a new cluster under
// root and waits until it leads.
func startClusterLeader(t testing.TB, root string, adjust ...func(*server.Config)) *clusterServer {
	t.Helper()
	n1 := startClusterServer(t, root, "n1", true, "", adjust...)
	waitFor(t, 10*time.Second, "n1 leads", func() bool {
		code, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
		return code == 200 && st["state"] == "leader"
	})
	return n1
}

// waitFollowerOf waits until follower f sees a cluster of members nodes
// and itself following.
func waitFollowerOf(t testing.TB, f *clusterServer, members int) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%s a follower among %d members", f.id, members), func() bool {
		code, st := call(t, "GET", f.base+"/v1/cluster", clusterOperator, "")
		ms, _ := st["members"].([]any)
		return code == 200 && len(ms) == members && st["state"] == "follower"
	})
}

// clusterTenantKey creates tenant on the cluster through base (the
// operator's credential) and issues it a key with roles (a JSON list);
// it returns the key's credential and id.
func clusterTenantKey(t *testing.T, base, tenant, roles string) (token, id string) {
	t.Helper()
	if code, body := call(t, "POST", base+"/v1/admin/tenants", clusterOperator, `{"id":"`+tenant+`"}`); code != 201 {
		t.Fatalf("create tenant %s: %d %v", tenant, code, body)
	}
	code, key := call(t, "POST", base+"/v1/admin/tenants/"+tenant+"/keys", clusterOperator, `{"roles":`+roles+`}`)
	if code != 201 {
		t.Fatalf("issue key: %d %v", code, key)
	}
	return key["key"].(string), key["id"].(string)
}

func (cs *clusterServer) stop() {
	if cs.cancel != nil {
		cs.cancel()
		<-cs.done
		cs.cancel = nil
	}
}

// clusterClient follows redirects to the leader, keeping the credential
// (every node is on 127.0.0.1).
var clusterClient = &http.Client{Timeout: 20 * time.Second}

// call sends one request, following redirects to the leader; like a
// client, it retries while the cluster has no leader (503 NOT_LEADER, an
// election under way), for up to 10 s.
func call(t testing.TB, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, m := callOnce(t, method, url, token, body)
		if code != http.StatusServiceUnavailable || m["code"] != "NOT_LEADER" || time.Now().After(deadline) {
			return code, m
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func callOnce(t testing.TB, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := clusterClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if code, ok := m["code"].(string); ok && m["title"] == "" {
		t.Errorf("%s %s: a %s problem without a title: %s", method, url, code, b)
	}
	return res.StatusCode, m
}

// waitFor polls cond until it holds or within passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterServe: three batpak servers form a cluster (one bootstraps,
// two join through it); an admin change and writes sent to any node are
// served by the leader (followers redirect); every node reads them
// (read-your-writes with min_seq); a key revoked on the leader stops
// working on the followers; after the leader stops, another node leads
// and nothing acknowledged is lost.
func TestClusterServe(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	root := t.TempDir()
	nodes := startCluster3(t, root)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	// Admin through a follower: redirected to the leader.
	if code, body := call(t, "POST", n2.base+"/v1/admin/tenants", clusterOperator, `{"id":"acme"}`); code != 201 {
		t.Fatalf("create tenant through a follower: %d %v", code, body)
	}
	code, key := call(t, "POST", n3.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["writer"]}`)
	if code != 201 {
		t.Fatalf("issue key: %d %v", code, key)
	}
	token := key["key"].(string)
	// The redirect itself: a follower names the leader and does nothing.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("POST", n2.base+"/v1/tenants/acme/events", strings.NewReader(`{"entity":"e","scope":"s","kind":"1:1","payload":{}}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(res.Header.Get("Location"), n1.base+"/v1/tenants/acme/events") {
		t.Fatalf("write on a follower: %d Location %q, want 307 to %s", res.StatusCode, res.Header.Get("Location"), n1.base)
	}

	// A credential a follower does not know (it may not have applied the
	// key's issue yet) goes to the leader, which refuses it if invalid.
	req, _ = http.NewRequest("GET", n2.base+"/v1/tenants/acme/stats", nil)
	req.Header.Set("Authorization", "Bearer bpk_unknownunknownunknownunknown")
	if res, err = noFollow.Do(req); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(res.Header.Get("Location"), n1.base+"/v1/tenants/acme/stats") {
		t.Fatalf("unknown credential on a follower: %d Location %q, want 307 to %s", res.StatusCode, res.Header.Get("Location"), n1.base)
	}
	if code, _ := call(t, "GET", n2.base+"/v1/tenants/acme/stats", "bpk_unknownunknownunknownunknown", ""); code != 401 {
		t.Fatalf("unknown credential, redirected to the leader: %d, want 401", code)
	}

	var last float64
	for i := 0; i < 30; i++ {
		via := nodes[i%3]
		code, rc := call(t, "POST", via.base+"/v1/tenants/acme/events", token, fmt.Sprintf(`{"entity":"order-%d","scope":"s","kind":"1:1","payload":{"n":%d}}`, i%4, i))
		if code != 201 {
			t.Fatalf("append %d via %s: %d %v", i, via.id, code, rc)
		}
		last = rc["global_sequence"].(float64)
	}
	// Read-your-writes on every node.
	for _, n := range nodes {
		code, st := call(t, "GET", fmt.Sprintf("%s/v1/tenants/acme/stats?min_seq=%d", n.base, int(last)), token, "")
		if code != 200 || st["events"].(float64) != 30 {
			t.Fatalf("%s stats with min_seq: %d %v", n.id, code, st)
		}
	}
	// Verify changes nothing: every node runs it on its own copy.
	code, adm := call(t, "POST", n1.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["admin"]}`)
	if code != 201 {
		t.Fatal(code, adm)
	}
	for _, n := range []*clusterServer{n2, n3} {
		var res *http.Response
		var rep map[string]any
		// Until n has applied the key's issue, it redirects (above).
		waitFor(t, 5*time.Second, "verify served by "+n.id, func() bool {
			req, _ := http.NewRequest("POST", n.base+"/v1/tenants/acme/verify", nil)
			req.Header.Set("Authorization", "Bearer "+adm["key"].(string))
			var err error
			if res, err = noFollow.Do(req); err != nil {
				t.Fatal(err)
			}
			rep = nil
			_ = json.NewDecoder(res.Body).Decode(&rep)
			res.Body.Close()
			return res.StatusCode != http.StatusTemporaryRedirect
		})
		if res.StatusCode != 200 || rep["ok"] != true || rep["events"].(float64) != 30 {
			t.Fatalf("verify on follower %s: %d %v, want 200 ok with 30 events", n.id, res.StatusCode, rep)
		}
	}
	// A subscriber resuming on a node that has not applied its position
	// yet waits for it (instead of a 400 for a position past the end).
	sub, _ := http.NewRequest("GET", n3.base+"/v1/tenants/acme/subscribe", nil)
	sub.Header.Set("Authorization", "Bearer "+adm["key"].(string))
	sub.Header.Set("Last-Event-ID", fmt.Sprint(int(last)+2))
	subRes := make(chan *http.Response, 1)
	go func() {
		res, err := noFollow.Do(sub)
		if err != nil {
			t.Error(err)
		}
		subRes <- res
	}()
	time.Sleep(200 * time.Millisecond)
	for i := 0; i < 3; i++ {
		if code, rc := call(t, "POST", n1.base+"/v1/tenants/acme/events", token, fmt.Sprintf(`{"entity":"late-%d","scope":"s","kind":"1:1","payload":{}}`, i)); code != 201 {
			t.Fatalf("append: %d %v", code, rc)
		}
	}
	res = <-subRes
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("resume past this node's end: %d %s, want 200 once it caught up", res.StatusCode, b)
	}
	br := bufio.NewReader(res.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("resumed stream: %v", err)
		}
		if strings.HasPrefix(line, "id: ") {
			if got := strings.TrimSpace(strings.TrimPrefix(line, "id: ")); got != fmt.Sprint(int(last)+3) {
				t.Fatalf("resumed after %d, first event %s", int(last)+2, got)
			}
			break
		}
	}
	res.Body.Close()
	// A linearizable read on a follower goes to the leader.
	if code, st := call(t, "GET", n3.base+"/v1/tenants/acme/stats?consistency=linearizable", token, ""); code != 200 || st["events"].(float64) != 33 {
		t.Fatalf("linearizable stats: %d %v", code, st)
	}
	// Concurrent linearizable reads share raft barriers: a flood of them
	// does not put one entry each into the log.
	lastIndex := func() float64 {
		_, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
		return st["last_log_index"].(float64)
	}
	before := lastIndex()
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, _ := call(t, "GET", n1.base+"/v1/tenants/acme/events?consistency=linearizable&limit=1", token, ""); code != 200 {
				t.Errorf("linearizable read: %d", code)
			}
		}()
	}
	wg.Wait()
	if grew := lastIndex() - before; grew >= 50 {
		t.Fatalf("100 concurrent linearizable reads added %v log entries, want them to share barriers", grew)
	}
	if code, _ := call(t, "GET", n3.base+"/v1/tenants/acme/stats?consistency=sometimes", token, ""); code != 400 {
		t.Fatalf("bad consistency: %d, want 400", code)
	}
	// A key revoked on the leader stops working on every node.
	code, k2 := call(t, "POST", n1.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["reader"]}`)
	if code != 201 {
		t.Fatal(code, k2)
	}
	reader := k2["key"].(string)
	waitFor(t, 5*time.Second, "the new key works on n3 itself", func() bool {
		req, _ := http.NewRequest("GET", n3.base+"/v1/tenants/acme/stats", nil)
		req.Header.Set("Authorization", "Bearer "+reader)
		res, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	if code, _ := call(t, "DELETE", n2.base+"/v1/admin/tenants/acme/keys/"+k2["id"].(string), clusterOperator, ""); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	waitFor(t, 5*time.Second, "the revoked key refused on n3", func() bool {
		code, _ := call(t, "GET", n3.base+"/v1/tenants/acme/stats", reader, "")
		return code == 401
	})
	// The leader stops: another node leads, and accepts writes.
	n1.stop()
	var newLeader *clusterServer
	waitFor(t, 15*time.Second, "a new leader", func() bool {
		for _, n := range []*clusterServer{n2, n3} {
			if code, st := call(t, "GET", n.base+"/v1/cluster", clusterOperator, ""); code == 200 && st["state"] == "leader" {
				newLeader = n
				return true
			}
		}
		return false
	})
	code, rc := call(t, "POST", newLeader.base+"/v1/tenants/acme/events", token, `{"entity":"order-9","scope":"s","kind":"1:1","payload":{"after":"failover"}}`)
	if code != 201 {
		t.Fatalf("append after failover: %d %v", code, rc)
	}
	for _, n := range []*clusterServer{n2, n3} {
		code, st := call(t, "GET", fmt.Sprintf("%s/v1/tenants/acme/stats?min_seq=%d", n.base, int(rc["global_sequence"].(float64))), token, "")
		if code != 200 || st["events"].(float64) != 34 {
			t.Fatalf("%s after failover: %d %v", n.id, code, st)
		}
	}

	// A tenant deleted and created again starts empty on every node, and
	// followers serve the new one (not the store they held before).
	if code, body := call(t, "DELETE", newLeader.base+"/v1/admin/tenants/acme?confirm=acme", clusterOperator, ""); code != 204 {
		t.Fatalf("delete tenant: %d %v", code, body)
	}
	if code, body := call(t, "POST", newLeader.base+"/v1/admin/tenants", clusterOperator, `{"id":"acme"}`); code != 201 {
		t.Fatalf("create again: %d %v", code, body)
	}
	code, key = call(t, "POST", newLeader.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["writer"]}`)
	if code != 201 {
		t.Fatal(code, key)
	}
	token = key["key"].(string)
	code, rc = call(t, "POST", newLeader.base+"/v1/tenants/acme/events", token, `{"entity":"fresh","scope":"s","kind":"1:1","payload":{}}`)
	if code != 201 || rc["global_sequence"].(float64) != 0 {
		t.Fatalf("append to the new tenant: %d %v", code, rc)
	}
	for _, n := range []*clusterServer{n2, n3} {
		waitFor(t, 5*time.Second, n.id+" serves the new tenant", func() bool {
			code, st := call(t, "GET", n.base+"/v1/tenants/acme/stats?min_seq=0", token, "")
			return code == 200 && st["events"].(float64) == 1
		})
	}
}

// TestClusterNodeWithNeitherFlagSaysSo: a node started on an empty root
// with neither bootstrap nor join belongs to no cluster; it says so in
// its log, naming what to do, instead of looking like a node starting up.
func TestClusterNodeWithNeitherFlagSaysSo(t *testing.T) {
	var log testenv.Buffer
	startClusterServer(t, t.TempDir(), "n4", false, "", func(c *server.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&log, nil))
	})
	waitFor(t, 5*time.Second, "the warning", func() bool {
		return strings.Contains(log.String(), "neither cluster.bootstrap nor cluster.join")
	})
	if s := log.String(); !strings.Contains(s, "--cluster-join") || !strings.Contains(s, "batpak cluster join n4 127.0.0.1:") {
		t.Fatalf("the warning does not say what to do: %s", s)
	}
}
