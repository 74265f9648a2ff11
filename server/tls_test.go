package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// TestTLSServesHTTP1: with a certificate the server speaks TLS, and only
// HTTP/1.1 (a client offering h2 gets http/1.1), so max_connections
// bounds the requests in flight as it does without TLS.
func TestTLSServesHTTP1(t *testing.T) {
	certFile, keyFile, der := selfSigned(t)
	srv := startTunedServer(t, t.TempDir(), func(c *server.Config) { c.TLSCert, c.TLSKey = certFile, keyFile }).srv

	pool := x509.NewCertPool()
	pool.AddCert(must(x509.ParseCertificate(der)))
	hc := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}}}}
	res, err := hc.Get("https://" + srv.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.ProtoMajor != 1 || res.TLS == nil {
		t.Fatalf("GET /healthz over TLS: %s %s, TLS %v", res.Status, res.Proto, res.TLS != nil)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// selfSigned writes a certificate for 127.0.0.1 and its key to a
// temporary directory.
func selfSigned(t *testing.T) (certFile, keyFile string, der []byte) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile, der
}

// TestTLSConnectionsPerSource: over TLS, a connection past
// server.max_connections_per_source is closed when accepted, without an
// answer (one would need a handshake), and counted; the held one works.
func TestTLSConnectionsPerSource(t *testing.T) {
	certFile, keyFile, der := selfSigned(t)
	srv := startTunedServer(t, t.TempDir(), func(c *server.Config) {
		c.TLSCert, c.TLSKey, c.MaxConnectionsPerSource, c.MetricsPublic = certFile, keyFile, 1, true
	}).srv
	pool := x509.NewCertPool()
	pool.AddCert(must(x509.ParseCertificate(der)))
	tc := &tls.Config{RootCAs: pool}
	addr := srv.Addr().String()

	held, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if res, _ := healthz(t, held); res.StatusCode != 200 {
		t.Fatalf("the first TLS connection: %d", res.StatusCode)
	}
	began := time.Now()
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, tc); err == nil {
		c.Close()
		t.Fatal("a second TLS connection from one address completed its handshake with max_connections_per_source 1")
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("the refusal took %v", d)
	}
	if res, _ := healthz(t, held); res.StatusCode != 200 {
		t.Fatalf("the held TLS connection after the refusal: %d", res.StatusCode)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	res, err := hc.Get("https://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("from another address: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), "batpak_connections_refused_per_source_total 1\n") {
		t.Fatalf("/metrics from another address (%d) does not count one refusal", res.StatusCode)
	}
}
