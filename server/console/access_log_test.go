package console_test

import (
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/console"
)

// The console's data requests are logged once, with one request id: a
// refusal the console answers itself (no session, a path the session
// does not reach) under route "console api", one it passes to the API
// under the API's route, with the X-Request-Id the browser was given.
func TestConsoleDataRequestsLoggedOnce(t *testing.T) {
	logs := &testenv.Buffer{}
	e := startWith(t, func(c *server.Config) { c.AccessLog, c.Stderr = "json", logs })
	key := e.tenant("acme")
	c, _ := e.session(key)
	lines := func(id string) []string {
		var out []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `"request_id":"`+id+`"`) {
				out = append(out, l)
			}
		}
		return out
	}
	for _, tc := range []struct {
		what, path string
		client     bool
		status     int
		route      string
	}{
		{"no session", console.Prefix + "/api/v1/tenants/acme/stats", false, 401, `"route":"console api"`},
		{"a path the session does not reach", console.Prefix + "/api/v1/tenants/globex/stats", true, 403, `"route":"console api"`},
		{"passed to the API", console.Prefix + "/api/v1/tenants/acme/stats", true, 200, `"route":"GET /v1/tenants/{tenant}/stats"`},
	} {
		cl := c
		if !tc.client {
			cl = nil
		}
		r := e.must(e.do(cl, "GET", tc.path, nil), tc.status)
		id := r.header.Get("X-Request-Id")
		if id == "" {
			t.Fatalf("%s: no X-Request-Id", tc.what)
		}
		got := lines(id)
		if len(got) != 1 || !strings.Contains(got[0], tc.route) || !strings.Contains(got[0], fmt.Sprintf(`"status":%d`, tc.status)) {
			t.Fatalf("%s: access log lines for request %s:\n%s\nwant one with %s", tc.what, id, strings.Join(got, "\n"), tc.route)
		}
	}
	if strings.Contains(logs.String(), `"route":"console api","status":200`) {
		t.Fatalf("a request passed to the API was logged by the console too:\n%s", logs.String())
	}
}

// The console's own routes name who used them on the access log, as the
// API's routes do: sign-in (a refused credential names no one), the
// session, sign-out, the overview, samples and policy evaluation.
func TestConsoleRoutesNameTheirCallerInTheAccessLog(t *testing.T) {
	logs := &testenv.Buffer{}
	e := startWith(t, func(c *server.Config) { c.AccessLog, c.Stderr = "json", logs })
	key := e.tenant("acme")
	line := func(what string, r resp) string {
		t.Helper()
		id := r.header.Get("X-Request-Id")
		var out []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if id != "" && strings.Contains(l, `"request_id":"`+id+`"`) {
				out = append(out, l)
			}
		}
		if len(out) != 1 {
			t.Fatalf("%s: %d access log lines for request %q:\n%s", what, len(out), id, logs.String())
		}
		return out[0]
	}
	want := func(what string, r resp, tenant, principal string) {
		t.Helper()
		l := line(what, r)
		if !strings.Contains(l, `"tenant":"`+tenant+`","principal":"`+principal+`"`) {
			t.Errorf("%s: access log line %s\nwant tenant %q principal %q", what, l, tenant, principal)
		}
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	in := e.must(e.do(c, "POST", console.Prefix+"/session", map[string]any{"credential": key}, "Origin", e.base), 200)
	kid := in.json(t)["principal"].(string)
	csrf := in.json(t)["csrf_token"].(string)
	want("tenant sign-in", in, "acme", kid)
	want("a refused sign-in", e.must(e.do(nil, "POST", console.Prefix+"/session", map[string]any{"credential": key + "x"}, "Origin", e.base), 401), "", "")
	want("whoami", e.must(e.do(c, "GET", console.Prefix+"/session", nil), 200), "acme", kid)
	want("samples", e.must(e.do(c, "GET", console.Prefix+"/samples/tenants/acme", nil), 200), "acme", kid)
	want("evaluate", e.do(c, "POST", console.Prefix+"/tenants/acme/policy/evaluate", map[string]any{"entity": "a:1", "scope": "s", "kind": "1:1"},
		"Origin", e.base, "X-CSRF-Token", csrf), "acme", kid)
	want("a path the session does not reach", e.must(e.do(c, "GET", console.Prefix+"/api/v1/tenants/globex/stats", nil), 403), "acme", kid)
	want("tenant sign-out", e.must(e.do(c, "DELETE", console.Prefix+"/session", nil, "Origin", e.base, "X-CSRF-Token", csrf), 204), "acme", kid)

	oc, ocsrf := e.session(opToken)
	want("overview", e.must(e.do(oc, "GET", console.Prefix+"/overview", nil), 200), "", "operator")
	want("server samples", e.must(e.do(oc, "GET", console.Prefix+"/samples/server", nil), 200), "", "operator")
	want("a tenant's samples", e.must(e.do(oc, "GET", console.Prefix+"/samples/tenants/acme", nil), 200), "acme", "operator")
	want("operator sign-out", e.must(e.do(oc, "DELETE", console.Prefix+"/session", nil, "Origin", e.base, "X-CSRF-Token", ocsrf), 204), "", "operator")
}
