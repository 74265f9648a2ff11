package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/internal/testca"
	"github.com/batpak-go/batpak/server"
)

// startTLSServer is startServer over https, with a certificate a private
// CA signed; it returns the URL, the operator credential and the CA's
// file.
func startTLSServer(t *testing.T) (url, operator, caFile string) {
	t.Helper()
	ca := testca.New(t, t.TempDir())
	url, operator = startServerWith(t, func(c *server.Config) { c.TLSCert, c.TLSKey = ca.Cert, ca.Key })
	return url, operator, ca.CA
}

// TestRemoteHTTPSWithAPrivateCA: a server whose certificate a private CA
// signed is refused until the CLI is given the CA (--ca-file, or
// BATPAK_CA_FILE), and then works; a CA file that is missing or holds no
// certificate is an error naming it.
func TestRemoteHTTPSWithAPrivateCA(t *testing.T) {
	isolate(t)
	url, op, caFile := startTLSServer(t)
	admin := []string{"--server", url, "--token", op}
	failsWith(t, exitUnavailable, append(admin, "tenant", "list"), "certificate", "--ca-file")
	ok(t, append(admin, "--ca-file", caFile, "tenant", "create", "acme")...)
	t.Setenv("BATPAK_CA_FILE", caFile)
	if out := ok(t, append(admin, "tenant", "list")...); !strings.Contains(out, "acme") {
		t.Fatalf("tenant list through BATPAK_CA_FILE: %q", out)
	}
	t.Setenv("BATPAK_CA_FILE", "")
	missing := filepath.Join(t.TempDir(), "ca.pem")
	fails(t, append(admin, "--ca-file", missing, "tenant", "list"), "flag --ca-file", missing)
	t.Setenv("BATPAK_CA_FILE", missing)
	fails(t, append(admin, "tenant", "list"), "env BATPAK_CA_FILE", missing)
	t.Setenv("BATPAK_CA_FILE", "")
	// A config file's ~/ is the home directory, as for remote.token_file.
	home := t.TempDir()
	t.Setenv("HOME", home)
	writeFile(t, filepath.Join(home, "ca.pem"), string(must(os.ReadFile(caFile))))
	writeFile(t, "batpak.yaml", "remote:\n  ca_file: ~/ca.pem\n")
	if out := ok(t, append(admin, "tenant", "list")...); !strings.Contains(out, "acme") {
		t.Fatalf("tenant list with remote.ca_file ~/ca.pem: %q", out)
	}
	writeFile(t, "batpak.yaml", "remote:\n  ca_file: ~/absent.pem\n")
	fails(t, append(admin, "tenant", "list"), "config", "absent.pem")
	if err := os.Remove("batpak.yaml"); err != nil {
		t.Fatal(err)
	}
	notCA := filepath.Join(t.TempDir(), "not-a-ca.pem")
	writeFile(t, notCA, "just text\n")
	fails(t, append(admin, "--ca-file", notCA, "tenant", "list"), "--ca-file", "no PEM certificate")
}
