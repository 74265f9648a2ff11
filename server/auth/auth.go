package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/control"
)

// KeyPrefix starts every tenant API key ("bpk_<key id>_<secret>"), so that
// secret scanners can recognise a leaked one; OperatorPrefix starts the
// operator credential.
const (
	KeyPrefix      = "bpk_"
	OperatorPrefix = "bpko_"
)

// KeyPattern and OperatorPattern match exactly the credentials NewKey and
// NewOperatorToken make (for secret scanners: see the package doc).
const (
	KeyPattern      = `bpk_[a-z2-7]{12}_[a-z2-7]{52}`
	OperatorPattern = `bpko_[a-z2-7]{52}`
)

var (
	keyRE      = regexp.MustCompile(`^` + KeyPattern + `$`)
	operatorRE = regexp.MustCompile(`^` + OperatorPattern + `$`)
	b32        = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
)

// ErrUnauthenticated: no credential, or one that is not valid (unknown,
// revoked, expired, badly signed). Never says which.
var ErrUnauthenticated = errors.New("auth: unauthenticated")

// Principal is who a request acts as.
type Principal struct {
	ID       string         // key id, or the JWT subject, or "operator"
	Tenant   string         // empty for the operator
	Roles    []control.Role // empty for the operator
	KeyID    string         // the API key's id; empty for JWT and operator
	Operator bool
	// Expires is when the credential stops being valid: a JWT's "exp"
	// plus JWTConfig.Skew. Zero for API keys and the operator credential,
	// which last until revoked or changed. A request that outlives it (an
	// event stream, a slow body) loses its access then.
	Expires time.Time
}

// Expired reports whether p's credential has expired at now.
func (p Principal) Expired(now time.Time) bool {
	return !p.Expires.IsZero() && !now.Before(p.Expires)
}

func rank(r control.Role) int {
	switch r {
	case control.RoleReader:
		return 1
	case control.RoleWriter:
		return 2
	case control.RoleAdmin:
		return 3
	}
	return 0
}

// Has reports whether p holds role r (admin implies writer implies
// reader). The operator holds no tenant role; an unknown r is never held.
func (p Principal) Has(r control.Role) bool {
	want := rank(r)
	if want == 0 {
		return false
	}
	for _, have := range p.Roles {
		if rank(have) >= want {
			return true
		}
	}
	return false
}

// Policy is p as the policy principal of a write (policy.WithPrincipal).
func (p Principal) Policy() policy.Principal {
	roles := make([]string, len(p.Roles))
	for i, r := range p.Roles {
		roles[i] = string(r)
	}
	return policy.Principal{ID: p.ID, Tenant: p.Tenant, Roles: roles, KeyID: p.KeyID}
}

func random(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("auth: random: %w", err)
	}
	return b32.EncodeToString(b), nil
}

// NewKey makes a fresh tenant API key: the token to show once
// ("bpk_" + 12-character id + "_" + 52-character secret: 256 random bits
// in lowercase base32), its id and the hash to store.
func NewKey() (token, id string, hash [32]byte, err error) {
	idPart, err := random(8) // 13 characters; 12 kept: 60 bits
	if err != nil {
		return "", "", hash, err
	}
	secret, err := random(32)
	if err != nil {
		return "", "", hash, err
	}
	id = idPart[:12]
	token = KeyPrefix + id + "_" + secret
	return token, id, HashToken(token), nil
}

// NewOperatorToken makes a fresh operator credential ("bpko_" + 52
// characters: 256 random bits in lowercase base32) and its hash.
func NewOperatorToken() (token string, hash [32]byte, err error) {
	secret, err := random(32)
	if err != nil {
		return "", hash, err
	}
	token = OperatorPrefix + secret
	return token, HashToken(token), nil
}

// HashToken is the stored form of a credential: SHA-256 of the whole
// token. A fast hash is the right one here: the tokens carry 256 random
// bits, so there is nothing for a slow password hash to protect against
// guessing, and authentication hashes on every request.
func HashToken(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// KeyID returns the key id of an API key token, if it has the API key
// format.
func KeyID(token string) (string, bool) {
	if !keyRE.MatchString(token) {
		return "", false
	}
	return token[len(KeyPrefix) : len(KeyPrefix)+12], true
}

// JWTConfig enables bearer JWTs verified against a JWKS file.
type JWTConfig struct {
	JWKSFile    string // path to a JWKS (JSON Web Key Set) file; every key needs "kid" and "alg"
	Issuer      string // required "iss", if set
	Audience    string // required "aud", if set
	TenantClaim string // claim naming the tenant (default "tenant")
	RolesClaim  string // claim listing roles (default "roles"): an array of strings or one space-separated string
	// Skew is the clock difference allowed when checking "exp" and "nbf".
	// Default (0) 30s; range 0..5m.
	Skew time.Duration
}

// DefaultJWTSkew is JWTConfig.Skew's default.
const DefaultJWTSkew = 30 * time.Second

// Config configures an Authenticator.
type Config struct {
	Plane *control.Plane
	JWT   *JWTConfig // nil: no JWTs
	// OperatorHash is the configured operator credential's hash
	// (HashToken of server.operator_token). Zero: the hash stored in the
	// control plane (Plane.OperatorHash) is used; if there is none, no
	// operator credential is accepted.
	OperatorHash [32]byte
	// Logger receives, at debug level, why a credential was refused (the
	// client only ever learns ErrUnauthenticated). Default slog.Default().
	Logger *slog.Logger
}

// Authenticator turns a request's credential into a Principal. Safe for
// concurrent use.
type Authenticator struct {
	plane    *control.Plane
	operator [32]byte
	log      *slog.Logger
	jwt      *JWTConfig
	keys     jwk.Set
}

// New makes an Authenticator; it loads the JWKS file when JWTs are on.
// The file must hold at least one key and every key a "kid" and an "alg"
// (the algorithm is taken from the key, never from the token).
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{plane: cfg.Plane, operator: cfg.OperatorHash, log: cfg.Logger}
	if a.log == nil {
		a.log = slog.Default()
	}
	if cfg.JWT == nil {
		return a, nil
	}
	j := *cfg.JWT
	if j.TenantClaim == "" {
		j.TenantClaim = "tenant"
	}
	if j.RolesClaim == "" {
		j.RolesClaim = "roles"
	}
	if j.Skew == 0 {
		j.Skew = DefaultJWTSkew
	}
	if j.Skew < 0 || j.Skew > 5*time.Minute {
		return nil, fmt.Errorf("auth: jwt skew %v: want 0..5m", j.Skew)
	}
	set, err := jwk.ReadFile(j.JWKSFile)
	if err != nil {
		return nil, fmt.Errorf("auth: jwks file: %w", err)
	}
	if set.Len() == 0 {
		return nil, fmt.Errorf("auth: jwks file %s holds no key", j.JWKSFile)
	}
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		kid, _ := k.KeyID()
		if kid == "" {
			return nil, fmt.Errorf("auth: jwks file %s: key %d has no \"kid\"", j.JWKSFile, i)
		}
		if _, ok := k.Algorithm(); !ok {
			return nil, fmt.Errorf("auth: jwks file %s: key %q has no \"alg\"", j.JWKSFile, kid)
		}
	}
	a.jwt, a.keys = &j, set
	return a, nil
}

// ctEqual compares hashes in constant time (a variable, so a test can see
// it is the comparison every path uses).
var ctEqual = func(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// Authenticate reads "Authorization: Bearer <token>" (API key, operator
// credential or, when configured, a JWT: anything else with two dots) and
// returns its principal or ErrUnauthenticated. Hash comparisons are
// constant-time; an unknown key id costs a comparison too. A key works
// until the control plane's RevokeKey returns. A request with more than
// one Authorization header is refused.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	if len(r.Header.Values("Authorization")) > 1 {
		return a.refuse("more than one Authorization header")
	}
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return a.refuse("no bearer credential")
	}
	token = strings.TrimSpace(token)
	switch {
	case strings.HasPrefix(token, OperatorPrefix):
		return a.operatorPrincipal(token)
	case strings.HasPrefix(token, KeyPrefix):
		return a.keyPrincipal(token)
	case a.jwt != nil && strings.Count(token, ".") == 2:
		return a.jwtPrincipal(token)
	}
	return a.refuse("unrecognised credential")
}

// Plausible reports whether r carries one bearer credential of a shape
// this server takes: an operator credential, an API key, or (JWTs
// configured) a JWT. It checks the shape only, never the credential: a
// request without a plausible one is refused by every node, so a cluster
// follower answers it 401 itself instead of sending it to the leader.
func (a *Authenticator) Plausible(r *http.Request) bool {
	if len(r.Header.Values("Authorization")) != 1 {
		return false
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	token = strings.TrimSpace(token)
	return strings.HasPrefix(token, OperatorPrefix) || strings.HasPrefix(token, KeyPrefix) ||
		a.jwt != nil && strings.Count(token, ".") == 2
}

func (a *Authenticator) refuse(reason string, args ...any) (Principal, error) {
	a.log.Debug("auth: credential refused: "+reason, args...)
	return Principal{}, ErrUnauthenticated
}

func (a *Authenticator) operatorPrincipal(token string) (Principal, error) {
	want := a.operator
	if want == ([32]byte{}) && a.plane != nil {
		want, _ = a.plane.OperatorHash()
	}
	got := HashToken(token)
	// Compared even when nothing is configured, against zeros.
	match := ctEqual(got[:], want[:])
	if !operatorRE.MatchString(token) || want == ([32]byte{}) || !match {
		return a.refuse("operator credential does not match")
	}
	return Principal{ID: "operator", Operator: true}, nil
}

func (a *Authenticator) keyPrincipal(token string) (Principal, error) {
	id, ok := KeyID(token)
	if !ok {
		return a.refuse("malformed api key")
	}
	var k control.Key
	found := false
	if a.plane != nil {
		k, found = a.plane.Key(id)
	}
	got := HashToken(token)
	match := ctEqual(got[:], k.Hash[:]) // a zero hash when not found: compared all the same
	if !found || !match {
		return a.refuse("api key unknown, revoked or wrong", "key_id", id)
	}
	return Principal{ID: id, Tenant: k.Tenant, Roles: k.Roles, KeyID: id}, nil
}

func (a *Authenticator) jwtPrincipal(token string) (Principal, error) {
	j := a.jwt
	opts := []jwt.ParseOption{
		jwt.WithKeySet(a.keys, jws.WithRequireKid(true)),
		jwt.WithValidate(true),
		jwt.WithAcceptableSkew(j.Skew),
	}
	if j.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(j.Issuer))
	}
	if j.Audience != "" {
		opts = append(opts, jwt.WithAudience(j.Audience))
	}
	t, err := jwt.Parse([]byte(token), opts...)
	if err != nil {
		return a.refuse("jwt refused", "error", err)
	}
	sub, _ := t.Subject()
	if sub == "" {
		return a.refuse("jwt has no sub")
	}
	exp, ok := t.Expiration()
	if !ok {
		return a.refuse("jwt has no exp")
	}
	var tenant string
	if err := t.Get(j.TenantClaim, &tenant); err != nil || control.ValidTenantID(tenant) != nil {
		return a.refuse("jwt tenant claim missing or not a tenant id", "claim", j.TenantClaim)
	}
	var raw any
	_ = t.Get(j.RolesClaim, &raw)
	return Principal{ID: sub, Tenant: tenant, Roles: rolesOf(raw), Expires: exp.Add(j.Skew)}, nil
}

// rolesOf reads a roles claim: an array of strings or one space-separated
// string (OAuth "scope" style). Unknown roles are ignored; each role once,
// in claim order.
func rolesOf(v any) []control.Role {
	var names []string
	switch x := v.(type) {
	case string:
		names = strings.Fields(x)
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok {
				names = append(names, s)
			}
		}
	case []string:
		names = x
	}
	var out []control.Role
	seen := map[control.Role]bool{}
	for _, n := range names {
		r := control.Role(n)
		if (control.ValidRole(r) || control.ValidAppRole(r)) && !seen[r] && len(out) < control.MaxRoles {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}
