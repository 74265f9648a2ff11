package console

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/auth"
)

// seen is what a stand-in leader received.
type seen struct {
	mu     sync.Mutex
	n      int
	method string
	uri    string
	header http.Header
	body   string
}

// fakeLeader is an API that answers every request with status and body
// and records it.
func fakeLeader(t *testing.T, status int, body string, extra http.Header) (*httptest.Server, *seen) {
	t.Helper()
	var got seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.mu.Lock()
		got.n++
		got.method, got.uri, got.header, got.body = r.Method, r.RequestURI, r.Header.Clone(), string(b)
		got.mu.Unlock()
		for k, v := range extra {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &got
}

// follower is this node's API as a cluster follower's: every request is
// redirected 307 NOT_LEADER to leader + its path and query, after
// reading readFirst bytes of its body.
func follower(leader string, readFirst int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if readFirst > 0 {
			_, _ = io.ReadFull(r.Body, make([]byte, readFirst))
		}
		w.Header().Set("Location", leader+r.URL.RequestURI())
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusTemporaryRedirect)
		_, _ = io.WriteString(w, `{"code":"NOT_LEADER"}`)
	})
}

func testConsole(t *testing.T, api http.Handler) (*Console, *session) {
	t.Helper()
	c := &Console{opts: Options{API: api, Lifetime: time.Hour, Logger: slog.New(slog.DiscardHandler)},
		sessions: newSessionStore(2*MaxForwards, time.Hour, time.Hour), forwards: forwardTransport(nil)}
	t.Cleanup(c.forwards.CloseIdleConnections)
	_, s, err := c.sessions.create("bpk_the_session_credential", auth.Principal{ID: "k1", Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

func consoleRequest(method, path, body string) *http.Request {
	r := httptest.NewRequest(method, Prefix+"/api"+path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Cookie", CookieName+"=the-browser-session")
	r.Header.Set("X-CSRF-Token", "the-csrf-token")
	r.Header.Set("Origin", "http://follower.example")
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	return r
}

func notLeaderDetail(t *testing.T, res *http.Response) string {
	t.Helper()
	var p struct{ Code, Detail string }
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v (after %q)", err, b)
	}
	if res.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(b, &p) != nil || p.Code != "NOT_LEADER" || res.Header.Get("Location") != "" {
		t.Fatalf("want 503 NOT_LEADER without a Location, got %d %s (Location %q)", res.StatusCode, b, res.Header.Get("Location"))
	}
	return p.Detail
}

// TestForwardMakesTheChangeOnTheLeader: a change a follower's API
// redirects is sent to the leader with the session's credential, its
// method, path, query and body, and without the browser's cookie, CSRF
// token, Origin or fetch metadata; the leader's answer reaches the
// browser (status, body), never cached.
func TestForwardMakesTheChangeOnTheLeader(t *testing.T) {
	leader, got := fakeLeader(t, http.StatusCreated, `{"id":"acme"}`, nil)
	c, s := testConsole(t, follower(leader.URL, 0))
	w := httptest.NewRecorder()
	c.proxy(w, consoleRequest("POST", "/v1/tenants/acme/events?x=1", `{"entity":"order:1"}`), s, "")
	res := w.Result()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusCreated || string(b) != `{"id":"acme"}` || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("forwarded change: %d %s (Cache-Control %q), want the leader's 201", res.StatusCode, b, res.Header.Get("Cache-Control"))
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	if got.n != 1 || got.method != "POST" || got.uri != "/v1/tenants/acme/events?x=1" || got.body != `{"entity":"order:1"}` {
		t.Fatalf("the leader got %d requests, the last %s %s %q", got.n, got.method, got.uri, got.body)
	}
	if a := got.header.Get("Authorization"); a != "Bearer bpk_the_session_credential" {
		t.Fatalf("the leader got Authorization %q, want the session's credential", a)
	}
	for _, k := range []string{"Cookie", "X-Csrf-Token", "Origin", "Sec-Fetch-Site", "X-Forwarded-For"} {
		if v := got.header.Get(k); v != "" {
			t.Fatalf("the leader got %s: %q", k, v)
		}
	}
}

// TestForwardRefusals: the request is answered 503 NOT_LEADER naming the
// leader's console, and the leader sees nothing, when the body was
// partly read before the redirect, when the browser came over TLS and
// the leader speaks plain http, or when the leader cannot be reached; a
// leader that redirects in turn is not followed.
func TestForwardRefusals(t *testing.T) {
	leader, got := fakeLeader(t, http.StatusCreated, `{}`, nil)
	host := strings.TrimPrefix(leader.URL, "http://")
	cases := []struct {
		name, why string
		api       http.Handler
		tls       bool
	}{
		{"body read before the redirect", "leadership moved while the request was read", follower(leader.URL, 4), false},
		{"https console, http leader", "in clear", follower(leader.URL, 0), true},
		{"not an http URL", "not an http or https URL", follower("ftp://"+host, 0), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, s := testConsole(t, tc.api)
			r := consoleRequest("POST", "/v1/tenants/acme/events", `{"entity":"order:1"}`)
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			w := httptest.NewRecorder()
			c.proxy(w, r, s, "")
			if d := notLeaderDetail(t, w.Result()); !strings.Contains(d, tc.why) {
				t.Fatalf("detail %q does not say %q", d, tc.why)
			}
		})
	}
	got.mu.Lock()
	if got.n != 0 {
		t.Fatalf("the leader got %d requests it should not have", got.n)
	}
	got.mu.Unlock()

	t.Run("leader unreachable", func(t *testing.T) {
		gone := httptest.NewServer(http.NotFoundHandler())
		url := gone.URL
		gone.Close()
		c, s := testConsole(t, follower(url, 0))
		w := httptest.NewRecorder()
		c.proxy(w, consoleRequest("POST", "/v1/tenants/acme/events", `{}`), s, "")
		if d := notLeaderDetail(t, w.Result()); !strings.Contains(d, "could not be reached") || !strings.Contains(d, url+Prefix+"/") {
			t.Fatalf("detail %q: want the leader unreachable, naming its console", d)
		}
	})
	t.Run("the leader redirects in turn", func(t *testing.T) {
		next, nextGot := fakeLeader(t, http.StatusCreated, `{}`, nil)
		moved, _ := fakeLeader(t, http.StatusTemporaryRedirect, `{"code":"NOT_LEADER"}`, http.Header{"Location": {next.URL + "/v1/tenants/acme/events"}})
		c, s := testConsole(t, follower(moved.URL, 0))
		w := httptest.NewRecorder()
		c.proxy(w, consoleRequest("POST", "/v1/tenants/acme/events", `{}`), s, "")
		if d := notLeaderDetail(t, w.Result()); !strings.Contains(d, next.URL+Prefix+"/") {
			t.Fatalf("detail %q: want the new leader's console named", d)
		}
		// Over a real connection the answer's framing is its own, not
		// the redirect's.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { c.proxy(w, r, s, "") }))
		defer srv.Close()
		res, err := http.Post(srv.URL+Prefix+"/api/v1/tenants/acme/events", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if d := notLeaderDetail(t, res); !strings.Contains(d, next.URL+Prefix+"/") {
			t.Fatalf("detail %q over a connection", d)
		}
		nextGot.mu.Lock()
		defer nextGot.mu.Unlock()
		if nextGot.n != 0 {
			t.Fatal("a second redirect was followed")
		}
	})
}

// TestNotModifiedPassesThrough: a 304 from the API is an answer, not a
// redirect to forward.
func TestNotModifiedPassesThrough(t *testing.T) {
	c, s := testConsole(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"abc"`)
		w.WriteHeader(http.StatusNotModified)
	}))
	w := httptest.NewRecorder()
	c.proxy(w, consoleRequest("GET", "/v1/tenants/acme/projections/p/e", ""), s, "")
	if res := w.Result(); res.StatusCode != http.StatusNotModified || res.Header.Get("ETag") != `"abc"` {
		t.Fatalf("304 through the console: %d, ETag %q", res.StatusCode, res.Header.Get("ETag"))
	}
}

// TestForwardsPerTenantBounded: one tenant's sessions have at most
// MaxForwardsPerTenant requests on their way to the leader at once (the
// next is answered 503 BUSY), and another tenant's request is forwarded
// meanwhile.
func TestForwardsPerTenantBounded(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan string, 2*MaxForwardsPerTenant)
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- r.Header.Get("Authorization")
		if r.Header.Get("Authorization") == "Bearer bpk_the_session_credential" {
			<-release
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer leader.Close()
	c, s := testConsole(t, follower(leader.URL, 0))
	var wg sync.WaitGroup
	for range MaxForwardsPerTenant {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.proxy(httptest.NewRecorder(), consoleRequest("POST", "/v1/tenants/acme/events", `{}`), s, "")
		}()
	}
	for range MaxForwardsPerTenant {
		<-arrived
	}
	w := httptest.NewRecorder()
	c.proxy(w, consoleRequest("POST", "/v1/tenants/acme/events", `{}`), s, "")
	if res := w.Result(); res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "BUSY") {
		t.Fatalf("a forward past the tenant's bound: %d %s, want 503 BUSY", res.StatusCode, w.Body.String())
	}
	_, other, _ := c.sessions.create("bpk_other_tenant", auth.Principal{ID: "k2", Tenant: "beta"})
	w = httptest.NewRecorder()
	c.proxy(w, consoleRequest("POST", "/v1/tenants/beta/events", `{}`), other, "")
	if w.Result().StatusCode != http.StatusCreated {
		t.Fatalf("another tenant's forward while the first is at its bound: %d %s", w.Result().StatusCode, w.Body.String())
	}
	close(release)
	wg.Wait()
	if n := c.fwdBusy["acme"]; n != 0 {
		t.Fatalf("%d forwarding slots still taken after every request ended", n)
	}
}

// TestForwardsBoundedInAll: MaxForwards requests of many tenants in
// flight at once, the next — any tenant's, the operator's too — is
// answered 503 BUSY at once rather than queued behind them.
func TestForwardsBoundedInAll(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, MaxForwards)
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		w.WriteHeader(http.StatusOK)
	}))
	defer leader.Close()
	c, _ := testConsole(t, follower(leader.URL, 0))
	var wg sync.WaitGroup
	for i := range MaxForwards {
		tenant := fmt.Sprintf("t%d", i/MaxForwardsPerTenant)
		_, s, err := c.sessions.create("bpk_"+tenant, auth.Principal{ID: tenant, Tenant: tenant})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.proxy(httptest.NewRecorder(), consoleRequest("GET", "/v1/tenants/"+tenant+"/stats", ""), s, "")
		}()
	}
	for range MaxForwards {
		<-arrived
	}
	_, op, _ := c.sessions.create("bpko_operator", auth.Principal{ID: "operator", Operator: true})
	w := httptest.NewRecorder()
	start := time.Now()
	c.proxy(w, consoleRequest("POST", "/v1/admin/tenants", `{"id":"x"}`), op, "")
	if res := w.Result(); res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "BUSY") || time.Since(start) > 2*time.Second {
		t.Fatalf("a forward past MaxForwards: %d %s after %s, want 503 BUSY at once", res.StatusCode, w.Body.String(), time.Since(start))
	}
	close(release)
	wg.Wait()
	if c.fwdTotal != 0 || len(c.fwdBusy) != 0 {
		t.Fatalf("slots still taken after every forward ended: %d, %v", c.fwdTotal, c.fwdBusy)
	}
}

// TestForwardDropsTheLeadersCookies: a Set-Cookie in the leader's answer
// does not reach the browser, whose cookies belong to this node.
func TestForwardDropsTheLeadersCookies(t *testing.T) {
	leader, _ := fakeLeader(t, http.StatusOK, `{}`, http.Header{"Set-Cookie": {CookieName + "=theirs; Path=/console"}})
	c, s := testConsole(t, follower(leader.URL, 0))
	w := httptest.NewRecorder()
	c.proxy(w, consoleRequest("GET", "/v1/tenants/acme/stats", ""), s, "")
	if res := w.Result(); res.StatusCode != http.StatusOK || len(res.Cookies()) != 0 {
		t.Fatalf("forwarded answer: %d with cookies %v", res.StatusCode, res.Cookies())
	}
}
