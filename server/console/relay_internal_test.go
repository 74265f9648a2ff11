package console

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
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
		sessions: newSessionStore(16, time.Hour, time.Hour), mux: http.NewServeMux(), relays: forwardTransport(nil)}
	t.Cleanup(c.relays.CloseIdleConnections)
	return c
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
	// A TLS browser connection is never relayed over plain http.
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
		req, _ := http.NewRequestWithContext(context.Background(), "GET", srv.URL+Prefix+"/overview?"+query, nil)
		req.Header.Set("Cookie", cookieOf("tok", "n1"))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		res.Body.Close()
		return res.StatusCode
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

// TestRelaysPerTenantAreBounded: the home node names a relayed session's
// tenant; past MaxRelaysPerTenant of one tenant's relays in flight the
// next is answered 503 BUSY, while another tenant's still go; the name
// never reaches the browser.
func TestRelaysPerTenantAreBounded(t *testing.T) {
	release := make(chan struct{})
	var arrived sync.WaitGroup
	arrived.Add(MaxRelaysPerTenant)
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(relayTenantHeader, r.URL.Query().Get("tenant"))
		if r.URL.Query().Get("hold") != "" {
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush() // a stream: headers, then nothing yet
			arrived.Done()
			<-release
			return
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
	get := func(query string) *http.Response {
		req, _ := http.NewRequestWithContext(context.Background(), "GET", srv.URL+Prefix+"/overview?"+query, nil)
		req.Header.Set("Cookie", cookieOf("tok", "n1"))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	var held []*http.Response
	for range MaxRelaysPerTenant {
		res := get("tenant=acme&hold=1")
		if res.StatusCode != 200 || res.Header.Get(relayTenantHeader) != "" {
			t.Fatalf("a held relay: %d, tenant header %q passed on", res.StatusCode, res.Header.Get(relayTenantHeader))
		}
		held = append(held, res)
	}
	arrived.Wait()
	if res := get("tenant=acme"); res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("acme's relay %d: %d, want 503 BUSY", MaxRelaysPerTenant+1, res.StatusCode)
	} else {
		res.Body.Close()
	}
	if res := get("tenant=beta"); res.StatusCode != 200 {
		t.Fatalf("another tenant's relay: %d", res.StatusCode)
	} else {
		res.Body.Close()
	}
	free()
	for _, res := range held {
		res.Body.Close()
	}
	// The relays see their streams end, and give their slots back.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		res := get("tenant=acme")
		res.Body.Close()
		if res.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acme's relay once its others ended: %d", res.StatusCode)
		}
	}
}

// TestHomeNamesTheRelayedSessionsTenant: the home node's console answers
// a relayed request of a live session with the session's tenant (for the
// relaying node's count), and a request that was not relayed without it.
func TestHomeNamesTheRelayedSessionsTenant(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	c, _ := testConsole(t, api)
	op, hash, err := auth.NewOperatorToken()
	if err != nil {
		t.Fatal(err)
	}
	if c.opts.Auth, err = auth.New(auth.Config{OperatorHash: hash}); err != nil {
		t.Fatal(err)
	}
	c.mux = http.NewServeMux()
	c.routes()
	token, _, err := c.sessions.create(op, auth.Principal{Operator: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, relayed := range []bool{false, true} {
		r := httptest.NewRequest("GET", Prefix+"/session", nil)
		r.Header.Set("Cookie", CookieName+"="+token)
		if relayed {
			r.Header.Set(RelayHeader, "n2")
		}
		w := httptest.NewRecorder()
		c.ServeHTTP(w, r)
		got := w.Header().Get(relayTenantHeader)
		if w.Code != 200 || (relayed && got != "-") || (!relayed && got != "") {
			t.Fatalf("relayed %v: %d, tenant header %q", relayed, w.Code, got)
		}
	}
}
