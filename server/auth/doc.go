// Package auth turns a request's bearer credential into a Principal:
// tenant API keys, the operator credential, and (optionally) JWTs
// verified against a JWKS file.
//
// # Credentials
//
//	credential   format                           regexp (for secret scanners)
//	-----------  -------------------------------  -----------------------------------
//	API key      bpk_<id>_<secret>                bpk_[a-z2-7]{12}_[a-z2-7]{52}
//	operator     bpko_<secret>                    bpko_[a-z2-7]{52}
//	JWT          header.claims.signature          (anything else with two dots)
//
// The id is 60 random bits and the secret 256 random bits from
// crypto/rand, both in lowercase RFC 4648 base32 without padding: no
// characters that need escaping in a URL, a shell or JSON, and a fixed
// prefix and length so that scanners (GitHub secret scanning, gitleaks,
// trufflehog) can match leaked keys without false positives. The key id
// is not secret: it names the key in lists, logs and the policy input
// (principal.key_id).
//
// Only HashToken(token) — SHA-256 of the whole token — is stored. The
// tokens are high-entropy, so a fast hash is the standard choice: a slow
// password hash (bcrypt, argon2) protects low-entropy secrets against
// guessing, which 256 random bits do not need, and it would cost its
// time on every request. Hashes are compared with
// crypto/subtle.ConstantTimeCompare, and a key id that does not exist
// costs a comparison too.
//
// # Authenticate
//
// "Authorization: Bearer <token>" only (the scheme is case-insensitive).
// An API key is looked up by its id in the control plane (Plane.Key: live
// keys only, so a revoked key fails from the moment RevokeKey returns).
// The operator credential matches Config.OperatorHash, or when that is
// zero the hash stored in the control plane. A JWT must be signed by a key
// of the JWKS file whose "kid" it names, with that key's "alg" (never the
// token's, so "alg":"none" and algorithm confusion are refused); it needs
// "sub" (the principal's ID) and "exp"; "exp" and "nbf" are checked with
// JWTConfig.Skew of tolerance, "iss" and "aud" when configured; the tenant
// comes from JWTConfig.TenantClaim (a valid tenant id) and the roles from
// JWTConfig.RolesClaim: access roles (reader, writer, admin) and application
// roles (control.ValidAppRole; they grant nothing on the server and flow into
// the policy input), at most control.MaxRoles; malformed names are ignored.
//
// Every failure is ErrUnauthenticated, whatever the reason; the reason
// goes to the debug log only.
//
// Roles are ordered: admin includes writer includes reader (Principal.Has).
package auth
