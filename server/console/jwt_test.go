package console_test

import (
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/jwttest"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/console"
)

// A JWT names its tenant in a claim the identity provider fills in: a
// token for a tenant the server does not hold gets no console session
// (the API answers such a token 404), while one for an existing tenant
// does.
func TestJWTSignInNeedsAnExistingTenant(t *testing.T) {
	iss := jwttest.New(t)
	e := startWith(t, func(c *server.Config) { c.JWT = &auth.JWTConfig{JWKSFile: iss.File} })
	e.tenant("acme")

	ghost := iss.Token(t, "ghost", time.Now().Add(time.Hour), "admin")
	if r := e.do(nil, "POST", console.Prefix+"/session", map[string]any{"credential": ghost}, "Origin", e.base); r.status != 404 ||
		r.header.Get("Set-Cookie") != "" || !strings.Contains(string(r.body), "ghost") {
		t.Fatalf("sign-in with a JWT for a tenant that does not exist: %d %s", r.status, r.body)
	}
	c, _ := e.session(iss.Token(t, "acme", time.Now().Add(time.Hour), "admin"))
	if r := e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil); r.status != 200 {
		t.Fatalf("a JWT session's tenant stats: %d %s", r.status, r.body)
	}
	// Deleting the tenant leaves its tokens without a session too.
	e.must(e.do(nil, "DELETE", "/v1/admin/tenants/acme?confirm=acme", nil, "Authorization", "Bearer "+opToken), 204)
	if r := e.do(nil, "POST", console.Prefix+"/session", map[string]any{"credential": iss.Token(t, "acme", time.Now().Add(time.Hour), "admin")}, "Origin", e.base); r.status != 404 {
		t.Fatalf("sign-in with a JWT for a deleted tenant: %d %s", r.status, r.body)
	}
	if r := e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil); r.status < 400 {
		t.Fatalf("a deleted tenant's stats through a session opened before: %d %s", r.status, r.body)
	}
}
