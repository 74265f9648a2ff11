package console_test

import (
	"net/http"
	"testing"

	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/console"
)

// TestConsoleRoutesChargeTheRequestRate: a tenant session's requests to
// the console's own routes (the policy dry run, the tenant's samples,
// the session itself, a sign-in, a suspended tenant's too) take tokens
// from the tenant's requests_per_second as the API's routes do (the API
// through the console once, and what the console refuses itself), and
// past it are answered 429 QUOTA_EXCEEDED "requests_per_second"; the
// operator's console requests are not charged.
func TestConsoleRoutesChargeTheRequestRate(t *testing.T) {
	e := start(t)
	key := e.tenant("acme")
	c, csrf := e.session(key) // one token
	e.must(e.do(nil, "PUT", "/v1/admin/tenants/acme/quotas", map[string]any{"requests_per_second": 0.001, "requests_burst": 3},
		"Authorization", "Bearer "+opToken), 200)
	evaluate := func() resp {
		return e.do(c, "POST", console.Prefix+"/tenants/acme/policy/evaluate",
			map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{}}, "Origin", e.base, "X-CSRF-Token", csrf)
	}
	// The API through the console is charged once; requests the console
	// refuses itself are charged too.
	e.must(e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil), 200)
	e.must(e.do(c, "GET", console.Prefix+"/api/v1/tenants/globex/stats", nil), 403)
	e.must(e.do(c, "POST", console.Prefix+"/api/v1/tenants/acme/events", map[string]any{}, "Origin", e.base), 403) // no CSRF token
	refused := func(what string, r resp) {
		t.Helper()
		if r.status != 429 || r.json(t)["quota"] != "requests_per_second" || r.header.Get("Retry-After") == "" {
			t.Fatalf("%s past the tenant's request rate: %d %s", what, r.status, r.body)
		}
	}
	refused("the policy dry run", evaluate())
	refused("a path the session does not reach", e.do(c, "GET", console.Prefix+"/api/v1/tenants/globex/stats", nil))
	refused("the tenant's samples", e.do(c, "GET", console.Prefix+"/samples/tenants/acme", nil))
	refused("the session", e.do(c, "GET", console.Prefix+"/session", nil))
	refused("a sign-in", e.do(nil, "POST", console.Prefix+"/session", map[string]any{"credential": key}, "Origin", e.base))
	refused("the API through the console", e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil))

	// A suspended tenant's sign-ins are charged as its API requests are.
	e.must(e.do(nil, "POST", "/v1/admin/tenants/acme/suspend", map[string]any{"reason": "test"}, "Authorization", "Bearer "+opToken), 200)
	refused("a suspended tenant's sign-in", e.do(nil, "POST", console.Prefix+"/session", map[string]any{"credential": key}, "Origin", e.base))

	op, _ := e.session(opToken)
	for range 5 {
		e.must(e.do(op, "GET", console.Prefix+"/overview", nil), 200)
	}
}

// The console's requests no tenant is charged for — its page and files,
// sign-in attempts, requests with no session — take tokens from their
// source's bucket (server.anonymous_requests_per_second): past it they
// are refused with 429 TOO_MANY_REQUESTS, while a live session's
// requests go on.
func TestConsoleAnonymousRequestsChargeTheirSource(t *testing.T) {
	e := startWith(t, func(c *server.Config) { c.AnonymousRequestsPerSecond, c.AnonymousRequestsBurst = 1, 8 })
	key := e.tenant("acme")
	c, _ := e.session(key) // one token: a sign-in attempt
	e.must(e.do(nil, "GET", console.Prefix+"/", nil), 200)
	e.must(e.do(nil, "GET", console.Prefix+"/static/app.js", nil), 200)
	e.must(e.do(nil, "GET", console.Prefix+"/no-such-page", nil), 404)
	e.must(e.do(nil, "GET", console.Prefix+"/overview", nil), 401) // no session
	e.must(e.do(nil, "POST", console.Prefix+"/session", map[string]any{"credential": "bpk_wrong"}, "Origin", e.base), 401)
	// The mux's own redirect (a subtree without its slash) reaches no
	// handler: charged before it is answered.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if r := e.do(noRedirect, "GET", console.Prefix+"/api", nil); r.status/100 != 3 {
		t.Fatalf("GET %s/api: %d, want the mux's redirect", console.Prefix, r.status)
	}
	// So is a path the mux has no pattern for (it matches the escaped
	// path: /console%2Fapi/x is /console/api/x decoded).
	e.must(e.do(nil, "GET", console.Prefix+"%2Fapi/x", nil), 404)
	for _, tc := range []struct {
		what string
		r    resp
	}{
		{"the page", e.do(nil, "GET", console.Prefix+"/", nil)},
		{"a redirect", e.do(noRedirect, "GET", console.Prefix+"/api", nil)},
		{"a path with no pattern", e.do(nil, "GET", console.Prefix+"%2Fapi/x", nil)},
		{"a file", e.do(nil, "GET", console.Prefix+"/static/app.js", nil)},
		{"a request with no session", e.do(nil, "GET", console.Prefix+"/overview", nil)},
		{"the session's view, signed out", e.do(nil, "GET", console.Prefix+"/session", nil)},
		{"a sign-in with a valid key", e.do(nil, "POST", console.Prefix+"/session", map[string]any{"credential": key}, "Origin", e.base)},
	} {
		if tc.r.status != 429 || tc.r.json(t)["code"] != "TOO_MANY_REQUESTS" || tc.r.header.Get("Retry-After") == "" {
			t.Fatalf("%s past the source's bucket: %d %s", tc.what, tc.r.status, tc.r.body)
		}
	}
	// The live session's requests are its tenant's, not the source's,
	// those the API answers without a route included.
	for range 3 {
		e.must(e.do(c, "GET", console.Prefix+"/session", nil), 200)
		e.must(e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil), 200)
		e.must(e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/no/such/route", nil), 404)
	}
}
