package httpapi_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// TestRequestRateBoundsEveryRoute: a tenant's requests_per_second takes
// one token for each request of its credentials, whatever the route —
// reads, writes, stats — and past its bucket answers 429 QUOTA_EXCEEDED
// "requests_per_second" with Retry-After, writing nothing and holding the
// refusal rate_refusal_delay first; requests refused anyway (a role
// below the route's, another tenant's path, a bad query) are charged to
// the credential's own tenant. Another tenant's requests pass, the
// operator's admin routes are not charged, the refusal is counted in the
// metrics, and lifting the quota lets the tenant's next request through.
func TestRequestRateBoundsEveryRoute(t *testing.T) {
	const delay = 150 * time.Millisecond
	e := start(t, func(c *server.Config) { c.RateRefusalDelay = delay })
	k := e.tenant("acme")
	other := e.tenant("globex")
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"requests_per_second": 0.01, "requests_burst": 3}), 200)
	e.must(e.req("PUT", "/v1/admin/tenants/globex/quotas", opToken, map[string]any{"requests_per_second": 0.01, "requests_burst": 5}), 200)

	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:1")), 201)
	e.must(e.req("GET", "/v1/tenants/acme/entities/order:1/events", k["reader"], nil), 200)
	e.must(e.req("GET", "/v1/tenants/acme/stats", k["admin"], nil), 200)
	for _, tc := range []struct{ method, path, key string }{
		{"POST", "/v1/tenants/acme/events", k["writer"]},
		{"GET", "/v1/tenants/acme/entities/order:1/events", k["reader"]},
		{"GET", "/v1/tenants/acme/stats", k["admin"]},
	} {
		t0 := time.Now()
		var body any
		if tc.method == "POST" {
			body = appendBody("order:2")
		}
		r := e.req(tc.method, tc.path, tc.key, body)
		if r.status != 429 || r.code() != "QUOTA_EXCEEDED" || r.json(t)["quota"] != "requests_per_second" {
			t.Fatalf("%s %s past the bucket: %d %s", tc.method, tc.path, r.status, r.body)
		}
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
			t.Fatalf("%s %s: Retry-After %q", tc.method, tc.path, r.header.Get("Retry-After"))
		}
		if held := time.Since(t0); held < delay {
			t.Fatalf("%s %s: refused after %v, want it held %v", tc.method, tc.path, held, delay)
		}
	}
	// Requests that would be refused anyway are charged to the
	// credential's own tenant too: a role below the route's, another
	// tenant's path, an admin route, a query refused.
	for _, tc := range []struct{ method, path, key string }{
		{"POST", "/v1/tenants/acme/events", k["reader"]},
		{"GET", "/v1/tenants/globex/stats", k["admin"]},
		{"GET", "/v1/admin/tenants", k["admin"]},
		{"GET", "/v1/tenants/acme/stats?bogus=1", k["admin"]},
	} {
		if r := e.req(tc.method, tc.path, tc.key, nil); r.status != 429 || r.json(t)["quota"] != "requests_per_second" {
			t.Fatalf("%s %s past the bucket: %d %s", tc.method, tc.path, r.status, r.body)
		}
	}
	// The other tenant (whose bucket holds 5) and the operator are not
	// charged acme's requests.
	for range 5 {
		e.must(e.req("POST", "/v1/tenants/globex/events", other["writer"], appendBody("order:1")), 201)
		e.must(e.req("GET", "/v1/admin/tenants/acme", opToken, nil), 200)
	}
	m := e.must(e.req("GET", "/metrics", opToken, nil), 200)
	if !strings.Contains(string(m.body), `batpak_quota_rejections_total{quota="requests_per_second",tenant="acme"} 7`) {
		t.Fatalf("metrics lack the refusals:\n%s", grep(string(m.body), "quota_rejections"))
	}

	// Lifted: the next request passes at once, and the refused append
	// wrote nothing.
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"requests_per_second": -1}), 200)
	if n := e.count("acme", k["admin"]); n != 1 {
		t.Fatalf("acme holds %v events, want the 1 accepted", n)
	}
	q := e.must(e.req("GET", "/v1/admin/tenants/acme", opToken, nil), 200).json(t)["effective_quotas"]
	if qm, _ := q.(map[string]any); qm == nil || qm["requests_per_second"] != -1.0 {
		t.Fatalf("effective quotas: %v", q)
	}
	e.tenant("initech")
	g := e.must(e.req("GET", "/v1/admin/tenants/initech", opToken, nil), 200).json(t)["effective_quotas"].(map[string]any)
	if g["requests_per_second"] != 20000.0 || g["requests_burst"] != 40000.0 {
		t.Fatalf("the server's default request rate: %v", g)
	}
}
