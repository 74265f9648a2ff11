package console_test

import (
	"fmt"
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
