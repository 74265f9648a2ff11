package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
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
	follower, session, key := sessionAtFollower(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
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
// the events it has just committed (the commit is redirected to the
// leader; the next poll carries the position as min_position, and a
// follower whose copy is behind sends it to the leader), and a cursor it
// has just defined is found at once.
func TestClusterSessionSeesItsCursorCommits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	follower, c, _ := sessionAtFollower(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
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
	for i := range 10 {
		name := fmt.Sprintf("fresh-%d", i)
		if err := acme.DefineCursor(ctx, name, client.CursorRegion{Scope: "shop"}); err != nil {
			t.Fatal(err)
		}
		if evs, err := acme.PollCursor(ctx, name, 1); err != nil || len(evs) != 1 {
			t.Fatalf("polling cursor %s right after defining it through %s: %d events, %v", name, follower.id, len(evs), err)
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

// TestFollowerRefusesMissingCredentials: a follower answers a request
// with no credential, or one of no shape any node takes, 401 itself —
// a write, an admin change, a tenant read — instead of a redirect
// naming the leader; a credential of a valid shape it does not know is
// still sent to the leader, which judges it.
func TestFollowerRefusesMissingCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	leader, follower, _ := leaderAndFollower(t)
	ask := func(method, path, auth, body string) (int, string, string) {
		t.Helper()
		code, h, b := askOnce(t, method, follower.base+path, auth, body)
		return code, h.Get("Location"), string(b)
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

// TestFollowerSendsOtherCursorDefinitionsToTheLeader: a poll naming the
// definition it knows (cursor_id) and the position it committed
// (min_position) is served by a follower only when the follower holds
// that definition at that position or beyond; otherwise — a cursor
// deleted and defined again that the follower has not caught up with, a
// position it has not applied — the leader serves it. The cursor's id
// changes when it is defined again.
func TestFollowerSendsOtherCursorDefinitionsToTheLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	leader, follower, key := leaderAndFollower(t)
	ask := func(method, url, body string) (int, map[string]any) {
		t.Helper()
		code, _, b := askOnce(t, method, url, "Bearer "+key, body)
		var out map[string]any
		_ = json.Unmarshal(b, &out)
		return code, out
	}
	define := func() string {
		t.Helper()
		code, def := ask("PUT", leader.base+"/v1/tenants/acme/cursors/c", `{"region":{"scope":"s"}}`)
		id, _ := def["id"].(string)
		if code != 201 || len(id) != 16 {
			t.Fatalf("define: %d %v", code, def)
		}
		return id
	}
	first := define()
	for i := range 3 {
		if code, body := ask("POST", leader.base+"/v1/tenants/acme/events", fmt.Sprintf(`{"entity":"e","scope":"s","kind":"1:1","payload":{"n":%d}}`, i)); code != 201 {
			t.Fatalf("append: %d %v", code, body)
		}
	}
	if code, body := ask("POST", leader.base+"/v1/tenants/acme/cursors/c/commit", `{"position":2}`); code != 200 {
		t.Fatalf("commit: %d %v", code, body)
	}
	poll := func(query string) (int, map[string]any) {
		return ask("GET", follower.base+"/v1/tenants/acme/cursors/c/events?"+query, "")
	}
	waitFor(t, 10*time.Second, "the follower applies the commit", func() bool {
		code, body := poll("")
		return code == 200 && body["committed"] == float64(2) && body["cursor_id"] == first
	})
	if code, _ := poll("min_position=2&cursor_id=" + first); code != 200 {
		t.Fatalf("a poll the follower is current for: %d", code)
	}
	for _, q := range []string{"min_position=3&cursor_id=" + first, "min_position=0&cursor_id=0123456789abcdef", "min_position=0&cursor_id="} {
		if code, body := poll(q); code != 307 || body["code"] != "NOT_LEADER" {
			t.Fatalf("poll ?%s on follower %s: %d %v, want 307 to the leader", q, follower.id, code, body)
		}
	}
	if code, body := poll("min_position=0&cursor_id=" + strings.Repeat("a", 65)); code != 400 || body["code"] != "INVALID_REQUEST" {
		t.Fatalf("a cursor_id past 64 bytes: %d %v", code, body)
	}
	if code, body := ask("GET", leader.base+"/v1/tenants/acme/cursors/c/events?min_position=9&cursor_id=0123456789abcdef", ""); code != 200 || body["cursor_id"] != first {
		t.Fatalf("the leader serves any poll: %d %v", code, body)
	}
	// Defined again: another id, the position back at the beginning.
	if code, _ := ask("DELETE", leader.base+"/v1/tenants/acme/cursors/c", ""); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	second := define()
	if second == first {
		t.Fatalf("a cursor defined again kept its id %s", first)
	}
	waitFor(t, 10*time.Second, "the follower applies the new definition", func() bool {
		code, body := poll("")
		return code == 200 && body["committed"] == float64(0) && body["cursor_id"] == second
	})
	// A client that knows only the first definition is sent to the
	// leader, which answers the second.
	if code, _ := poll("min_position=2&cursor_id=" + first); code != 307 {
		t.Fatalf("a poll of the first definition on a follower holding the second: %d, want 307", code)
	}
}

// leaderAndFollower starts three nodes with tenant acme and returns the
// leader, a follower and a writer key of acme.
func leaderAndFollower(t *testing.T) (leader, follower *clusterServer, key string) {
	t.Helper()
	nodes := startCluster3(t, t.TempDir())
	key, _ = clusterTenantKey(t, nodes[0].base, "acme", `["writer"]`)
	leader = leaderOf(t, nodes, 10*time.Second)
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}
	return leader, follower, key
}

// askOnce sends one request without following a redirect; auth is the
// whole Authorization header ("" for none).
func askOnce(t *testing.T, method, url, auth, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// sessionAtFollower starts three nodes with tenant acme and returns a
// follower, a Client with Consistency "session" pointed at it, and the
// writer key of acme it uses.
func sessionAtFollower(t *testing.T) (*clusterServer, *client.Client, string) {
	t.Helper()
	nodes := startCluster3(t, t.TempDir())
	key, _ := clusterTenantKey(t, nodes[0].base, "acme", `["writer"]`)
	follower := nodes[2]
	waitFollowerOf(t, follower, 3)
	c, err := client.New(follower.base, key, client.Options{Consistency: "session"})
	if err != nil {
		t.Fatal(err)
	}
	return follower, c, key
}
