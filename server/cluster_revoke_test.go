package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/httpapi"
)

// followerStatus sends GET path to base with token, following no
// redirect (a follower's 307 to the leader is its refusal to judge the
// credential itself), and answers the status.
func followerStatus(t testing.TB, base, path, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", base, path, err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

var noRedirect = &http.Client{Timeout: 20 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// refusedAfter sends GET path with token to each follower right after an
// access change answered (same goroutine, no pause) and then again until
// it is refused; it answers, per follower, the status of the first
// request and how long after the change's answer the follower first
// refused.
func refusedAfter(t *testing.T, followers []*clusterServer, path, token string) (first []int, window []time.Duration) {
	t.Helper()
	answered := time.Now()
	for _, f := range followers {
		code := followerStatus(t, f.base, path, token)
		first = append(first, code)
		for code/100 == 2 {
			if time.Since(answered) > 10*time.Second {
				t.Fatalf("%s still serves %s 10s after the change", f.id, path)
			}
			code = followerStatus(t, f.base, path, token)
		}
		window = append(window, time.Since(answered))
	}
	return first, window
}

// TestClusterAccessChangeInForceOnFollowers: once the API has answered a
// key's revocation, a tenant's suspension or its deletion, every member
// of the cluster refuses the credential: a request sent to a follower
// right after the answer (the same goroutine, no pause) is never served,
// many times over.
func TestClusterAccessChangeInForceOnFollowers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	nodes := startCluster3(t, t.TempDir())
	leader, followers := nodes[0], nodes[1:]
	token, _ := clusterTenantKey(t, leader.base, "acme", `["reader"]`)
	const path = "/v1/tenants/acme/stats"
	servedBy := func(token string) {
		t.Helper()
		for _, f := range followers {
			waitFor(t, 10*time.Second, f.id+" serves the key", func() bool { return followerStatus(t, f.base, path, token) == 200 })
		}
	}
	var served []string
	var windows []time.Duration
	note := func(what string, first []int, window []time.Duration) {
		for i, code := range first {
			if code/100 == 2 {
				served = append(served, fmt.Sprintf("%s: %s answered %d", what, followers[i].id, code))
			}
		}
		windows = append(windows, window...)
	}

	code, adm := call(t, "POST", leader.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["admin"]}`)
	if code != 201 {
		t.Fatalf("issue admin key: %d %v", code, adm)
	}
	const rounds = 30
	var revokeTook []time.Duration
	for i := 0; i < rounds; i++ {
		code, key := call(t, "POST", leader.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["reader"]}`)
		if code != 201 {
			t.Fatalf("issue key: %d %v", code, key)
		}
		k := key["key"].(string)
		servedBy(k)
		// By the operator, or by the tenant's admin.
		url, by := leader.base+"/v1/admin/tenants/acme/keys/"+key["id"].(string), clusterOperator
		if i%2 == 1 {
			url, by = leader.base+"/v1/tenants/acme/keys/"+key["id"].(string), adm["key"].(string)
		}
		began := time.Now()
		if code, body := callOnce(t, "DELETE", url, by, ""); code != 204 {
			t.Fatalf("revoke: %d %v", code, body)
		}
		revokeTook = append(revokeTook, time.Since(began))
		first, window := refusedAfter(t, followers, path, k)
		note(fmt.Sprintf("revocation %d", i), first, window)
	}

	// Suspension: the tenant's key is refused (403) everywhere once the
	// suspension is answered; resumed, it is served again.
	for i := 0; i < 5; i++ {
		servedBy(token)
		if code, body := callOnce(t, "POST", leader.base+"/v1/admin/tenants/acme/suspend", clusterOperator, `{"reason":"test"}`); code != 200 {
			t.Fatalf("suspend: %d %v", code, body)
		}
		first, window := refusedAfter(t, followers, path, token)
		note(fmt.Sprintf("suspension %d", i), first, window)
		if code, body := call(t, "POST", leader.base+"/v1/admin/tenants/acme/resume", clusterOperator, ""); code != 200 {
			t.Fatalf("resume: %d %v", code, body)
		}
	}

	// Deletion.
	for i := 0; i < 5; i++ {
		tenant := fmt.Sprintf("gone-%d", i)
		tok, _ := clusterTenantKey(t, leader.base, tenant, `["reader"]`)
		p := "/v1/tenants/" + tenant + "/stats"
		for _, f := range followers {
			waitFor(t, 10*time.Second, f.id+" serves "+tenant, func() bool { return followerStatus(t, f.base, p, tok) == 200 })
		}
		if code, body := callOnce(t, "DELETE", leader.base+"/v1/admin/tenants/"+tenant+"?confirm="+tenant, clusterOperator, ""); code != 204 {
			t.Fatalf("delete %s: %d %v", tenant, code, body)
		}
		first, window := refusedAfter(t, followers, p, tok)
		note("deletion of "+tenant, first, window)
	}

	sort.Slice(windows, func(i, j int) bool { return windows[i] < windows[j] })
	sort.Slice(revokeTook, func(i, j int) bool { return revokeTook[i] < revokeTook[j] })
	t.Logf("followers served %d of %d requests sent right after the change; time until refused: median %s, max %s; a revocation's answer took: median %s, max %s",
		len(served), len(windows), windows[len(windows)/2], windows[len(windows)-1], revokeTook[len(revokeTook)/2], revokeTook[len(revokeTook)-1])
	for _, s := range served {
		t.Error(s)
	}
}

// TestClusterAccessChangeUnconfirmedMember: a member that does not
// confirm an access change (one whose API does not answer, one that is
// down) does not hold the change's answer up for longer than
// httpapi.ConfirmWait, and the answer names it (Batpak-Unconfirmed-Members);
// the members that did confirm refuse the credential at once.
func TestClusterAccessChangeUnconfirmedMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	// n3's API URL on record leads to a listener that takes connections
	// and never answers: a member cut off from the leader's requests.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	n2 := startClusterServer(t, root, "n2", false, n1.base)
	n3 := startClusterServer(t, root, "n3", false, n1.base, func(c *server.Config) { c.Cluster.URL = "http://" + silent.Addr().String() })
	waitFollowerOf(t, n2, 3)
	waitFollowerOf(t, n3, 3)
	_, _ = clusterTenantKey(t, n1.base, "acme", `["reader"]`)

	revoke := func(want string) {
		t.Helper()
		code, key := call(t, "POST", n1.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["reader"]}`)
		if code != 201 {
			t.Fatalf("issue key: %d %v", code, key)
		}
		k := key["key"].(string)
		if n2.cancel != nil {
			waitFor(t, 10*time.Second, "n2 serves the key", func() bool { return followerStatus(t, n2.base, "/v1/tenants/acme/stats", k) == 200 })
		}
		req, _ := http.NewRequest("DELETE", n1.base+"/v1/admin/tenants/acme/keys/"+key["id"].(string), nil)
		req.Header.Set("Authorization", "Bearer "+clusterOperator)
		began := time.Now()
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		took := time.Since(began)
		if res.StatusCode != 204 {
			t.Fatalf("revoke: %d", res.StatusCode)
		}
		if got := res.Header.Get(httpapi.UnconfirmedHeader); got != want {
			t.Errorf("%s: %q, want %q", httpapi.UnconfirmedHeader, got, want)
		}
		if took < httpapi.ConfirmWait-100*time.Millisecond || took > httpapi.ConfirmWait+time.Second {
			t.Errorf("the revocation was answered after %s, want about %s (the wait for n3)", took, httpapi.ConfirmWait)
		}
		t.Logf("revocation answered after %s, %s: %q", took, httpapi.UnconfirmedHeader, res.Header.Get(httpapi.UnconfirmedHeader))
		if n2.cancel != nil {
			if code := followerStatus(t, n2.base, "/v1/tenants/acme/stats", k); code/100 == 2 {
				t.Errorf("n2, which confirmed, served the revoked key: %d", code)
			}
		}
	}
	// What the leader asks: operator only; control is a sequence.
	if code, body := call(t, "GET", n2.base+"/v1/cluster/applied?control=0", clusterOperator, ""); code != 200 || body["control_applied"] == nil {
		t.Fatalf("applied?control=0 on n2: %d %v", code, body)
	}
	for _, q := range []string{"", "?control=", "?control=x", "?control=-1"} {
		if code, body := call(t, "GET", n2.base+"/v1/cluster/applied"+q, clusterOperator, ""); code != 400 || body["field"] != "control" {
			t.Errorf("applied%s: %d %v, want 400 naming control", q, code, body)
		}
	}
	tok, _ := clusterTenantKey(t, n1.base, "other", `["admin"]`)
	waitFor(t, 10*time.Second, "n2 serves other's key", func() bool { return followerStatus(t, n2.base, "/v1/tenants/other/stats", tok) == 200 })
	if code := followerStatus(t, n2.base, "/v1/cluster/applied?control=0", tok); code != 403 {
		t.Errorf("applied with a tenant's admin key: %d, want 403", code)
	}
	revoke("n3")
	// A deletion waiting for n3 does not hold up the creation of another
	// tenant.
	if code, body := call(t, "POST", n1.base+"/v1/admin/tenants", clusterOperator, `{"id":"doomed"}`); code != 201 {
		t.Fatalf("create doomed: %d %v", code, body)
	}
	deleted := make(chan int)
	go func() {
		code, _ := callOnce(t, "DELETE", n1.base+"/v1/admin/tenants/doomed?confirm=doomed", clusterOperator, "")
		deleted <- code
	}()
	time.Sleep(300 * time.Millisecond)
	began := time.Now()
	if code, body := call(t, "POST", n1.base+"/v1/admin/tenants", clusterOperator, `{"id":"fresh"}`); code != 201 {
		t.Fatalf("create fresh: %d %v", code, body)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("a tenant's creation waited %s for another's deletion to be confirmed", took)
	}
	if code := <-deleted; code != 204 {
		t.Errorf("delete doomed: %d", code)
	}
	// n2 down too (its connections refused): named at once, n3 still
	// bounds the wait. n1 and n3 are a quorum.
	n2.stop()
	revoke("n2, n3")
	// The SDK hands the members to a caller that asks (client.Answer).
	code, key := call(t, "POST", n1.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["reader"]}`)
	if code != 201 {
		t.Fatalf("issue key: %d %v", code, key)
	}
	c, err := client.New(n1.base, clusterOperator)
	if err != nil {
		t.Fatal(err)
	}
	var ans client.Answer
	if err := c.Admin().RevokeKey(client.WithAnswer(context.Background(), &ans), "acme", key["id"].(string)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ans.UnconfirmedMembers, []string{"n2", "n3"}) || ans.RequestID == "" {
		t.Errorf("SDK answer: %+v, want members n2 and n3 and a request id", ans)
	}
}
