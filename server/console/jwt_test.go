package console_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/console"
)

// jwtFor signs, with a key the server's JWKS file holds, a token naming
// tenant with roles; it returns the token.
func jwtFor(t *testing.T, priv jwk.Key, tenant string, roles ...string) string {
	t.Helper()
	tok := jwt.New()
	for k, v := range map[string]any{"sub": "user-7", "exp": time.Now().Add(time.Hour), "tenant": tenant, "roles": roles} {
		if err := tok.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), priv))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A JWT names its tenant in a claim the identity provider fills in: a
// token for a tenant the server does not hold gets no console session
// (the API answers such a token 404), while one for an existing tenant
// does.
func TestJWTSignInNeedsAnExistingTenant(t *testing.T) {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := jwk.Import(raw)
	if err != nil {
		t.Fatal(err)
	}
	_ = priv.Set(jwk.KeyIDKey, "k1")
	_ = priv.Set(jwk.AlgorithmKey, jwa.ES256())
	pub, err := jwk.PublicKeyOf(priv)
	if err != nil {
		t.Fatal(err)
	}
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	e := startWith(t, func(c *server.Config) { c.JWT = &auth.JWTConfig{JWKSFile: file} })
	e.tenant("acme")

	ghost := jwtFor(t, priv, "ghost", "admin")
	if r := e.do(nil, "POST", console.Prefix+"/session", map[string]any{"credential": ghost}, "Origin", e.base); r.status != 404 ||
		r.header.Get("Set-Cookie") != "" || !strings.Contains(string(r.body), "ghost") {
		t.Fatalf("sign-in with a JWT for a tenant that does not exist: %d %s", r.status, r.body)
	}
	c, _ := e.session(jwtFor(t, priv, "acme", "admin"))
	if r := e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil); r.status != 200 {
		t.Fatalf("a JWT session's tenant stats: %d %s", r.status, r.body)
	}
	// Deleting the tenant leaves its tokens without a session too.
	e.must(e.do(nil, "DELETE", "/v1/admin/tenants/acme?confirm=acme", nil, "Authorization", "Bearer "+opToken), 204)
	if r := e.do(nil, "POST", console.Prefix+"/session", map[string]any{"credential": jwtFor(t, priv, "acme", "admin")}, "Origin", e.base); r.status != 404 {
		t.Fatalf("sign-in with a JWT for a deleted tenant: %d %s", r.status, r.body)
	}
	if r := e.do(c, "GET", console.Prefix+"/api/v1/tenants/acme/stats", nil); r.status < 400 {
		t.Fatalf("a deleted tenant's stats through a session opened before: %d %s", r.status, r.body)
	}
}
