// Package testca makes a private certificate authority for tests: a CA
// and a server certificate it signed for the loopback addresses, written
// as PEM files, as an operator with an internal CA would have them.
package testca
