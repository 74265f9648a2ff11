// Package testca makes private certificate authorities for tests: CAs,
// the loopback certificates they sign (for servers and for mutual TLS),
// and a CA with a server certificate written as PEM files, as an operator
// with an internal CA would have them.
package testca
