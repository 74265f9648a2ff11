package console

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/auth"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestStore(max int) (*sessionStore, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	st := newSessionStore(max, 10*time.Minute, time.Hour)
	st.now = c.now
	return st, c
}

func TestSessionIDIsRandomAndStoredHashed(t *testing.T) {
	st, _ := newTestStore(10)
	id1, s1, err := st.create("bpk_secret_1", auth.Principal{ID: "k1", Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	id2, _, _ := st.create("bpk_secret_1", auth.Principal{ID: "k1", Tenant: "acme"})
	if id1 == id2 || len(id1) != 43 || len(s1.csrf) != 43 || s1.csrf == id1 {
		t.Fatalf("ids %q %q csrf %q: want distinct 256-bit tokens", id1, id2, s1.csrf)
	}
	for h := range st.m {
		if strings.Contains(string(h[:]), id1) {
			t.Fatal("the store holds a session id in the clear")
		}
	}
	if st.get(id1) != s1 || st.get(id1[:42]+"x") != nil || st.get("") != nil || st.get(strings.Repeat("a", 100)) != nil {
		t.Fatal("get: want the session for its id only")
	}
}

func TestSessionExpiresWhenIdleAndAtItsLifetime(t *testing.T) {
	st, c := newTestStore(10)
	id, _, _ := st.create("k", auth.Principal{ID: "k1", Tenant: "acme"})
	c.t = c.t.Add(10*time.Minute - time.Second)
	if st.get(id) == nil {
		t.Fatal("a session used within the idle timeout ended")
	}
	c.t = c.t.Add(10 * time.Minute)
	if st.get(id) != nil {
		t.Fatal("a session idle for the idle timeout is still live")
	}
	if st.len() != 0 {
		t.Fatal("an expired session was not dropped")
	}
	// Used every 5 minutes, it still ends one lifetime after sign-in.
	id, _, _ = st.create("k", auth.Principal{ID: "k1", Tenant: "acme"})
	for i := 0; i < 11; i++ {
		c.t = c.t.Add(5 * time.Minute)
		if st.get(id) == nil {
			t.Fatalf("ended after %d min, before its lifetime", (i+1)*5)
		}
	}
	c.t = c.t.Add(5 * time.Minute)
	if st.get(id) != nil {
		t.Fatal("a session outlived its lifetime")
	}
}

func TestSessionStoreIsBounded(t *testing.T) {
	st, c := newTestStore(3)
	for i := 0; i < 3; i++ {
		if _, _, err := st.create("k", auth.Principal{ID: string(rune('a' + i)), Tenant: "acme"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := st.create("k", auth.Principal{ID: "z", Tenant: "acme"}); err != ErrTooManySessions {
		t.Fatalf("a sign-in past the bound: err %v, want ErrTooManySessions", err)
	}
	if st.len() != 3 {
		t.Fatalf("%d sessions, want 3", st.len())
	}
	// Expired sessions make room.
	c.t = c.t.Add(time.Hour)
	if _, _, err := st.create("k", auth.Principal{ID: "z", Tenant: "acme"}); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if st.len() != 1 {
		t.Fatalf("%d sessions, want the expired ones dropped", st.len())
	}
}

func TestOnePrincipalsSessionsAreBounded(t *testing.T) {
	st, c := newTestStore(1000)
	p := auth.Principal{ID: "k1", Tenant: "acme"}
	first, _, _ := st.create("k", p)
	for i := 1; i < MaxSessionsPerPrincipal; i++ {
		c.t = c.t.Add(time.Second)
		if _, _, err := st.create("k", p); err != nil {
			t.Fatal(err)
		}
	}
	other, _, _ := st.create("k", auth.Principal{ID: "k2", Tenant: "acme"})
	c.t = c.t.Add(time.Second)
	if _, _, err := st.create("k", p); err != nil {
		t.Fatal(err)
	}
	if st.len() != MaxSessionsPerPrincipal+1 {
		t.Fatalf("%d sessions, want %d", st.len(), MaxSessionsPerPrincipal+1)
	}
	if st.get(first) != nil {
		t.Fatal("the principal's least recently used session outlived its bound")
	}
	if st.get(other) == nil {
		t.Fatal("another principal's session was ended")
	}
}

func TestSessionChecksCompareInConstantTime(t *testing.T) {
	st, _ := newTestStore(10)
	id, s, _ := st.create("k", auth.Principal{ID: "k1", Tenant: "acme"})
	calls := 0
	orig := ctEqual
	defer func() { ctEqual = orig }()
	ctEqual = func(x, y []byte) bool { calls++; return orig(x, y) }
	for _, c := range []struct {
		token string
		ok    bool
	}{{s.csrf, true}, {s.csrf[:42] + "x", false}, {strings.ToUpper(s.csrf), s.csrf == strings.ToUpper(s.csrf)}} {
		calls = 0
		if s.checkCSRF(c.token) != c.ok || calls != 1 {
			t.Errorf("checkCSRF(%q): %d constant-time comparisons, want 1 and %v", c.token, calls, c.ok)
		}
	}
	calls = 0
	if s.checkCSRF("") || calls != 0 {
		t.Error("an empty CSRF token was accepted")
	}
	calls = 0
	if st.get(id) == nil || calls != 1 {
		t.Errorf("get: %d constant-time comparisons, want 1", calls)
	}
}

func TestSignOutRemovesTheSession(t *testing.T) {
	st, _ := newTestStore(10)
	id, _, _ := st.create("k", auth.Principal{ID: "k1", Tenant: "acme"})
	if !st.remove(id) || st.get(id) != nil || st.remove(id) {
		t.Fatal("remove: want the session gone, once")
	}
}

func TestAllowedAPIPaths(t *testing.T) {
	ten := &session{principal: auth.Principal{ID: "k1", Tenant: "acme"}}
	op := &session{principal: auth.Principal{ID: "operator", Operator: true}}
	for _, c := range []struct {
		s    *session
		path string
		ok   bool
	}{
		{ten, "/v1/tenants/acme/events", true},
		{ten, "/v1/tenants/acme", true},
		{ten, "/v1/tenants/acmex/events", false},
		{ten, "/v1/tenants/other/events", false},
		{ten, "/v1/tenants/acme/../other/events", false},
		{ten, "/v1/tenants/acme//x", false},
		{ten, "/v1/admin/tenants", false},
		{ten, "/metrics", false},
		{op, "/v1/admin/tenants", true},
		{op, "/v1/admin/tenants/acme/suspend", true},
		{op, "/v1/cluster", true},
		{op, "/v1/tenants/acme/events", false},
		{op, "/metrics", false},
	} {
		if allowedAPIPath(c.s, c.path) != c.ok {
			t.Errorf("%s %s: allowed %v, want %v", c.s.principal.ID, c.path, !c.ok, c.ok)
		}
	}
}

func TestRingKeepsTheNewestSamplesInOrder(t *testing.T) {
	var r ring[int]
	if len(r.all()) != 0 {
		t.Fatal("an empty ring has samples")
	}
	for i := 0; i < RingSamples+5; i++ {
		r.add(i)
	}
	all := r.all()
	if len(all) != RingSamples || all[0] != 5 || all[len(all)-1] != RingSamples+4 {
		t.Fatalf("ring: %d samples from %d to %d", len(all), all[0], all[len(all)-1])
	}
}

func TestQuantileOfTheSecondsObservations(t *testing.T) {
	bounds := []float64{0.001, 0.01, 0.1}
	prev := []float64{10, 10, 10}
	cur := []float64{10 + 90, 10 + 99, 10 + 100} // this second: 90 ≤1ms, 9 ≤10ms, 1 ≤100ms
	if q := quantile(0.5, bounds, prev, cur, 100); q != 1 {
		t.Errorf("p50 %v ms, want 1", q)
	}
	if q := quantile(0.99, bounds, prev, cur, 100); q != 10 {
		t.Errorf("p99 %v ms, want 10", q)
	}
	if q := quantile(0.999, bounds, prev, cur, 100); q != 100 {
		t.Errorf("p99.9 %v ms, want 100", q)
	}
	if q := quantile(0.5, bounds, nil, nil, 0); q != 0 {
		t.Errorf("no observations: %v, want 0", q)
	}
}

func TestTheCookieIsSecureUnderTLS(t *testing.T) {
	op, hash, err := auth.NewOperatorToken()
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{OperatorHash: hash})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		secure bool
		scheme string
		want   bool
	}{{false, "http", false}, {true, "http", true}, {false, "https", true}} {
		c, err := New(Options{Auth: a, API: http.NotFoundHandler(), Secure: tc.secure})
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("POST", tc.scheme+"://console.example"+Prefix+"/session", strings.NewReader(`{"credential": "`+op+`"}`))
		r.Header.Set("Origin", tc.scheme+"://console.example")
		w := httptest.NewRecorder()
		c.ServeHTTP(w, r)
		c.Close()
		ck := w.Header().Get("Set-Cookie")
		if w.Code != 200 || strings.Contains(ck, "Secure") != tc.want || !strings.Contains(ck, "HttpOnly") {
			t.Errorf("Options.Secure=%v over %s: %d, Set-Cookie %q", tc.secure, tc.scheme, w.Code, ck)
		}
		if got := w.Header().Get("Strict-Transport-Security"); (got == StrictTransportSecurity) != (tc.scheme == "https") {
			t.Errorf("Options.Secure=%v over %s: Strict-Transport-Security %q", tc.secure, tc.scheme, got)
		}
	}
}

// One tenant's keys (an admin can issue as many as it likes) cannot fill
// the store and lock every other tenant and the operator out.
func TestOneTenantCannotFillTheSessionStore(t *testing.T) {
	st, c := newTestStore(DefaultMaxSessions)
	for k := 0; k < DefaultMaxSessions/MaxSessionsPerPrincipal+8; k++ {
		for i := 0; i < MaxSessionsPerPrincipal; i++ {
			c.t = c.t.Add(time.Millisecond)
			if _, _, err := st.create("k", auth.Principal{ID: "key" + itoaInternal(k), Tenant: "evil"}); err != nil {
				t.Fatalf("key %d sign-in %d: %v", k, i, err)
			}
		}
	}
	if n := st.len(); n > MaxSessionsPerTenant {
		t.Fatalf("one tenant holds %d sessions, want at most %d", n, MaxSessionsPerTenant)
	}
	if _, _, err := st.create("k", auth.Principal{ID: "k1", Tenant: "victim"}); err != nil {
		t.Fatalf("another tenant's sign-in: %v", err)
	}
	if _, _, err := st.create("op", auth.Principal{Operator: true, ID: "operator"}); err != nil {
		t.Fatalf("the operator's sign-in: %v", err)
	}
}

// When live tenant sessions fill the store, the operator still signs in
// (the least recently used tenant session ends).
func TestTheOperatorSignsInWhenTheStoreIsFull(t *testing.T) {
	st, c := newTestStore(3)
	var ids []string
	for i := 0; i < 3; i++ {
		c.t = c.t.Add(time.Second)
		id, _, err := st.create("k", auth.Principal{ID: "k", Tenant: "t" + itoaInternal(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	st.get(ids[0]) // t0's session is now the most recently used
	if _, _, err := st.create("op", auth.Principal{Operator: true, ID: "operator"}); err != nil {
		t.Fatalf("the operator's sign-in with the store full: %v", err)
	}
	if st.len() != 3 || st.get(ids[1]) != nil || st.get(ids[0]) == nil || st.get(ids[2]) == nil {
		t.Fatal("want the least recently used tenant session ended, the others kept")
	}
	if _, _, err := st.create("k", auth.Principal{ID: "k2", Tenant: "t9"}); err != ErrTooManySessions {
		t.Fatalf("a tenant sign-in with the store full: %v, want ErrTooManySessions", err)
	}
}

func itoaInternal(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoaInternal(i/10) + string(rune('0'+i%10))
}

// Tenants filling the store cannot lock another tenant out: its sign-in
// ends the least recently used session of the tenant holding the most.
func TestTenantsCannotLockOthersOut(t *testing.T) {
	st := newSessionStore(DefaultMaxSessions, DefaultIdleTimeout, DefaultLifetime)
	for ten := range DefaultMaxSessions / MaxSessionsPerTenant {
		for k := range MaxSessionsPerTenant {
			p := auth.Principal{ID: fmt.Sprintf("key%d", k/MaxSessionsPerPrincipal), Tenant: fmt.Sprintf("busy%d", ten)}
			if _, _, err := st.create("cred", p); err != nil {
				t.Fatalf("tenant %d session %d: %v", ten, k, err)
			}
		}
	}
	if _, _, err := st.create("cred", auth.Principal{ID: "k", Tenant: "other"}); err != nil {
		t.Fatalf("a tenant's sign-in into a store full of other tenants' sessions: %v", err)
	}
	if n := st.len(); n != DefaultMaxSessions {
		t.Fatalf("%d sessions held, want the store's %d", n, DefaultMaxSessions)
	}
}

// An idle session ends at its idle timeout though no request comes to
// find it: a live tail open through it stops then, not at the lifetime.
// Close stops the sweep.
func TestAnIdleSessionEndsWhileItsStreamIsOpen(t *testing.T) {
	op, hash, err := auth.NewOperatorToken()
	if err != nil {
		t.Fatal(err)
	}
	authn, err := auth.New(auth.Config{OperatorHash: hash})
	if err != nil {
		t.Fatal(err)
	}
	streaming := make(chan struct{}, 1)
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(w).Flush()
		streaming <- struct{}{}
		<-r.Context().Done()
	})
	const idle = 300 * time.Millisecond
	c, err := New(Options{Auth: authn, API: api, IdleTimeout: idle, SampleInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+Prefix+"/session", strings.NewReader(`{"credential": "`+op+`"}`))
	req.Header.Set("Origin", srv.URL)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || len(res.Cookies()) != 1 {
		t.Fatalf("sign-in: %d %v", res.StatusCode, res.Cookies())
	}
	req, _ = http.NewRequest(http.MethodGet, srv.URL+Prefix+"/api/v1/admin/tenants", nil)
	req.AddCookie(res.Cookies()[0])
	start := time.Now()
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	<-streaming
	ended := make(chan time.Duration, 1)
	go func() {
		_, _ = io.Copy(io.Discard, res.Body)
		ended <- time.Since(start)
	}()
	select {
	case d := <-ended:
		if d < idle {
			t.Fatalf("the stream ended after %v, before the idle timeout", d)
		}
		t.Logf("the stream of a session idle for %v ended after %v", idle, d)
	case <-time.After(10 * idle):
		t.Fatalf("the stream of a session idle for %v is still open after %v", idle, 10*idle)
	}
	if n := c.sessions.len(); n != 0 {
		t.Fatalf("%d sessions held after the idle timeout", n)
	}
	c.Close()
	select {
	case <-c.done:
	default:
		t.Fatal("Close returned with the sweep running")
	}
}

func TestSweepEndsOnlyExpiredSessions(t *testing.T) {
	st, c := newTestStore(10)
	_, old, _ := st.create("k", auth.Principal{ID: "k1", Tenant: "acme"})
	c.t = c.t.Add(5 * time.Minute)
	id, fresh, _ := st.create("k", auth.Principal{ID: "k2", Tenant: "acme"})
	c.t = c.t.Add(5 * time.Minute)
	if n := st.sweep(); n != 1 {
		t.Fatalf("sweep ended %d sessions, want 1", n)
	}
	select {
	case <-old.ended:
	default:
		t.Fatal("the expired session's ended channel is open")
	}
	select {
	case <-fresh.ended:
		t.Fatal("a live session ended")
	default:
	}
	if st.get(id) != fresh {
		t.Fatal("the live session is gone")
	}
	if d := st.sweepInterval(); d != time.Minute {
		t.Fatalf("sweep interval %v for a 10 min idle timeout, want 1m", d)
	}
}
