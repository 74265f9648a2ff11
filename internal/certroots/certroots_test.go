package certroots_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/certroots"
	"github.com/batpak-go/batpak/internal/testca"
)

func write(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A server whose certificate a private CA signed is trusted with the CA's
// file loaded, and refused without it.
func TestLoadTrustsThePrivateCA(t *testing.T) {
	ca := testca.New(t, t.TempDir())
	leaf, err := tls.LoadX509KeyPair(ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}}
	srv.StartTLS()
	defer srv.Close()
	get := func(roots *x509.CertPool) error {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 10 * time.Second}
		res, err := c.Get(srv.URL)
		if err == nil {
			res.Body.Close()
		}
		return err
	}
	if err := get(nil); err == nil {
		t.Fatal("the system's roots trusted a private CA's certificate")
	}
	roots, err := certroots.Load(ca.CA)
	if err != nil {
		t.Fatal(err)
	}
	if err := get(roots); err != nil {
		t.Fatalf("with the CA file loaded: %v", err)
	}
}

func TestLoadNamesWhatIsWrong(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.pem")
	if _, err := certroots.Load(missing); err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("a missing file: %v", err)
	}
	notPEM := write(t, "key.txt", []byte("not a certificate\n"))
	if _, err := certroots.Load(notPEM); !errors.Is(err, certroots.ErrNoCertificate) || !strings.Contains(err.Error(), notPEM) {
		t.Fatalf("a file without a certificate: %v", err)
	}
	dir := t.TempDir()
	if _, err := certroots.Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("a directory: %v", err)
	}
	big := write(t, "big.pem", make([]byte, certroots.MaxFileBytes+1))
	if _, err := certroots.Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a file over the bound: %v", err)
	}
}
