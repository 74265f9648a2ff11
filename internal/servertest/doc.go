// Package servertest runs a batpak server on a loopback port for a test
// and stops it when the test ends, as net/http/httptest does for a
// handler: Config gives a quiet configuration over a fresh temporary
// root, Start serves it, Server.Stop stops it early (to restart over the
// same root, say).
package servertest
