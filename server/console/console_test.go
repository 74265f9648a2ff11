package console_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/console"
)

func TestSignInGivesAHardenedSessionCookieAndSignOutEndsIt(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	r := e.must(e.do(c, "POST", console.Prefix+"/session", map[string]any{"credential": key}, "Origin", e.base), 200)
	if strings.Contains(string(r.body), key) || strings.Contains(strings.Join(r.header.Values("Set-Cookie"), ";"), key) {
		t.Fatal("the sign-in answer carries the key back to the browser")
	}
	ck := r.header.Get("Set-Cookie")
	for _, want := range []string{console.CookieName + "=", "Path=/console", "HttpOnly", "SameSite=Strict", "Max-Age="} {
		if !strings.Contains(ck, want) {
			t.Errorf("Set-Cookie %q lacks %q", ck, want)
		}
	}
	if strings.Contains(ck, "Secure") {
		t.Errorf("Set-Cookie %q: Secure on a plain-HTTP server (browsers would drop it)", ck)
	}
	m := r.json(t)
	if m["tenant"] != "acme" || m["operator"] != false || len(m["csrf_token"].(string)) != 43 {
		t.Fatalf("session view %v", m)
	}
	csrf := m["csrf_token"].(string)
	cookieValue := strings.TrimPrefix(strings.SplitN(ck, ";", 2)[0], console.CookieName+"=")

	e.must(e.do(c, "GET", console.Prefix+"/session", nil), 200)
	if r := e.must(e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil), 200); r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("tenant data through the console: Cache-Control %q, want no-store", r.header.Get("Cache-Control"))
	}
	// Sign-out is a state change: it needs the CSRF token.
	e.must(e.do(c, "DELETE", console.Prefix+"/session", nil, "Origin", e.base), 403)
	e.must(e.do(c, "GET", console.Prefix+"/session", nil), 200)
	e.must(e.do(c, "DELETE", console.Prefix+"/session", nil, "Origin", e.base, "X-CSRF-Token", csrf), 204)
	if e.must(e.do(c, "GET", console.Prefix+"/session", nil), 200).json(t)["signed_in"] != false {
		t.Fatal("still signed in after sign-out")
	}
	// The old cookie value is dead on the server, not only in the jar.
	e.must(e.do(nil, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil, "Cookie", console.CookieName+"="+cookieValue), 401)
}

func TestSignInRefusesBadCredentialsAndCrossOriginRequests(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	wrongKey := key[:len(key)-1] + "x"
	if wrongKey == key {
		wrongKey = key[:len(key)-1] + "y"
	}
	for _, c := range []struct {
		name   string
		body   any
		hdr    []string
		status int
	}{
		{"wrong key", map[string]any{"credential": wrongKey}, nil, 401},
		{"no Origin", map[string]any{"credential": key}, []string{"Origin", ""}, 403},
		{"wrong operator credential", map[string]any{"credential": opToken[:len(opToken)-1] + "a"}, nil, 401},
		{"no credential", map[string]any{}, nil, 400},
		{"not JSON", []byte("credential=" + key), nil, 400},
		{"too large", map[string]any{"credential": strings.Repeat("a", console.MaxSignInBytes)}, nil, 413},
		{"cross-origin", map[string]any{"credential": key}, []string{"Origin", "http://evil.example"}, 403},
		{"cross-site fetch", map[string]any{"credential": key}, []string{"Sec-Fetch-Site", "cross-site"}, 403},
	} {
		hdr := c.hdr
		if hdr == nil {
			hdr = []string{"Origin", e.base}
		}
		if hdr[1] == "" {
			hdr = nil
		}
		r := e.do(nil, "POST", console.Prefix+"/session", c.body, hdr...)
		if r.status != c.status || r.header.Get("Set-Cookie") != "" {
			t.Errorf("%s: %d (cookie %q), want %d and no cookie: %s", c.name, r.status, r.header.Get("Set-Cookie"), c.status, r.body)
		}
	}
}

func TestEveryConsoleResponseCarriesTheSecurityHeaders(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	c, _ := e.session(key)
	for _, p := range []string{"/", "/static/app.js", "/static/app.css", "/session", "/api/v1/tenants/acme/stats", "/nope",
		"/api/v1/tenants/other/stats"} {
		r := e.do(c, "GET", console.Prefix+p, nil)
		h := r.header
		if h.Get("Content-Security-Policy") != console.ContentSecurityPolicy || h.Get("X-Content-Type-Options") != "nosniff" ||
			h.Get("Referrer-Policy") != "no-referrer" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s (%d): headers %v", p, r.status, h)
		}
	}
	csp := console.ContentSecurityPolicy
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "object-src 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP %q allows unsafe sources", csp)
	}
	// The page has no inline script or style for the policy to refuse.
	page := string(e.must(e.do(nil, "GET", console.Prefix+"/", nil), 200).body)
	if strings.Contains(page, "<script>") || strings.Contains(page, "style=") || strings.Contains(page, "<style") || strings.Contains(page, "onclick") {
		t.Error("index.html has inline script or style")
	}
}

func TestStateChangesNeedTheCSRFTokenAndTheSameOrigin(t *testing.T) {
	e := start(t)
	e.tenant("acme")
	c, csrf := e.session(opToken)
	suspend := console.Prefix + "/api/v1/admin/tenants/acme/suspend"
	body := map[string]any{"reason": "test"}
	wrong := "x" + csrf[1:]
	if csrf[0] == 'x' {
		wrong = "y" + csrf[1:] // a token that starts with x would be "wrong" as itself
	}
	for _, h := range [][]string{
		{"Origin", e.base},                                      // no token
		{"Origin", e.base, "X-CSRF-Token", wrong},               // wrong token
		{"Origin", "http://evil.example", "X-CSRF-Token", csrf}, // right token, other origin
		{"X-CSRF-Token", csrf, "Sec-Fetch-Site", "cross-site"},
		{"X-CSRF-Token", csrf}, // neither Origin nor Sec-Fetch-Site
	} {
		e.must(e.do(c, "POST", suspend, body, h...), 403)
	}
	ten := e.must(e.do(nil, "GET", "/v1/admin/tenants/acme", nil, "Authorization", "Bearer "+opToken), 200).json(t)
	if ten["state"] != "active" {
		t.Fatalf("a refused state change took effect: %v", ten["state"])
	}
	e.must(e.do(c, "POST", suspend, body, "Origin", e.base, "X-CSRF-Token", csrf), 200)
	ten = e.must(e.do(nil, "GET", "/v1/admin/tenants/acme", nil, "Authorization", "Bearer "+opToken), 200).json(t)
	if ten["state"] != "suspended" {
		t.Fatalf("state %v after a suspend with the token", ten["state"])
	}
	// Reads need no token.
	e.must(e.do(c, "GET", console.Prefix+"/overview", nil), 200)
}

// Every console endpoint, asked by a session of tenant acme about tenant
// globex (or about the server as a whole), is refused; the same requests
// about acme succeed.
func TestATenantSessionReachesOnlyItsOwnTenant(t *testing.T) {
	e := start(t)
	acmeKey := e.tenant("acme")
	globexKey := e.tenant("globex")
	gid := e.appendEvent("globex", globexKey, map[string]any{"entity": "secret:1", "scope": "s", "kind": "1:1", "payload": map[string]any{"globex": "secret"}})
	aid := e.appendEvent("acme", acmeKey, map[string]any{"entity": "order:1", "scope": "s", "kind": "1:1", "payload": map[string]any{"n": 1}})
	c, csrf := e.session(acmeKey)
	type req struct {
		method, path string
		body         any
	}
	reqs := func(t, id string) []req {
		a := console.Prefix + "/api/v1/tenants/" + t
		return []req{
			{"GET", a + "/stats", nil},
			{"GET", a + "/events", nil},
			{"GET", a + "/events/" + id, nil},
			{"GET", a + "/events/" + id + "/ancestors", nil},
			{"GET", a + "/events/" + id + "/descendants", nil},
			{"GET", a + "/events/" + id + "/correlation", nil},
			{"GET", a + "/entities/order:1/events", nil},
			{"GET", a + "/policy", nil},
			{"GET", a + "/policy/decisions", nil},
			{"GET", a + "/plugins", nil},
			{"GET", a + "/workers", nil},
			{"GET", a + "/cursors", nil},
			{"GET", a + "/keys", nil},
			{"POST", a + "/verify", nil},
			{"POST", a + "/events", map[string]any{"entity": "x:1", "scope": "s", "kind": "1:1", "payload": 1}},
			{"GET", console.Prefix + "/samples/tenants/" + t, nil},
			{"POST", console.Prefix + "/tenants/" + t + "/policy/evaluate", map[string]any{"entity": "x:1", "scope": "s", "kind": "1:1", "payload": 1}},
		}
	}
	for _, r := range reqs("acme", aid) {
		res := e.do(c, r.method, r.path, r.body, "Origin", e.base, "X-CSRF-Token", csrf)
		if res.status >= 300 {
			t.Errorf("own tenant: %s %s: %d %s", r.method, r.path, res.status, res.body)
		}
	}
	others := reqs("globex", gid)
	others = append(others,
		req{"GET", console.Prefix + "/overview", nil},
		req{"GET", console.Prefix + "/samples/server", nil},
		req{"GET", console.Prefix + "/api/v1/admin/tenants", nil},
		req{"POST", console.Prefix + "/api/v1/admin/tenants/globex/suspend", map[string]any{}},
		req{"GET", console.Prefix + "/api/metrics", nil},
		req{"GET", console.Prefix + "/api/v1/tenants/acme/../globex/stats", nil},
		req{"GET", console.Prefix + "/api/v1/tenants/acme/%2e%2e/globex/stats", nil},
		req{"GET", console.Prefix + "/api/v1/tenants/acme%2f..%2fglobex/stats", nil},
		req{"GET", console.Prefix + "/api/v1/tenants/globex/subscribe", nil},
	)
	noRedirect := &http.Client{Jar: c.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, r := range others {
		res := e.do(noRedirect, r.method, r.path, r.body, "Origin", e.base, "X-CSRF-Token", csrf)
		if res.status < 300 || res.status >= 500 || strings.Contains(string(res.body), "secret") {
			t.Errorf("other tenant: %s %s: %d %s", r.method, r.path, res.status, res.body)
		}
	}
	// Nothing was written to globex.
	st := e.must(e.do(nil, "GET", "/v1/tenants/globex/stats", nil, "Authorization", "Bearer "+globexKey), 200).json(t)
	if st["events"].(float64) != 1 {
		t.Fatalf("globex holds %v events, want 1", st["events"])
	}
	ten := e.must(e.do(nil, "GET", "/v1/admin/tenants/globex", nil, "Authorization", "Bearer "+opToken), 200).json(t)
	if ten["state"] != "active" {
		t.Fatal("a tenant session suspended another tenant")
	}
}

func TestTheOperatorSessionSeesFiguresNotEvents(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	e.appendEvent("acme", key, map[string]any{"entity": "order:1", "scope": "s", "kind": "1:1", "payload": map[string]any{"n": 1}})
	c, _ := e.session(opToken)
	ov := e.must(e.do(c, "GET", console.Prefix+"/overview", nil), 200).json(t)
	ts := ov["tenants"].([]any)
	if len(ts) != 1 || ts[0].(map[string]any)["id"] != "acme" || ts[0].(map[string]any)["events"].(float64) != 1 {
		t.Fatalf("overview %v", ov)
	}
	e.must(e.do(c, "GET", console.Prefix+"/samples/tenants/acme", nil), 200)
	for _, p := range []string{"/api/v1/tenants/acme/events", "/api/v1/tenants/acme/stats"} {
		if r := e.do(c, "GET", console.Prefix+p, nil); r.status != 403 {
			t.Errorf("operator %s: %d, want 403", p, r.status)
		}
	}
}

func TestARevokedKeyEndsItsSessions(t *testing.T) {
	e := start(t)
	e.tenant("acme")
	r := e.must(e.do(nil, "POST", "/v1/admin/tenants/acme/keys", map[string]any{"roles": []string{"reader"}, "name": "r"}, "Authorization", "Bearer "+opToken), 201).json(t)
	c, _ := e.session(r["key"].(string))
	e.must(e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil), 200)
	e.must(e.do(nil, "DELETE", "/v1/admin/tenants/acme/keys/"+r["id"].(string), nil, "Authorization", "Bearer "+opToken), 204)
	e.must(e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil), 401)
	if e.must(e.do(c, "GET", console.Prefix+"/session", nil), 200).json(t)["signed_in"] != false {
		t.Fatal("a session outlived its revoked key")
	}
}

func TestTenantDashboardSamplesTheStore(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	c, _ := e.session(key)
	e.must(e.do(c, "GET", console.Prefix+"/samples/tenants/acme", nil), 200) // starts watching
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		e.appendEvent("acme", key, map[string]any{"entity": "order:1", "scope": "s", "kind": "1:1", "payload": 1})
		smp := e.must(e.do(c, "GET", console.Prefix+"/samples/tenants/acme", nil), 200).json(t)["samples"].([]any)
		for _, s := range smp {
			m := s.(map[string]any)
			if m["events_per_sec"].(float64) > 0 && m["fsyncs_per_sec"].(float64) > 0 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no sample showed the tenant's writes within 10s")
}

func TestEvaluateWithoutAPolicySaysSo(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	c, csrf := e.session(key)
	path := console.Prefix + "/tenants/acme/policy/evaluate"
	r := e.must(e.do(c, "POST", path, map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{}},
		"Origin", e.base, "X-CSRF-Token", csrf), 200).json(t)
	if r["result"] != "no_policy" {
		t.Fatalf("result %v", r)
	}
	for _, bad := range []map[string]any{
		{"entity": "", "scope": "shop", "kind": "1:1"},
		{"entity": "order:1", "scope": "shop", "kind": "nope"},
		{"entity": "order:1", "scope": "shop", "kind": "1:1", "action": "explode"},
	} {
		res := e.do(c, "POST", path, bad, "Origin", e.base, "X-CSRF-Token", csrf)
		if res.status != 400 {
			t.Errorf("%v: %d, want 400: %s", bad, res.status, res.body)
		}
	}
	// The request is read as the API reads a write: a member repeated (in
	// the payload or the request), an unknown member, another content
	// type are refused, as the API would refuse the write.
	for _, tc := range []struct {
		body, ctype, want string
		status            int
	}{
		{`{"entity":"e:1","scope":"s","kind":"1:1","payload":{"a":1,"a":2}}`, "application/json", `member name \"a\" repeated`, 400},
		{`{"entity":"e:1","entity":"e:2","scope":"s","kind":"1:1","payload":{}}`, "application/json", `member name \"entity\" repeated`, 400},
		{`{"entity":"e:1","scope":"s","kind":"1:1","payload":{},"bogus":1}`, "application/json", `bogus`, 400},
		{`{"entity":"e:1","scope":"s","kind":"1:1","payload":{}}`, "text/plain", "application/json", 415},
	} {
		res := e.do(c, "POST", path, []byte(tc.body), "Origin", e.base, "X-CSRF-Token", csrf, "Content-Type", tc.ctype)
		if res.status != tc.status || !strings.Contains(string(res.body), tc.want) {
			t.Errorf("%s as %s: %d %s, want %d naming %s", tc.body, tc.ctype, res.status, res.body, tc.status, tc.want)
		}
	}
}

func TestTheConsoleCanBeTurnedOff(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.Root = t.TempDir()
	cfg.OperatorToken = opToken
	cfg.Stderr = &testenv.Buffer{}
	cfg.DisableConsole = true
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, httptest.NewRequest("GET", console.Prefix+"/", nil))
	if w.Code != 404 || strings.Contains(w.Body.String(), "<html") {
		t.Fatalf("console off: %d %s", w.Code, w.Body)
	}
}

func TestEvaluateJudgesByTheActivePolicyWithoutWriting(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	rev := e.noSecrets("acme", key)
	c, csrf := e.session(key)
	path := console.Prefix + "/tenants/acme/policy/evaluate"
	decisions := func() []any {
		return e.must(e.do(nil, "GET", "/v1/tenants/acme/policy/decisions", nil, "Authorization", "Bearer "+key), 200).json(t)["decisions"].([]any)
	}
	// The refused write's decision is logged in the background: wait for it.
	before := decisions()
	for deadline := time.Now().Add(5 * time.Second); len(before) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		before = decisions()
	}
	if len(before) != 1 {
		t.Fatalf("%d decisions logged, want the one denial", len(before))
	}
	r := e.must(e.do(c, "POST", path, map[string]any{"entity": "secret:9", "scope": "s", "kind": "1:1", "payload": map[string]any{}},
		"Origin", e.base, "X-CSRF-Token", csrf), 200).json(t)
	reasons, _ := r["reasons"].([]any)
	if r["result"] != "denied" || r["revision"] != rev || len(reasons) != 1 || reasons[0].(map[string]any)["code"] != "NO_SECRETS" {
		t.Fatalf("secret:9: %v", r)
	}
	r = e.must(e.do(c, "POST", path, map[string]any{"entity": "order:1", "scope": "s", "kind": "1:1", "payload": 1},
		"Origin", e.base, "X-CSRF-Token", csrf), 200).json(t)
	if r["result"] != "allowed" || r["revision"] != rev {
		t.Fatalf("order:1: %v", r)
	}
	// A reader key may not write, so it may not dry-run the policy either.
	rk := e.must(e.do(nil, "POST", "/v1/admin/tenants/acme/keys", map[string]any{"roles": []string{"reader"}}, "Authorization", "Bearer "+opToken), 201).json(t)["key"].(string)
	rc, rcsrf := e.session(rk)
	e.must(e.do(rc, "POST", path, map[string]any{"entity": "secret:9", "scope": "s", "kind": "1:1", "payload": map[string]any{}},
		"Origin", e.base, "X-CSRF-Token", rcsrf), 403)
	time.Sleep(200 * time.Millisecond) // a decision logged by mistake would show by now
	after := decisions()
	st := e.must(e.do(nil, "GET", "/v1/tenants/acme/stats", nil, "Authorization", "Bearer "+key), 200).json(t)
	if len(after) != len(before) || st["events"].(float64) != 0 {
		t.Fatalf("an evaluation was logged or written: %d decisions (was %d), %v events", len(after), len(before), st["events"])
	}
}

// TestEvaluateSeesTheEntityAsTheWriteDoes: a dry run judges a write with
// input.entity as the write itself carries it (the entity's existence and
// its latest event's clock, from the tenant's store), so a policy reading
// it gives the dry run the verdict the write then gets; the answer says
// what the entity was.
func TestEvaluateSeesTheEntityAsTheWriteDoes(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	bundle := tarGz(t, "policy.rego", `package batpak.write

deny contains {"code": "ONCE", "message": "written once already"} if {
	startswith(input.event.entity, "once:")
	input.entity.exists
}

deny contains {"code": "AT_MOST_TWO", "message": "two events already"} if input.entity.clock >= 1
`)
	e.must(e.do(nil, "PUT", "/v1/tenants/acme/policy", bundle, "Authorization", "Bearer "+key, "Content-Type", "application/gzip"), 200)
	c, csrf := e.session(key)
	verdict := func(status int, body map[string]any) string {
		if status/100 == 2 && (body["result"] == nil || body["result"] == "allowed") {
			return "allowed"
		}
		if reasons, _ := body["reasons"].([]any); len(reasons) == 1 {
			return "denied " + reasons[0].(map[string]any)["code"].(string)
		}
		return fmt.Sprintf("%d %v", status, body)
	}
	step := func(entity, want string, exists bool, clock float64) {
		t.Helper()
		ev := map[string]any{"entity": entity, "scope": "s", "kind": "1:1", "payload": map[string]any{}}
		dry := e.must(e.do(c, "POST", console.Prefix+"/tenants/acme/policy/evaluate", ev, "Origin", e.base, "X-CSRF-Token", csrf), 200).json(t)
		if got := verdict(200, dry); got != want {
			t.Fatalf("dry run of a write to %s: %s (%v), want %s", entity, got, dry, want)
		}
		if ent, _ := dry["entity"].(map[string]any); ent["exists"] != exists || ent["clock"] != clock {
			t.Fatalf("dry run of a write to %s judged with entity %v, want exists %v, clock %v", entity, dry["entity"], exists, clock)
		}
		res := e.do(nil, "POST", "/v1/tenants/acme/events", ev, "Authorization", "Bearer "+key)
		if got := verdict(res.status, res.json(t)); got != want {
			t.Fatalf("the write to %s after its dry run: %s, the dry run said %s", entity, got, want)
		}
	}
	step("order:1", "allowed", false, 0)
	step("order:1", "allowed", true, 0)
	step("order:1", "denied AT_MOST_TWO", true, 1)
	step("once:1", "allowed", false, 0)
	step("once:1", "denied ONCE", true, 0)
}

func TestASuspendedTenantsKeyCannotSignInAndItsSessionsLoseItsData(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	e.noSecrets("acme", key)
	c, csrf := e.session(key)
	e.must(e.do(nil, "POST", "/v1/admin/tenants/acme/suspend", map[string]any{"reason": "unpaid"}, "Authorization", "Bearer "+opToken), 200)
	if r := e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil); r.status != 403 || !strings.Contains(string(r.body), "TENANT_SUSPENDED") {
		t.Fatalf("a suspended tenant's data: %d %s", r.status, r.body)
	}
	// Its policy does not run for it either (the API runs nothing for a
	// suspended tenant).
	if r := e.do(c, "POST", console.Prefix+"/tenants/acme/policy/evaluate", map[string]any{"entity": "secret:1", "scope": "s", "kind": "1:1"},
		"Origin", e.base, "X-CSRF-Token", csrf); r.status != 403 || !strings.Contains(string(r.body), "TENANT_SUSPENDED") {
		t.Fatalf("evaluating a suspended tenant's policy: %d %s", r.status, r.body)
	}
	if r := e.do(nil, "POST", console.Prefix+"/session", map[string]any{"credential": key}, "Origin", e.base); r.status != 403 || r.header.Get("Set-Cookie") != "" {
		t.Fatalf("sign-in with a suspended tenant's key: %d %s", r.status, r.body)
	}
}

// A tenant's session cannot run its policy many times at once through
// the console: evaluations share the server's policy slots with every
// tenant's writes, and the console's dry run has no rate quota of its own.
func TestATenantEvaluatesOnePolicyInputAtATime(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	// A policy that works until its evaluation times out for "slow:" entities.
	bundle := tarGz(t, "policy.rego", `package batpak.write

deny contains {"code": "NEVER", "message": "never"} if {
	startswith(input.event.entity, "slow:")
	some i in numbers.range(1, 20000)
	some j in numbers.range(1, 20000)
	i * j == -1
}
`)
	e.must(e.do(nil, "PUT", "/v1/tenants/acme/policy", bundle, "Authorization", "Bearer "+key, "Content-Type", "application/gzip"), 200)
	c, csrf := e.session(key)
	path := console.Prefix + "/tenants/acme/policy/evaluate"
	const n = 4
	statuses := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() {
			statuses <- e.do(c, "POST", path, map[string]any{"entity": "slow:1", "scope": "s", "kind": "1:1"},
				"Origin", e.base, "X-CSRF-Token", csrf).status
		}()
	}
	busy := 0
	for i := 0; i < n; i++ {
		if s := <-statuses; s == http.StatusTooManyRequests {
			busy++
		}
	}
	if busy < n-1 {
		t.Fatalf("%d of %d concurrent evaluations refused 429, want all but one", busy, n)
	}
	// Once it is done, the next one runs.
	r := e.do(c, "POST", path, map[string]any{"entity": "order:1", "scope": "s", "kind": "1:1"}, "Origin", e.base, "X-CSRF-Token", csrf)
	if r.status != 200 || r.json(t)["result"] != "allowed" {
		t.Fatalf("an evaluation after the others: %d %s", r.status, r.body)
	}
}

// Signing out ends the session's live tail too: an event written after
// the sign-out never reaches the browser.
func TestSignOutEndsTheSessionsLiveTail(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	c, csrf := e.session(key)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.base+console.Prefix+"/api/v1/tenants/acme/subscribe", nil)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("subscribe through the console: %d", res.StatusCode)
	}
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(res.Body)
		got <- string(b)
	}()
	time.Sleep(100 * time.Millisecond) // subscribed
	e.must(e.do(c, "DELETE", console.Prefix+"/session", nil, "Origin", e.base, "X-CSRF-Token", csrf), 204)
	time.Sleep(100 * time.Millisecond)
	e.appendEvent("acme", key, map[string]any{"entity": "after:signout", "scope": "s", "kind": "1:1", "payload": 1})
	select {
	case body := <-got:
		if strings.Contains(body, "after:signout") {
			t.Fatal("an event written after sign-out reached the signed-out session's stream")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the signed-out session's stream is still open")
	}
}

// Tenant data through the console stays out of the browser's cache, even
// from a route that lets other clients cache it (a projection's state).
func TestTenantDataThroughTheConsoleIsNeverStored(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	wasm, err := os.ReadFile(filepath.Join("..", "..", "plugins", "testdata", "counter.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(wasm)
	m := map[string]any{"name": "count", "version": "1.0.0", "kind": "projection", "sha256": hex.EncodeToString(sum[:])}
	if r := e.do(nil, "POST", "/v1/tenants/acme/plugins", map[string]any{"manifest": m, "module": wasm, "activate": true},
		"Authorization", "Bearer "+key); r.status/100 != 2 {
		t.Fatalf("push plugin: %d %s", r.status, r.body)
	}
	e.appendEvent("acme", key, map[string]any{"entity": "order:1", "scope": "s", "kind": "1:1", "payload": 1})
	c, _ := e.session(key)
	r := e.must(e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/projections/count/order:1", nil), 200)
	if cc := r.header.Values("Cache-Control"); len(cc) != 1 || cc[0] != "no-store" {
		t.Fatalf("a projection through the console: Cache-Control %q, want no-store", cc)
	}
}

// An evaluation takes the payloads a write would: JSON no deeper than the
// server's max_json_depth (512 by default).
func TestEvaluateRefusesAPayloadAWriteCouldNotCarry(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	e.noSecrets("acme", key)
	c, csrf := e.session(key)
	deep := strings.Repeat("[", 600) + strings.Repeat("]", 600)
	body := []byte(`{"entity": "order:1", "scope": "s", "kind": "1:1", "payload": ` + deep + `}`)
	r := e.do(c, "POST", console.Prefix+"/tenants/acme/policy/evaluate", body, "Origin", e.base, "X-CSRF-Token", csrf)
	if r.status != 400 || !strings.Contains(string(r.body), "INVALID_JSON") {
		t.Fatalf("a payload nested 600 deep: %d %s", r.status, r.body)
	}
	if w := e.do(nil, "POST", "/v1/tenants/acme/events", body, "Authorization", "Bearer "+key); w.status != 400 {
		t.Fatalf("the same payload written: %d %s", w.status, w.body)
	}
}

// A page on a sibling host (same site: the SameSite cookie goes along)
// cannot make the session read data or open streams, nor embed its
// answers: a browser's Sec-Fetch-Site other than same-origin (or none, a
// typed address) is refused on every session request, and every answer
// is Cross-Origin-Resource-Policy: same-origin.
func TestASiblingSiteCannotUseTheSession(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	c, _ := e.session(key)
	c.Timeout = 5 * time.Second // a stream opened by mistake fails the test
	for _, p := range []string{"/api/v1/tenants/acme/stats", "/api/v1/tenants/acme/subscribe", "/session", "/samples/tenants/acme"} {
		r := e.do(c, "GET", console.Prefix+p, nil, "Sec-Fetch-Site", "same-site")
		if r.status != 403 && !(p == "/session" && r.status == 200 && strings.Contains(string(r.body), `"signed_in":false`)) {
			t.Errorf("GET %s from a sibling site: %d %s", p, r.status, r.body)
		}
	}
	r := e.must(e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil, "Sec-Fetch-Site", "same-origin"), 200)
	if r.header.Get("Cross-Origin-Resource-Policy") != "same-origin" {
		t.Errorf("Cross-Origin-Resource-Policy %q, want same-origin", r.header.Get("Cross-Origin-Resource-Policy"))
	}
	e.must(e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil, "Sec-Fetch-Site", "none"), 200)
}

// Behind a TLS-terminating proxy named in server.trusted_proxies, the
// proxy's X-Forwarded-Proto: https makes the cookie Secure and the answers
// carry Strict-Transport-Security; the same header from a client the
// server does not trust changes nothing.
func TestBehindATrustedTLSProxyTheCookieIsSecure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []string
		proto   string
		want    bool
	}{
		{"no proxy, plain http", nil, "", false},
		{"a client claiming https", nil, "https", false},
		{"a trusted proxy, plain http", []string{"127.0.0.1"}, "http", false},
		{"a trusted proxy that terminated TLS", []string{"127.0.0.1"}, "https", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startWith(t, func(c *server.Config) { c.TrustedProxies = tc.trusted })
			hdr := []string{"Origin", strings.Replace(e.base, "http:", "https:", 1)}
			if tc.proto != "" {
				hdr = append(hdr, "X-Forwarded-Proto", tc.proto)
			}
			r := e.must(e.do(nil, "POST", console.Prefix+"/session", map[string]any{"credential": opToken}, hdr...), 200)
			ck := r.header.Get("Set-Cookie")
			if strings.Contains(ck, "; Secure") != tc.want || !strings.Contains(ck, "HttpOnly") {
				t.Errorf("Set-Cookie %q, want Secure %v", ck, tc.want)
			}
			for _, p := range []string{"/", "/static/app.js", "/session", "/api/v1/admin/tenants"} {
				r := e.do(nil, "GET", console.Prefix+p, nil, hdr...)
				if got := r.header.Get("Strict-Transport-Security"); (got == console.StrictTransportSecurity) != tc.want || tc.want && got != "max-age=31536000" {
					t.Errorf("%s (%d): Strict-Transport-Security %q, want it %v", p, r.status, got, tc.want)
				}
			}
			// The API's own answers are not the console's: no HSTS there.
			if got := e.do(nil, "GET", "/healthz", nil, hdr...).header.Get("Strict-Transport-Security"); got != "" {
				t.Errorf("/healthz: Strict-Transport-Security %q", got)
			}
		})
	}
}
