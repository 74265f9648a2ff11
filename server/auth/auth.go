package auth

import (
	"errors"
	"net/http"

	"github.com/batpak-go/batpak/server/control"
)

// KeyPrefix starts every tenant API key ("bpk_<key id>_<secret>"), so that
// secret scanners can recognise a leaked one; OperatorPrefix starts the
// operator credential.
const (
	KeyPrefix      = "bpk_"
	OperatorPrefix = "bpko_"
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
}

// Has reports whether p holds role r (admin implies writer implies reader).
func (p Principal) Has(r control.Role) bool { panic("unimplemented") }

// NewKey makes a fresh tenant API key: the token to show once, its id and
// the hash to store.
func NewKey() (token, id string, hash [32]byte, err error) { panic("unimplemented") }

// NewOperatorToken makes a fresh operator credential and its hash.
func NewOperatorToken() (token string, hash [32]byte, err error) { panic("unimplemented") }

// HashToken is the stored form of a credential.
func HashToken(token string) [32]byte { panic("unimplemented") }

// JWTConfig enables bearer JWTs verified against a JWKS file.
type JWTConfig struct {
	JWKSFile    string // path to a JWKS (JSON Web Key Set) file
	Issuer      string // required "iss", if set
	Audience    string // required "aud", if set
	TenantClaim string // claim naming the tenant (default "tenant")
	RolesClaim  string // claim listing roles (default "roles")
}

// Config configures an Authenticator.
type Config struct {
	Plane *control.Plane
	JWT   *JWTConfig // nil: no JWTs
}

// Authenticator turns a request's credential into a Principal.
type Authenticator struct{}

// New makes an Authenticator; it loads the JWKS file when JWTs are on.
func New(cfg Config) (*Authenticator, error) { panic("unimplemented") }

// Authenticate reads "Authorization: Bearer <token>" (API key, operator
// credential or JWT) and returns its principal or ErrUnauthenticated.
// Comparisons are constant-time.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) { panic("unimplemented") }
