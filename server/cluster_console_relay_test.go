package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/console"
)

// roundRobin is a load balancer in front of nodes: each request goes to
// the next node, with the Host the browser sent (as most balancers do).
func roundRobin(t *testing.T, nodes []*clusterServer) *httptest.Server {
	t.Helper()
	var next atomic.Uint32
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		u, _ := url.Parse(nodes[int(next.Add(1)-1)%len(nodes)].base)
		pr.SetURL(u)
		pr.Out.Host = pr.In.Host
	}, FlushInterval: -1}
	lb := httptest.NewServer(rp)
	t.Cleanup(lb.Close)
	return lb
}

// sessionView is GET /console/session's answer.
func sessionView(t *testing.T, base, cookie string) (signedIn bool, detail string) {
	t.Helper()
	res, b := consoleDo(t, nil, "GET", base+"/console/session", base, cookie, "", "")
	var v struct {
		SignedIn bool   `json:"signed_in"`
		Detail   string `json:"detail"`
	}
	if res.StatusCode != 200 || json.Unmarshal(b, &v) != nil {
		t.Fatalf("GET %s/console/session: %d %s", base, res.StatusCode, b)
	}
	return v.SignedIn, v.Detail
}

// TestClusterConsoleSessionBehindALoadBalancer: a console session lives
// on the node that signed it in, and the cookie says which; behind a
// balancer that spreads requests over the three nodes, every request of
// the session works — pages, API reads, changes with the CSRF token —,
// the cross-site checks still hold, a sign-out through any node ends it
// everywhere, and once its node is gone the others answer that the
// session must sign in again.
func TestClusterConsoleSessionBehindALoadBalancer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	nodes := startCluster3(t, t.TempDir())
	for _, n := range nodes[1:] {
		waitFollowerOf(t, n, 3)
	}
	lb := roundRobin(t, nodes)
	do := func(method, path, cookie, csrf, body string) (*http.Response, []byte) {
		t.Helper()
		return consoleDo(t, nil, method, lb.URL+path, lb.URL, cookie, csrf, body)
	}
	cookie, csrf := consoleSignIn(t, nil, lb.URL)
	_, tag, _ := strings.Cut(strings.TrimPrefix(cookie, console.CookieName+"="), ".")
	homeID, err := base64.RawURLEncoding.DecodeString(tag)
	if err != nil || len(homeID) == 0 {
		t.Fatalf("the cookie %q names no node", cookie)
	}
	var home *clusterServer
	for _, n := range nodes {
		if n.id == string(homeID) {
			home = n
		}
	}
	if home == nil {
		t.Fatalf("the cookie names node %q, not a member", homeID)
	}

	for i := range 6 { // two rounds over the three nodes
		if res, b := do("GET", "/console/overview", cookie, "", ""); res.StatusCode != 200 {
			t.Fatalf("overview %d through the balancer: %d %s", i, res.StatusCode, b)
		}
		if res, b := do("GET", "/console/api/v1/cluster", cookie, "", ""); res.StatusCode != 200 || !strings.Contains(string(b), `"members"`) {
			t.Fatalf("cluster status %d through the balancer: %d %s", i, res.StatusCode, b)
		}
	}
	for i, tenant := range []string{"acme", "beta", "gamma"} {
		if res, b := do("POST", "/console/api/v1/admin/tenants", cookie, csrf, `{"id":"`+tenant+`"}`); res.StatusCode != http.StatusCreated {
			t.Fatalf("change %d through the balancer: %d %s", i, res.StatusCode, b)
		}
	}
	// The checks travel with the request: no CSRF token, or a page of
	// another site, is refused whichever node the request reaches.
	for range 3 {
		if res, b := do("POST", "/console/api/v1/admin/tenants", cookie, "", `{"id":"evil"}`); res.StatusCode != http.StatusForbidden {
			t.Fatalf("a change without the CSRF token: %d %s, want 403", res.StatusCode, b)
		}
		res, b := consoleDo(t, nil, "POST", lb.URL+"/console/api/v1/admin/tenants", "https://evil.example", cookie, csrf, `{"id":"evil"}`)
		if res.StatusCode != http.StatusForbidden {
			t.Fatalf("a change from another origin: %d %s, want 403", res.StatusCode, b)
		}
	}
	if code, _ := call(t, "GET", nodes[0].base+"/v1/admin/tenants/evil", clusterOperator, ""); code != 404 {
		t.Fatalf("a refused change was made: GET tenant evil %d", code)
	}

	// A tenant's session, signed in through the balancer, appends through
	// whichever node it reaches.
	key, _ := clusterTenantKey(t, nodes[0].base, "delta", `["writer","reader"]`)
	var tcookie, tcsrf string
	waitFor(t, 10*time.Second, "every node knows the new key", func() bool {
		for _, n := range nodes {
			if res, _ := consoleDo(t, nil, "POST", n.base+"/console/session", n.base, "", "", `{"credential":"`+key+`"}`); res.StatusCode != 200 {
				return false
			}
		}
		return true
	})
	res, b := do("POST", "/console/session", "", "", `{"credential":"`+key+`"}`)
	if res.StatusCode != 200 {
		t.Fatalf("a tenant's sign-in through the balancer: %d %s", res.StatusCode, b)
	}
	var v struct {
		CSRF string `json:"csrf_token"`
	}
	_ = json.Unmarshal(b, &v)
	tcsrf = v.CSRF
	for _, c := range res.Cookies() {
		tcookie = c.Name + "=" + c.Value
	}
	for i := range 3 {
		res, b := do("POST", "/console/api/v1/tenants/delta/events", tcookie, tcsrf, `{"entity":"order:1","scope":"shop","kind":"1:1","payload":{"n":1}}`)
		if res.StatusCode/100 != 2 {
			t.Fatalf("a tenant's append %d through the balancer: %d %s", i, res.StatusCode, b)
		}
	}

	// Sign-out through another node ends the session on its own.
	other := nodes[0]
	if other == home {
		other = nodes[1]
	}
	if res, b := consoleDo(t, nil, "DELETE", other.base+"/console/session", other.base, cookie, csrf, ""); res.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out through %s of a session on %s: %d %s", other.id, home.id, res.StatusCode, b)
	}
	for _, n := range nodes {
		if in, _ := sessionView(t, n.base, cookie); in {
			t.Fatalf("%s still has the session after its sign-out", n.id)
		}
	}

	// Signing in again elsewhere replaces the browser's session: the one
	// it held ends on its own node too.
	first, _ := consoleSignIn(t, nil, nodes[0].base)
	res, b = consoleDo(t, nil, "POST", nodes[1].base+"/console/session", nodes[1].base, first, "", `{"credential":"`+clusterOperator+`"}`)
	if res.StatusCode != 200 {
		t.Fatalf("a second sign-in on %s: %d %s", nodes[1].id, res.StatusCode, b)
	}
	waitFor(t, 10*time.Second, "the replaced session ends on "+nodes[0].id, func() bool {
		in, _ := sessionView(t, nodes[0].base, first)
		return !in
	})

	// Its node gone, the tenant's session is answered "sign in again" by
	// the others, naming the node — and signing in again works.
	_, tag, _ = strings.Cut(strings.TrimPrefix(tcookie, console.CookieName+"="), ".")
	tHome, _ := base64.RawURLEncoding.DecodeString(tag)
	var gone *clusterServer
	for _, n := range nodes {
		if n.id == string(tHome) {
			gone = n
		}
	}
	if gone == nil {
		t.Fatalf("the tenant's cookie names node %q", tHome)
	}
	gone.stop()
	for _, n := range without(nodes, gone) {
		in, detail := sessionView(t, n.base, tcookie)
		if in || !strings.Contains(detail, gone.id) || !strings.Contains(detail, "sign in again") {
			t.Fatalf("%s with a session of stopped %s: signed in %v, %q", n.id, gone.id, in, detail)
		}
		res, b := consoleDo(t, nil, "GET", n.base+"/console/api/v1/tenants/delta/events", n.base, tcookie, "", "")
		if res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s with a session of stopped %s: %d %s, want 401", n.id, gone.id, res.StatusCode, b)
		}
		c2, _ := consoleSignIn(t, nil, n.base)
		if in, _ := sessionView(t, n.base, c2); !in {
			t.Fatalf("a new sign-in on %s does not hold", n.id)
		}
	}
}

// BenchmarkClusterConsoleRelay: a console read (GET /console/overview)
// of a session on n1, sent to n1 itself and to n2, which relays it to n1:
// what the relay's hop adds.
//
//	go test ./server -run '^$' -bench ClusterConsoleRelay -benchtime 2000x -count 3
func BenchmarkClusterConsoleRelay(b *testing.B) {
	nodes := startCluster3(b, b.TempDir())
	for _, n := range nodes[1:] {
		waitFollowerOf(b, n, 3)
	}
	cookie, _ := consoleSignIn(b, nil, nodes[0].base)
	client := &http.Client{Timeout: 10 * time.Second}
	for _, n := range nodes[:2] {
		name := "direct"
		if n != nodes[0] {
			name = "relayed"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				benchGet(b, client, n.base+"/console/overview", "Cookie", cookie)
			}
		})
	}
}

// benchGet sends GET url with one header through hc and reads the answer,
// which must be 200.
func benchGet(b *testing.B, hc *http.Client, url, header, value string) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set(header, value)
	res, err := hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		b.Fatalf("GET %s: %d", url, res.StatusCode)
	}
}

// TestClusterConsoleRelayChargesTheBrowser: a request whose session
// cookie names another node is charged to the browser's address by the
// node that relays it (server.anonymous_requests_per_second), before it
// is relayed; the home node does not charge the relaying member's
// address again. So forged cookies sent through one node cannot use up
// the home node's bucket for that node and lock out the sessions relayed
// through it.
func TestClusterConsoleRelayChargesTheBrowser(t *testing.T) {
	n1, n2 := startPairWithSourceBuckets(t, 3)
	waitFor(t, 10*time.Second, "n1 knows n2's URL", func() bool {
		_, st := call(t, "GET", n1.base+"/v1/cluster", clusterOperator, "")
		ms, _ := st["members"].([]any)
		for _, m := range ms {
			if mm, _ := m.(map[string]any); mm["id"] == "n2" && mm["url"] != nil && mm["url"] != "" {
				return true
			}
		}
		return false
	})
	cookie, _ := consoleSignIn(t, nil, n1.base) // lives on n1
	_, tag, _ := strings.Cut(strings.TrimPrefix(cookie, console.CookieName+"="), ".")
	forged := console.CookieName + "=forged." + tag

	attacker := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}
	defer attacker.CloseIdleConnections()
	if c, err := attacker.DialContext(context.Background(), "tcp", strings.TrimPrefix(n2.base, "http://")); err != nil {
		t.Skipf("no second loopback address here: %v", err)
	} else {
		c.Close()
	}
	for i := range 3 {
		if res, b := consoleDo(t, attacker, "GET", n2.base+"/console/overview", n2.base, forged, "", ""); res.StatusCode != 401 {
			t.Fatalf("forged cookie %d through n2: %d %s, want n1's 401", i+1, res.StatusCode, b)
		}
	}
	for i := range 3 {
		if res, b := consoleDo(t, attacker, "GET", n2.base+"/console/overview", n2.base, forged, "", ""); res.StatusCode != 429 || !strings.Contains(string(b), "TOO_MANY_REQUESTS") {
			t.Fatalf("forged cookie %d past the attacker's bucket on n2: %d %s", i+4, res.StatusCode, b)
		}
	}
	// The real session, relayed through n2 (whose address n1 did not
	// charge for the forged ones), is served.
	for i := range 2 {
		if res, b := consoleDo(t, nil, "GET", n2.base+"/console/overview", n2.base, cookie, "", ""); res.StatusCode != 200 {
			t.Fatalf("the real session through n2 (%d): %d %s", i+1, res.StatusCode, b)
		}
	}
}
