package httpapi_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// Requests no tenant is charged for — no credential, a wrong one, two
// Authorization headers, a refused query without a credential, the
// routes that read none, paths no route has — take a token from their
// source's bucket; past it they are refused with 429 TOO_MANY_REQUESTS,
// held first, while the same address's valid tenant and operator
// requests go on, and so do other sources'.
func TestAnonymousRequestsBoundedPerSource(t *testing.T) {
	const delay = 150 * time.Millisecond
	e := start(t, func(c *server.Config) {
		c.RateRefusalDelay = delay
		c.AnonymousRequestsPerSecond, c.AnonymousRequestsBurst = 1, 8
	})
	k := e.tenant("acme") // the operator's requests: charged to no one
	wrong := "bpk_" + strings.Repeat("a", 12) + "_" + strings.Repeat("b", 43)
	twice := func() (int, []byte) {
		r, _ := http.NewRequest("GET", e.base+"/v1/tenants/acme/stats", nil)
		r.Header.Add("Authorization", "Bearer "+k["admin"])
		r.Header.Add("Authorization", "Bearer "+k["admin"])
		return sendRaw(t, r)
	}
	e.must(e.req("GET", "/healthz", "", nil), 200)
	e.must(e.req("GET", "/no/such/route", "", nil), 404)
	e.must(e.req("GET", "/v1/tenants/acme/stats", "", nil), 401)
	e.must(e.req("GET", "/v1/tenants/acme/stats", wrong, nil), 401)
	if status, body := twice(); status != 400 {
		t.Fatalf("two Authorization headers: %d %s", status, body)
	}
	e.must(e.req("GET", "/v1/tenants/acme/stats?bogus=1", "", nil), 400)
	// A path the mux answers with a redirect to its clean form, and
	// "OPTIONS *", reach no route: charged all the same.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Get(e.base + "//healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode/100 != 3 {
		t.Fatalf("GET //healthz: %d, want the mux's redirect", res.StatusCode)
	}
	if status := optionsStar(t, e.base); status != 404 {
		t.Fatalf("OPTIONS *: %d, want 404 (no route)", status)
	}

	if status := optionsStar(t, e.base); status != 429 {
		t.Fatalf("OPTIONS * past the source's bucket: %d", status)
	}
	for _, tc := range []struct{ path, token string }{
		{"/healthz", ""},
		{"//healthz", ""},
		{"/v1/tenants/acme/stats", wrong},
		{"/no/such/route", ""},
	} {
		t0 := time.Now()
		r := e.req("GET", tc.path, tc.token, nil)
		if r.status != 429 || r.code() != "TOO_MANY_REQUESTS" || r.json(t)["quota"] != "anonymous_requests_per_second" {
			t.Fatalf("GET %s past the source's bucket: %d %s", tc.path, r.status, r.body)
		}
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
			t.Fatalf("GET %s: Retry-After %q", tc.path, r.header.Get("Retry-After"))
		}
		if held := time.Since(t0); held < delay {
			t.Fatalf("GET %s: refused after %v, want it held %v", tc.path, held, delay)
		}
	}
	if status, body := twice(); status != 429 {
		t.Fatalf("two Authorization headers past the bucket: %d %s", status, body)
	}
	// The same address's valid credentials are not charged to it.
	for range 3 {
		e.must(e.req("GET", "/v1/tenants/acme/stats", k["admin"], nil), 200)
		e.must(e.req("GET", "/v1/admin/tenants/acme", opToken, nil), 200)
	}
	// Another source has a bucket of its own (127.0.0.2 is loopback too).
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	defer other.CloseIdleConnections()
	res, err = other.Get(e.base + "/healthz")
	if err != nil {
		t.Skipf("no second loopback address here: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /healthz from another source: %d", res.StatusCode)
	}
	m := e.must(e.req("GET", "/metrics", opToken, nil), 200)
	if !strings.Contains(string(m.body), "batpak_anonymous_requests_refused_total 6") {
		t.Fatalf("metrics lack the refusals:\n%s", grep(string(m.body), "anonymous"))
	}
}

// With no bound (0 in the configuration, negative in server.Config),
// nothing is refused for its source: more requests than the default
// bucket (2,000) pass at once.
func TestAnonymousRequestsUnbounded(t *testing.T) {
	e := start(t, func(c *server.Config) { c.AnonymousRequestsPerSecond, c.AnonymousRequestsBurst = -1, 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 2100; i++ {
		if ctx.Err() != nil {
			t.Fatalf("only %d requests in a minute", i)
		}
		e.must(e.req("GET", "/healthz", "", nil), 200)
	}
}

// optionsStar sends "OPTIONS * HTTP/1.1" to the server at base and
// returns the status of its answer.
func optionsStar(t *testing.T, base string) int {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
