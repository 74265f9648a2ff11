package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
)

// TestClusterSessionReadsOwnWrites: an sdk/client Client with
// Consistency "session" pointed at a follower of a 3-node cluster reads
// every write of its own right after it was acknowledged (the write
// redirected to the leader, the read served by the follower once it has
// applied it), and so does a Client whose read carries the receipt's
// sequence (WithMinSequence).
func TestClusterSessionReadsOwnWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	nodes := startCluster3(t, t.TempDir())
	key, _ := clusterTenantKey(t, nodes[0].base, "acme", `["writer"]`)
	follower := nodes[2]
	waitFollowerOf(t, follower, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	session, err := client.New(follower.base, key, client.Options{Consistency: "session"})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := client.New(follower.base, key)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		r, err := session.Tenant("acme").Append(ctx, client.AppendRequest{Entity: "order:1", Scope: "shop", Kind: "1:1", Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if ev, err := session.Tenant("acme").Get(ctx, r.ID); err != nil || ev.GlobalSequence != r.GlobalSequence {
			t.Fatalf("session read of write %d (seq %d) through %s: %+v, %v", i, r.GlobalSequence, follower.id, ev, err)
		}
		rs, err := plain.Tenant("acme").AppendBatch(ctx, []client.AppendRequest{{Entity: "order:2", Scope: "shop", Kind: "1:1", Payload: json.RawMessage(`{}`)}})
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		page, err := plain.Tenant("acme").WithMinSequence(rs[0].GlobalSequence).QueryPage(ctx, client.Query{Entity: "order:2"})
		if err != nil || len(page.Events) != i+1 {
			t.Fatalf("read with min_seq %d through %s after batch %d: %d events, %v", rs[0].GlobalSequence, follower.id, i, len(page.Events), err)
		}
	}
}

// TestClusterSessionSeesItsCursorCommits: a consumer polling a named
// cursor through a follower with Consistency "session" never gets back
// the events it has just committed: the commit (redirected to the
// leader) answers with the raft index it was applied at
// (Batpak-Applied-Index), and the next poll carries it as min_index.
func TestClusterSessionSeesItsCursorCommits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	nodes := startCluster3(t, t.TempDir())
	key, _ := clusterTenantKey(t, nodes[0].base, "acme", `["writer"]`)
	follower := nodes[2]
	waitFollowerOf(t, follower, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.New(follower.base, key, client.Options{Consistency: "session"})
	if err != nil {
		t.Fatal(err)
	}
	acme := c.Tenant("acme")
	if err := acme.DefineCursor(ctx, "billing", client.CursorRegion{Scope: "shop"}); err != nil {
		t.Fatal(err)
	}
	const events = 60
	for i := range events {
		if _, err := acme.Append(ctx, client.AppendRequest{Entity: fmt.Sprintf("order:%d", i%4), Scope: "shop", Kind: "1:1", Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	for next := uint64(0); seen < events; {
		evs, err := acme.PollCursor(ctx, "billing", 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			t.Fatalf("the cursor ended after %d of %d events", seen, events)
		}
		if evs[0].GlobalSequence < next {
			t.Fatalf("poll after committing %d through %s started at %d: events handed out again", next, follower.id, evs[0].GlobalSequence)
		}
		seen += len(evs)
		next = evs[len(evs)-1].GlobalSequence + 1
		if err := acme.CommitCursor(ctx, "billing", next); err != nil {
			t.Fatal(err)
		}
	}
}

// TestClusterAppliedIndex: every authenticated answer of a cluster node
// carries the raft index it had applied (a write's at least its own), a
// read with min_index waits for it, and a bad or unreachable min_index is
// refused with a reason; unauthenticated answers carry no index.
func TestClusterAppliedIndex(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	nodes := startCluster3(t, t.TempDir(), func(c *server.Config) { c.Cluster.ReadWait = 300 * time.Millisecond })
	key, _ := clusterTenantKey(t, nodes[0].base, "acme", `["writer"]`)
	follower := nodes[2]
	waitFollowerOf(t, follower, 3)
	send := func(method, url, token, body string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	leader := leaderOf(t, nodes, 10*time.Second)
	var last uint64
	for i := range 5 {
		resp, body := send("POST", leader.base+"/v1/tenants/acme/events", key, fmt.Sprintf(`{"entity":"order:1","scope":"shop","kind":"1:1","payload":{"n":%d}}`, i))
		if resp.StatusCode != 201 {
			t.Fatalf("append: %d %s", resp.StatusCode, body)
		}
		index, err := strconv.ParseUint(resp.Header.Get("Batpak-Applied-Index"), 10, 64)
		if err != nil || index <= last {
			t.Fatalf("append %d answered Batpak-Applied-Index %q after %d", i, resp.Header.Get("Batpak-Applied-Index"), last)
		}
		last = index
		resp, body = send("GET", follower.base+"/v1/tenants/acme/events?entity=order:1&min_index="+strconv.FormatUint(index, 10), key, "")
		if resp.StatusCode != 200 || strings.Count(body, `"global_sequence"`) != i+1 {
			t.Fatalf("read with min_index %d through %s: %d %s", index, follower.id, resp.StatusCode, body)
		}
		if got, _ := strconv.ParseUint(resp.Header.Get("Batpak-Applied-Index"), 10, 64); got < index {
			t.Fatalf("the follower answered index %d to a read waiting for %d", got, index)
		}
	}
	// Another tenant's writes move nothing acme is answered: the index
	// is acme's own last change.
	bravo, _ := clusterTenantKey(t, leader.base, "bravo", `["writer"]`)
	before, _ := send("GET", leader.base+"/v1/tenants/acme/events", key, "")
	for i := range 10 {
		if resp, body := send("POST", leader.base+"/v1/tenants/bravo/events", bravo, fmt.Sprintf(`{"entity":"b","scope":"s","kind":"1:1","payload":{"n":%d}}`, i)); resp.StatusCode != 201 {
			t.Fatalf("bravo's append: %d %s", resp.StatusCode, body)
		}
	}
	after, _ := send("GET", leader.base+"/v1/tenants/acme/events", key, "")
	if b, a := before.Header.Get("Batpak-Applied-Index"), after.Header.Get("Batpak-Applied-Index"); b != a || b != strconv.FormatUint(last, 10) {
		t.Fatalf("acme's reads answered index %s, then %s after bravo's writes; its last write was %d", b, a, last)
	}
	if resp, body := send("GET", follower.base+"/v1/tenants/acme/events?min_index=-1", key, ""); resp.StatusCode != 400 || !strings.Contains(body, "min_index") {
		t.Fatalf("min_index=-1: %d %s", resp.StatusCode, body)
	}
	if resp, body := send("GET", follower.base+"/v1/tenants/acme/events?min_index=1000000000", key, ""); resp.StatusCode != 503 || !strings.Contains(body, "NOT_CAUGHT_UP") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a min_index not reached: %d %s", resp.StatusCode, body)
	}
	for _, probe := range []struct{ url, token string }{
		{leader.base + "/healthz", ""},
		{leader.base + "/v1/tenants/acme/events", ""},
		{leader.base + "/v1/tenants/acme/events", "bpk_not_a_key"},
	} {
		if resp, _ := send("GET", probe.url, probe.token, ""); resp.Header.Get("Batpak-Applied-Index") != "" {
			t.Fatalf("GET %s (token %q) answered %d with an applied index", probe.url, probe.token, resp.StatusCode)
		}
	}
}

// TestFollowerRefusesMissingCredentials: a follower answers a request
// with no credential, or one of no shape any node takes, 401 itself —
// a write, an admin change, a tenant read — instead of a redirect
// naming the leader; a credential of a valid shape it does not know is
// still sent to the leader, which judges it.
func TestFollowerRefusesMissingCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	nodes := startCluster3(t, t.TempDir())
	clusterTenantKey(t, nodes[0].base, "acme", `["writer"]`)
	leader := leaderOf(t, nodes, 10*time.Second)
	follower := nodes[0]
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ask := func(method, path, auth, body string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest(method, follower.base+path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Location"), string(b)
	}
	for _, auth := range []string{"", "Bearer bogus", "Basic dXNlcjpwYXNz", "Bearer"} {
		for _, rq := range [][3]string{
			{"POST", "/v1/tenants/acme/events", `{"entity":"e","scope":"s","kind":"1:1","payload":{}}`},
			{"POST", "/v1/cluster/nodes", `{}`},
			{"DELETE", "/v1/cluster/nodes/n9", ""},
			{"GET", "/v1/tenants/acme/events?consistency=linearizable", ""},
			{"GET", "/v1/tenants/acme/events", ""},
		} {
			code, loc, body := ask(rq[0], rq[1], auth, rq[2])
			if code != 401 || loc != "" || strings.Contains(body, leader.base) {
				t.Fatalf("%s %s with Authorization %q on follower %s: %d (Location %q) %s", rq[0], rq[1], auth, follower.id, code, loc, body)
			}
		}
	}
	// A key of the right shape the follower does not know may be one it
	// has not applied yet: the leader judges it.
	if code, loc, _ := ask("POST", "/v1/tenants/acme/events", "Bearer bpk_unknown_secret", `{}`); code != 307 || loc == "" {
		t.Fatalf("an unknown key of a valid shape: %d (Location %q), want 307 to the leader", code, loc)
	}
}
