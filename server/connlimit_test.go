package server_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// TestIdleConnectionsYieldToNewClients: connections that sit idle
// between requests (keep-alive) or have sent nothing yet do not hold
// server.max_connections against a new client: once every slot is taken,
// the longest idle connection is closed to make room, so that anyone
// who can open connections (no credential needed: /healthz) cannot shut
// everyone else out for idle_timeout.
func TestIdleConnectionsYieldToNewClients(t *testing.T) {
	const limit = 4
	ps := startTunedServer(t, t.TempDir(), func(c *server.Config) { c.MaxConnections = limit })
	addr := strings.TrimPrefix(ps.base, "http://")
	var held []net.Conn
	for i := range limit {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		held = append(held, conn)
		if i%2 == 1 {
			continue // connected, nothing sent
		}
		// One request, then idle on a kept-alive connection.
		fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("healthz on connection %d: %v", i, err)
		}
		res.Body.Close()
	}
	time.Sleep(100 * time.Millisecond)
	for i := range 3 {
		c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		began := time.Now()
		res, err := c.Get(ps.base + "/healthz")
		if err != nil {
			t.Fatalf("client %d while %d idle connections hold every slot: %v", i, limit, err)
		}
		res.Body.Close()
		if d := time.Since(began); d > time.Second {
			t.Fatalf("client %d waited %v", i, d)
		}
	}
	_ = held
}

// TestBusyConnectionsKeepTheirSlots: connections in the middle of a
// request are never closed for a new client: it waits for a slot.
func TestBusyConnectionsKeepTheirSlots(t *testing.T) {
	const limit = 2
	ps := startTunedServer(t, t.TempDir(), func(c *server.Config) { c.MaxConnections = limit })
	addr := strings.TrimPrefix(ps.base, "http://")
	for range limit {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// An authenticated request whose body is still arriving: active.
		fmt.Fprintf(conn, "POST /v1/admin/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", "bpko_"+strings.Repeat("a", 52))
	}
	time.Sleep(200 * time.Millisecond)
	c := &http.Client{Timeout: time.Second}
	if res, err := c.Get(ps.base + "/healthz"); err == nil {
		res.Body.Close()
		t.Fatal("a new client was served while every slot held a request in progress")
	}
}

// TestRefusedBodyFreesItsConnection: a request refused before its body
// is read (no credential here) is answered, and its connection dropped,
// within about a second when the rest of the body does not come, instead
// of the server waiting up to read_timeout for a body it will never use:
// without a credential, slow bodies could otherwise hold every
// connection slot (and their answers) for a minute.
func TestRefusedBodyFreesItsConnection(t *testing.T) {
	const limit = 2
	ps := startTunedServer(t, t.TempDir(), func(c *server.Config) { c.MaxConnections = limit })
	addr := strings.TrimPrefix(ps.base, "http://")
	began := time.Now()
	for range limit {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/admin/tenants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
		go func() {
			if res, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
				res.Body.Close()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // both requests are in (their bodies are not)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := c.Get(ps.base + "/healthz")
	if err != nil {
		t.Fatalf("a client while %d refused slow bodies are under way: %v", limit, err)
	}
	res.Body.Close()
	if d := time.Since(began); d > 3*time.Second {
		t.Fatalf("a client waited %v beside %d refused slow bodies", d, limit)
	}
}
