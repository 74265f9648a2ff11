package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// consoleDo sends one console request as a browser would (the Origin,
// and the session's cookie and CSRF token when given) through transport
// (nil: the default), following no redirect.
func consoleDo(t testing.TB, transport http.RoundTripper, method, url, origin, cookie, csrf, body string) (*http.Response, []byte) {
	t.Helper()
	noRedirect := &http.Client{Timeout: 10 * time.Second, Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", origin)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
		req.Header.Set("X-CSRF-Token", csrf)
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

// consoleSignIn signs the operator in to base's console and returns the
// session's cookie and CSRF token.
func consoleSignIn(t testing.TB, transport http.RoundTripper, base string) (cookie, csrf string) {
	t.Helper()
	res, b := consoleDo(t, transport, "POST", base+"/console/session", base, "", "", `{"credential":"`+clusterOperator+`"}`)
	if res.StatusCode/100 != 2 {
		t.Fatalf("sign-in on %s: %d %s", base, res.StatusCode, b)
	}
	var v struct {
		CSRF string `json:"csrf_token"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.CSRF == "" {
		t.Fatalf("sign-in on %s: %s", base, b)
	}
	for _, c := range res.Cookies() {
		cookie = c.Name + "=" + c.Value
	}
	return cookie, v.CSRF
}

// TestClusterConsoleOnFollower: the console of a follower shows what the
// node holds, and a change made through it is forwarded to the leader
// with the session's credential and made there — never a redirect the
// browser would follow to the leader without the session. A tenant's
// session on the follower writes events the same way.
func TestClusterConsoleOnFollower(t *testing.T) {
	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	n2 := startClusterServer(t, root, "n2", false, n1.base)
	waitFor(t, 20*time.Second, "n2 follows n1", func() bool {
		code, st := call(t, "GET", n2.base+"/v1/cluster", clusterOperator, "")
		return code == 200 && st["state"] == "follower"
	})
	do := func(method, url, origin, cookie, csrf, body string) (*http.Response, []byte) {
		t.Helper()
		return consoleDo(t, nil, method, url, origin, cookie, csrf, body)
	}
	signIn := func(base string) (cookie, csrf string) {
		t.Helper()
		return consoleSignIn(t, nil, base)
	}

	cookie, csrf := signIn(n2.base)
	// Until the follower has applied the leader's URL record, it answers
	// 503 NOT_LEADER without an address; then it forwards.
	var res *http.Response
	var b []byte
	waitFor(t, 10*time.Second, "the follower forwards to the leader", func() bool {
		res, b = do("POST", n2.base+"/console/api/v1/admin/tenants", n2.base, cookie, csrf, `{"id":"acme"}`)
		return res.StatusCode != http.StatusServiceUnavailable
	})
	if res.StatusCode != http.StatusCreated || res.Header.Get("Location") != "" || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("a change through a follower's console: %d %s (Location %q), want 201 from the leader", res.StatusCode, b, res.Header.Get("Location"))
	}
	if code, _ := call(t, "GET", n1.base+"/v1/admin/tenants/acme", clusterOperator, ""); code != 200 {
		t.Fatalf("the tenant made through the follower's console is not on the leader: %d", code)
	}
	waitFor(t, 10*time.Second, "the follower lists the new tenant", func() bool {
		res, b := do("GET", n2.base+"/console/api/v1/admin/tenants", n2.base, cookie, csrf, "")
		return res.StatusCode == 200 && strings.Contains(string(b), `"acme"`)
	})

	// A key issued through the follower's console (on the leader), then
	// the tenant's session on the follower appends through its console.
	res, b = do("POST", n2.base+"/console/api/v1/admin/tenants/acme/keys", n2.base, cookie, csrf, `{"roles":["writer","reader"]}`)
	var issued struct{ Key string }
	if res.StatusCode != http.StatusCreated || json.Unmarshal(b, &issued) != nil || issued.Key == "" {
		t.Fatalf("a key issued through a follower's console: %d %s", res.StatusCode, b)
	}
	key := issued.Key
	var tcookie, tcsrf string
	waitFor(t, 10*time.Second, "the follower knows the new key", func() bool {
		res, b := do("POST", n2.base+"/console/session", n2.base, "", "", `{"credential":"`+key+`"}`)
		if res.StatusCode != 200 {
			return false
		}
		var v struct {
			CSRF string `json:"csrf_token"`
		}
		_ = json.Unmarshal(b, &v)
		for _, c := range res.Cookies() {
			tcookie = c.Name + "=" + c.Value
		}
		tcsrf = v.CSRF
		return true
	})
	res, b = do("POST", n2.base+"/console/api/v1/tenants/acme/events", n2.base, tcookie, tcsrf,
		`{"entity":"order:1","scope":"shop","kind":"1:1","payload":{"n":1}}`)
	var receipt struct {
		GlobalSequence *uint64 `json:"global_sequence"`
	}
	if res.StatusCode/100 != 2 || json.Unmarshal(b, &receipt) != nil || receipt.GlobalSequence == nil {
		t.Fatalf("an append through a follower's console: %d %s, want a receipt from the leader", res.StatusCode, b)
	}
	if code, ev := call(t, "GET", n1.base+"/v1/tenants/acme/entities/order:1/events", key, ""); code != 200 || !strings.Contains(fmt.Sprint(ev), "order:1") {
		t.Fatalf("the event appended through the follower's console is not on the leader: %d %v", code, ev)
	}
	// The tenant's session reaches no other tenant, forwarded or not.
	if res, b := do("POST", n2.base+"/console/api/v1/admin/tenants", n2.base, tcookie, tcsrf, `{"id":"evil"}`); res.StatusCode != http.StatusForbidden {
		t.Fatalf("a tenant session's admin change through a follower's console: %d %s, want 403", res.StatusCode, b)
	}

	cookie, csrf = signIn(n1.base)
	if res, b := do("POST", n1.base+"/console/api/v1/admin/tenants", n1.base, cookie, csrf, `{"id":"beta"}`); res.StatusCode != http.StatusCreated {
		t.Fatalf("a change through the leader's console: %d %s", res.StatusCode, b)
	}
}
