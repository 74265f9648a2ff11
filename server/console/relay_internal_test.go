package console

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/auth"
)

// relayConsole is node "n2"'s console of a cluster whose members are
// given by urls (id → API URL).
func relayConsole(t *testing.T, urls map[string]string) *Console {
	t.Helper()
	c := &Console{opts: Options{Lifetime: time.Hour, Logger: slog.New(slog.DiscardHandler), NodeID: "n2",
		MemberURL: func(id string) (string, bool) { u, ok := urls[id]; return u, ok }},
		sessions: newSessionStore(16, time.Hour, time.Hour), mux: http.NewServeMux(), relays: relayTransport(nil)}
	t.Cleanup(c.relays.CloseIdleConnections)
	return c
}

// statusOf sends method url with header (name, value pairs) and answers
// the status (0, and a test error, when no answer came).
func statusOf(t *testing.T, method, url string, header ...string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), method, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// eventually waits up to within for cond, failing the test with what.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
	}
}

func cookieOf(token, node string) string {
	return CookieName + "=" + token + "." + base64.RawURLEncoding.EncodeToString([]byte(node))
}

// TestCookieNamesItsNode: a cluster node's cookie carries its node id,
// which any node reads back; a single server's is the bare token, and a
// value whose node part does not decode names no node and no session.
func TestCookieNamesItsNode(t *testing.T) {
	c := &Console{opts: Options{NodeID: "node a/1"}}
	v := c.cookieValue("tok")
	if tok, home := splitCookie(v); tok != "tok" || home != "node a/1" {
		t.Fatalf("cookie %q parses as %q on %q", v, tok, home)
	}
	single := &Console{}
	if v := single.cookieValue("tok"); v != "tok" {
		t.Fatalf("a single server's cookie %q, want the bare token", v)
	}
	if tok, home := splitCookie("tok"); tok != "tok" || home != "" {
		t.Fatalf("a bare token parses as %q on %q", tok, home)
	}
	for _, bad := range []string{"tok.%%%", "tok.", "tok.a=b"} {
		if tok, home := splitCookie(bad); tok != "" || home != "" {
			t.Fatalf("%q parses as %q on %q, want nothing", bad, tok, home)
		}
	}
}

// TestRelayGoesOnlyToMembers: a cookie naming a node that is not a member
// sends nothing anywhere (no request a cookie can aim at an address of
// its choice) and is answered as no session; nor is a request relayed
// again once relayed, or over plain http from a TLS console.
func TestRelayGoesOnlyToMembers(t *testing.T) {
	var hits atomic.Int32
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(home.Close)
	c := relayConsole(t, map[string]string{"n1": home.URL, "n2": "http://127.0.0.1:1"})
	c.mux.HandleFunc("GET "+Prefix+"/session", c.whoAmI)
	c.mux.HandleFunc("GET "+Prefix+"/overview", c.authed(func(w http.ResponseWriter, _ *http.Request, _ *session, _ string) {
		w.WriteHeader(http.StatusOK)
	}))

	get := func(path, cookie string, edit func(*http.Request)) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", Prefix+path, nil)
		r.Header.Set("Cookie", cookie)
		if edit != nil {
			edit(r)
		}
		w := httptest.NewRecorder()
		c.ServeHTTP(w, r)
		return w
	}
	// A member other than this node: relayed.
	if w := get("/overview", cookieOf("tok", "n1"), nil); w.Code != 200 || hits.Load() != 1 {
		t.Fatalf("a session of member n1: %d, %d requests reached n1; want it relayed", w.Code, hits.Load())
	}
	// Not a member: nothing sent.
	w := get("/session", cookieOf("tok", "127.0.0.1:9"), nil)
	var v struct {
		SignedIn bool   `json:"signed_in"`
		Detail   string `json:"detail"`
	}
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &v) != nil || v.SignedIn || !strings.Contains(v.Detail, "not a member") {
		t.Fatalf("whoami with a cookie of a non-member: %d %s", w.Code, w.Body)
	}
	if w := get("/overview", cookieOf("tok", "n9"), nil); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), `node \"n9\"`) {
		t.Fatalf("a page with a cookie of a non-member: %d %s, want 401 naming it", w.Code, w.Body)
	}
	// Relayed once already: served here, as no session.
	if w := get("/overview", cookieOf("tok", "n1"), func(r *http.Request) { r.Header.Set(RelayHeader, "n3") }); w.Code != http.StatusUnauthorized {
		t.Fatalf("a relayed request: %d %s, want it served here (401)", w.Code, w.Body)
	}
	// A browser's TLS connection is never relayed over plain http.
	if w := get("/overview", cookieOf("tok", "n1"), func(r *http.Request) { r.TLS = &tls.ConnectionState{} }); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "in clear") {
		t.Fatalf("a relay of a request over TLS to an http member: %d %s", w.Code, w.Body)
	}
	c.opts.Secure = true
	if w := get("/overview", cookieOf("tok", "n1"), nil); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "in clear") {
		t.Fatalf("a relay from a TLS console to an http member: %d %s", w.Code, w.Body)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d requests reached n1, want the one relayed", n)
	}
}

// TestRelaysAreBounded: past MaxRelays requests in flight, the next is
// answered 503 BUSY at once; once they end, relays go again.
func TestRelaysAreBounded(t *testing.T) {
	release := make(chan struct{})
	var arrived sync.WaitGroup
	arrived.Add(MaxRelays)
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("hold") != "" {
			arrived.Done()
			<-release
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(home.Close)
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	c := relayConsole(t, map[string]string{"n1": home.URL})
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	t.Cleanup(free) // first: the servers' Close waits for the held handlers
	get := func(query string) int {
		return statusOf(t, "GET", srv.URL+Prefix+"/overview?"+query, "Cookie", cookieOf("tok", "n1"))
	}
	var done sync.WaitGroup
	for range MaxRelays {
		done.Add(1)
		go func() { defer done.Done(); get("hold=1") }()
	}
	all := make(chan struct{})
	go func() { arrived.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(20 * time.Second):
		t.Fatalf("the %d held requests did not all reach the home node", MaxRelays)
	}
	if code := get(""); code != http.StatusServiceUnavailable {
		t.Fatalf("relay %d: %d, want 503 BUSY", MaxRelays+1, code)
	}
	free()
	done.Wait()
	if code := get(""); code != 200 {
		t.Fatalf("a relay once the others ended: %d", code)
	}
}

// homeConsole is a session's home node's console with the real routes,
// the operator credential and api as its API; it returns the console
// and the cookie of an operator session on it.
func homeConsole(t *testing.T, api http.Handler) (*Console, string) {
	t.Helper()
	c, _ := testConsole(t, api)
	op, hash, err := auth.NewOperatorToken()
	if err != nil {
		t.Fatal(err)
	}
	if c.opts.Auth, err = auth.New(auth.Config{OperatorHash: hash}); err != nil {
		t.Fatal(err)
	}
	c.opts.NodeID = "n1"
	c.origin = http.NewCrossOriginProtection()
	c.mux = http.NewServeMux()
	c.routes()
	token, _, err := c.sessions.create(op, auth.Principal{Operator: true})
	if err != nil {
		t.Fatal(err)
	}
	return c, CookieName + "=" + c.cookieValue(token)
}

// TestRelayedRequestsPerTenantAreBounded: the home node serves at most
// MaxRelaysPerTenant relayed requests of one tenant's sessions at once;
// the next is answered 503 BUSY before anything is done (its API never
// sees it), while the same session's requests sent to the home node
// itself still go; once the others end, relays go again.
func TestRelayedRequestsPerTenantAreBounded(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	var served, held atomic.Int32
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if r.URL.Query().Get("hold") != "" {
			held.Add(1)
			<-release
		}
		w.WriteHeader(http.StatusOK)
	})
	c, cookie := homeConsole(t, api)
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	t.Cleanup(free) // first: Close waits for the held handlers
	get := func(query string, relayed bool) int {
		h := []string{"Cookie", cookie}
		if relayed {
			h = append(h, RelayHeader, "n2")
		}
		return statusOf(t, "GET", srv.URL+Prefix+"/api/v1/admin/tenants?"+query, h...)
	}
	var done sync.WaitGroup
	for range MaxRelaysPerTenant {
		done.Add(1)
		go func() { defer done.Done(); get("hold=1", true) }()
	}
	eventually(t, 20*time.Second, "the relayed requests did not all reach the API", func() bool { return held.Load() == MaxRelaysPerTenant })
	if code := get("", true); code != http.StatusServiceUnavailable {
		t.Fatalf("relayed request %d of the operator's sessions: %d, want 503 BUSY", MaxRelaysPerTenant+1, code)
	}
	if n := served.Load(); n != MaxRelaysPerTenant {
		t.Fatalf("the API served %d requests, want the %d admitted", n, MaxRelaysPerTenant)
	}
	if code := get("", false); code != 200 {
		t.Fatalf("the session's own request to its home node: %d", code)
	}
	free()
	done.Wait()
	if code := get("", true); code != 200 {
		t.Fatalf("a relayed request once the others ended: %d", code)
	}
}

// TestRelayDoesNotWaitForARefusedBody: a request the home node refuses
// (no such session) is answered at once and gives its relay slot back,
// while its sender is still trickling the body: nobody can hold the
// relays with slow uploads without a session.
func TestRelayDoesNotWaitForARefusedBody(t *testing.T) {
	home, _ := homeConsole(t, http.NotFoundHandler())
	homeSrv := httptest.NewServer(home)
	t.Cleanup(homeSrv.Close)
	c := relayConsole(t, map[string]string{"n1": homeSrv.URL})
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "POST " + Prefix + "/api/v1/admin/tenants HTTP/1.1\r\nHost: " + srv.Listener.Addr().String() +
		"\r\nCookie: " + cookieOf("junk", "n1") + "\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body trickles: %v", err)
	}
	if res.StatusCode != http.StatusUnauthorized || !res.Close {
		t.Fatalf("a junk session's upload: %d (Connection: close %v), want 401 closing the connection its unread body is on", res.StatusCode, res.Close)
	}
	eventually(t, 5*time.Second, "relays still held while the refused body trickles", func() bool { return c.relaying.Load() == 0 })
}

// TestRelayPassesTheHomeAnswerOn: the home node's answer reaches the
// browser as it is — a redirect included (with its framing intact) —,
// and a stream longer than this server's write timeout is not cut.
func TestRelayPassesTheHomeAnswerOn(t *testing.T) {
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case Prefix + "/static":
			http.Redirect(w, r, Prefix+"/static/", http.StatusMovedPermanently)
		case Prefix + "/api/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 8 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				http.NewResponseController(w).Flush()
				time.Sleep(100 * time.Millisecond)
			}
		}
	}))
	t.Cleanup(home.Close)
	c := relayConsole(t, map[string]string{"n1": home.URL})
	c.opts.WriteTimeout = 300 * time.Millisecond // each write's, as the server's
	srv := httptest.NewUnstartedServer(c)
	srv.Config.WriteTimeout = c.opts.WriteTimeout
	srv.Start()
	t.Cleanup(srv.Close)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (*http.Response, string, error) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Cookie", cookieOf("tok", "n1"))
		res, err := noRedirect.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res, string(b), err
	}
	res, _, err := get(Prefix + "/static")
	if err != nil || res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != Prefix+"/static/" {
		t.Fatalf("the home node's redirect: %v %v", res, err)
	}
	res, body, err := get(Prefix + "/api/stream")
	if err != nil || strings.Count(body, "data:") != 8 {
		t.Fatalf("a relayed stream of 0.8 s under a 0.3 s write timeout: %q, %v", body, err)
	}
	_ = res
}

// TestRelayFailures: a home node that was reached but did not answer in
// time leaves a change's outcome unknown (503 OUTCOME_UNKNOWN) and a
// read retryable (503 BUSY), the session kept; one that cannot be
// connected to is answered 401 (sign in again here) with the cookie kept,
// since the node may be back at the next request, but a sign-out expires
// it all the same; a node that is not a member expires it for good.
func TestRelayFailures(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // the go-ahead (100 Continue), then nothing in time
		time.Sleep(500 * time.Millisecond)
	}))
	t.Cleanup(slow.Close)
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL
	gone.Close()
	c := relayConsole(t, map[string]string{"n1": slow.URL, "n3": goneURL})
	c.relays.ResponseHeaderTimeout = 100 * time.Millisecond
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	do := func(method, path, node string) (*http.Response, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader("{}"))
		req.Header.Set("Cookie", cookieOf("tok", node))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	expired := func(res *http.Response) bool {
		for _, ck := range res.Cookies() {
			if ck.Name == CookieName && ck.MaxAge < 0 {
				return true
			}
		}
		return false
	}
	res, b := do("POST", Prefix+"/api/v1/admin/tenants", "n1")
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(b, "OUTCOME_UNKNOWN") || expired(res) {
		t.Fatalf("a change the home node did not answer in time: %d %s, cookie expired %v", res.StatusCode, b, expired(res))
	}
	res, b = do("GET", Prefix+"/overview", "n1")
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(b, "BUSY") || expired(res) {
		t.Fatalf("a read the home node did not answer in time: %d %s", res.StatusCode, b)
	}
	res, b = do("GET", Prefix+"/overview", "n3")
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(b, "could not be reached") || expired(res) {
		t.Fatalf("a home node that cannot be connected to: %d %s, cookie expired %v (want it kept: the node may be back)", res.StatusCode, b, expired(res))
	}
	res, b = do("GET", Prefix+"/overview", "n9")
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(b, "not a member") || !expired(res) {
		t.Fatalf("a home node that is not a member: %d %s, cookie expired %v", res.StatusCode, b, expired(res))
	}
	res, b = do("DELETE", Prefix+"/session", "n3")
	if !expired(res) || res.Header.Get("Clear-Site-Data") == "" {
		t.Fatalf("a sign-out that could not be relayed: %d %s, cookie expired %v, Clear-Site-Data %q", res.StatusCode, b, expired(res), res.Header.Get("Clear-Site-Data"))
	}
}

// TestReplacedSignOutSkipsOnlyTheCSRFToken: the sign-out a node sends for
// a session the browser replaced there ends it without the CSRF token;
// the marker alone (no RelayHeader), on another route, or on a request a
// browser marks as another site's, does not.
func TestReplacedSignOutSkipsOnlyTheCSRFToken(t *testing.T) {
	c, cookie := homeConsole(t, http.NotFoundHandler())
	held := c.sessions.len()
	do := func(method, path string, hdr map[string]string) int {
		r := httptest.NewRequest(method, Prefix+path, strings.NewReader(`{}`))
		r.Header.Set("Cookie", cookie)
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		c.ServeHTTP(w, r)
		return w.Code
	}
	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
	}{
		{"DELETE", "/session", map[string]string{replacedHeader: "1"}},
		{"DELETE", "/session", map[string]string{replacedHeader: "1", RelayHeader: "n2", "Sec-Fetch-Site": "cross-site"}},
		{"POST", "/api/v1/admin/tenants", map[string]string{replacedHeader: "1", RelayHeader: "n2"}},
	} {
		if code := do(tc.method, tc.path, tc.hdr); code != http.StatusForbidden {
			t.Fatalf("%s %s with %v: %d, want 403", tc.method, tc.path, tc.hdr, code)
		}
	}
	if c.sessions.len() != held {
		t.Fatal("a refused request ended the session")
	}
	if code := do("DELETE", "/session", map[string]string{replacedHeader: "1", RelayHeader: "n2"}); code != http.StatusNoContent || c.sessions.len() != held-1 {
		t.Fatalf("the replaced session's sign-out: %d, %d sessions left", code, c.sessions.len())
	}
}

// TestRelayOfAReaderThatStops: a browser that stops reading a relayed
// answer holds its relay only as long as one write may take (the
// server's write timeout), not for ever.
func TestRelayOfAReaderThatStops(t *testing.T) {
	big := strings.Repeat("x", 16<<20)
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, big)
	}))
	t.Cleanup(home.Close)
	c := relayConsole(t, map[string]string{"n1": home.URL})
	c.opts.WriteTimeout = 300 * time.Millisecond
	srv := httptest.NewUnstartedServer(c)
	srv.Config.WriteTimeout = c.opts.WriteTimeout
	srv.Start()
	t.Cleanup(srv.Close)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	req := "GET " + Prefix + "/api/v1/tenants/acme/events HTTP/1.1\r\nHost: x\r\nCookie: " + cookieOf("tok", "n1") + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	// Never read. The relay is held while its writes block, then let go.
	eventually(t, 500*time.Millisecond, "the relay never started", func() bool { return c.relaying.Load() != 0 })
	eventually(t, 10*time.Second, "a browser that stopped reading still holds its relay after 10 s", func() bool { return c.relaying.Load() == 0 })
}

// TestRelayedSignOutIsNeverLost: a sign-out is never refused by the
// per-tenant bound on the home node, and one the home node fails (5xx)
// still expires the browser's cookie on its way back.
func TestRelayedSignOutIsNeverLost(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	var held atomic.Int32
	c, cookie := homeConsole(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held.Add(1)
		<-release
	}))
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	t.Cleanup(free)
	for range MaxRelaysPerTenant {
		go func() {
			statusOf(t, "GET", srv.URL+Prefix+"/api/v1/admin/tenants", "Cookie", cookie, RelayHeader, "n2")
		}()
	}
	eventually(t, 20*time.Second, "the held requests did not arrive", func() bool { return held.Load() == MaxRelaysPerTenant })
	held0 := c.sessions.len()
	req, _ := http.NewRequest("DELETE", srv.URL+Prefix+"/session", nil)
	req.Header.Set("Cookie", cookie)
	req.Header.Set(RelayHeader, "n2")
	req.Header.Set(replacedHeader, "1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent || c.sessions.len() != held0-1 {
		t.Fatalf("a relayed sign-out beside %d relayed requests: %d, sessions %d → %d", MaxRelaysPerTenant, res.StatusCode, held0, c.sessions.len())
	}
	free()

	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(failing.Close)
	relayer := relayConsole(t, map[string]string{"n1": failing.URL})
	rsrv := httptest.NewServer(relayer)
	t.Cleanup(rsrv.Close)
	req, _ = http.NewRequest("DELETE", rsrv.URL+Prefix+"/session", nil)
	req.Header.Set("Cookie", cookieOf("tok", "n1"))
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	expired := false
	for _, ck := range res.Cookies() {
		expired = expired || (ck.Name == CookieName && ck.MaxAge < 0)
	}
	if res.StatusCode != http.StatusServiceUnavailable || !expired || res.Header.Get("Clear-Site-Data") == "" {
		t.Fatalf("a sign-out the home node failed: %d, cookie expired %v, Clear-Site-Data %q", res.StatusCode, expired, res.Header.Get("Clear-Site-Data"))
	}
}

// TestEndElsewhereSendsOnlyWhereItMay: the sign-out of a replaced session
// goes to its member node with the cookie and the markers, and is not
// sent over plain http from a TLS console, for a relayed sign-in, or
// when every relay is in use.
func TestEndElsewhereSendsOnlyWhereItMay(t *testing.T) {
	got := make(chan *http.Request, 8)
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(home.Close)
	c := relayConsole(t, map[string]string{"n1": home.URL})
	signIn := func(edit func(*http.Request)) *http.Request {
		r := httptest.NewRequest("POST", Prefix+"/session", nil)
		if edit != nil {
			edit(r)
		}
		return r
	}
	none := func(what string) {
		t.Helper()
		select {
		case r := <-got:
			t.Fatalf("%s: the home node got %s %s", what, r.Method, r.URL)
		case <-time.After(200 * time.Millisecond):
		}
	}
	c.endElsewhere(signIn(func(r *http.Request) { r.TLS = &tls.ConnectionState{} }), "n1", "old.x")
	none("a TLS sign-in, an http home")
	c.endElsewhere(signIn(func(r *http.Request) { r.Header.Set(RelayHeader, "n3") }), "n1", "old.x")
	none("a relayed sign-in")
	c.relaying.Store(MaxRelays)
	c.endElsewhere(signIn(nil), "n1", "old.x")
	none("every relay in use")
	c.relaying.Store(0)
	c.endElsewhere(signIn(nil), "n9", "old.x")
	none("a node that is not a member")
	c.endElsewhere(signIn(nil), "n1", "old.x")
	select {
	case r := <-got:
		ck, err := r.Cookie(CookieName)
		if r.Method != "DELETE" || r.URL.Path != Prefix+"/session" || err != nil || ck.Value != "old.x" || r.Header.Get(replacedHeader) != "1" || r.Header.Get(RelayHeader) != "n2" {
			t.Fatalf("the sign-out sent: %s %s cookie %v headers %v", r.Method, r.URL, ck, r.Header)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no sign-out reached the home node")
	}
	eventually(t, 5*time.Second, "the sign-out's relay slot was not given back", func() bool { return c.relaying.Load() == 0 })
}
