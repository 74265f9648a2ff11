package auth_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/batpak-go/batpak/internal/jwttest"
	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/control"
)

func req(authz string) *http.Request {
	r, _ := http.NewRequest("GET", "http://x/v1/tenants/acme/events", nil)
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	return r
}

func plane(t testing.TB) *control.Plane {
	t.Helper()
	p, err := control.Open(control.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if _, err := p.CreateTenant(context.Background(), "acme", control.Quotas{}, control.Settings{}); err != nil {
		t.Fatal(err)
	}
	return p
}

func issue(t testing.TB, p *control.Plane, tenant string, roles ...control.Role) (token, id string) {
	t.Helper()
	token, id, hash, err := auth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.IssueKey(context.Background(), control.Key{ID: id, Tenant: tenant, Roles: roles, Hash: hash}); err != nil {
		t.Fatal(err)
	}
	return token, id
}

func refused(t *testing.T, a *auth.Authenticator, authz, what string) {
	t.Helper()
	if p, err := a.Authenticate(req(authz)); !errors.Is(err, auth.ErrUnauthenticated) || !reflect.DeepEqual(p, auth.Principal{}) {
		t.Errorf("%s: got %+v, %v; want ErrUnauthenticated", what, p, err)
	}
}

func TestCredentialFormats(t *testing.T) {
	keyRE := regexp.MustCompile(`^` + auth.KeyPattern + `$`)
	opRE := regexp.MustCompile(`^` + auth.OperatorPattern + `$`)
	ids := map[string]bool{}
	for i := 0; i < 200; i++ {
		token, id, hash, err := auth.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if !keyRE.MatchString(token) || len(token) != 4+12+1+52 {
			t.Fatalf("key %q does not match %s", token, auth.KeyPattern)
		}
		if got, ok := auth.KeyID(token); !ok || got != id || token[4:16] != id {
			t.Fatalf("KeyID(%q) = %q, %v; id %q", token, got, ok, id)
		}
		if hash != sha256.Sum256([]byte(token)) || hash != auth.HashToken(token) {
			t.Fatal("hash is not SHA-256 of the token")
		}
		if !regexp.MustCompile(`^[a-z2-7]{12}$`).MatchString(id) {
			t.Fatalf("key id %q is not 12 lowercase base32 characters", id)
		}
		if ids[id] {
			t.Fatalf("id %q made twice", id)
		}
		ids[id] = true
		op, ophash, err := auth.NewOperatorToken()
		if err != nil {
			t.Fatal(err)
		}
		if !opRE.MatchString(op) || ophash != auth.HashToken(op) {
			t.Fatalf("operator token %q", op)
		}
	}
	for _, bad := range []string{"bpk_short_x", "bpk_ABCDEFGHIJKL_" + string(make([]byte, 52)), "bpko_x"} {
		if _, ok := auth.KeyID(bad); ok {
			t.Errorf("KeyID accepted %q", bad)
		}
	}
}

func TestAPIKeys(t *testing.T) {
	p := plane(t)
	a, err := auth.New(auth.Config{Plane: p})
	if err != nil {
		t.Fatal(err)
	}
	token, id := issue(t, p, "acme", control.RoleWriter)
	got, err := a.Authenticate(req("Bearer " + token))
	if err != nil {
		t.Fatal(err)
	}
	want := auth.Principal{ID: id, Tenant: "acme", Roles: []control.Role{control.RoleWriter}, KeyID: id}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("principal %+v, want %+v", got, want)
	}
	if _, err := a.Authenticate(req("bearer " + token)); err != nil {
		t.Fatalf("scheme is case-insensitive: %v", err)
	}
	// One character of the secret changed: same id, wrong hash.
	b := []byte(token)
	if b[len(b)-1] == 'a' {
		b[len(b)-1] = 'b'
	} else {
		b[len(b)-1] = 'a'
	}
	refused(t, a, "Bearer "+string(b), "tampered secret")
	// The secret of one key under another key's id.
	token2, _ := issue(t, p, "acme", control.RoleAdmin)
	refused(t, a, "Bearer "+token[:16]+token2[16:], "secret moved to another id")
	refused(t, a, "", "no header")
	refused(t, a, "Basic "+token, "basic scheme")
	refused(t, a, token, "no scheme")
	refused(t, a, "Bearer "+token+"x", "longer key")
	refused(t, a, "Bearer bpk_aaaaaaaaaaaa_"+token[17:], "unknown id")
	refused(t, a, "Bearer a.b.c", "jwt while jwt is off")

	// Revoked: refused on the very next request.
	if err := p.RevokeKey(context.Background(), "acme", id); err != nil {
		t.Fatal(err)
	}
	refused(t, a, "Bearer "+token, "revoked key")
	if _, err := a.Authenticate(req("Bearer " + token2)); err != nil {
		t.Fatalf("the other key stopped working: %v", err)
	}
	// Deleted tenant: its keys are gone.
	if err := p.DeleteTenant(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	refused(t, a, "Bearer "+token2, "key of a deleted tenant")
}

func TestOperatorCredential(t *testing.T) {
	p := plane(t)
	op, hash, _ := auth.NewOperatorToken()
	stored, storedHash, _ := auth.NewOperatorToken()

	// Nothing configured, nothing stored: no operator.
	a, _ := auth.New(auth.Config{Plane: p})
	refused(t, a, "Bearer "+op, "operator with none configured")

	// Stored in the plane.
	if err := p.SetOperatorHash(context.Background(), storedHash); err != nil {
		t.Fatal(err)
	}
	got, err := a.Authenticate(req("Bearer " + stored))
	if err != nil || !got.Operator || got.ID != "operator" || got.Tenant != "" || len(got.Roles) != 0 {
		t.Fatalf("stored operator: %+v, %v", got, err)
	}
	refused(t, a, "Bearer "+op, "another operator token")

	// Configured: wins over the stored one.
	a, _ = auth.New(auth.Config{Plane: p, OperatorHash: hash})
	if got, err := a.Authenticate(req("Bearer " + op)); err != nil || !got.Operator {
		t.Fatalf("configured operator: %+v, %v", got, err)
	}
	refused(t, a, "Bearer "+stored, "stored operator while one is configured")
	refused(t, a, "Bearer "+op[:len(op)-1], "truncated operator token")
}

func TestHasOrdersRoles(t *testing.T) {
	R, W, A := control.RoleReader, control.RoleWriter, control.RoleAdmin
	cases := []struct {
		roles     []control.Role
		r, w, adm bool
	}{
		{nil, false, false, false},
		{[]control.Role{R}, true, false, false},
		{[]control.Role{W}, true, true, false},
		{[]control.Role{A}, true, true, true},
		{[]control.Role{R, A}, true, true, true},
		{[]control.Role{"root"}, false, false, false},
	}
	for _, c := range cases {
		p := auth.Principal{Roles: c.roles}
		if p.Has(R) != c.r || p.Has(W) != c.w || p.Has(A) != c.adm {
			t.Errorf("%v: reader %v writer %v admin %v", c.roles, p.Has(R), p.Has(W), p.Has(A))
		}
		if p.Has("root") {
			t.Errorf("%v holds an unknown role", c.roles)
		}
	}
	if (auth.Principal{Operator: true}).Has(R) {
		t.Error("the operator holds a tenant role")
	}
	pp := auth.Principal{ID: "k", Tenant: "acme", Roles: []control.Role{W}, KeyID: "k"}.Policy()
	if pp.ID != "k" || pp.Tenant != "acme" || pp.KeyID != "k" || !reflect.DeepEqual(pp.Roles, []string{"writer"}) {
		t.Fatalf("Policy() = %+v", pp)
	}
}

func claims(mod func(map[string]any)) map[string]any {
	now := time.Now()
	c := map[string]any{
		"sub": "user-7", "iss": "https://idp.example", "aud": "batpak",
		"exp": now.Add(time.Hour), "nbf": now.Add(-time.Minute),
		"tenant": "acme", "roles": []string{"reader", "Super User!", "clerk", "writer"},
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func TestJWT(t *testing.T) {
	env := jwttest.New(t)
	a, err := auth.New(auth.Config{Plane: plane(t), JWT: &auth.JWTConfig{JWKSFile: env.File, Issuer: "https://idp.example", Audience: "batpak"}})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	good := jwttest.Sign(t, env.Key, claims(func(c map[string]any) { c["exp"] = exp }))
	got, err := a.Authenticate(req("Bearer " + good))
	if err != nil {
		t.Fatal(err)
	}
	// Expires: the token's exp plus the allowed skew (a stream ends then).
	want := auth.Principal{ID: "user-7", Tenant: "acme", Roles: []control.Role{control.RoleReader, "clerk", control.RoleWriter}, Expires: exp.Add(auth.DefaultJWTSkew)}
	if !got.Expires.Equal(want.Expires) {
		t.Fatalf("expires %v, want %v", got.Expires, want.Expires)
	}
	got.Expires = want.Expires // same instant, compared above
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("principal %+v, want %+v (application roles kept for the policy, malformed ones ignored)", got, want)
	}
	if !got.Has(control.RoleWriter) || got.Has(control.RoleAdmin) {
		t.Fatal("roles from the claim not ordered")
	}
	// Within the allowed skew (30s by default) an expired token still passes.
	if _, err := a.Authenticate(req("Bearer " + jwttest.Sign(t, env.Key, claims(func(c map[string]any) { c["exp"] = time.Now().Add(-10 * time.Second) })))); err != nil {
		t.Fatalf("expired 10s ago, inside the skew: %v", err)
	}
	// A space-separated roles string.
	s, err := a.Authenticate(req("Bearer " + jwttest.Sign(t, env.Key, claims(func(c map[string]any) { c["roles"] = "admin BOGUS! cashier" }))))
	if err != nil || !reflect.DeepEqual(s.Roles, []control.Role{control.RoleAdmin, "cashier"}) {
		t.Fatalf("roles string: %+v, %v", s, err)
	}

	other := jwttest.Key(t, "k1") // same kid, another key
	unknownKid := jwttest.Key(t, "k2")
	noKid := jwttest.Key(t, "")
	noKid.Remove(jwk.KeyIDKey)
	b64 := base64.RawURLEncoding.EncodeToString
	payload, _ := json.Marshal(claims(nil))
	none := b64([]byte(`{"alg":"none","kid":"k1","typ":"JWT"}`)) + "." + b64(payload) + "."
	goodParts := regexp.MustCompile(`\.`).Split(good, 3)
	noneWithSig := b64([]byte(`{"alg":"none","kid":"k1"}`)) + "." + goodParts[1] + "." + goodParts[2]
	tamperedClaims, _ := json.Marshal(claims(func(c map[string]any) { c["tenant"] = "other" }))
	tampered := goodParts[0] + "." + b64(tamperedClaims) + "." + goodParts[2]

	for name, tok := range map[string]string{
		"expired":          jwttest.Sign(t, env.Key, claims(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute) })),
		"not yet valid":    jwttest.Sign(t, env.Key, claims(func(c map[string]any) { c["nbf"] = time.Now().Add(time.Minute) })),
		"no exp":           jwttest.Sign(t, env.Key, claims(func(c map[string]any) { delete(c, "exp") })),
		"wrong issuer":     jwttest.Sign(t, env.Key, claims(func(c map[string]any) { c["iss"] = "https://evil.example" })),
		"wrong audience":   jwttest.Sign(t, env.Key, claims(func(c map[string]any) { c["aud"] = "other" })),
		"no sub":           jwttest.Sign(t, env.Key, claims(func(c map[string]any) { delete(c, "sub") })),
		"no tenant":        jwttest.Sign(t, env.Key, claims(func(c map[string]any) { delete(c, "tenant") })),
		"bad tenant":       jwttest.Sign(t, env.Key, claims(func(c map[string]any) { c["tenant"] = "../x" })),
		"wrong key":        jwttest.Sign(t, other, claims(nil)),
		"unknown kid":      jwttest.Sign(t, unknownKid, claims(nil)),
		"no kid":           jwttest.Sign(t, noKid, claims(nil)),
		"alg none":         none,
		"alg none, signed": noneWithSig,
		"tampered claims":  tampered,
	} {
		refused(t, a, "Bearer "+tok, name)
	}
}

func TestJWTClaimNamesAndConfig(t *testing.T) {
	env := jwttest.New(t)
	a, err := auth.New(auth.Config{JWT: &auth.JWTConfig{JWKSFile: env.File, TenantClaim: "org", RolesClaim: "perms"}})
	if err != nil {
		t.Fatal(err)
	}
	tok := jwttest.Sign(t, env.Key, claims(func(c map[string]any) { c["org"] = "globex"; c["perms"] = []string{"admin"} }))
	got, err := a.Authenticate(req("Bearer " + tok))
	if err != nil || got.Tenant != "globex" || !reflect.DeepEqual(got.Roles, []control.Role{control.RoleAdmin}) {
		t.Fatalf("custom claims: %+v, %v", got, err)
	}
	// A JWKS key without "alg" is refused at start, not guessed per token.
	k := jwttest.Key(t, "k9")
	k.Remove(jwk.AlgorithmKey)
	pub, _ := jwk.PublicKeyOf(k)
	set := jwk.NewSet()
	set.AddKey(pub)
	b, _ := json.Marshal(set)
	f := filepath.Join(t.TempDir(), "noalg.json")
	os.WriteFile(f, b, 0o600)
	if _, err := auth.New(auth.Config{JWT: &auth.JWTConfig{JWKSFile: f}}); err == nil {
		t.Fatal("a JWKS key without alg was accepted")
	}
	if _, err := auth.New(auth.Config{JWT: &auth.JWTConfig{JWKSFile: filepath.Join(t.TempDir(), "missing")}}); err == nil {
		t.Fatal("a missing JWKS file was accepted")
	}
	if _, err := auth.New(auth.Config{JWT: &auth.JWTConfig{JWKSFile: env.File, Skew: 6 * time.Minute}}); err == nil {
		t.Fatal("a skew over 5m was accepted")
	}
}
