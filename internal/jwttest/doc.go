// Package jwttest signs JSON Web Tokens for tests: ES256 keys, a JWKS file
// holding an issuer's public key (what a server's server.jwt.jwks_file
// names), and tokens naming a tenant and roles. Tests only: the keys are
// made on the spot and never kept.
package jwttest
