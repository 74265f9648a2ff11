package server_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// TestRefusedConnectionsSendingNothing: a source at its bound opening
// hundreds more connections that never send a byte does not hold them
// (each is closed within 2 s), nor block the server for another source,
// and its count comes back once its held connections close.
func TestRefusedConnectionsSendingNothing(t *testing.T) {
	const limit = 3
	ps := startTunedServer(t, t.TempDir(), func(c *server.Config) { c.MaxConnectionsPerSource = limit })
	addr := strings.TrimPrefix(ps.base, "http://")
	var held []net.Conn
	for range limit {
		held = append(held, dialFrom(t, "127.0.0.1", addr))
	}
	time.Sleep(100 * time.Millisecond)
	var refused []net.Conn
	for range 300 {
		refused = append(refused, dialFrom(t, "127.0.0.1", addr))
	}
	began := time.Now()
	if res, _ := healthz(t, dialFrom(t, "127.0.0.2", addr)); res.StatusCode != 200 {
		t.Fatalf("another source: %d", res.StatusCode)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("another source waited %v", d)
	}
	for i, c := range refused {
		_ = c.SetReadDeadline(time.Now().Add(4 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("refused connection %d still open after 4 s", i)
			}
		}
	}
	for _, c := range held {
		c.Close()
	}
	time.Sleep(200 * time.Millisecond)
	for i := range limit {
		if res, _ := healthz(t, dialFrom(t, "127.0.0.1", addr)); res.StatusCode != 200 {
			t.Fatalf("connection %d after the held ones closed: %d", i, res.StatusCode)
		}
	}
}

// TestReclaimedConnectionsUncounted: connections that sent nothing,
// closed to make room (server.max_connections), are uncounted from their
// source: it may open max_connections_per_source again.
func TestReclaimedConnectionsUncounted(t *testing.T) {
	const limit = 2
	ps := startTunedServer(t, t.TempDir(), func(c *server.Config) {
		c.MaxConnectionsPerSource = limit
		c.MaxConnections = 2
	})
	addr := strings.TrimPrefix(ps.base, "http://")
	for range limit {
		dialFrom(t, "127.0.0.2", addr)
	}
	time.Sleep(100 * time.Millisecond)
	for range 2 {
		if res, _ := healthz(t, dialFrom(t, "127.0.0.1", addr)); res.StatusCode != 200 {
			t.Fatalf("%d", res.StatusCode)
		}
	}
	time.Sleep(200 * time.Millisecond)
	// .2's connections were reclaimed (the server closed them): it may
	// open limit again.
	for i := range limit {
		if res, _ := healthz(t, dialFrom(t, "127.0.0.2", addr)); res.StatusCode != 200 {
			t.Fatalf("connection %d from the reclaimed source: %d", i, res.StatusCode)
		}
	}
}

// TestTLSHandshakeFailuresUncounted: connections whose TLS handshake
// fails (plain HTTP sent to the TLS port, or closed before it) are
// uncounted from their source once the server has closed them.
func TestTLSHandshakeFailuresUncounted(t *testing.T) {
	certFile, keyFile, der := selfSigned(t)
	srv := startTunedServer(t, t.TempDir(), func(c *server.Config) {
		c.TLSCert, c.TLSKey, c.MaxConnectionsPerSource = certFile, keyFile, 3
	}).srv
	addr := srv.Addr().String()
	for range 20 {
		c := dialFrom(t, "127.0.0.1", addr)
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}
	for range 5 {
		c := dialFrom(t, "127.0.0.1", addr)
		c.Close()
	}
	time.Sleep(300 * time.Millisecond)
	pool := x509.NewCertPool()
	pool.AddCert(must(x509.ParseCertificate(der)))
	for i := range 3 {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatalf("TLS connection %d after handshake failures: %v", i, err)
		}
		defer c.Close()
		if res, _ := healthz(t, c); res.StatusCode != 200 {
			t.Fatalf("TLS connection %d: %d", i, res.StatusCode)
		}
	}
}

// TestRefusalAnswersShared: one source opening a hundred connections
// past its bound that send nothing does not take every refusal's answer:
// a client of another source past its own bound is still answered 429
// TOO_MANY_CONNECTIONS, not dropped unanswered.
func TestRefusalAnswersShared(t *testing.T) {
	const limit = 2
	ps := startTunedServer(t, t.TempDir(), func(c *server.Config) { c.MaxConnectionsPerSource = limit })
	addr := strings.TrimPrefix(ps.base, "http://")
	for _, from := range []string{"127.0.0.1", "127.0.0.2"} {
		for range limit {
			if res, _ := healthz(t, dialFrom(t, from, addr)); res.StatusCode != 200 {
				t.Fatalf("a connection from %s within its bound: %d", from, res.StatusCode)
			}
		}
	}
	for range 100 {
		dialFrom(t, "127.0.0.1", addr) // refused, sending nothing
	}
	c := dialFrom(t, "127.0.0.2", addr)
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a refused client of another source got no answer: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 429 || !strings.Contains(string(body), `"code":"TOO_MANY_CONNECTIONS"`) {
		t.Fatalf("a refused client of another source: %d %s", res.StatusCode, body)
	}
}
