// Package certroots builds the roots an https client of a batpak server
// verifies the server's certificate against: the system's, plus the CA
// certificates of a PEM file, for servers whose certificates a private CA
// signed. The CLI's remote.ca_file and a cluster member's cluster.api_ca
// use it.
package certroots
