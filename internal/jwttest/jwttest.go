package jwttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Key returns a new ES256 private key with key id kid.
func Key(t testing.TB, kid string) jwk.Key {
	t.Helper()
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.Import(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Set(jwk.KeyIDKey, kid); err != nil {
		t.Fatal(err)
	}
	if err := k.Set(jwk.AlgorithmKey, jwa.ES256()); err != nil {
		t.Fatal(err)
	}
	return k
}

// Issuer is an identity provider for tests: its private key (kid "k1")
// and a JWKS file in the test's temporary directory holding the public
// half.
type Issuer struct {
	File string  // the JWKS file
	Key  jwk.Key // the private key
}

// New makes an Issuer.
func New(t testing.TB) Issuer {
	t.Helper()
	priv := Key(t, "k1")
	pub, err := jwk.PublicKeyOf(priv)
	if err != nil {
		t.Fatal(err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return Issuer{File: file, Key: priv}
}

// Token is a token of subject "user-7" for tenant with roles, expiring at
// exp, signed by the issuer.
func (i Issuer) Token(t testing.TB, tenant string, exp time.Time, roles ...string) string {
	t.Helper()
	return Sign(t, i.Key, map[string]any{"sub": "user-7", "exp": exp, "tenant": tenant, "roles": roles})
}

// Sign returns a token of claims signed with key (ES256).
func Sign(t testing.TB, key jwk.Key, claims map[string]any) string {
	t.Helper()
	tok := jwt.New()
	for k, v := range claims {
		if err := tok.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), key))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
