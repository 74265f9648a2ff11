package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/control"
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

// dialFrom opens a connection to addr from the loopback address from
// (127.0.0.0/8 is all loopback on Linux).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 3 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// healthz sends GET /healthz on c (kept alive) and returns the answer's
// status and body.
func healthz(t *testing.T, c net.Conn) (*http.Response, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("healthz: %v", err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("healthz: %v", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

// clientFrom is an HTTP client whose connections come from the loopback
// address from, one per request.
func clientFrom(from string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 3 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// refusedPerSource reads batpak_connections_refused_per_source_total,
// over a connection from 127.0.0.3.
func refusedPerSource(t *testing.T, base string) float64 {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer bpko_"+strings.Repeat("a", 52))
	res, err := clientFrom("127.0.0.3").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "batpak_connections_refused_per_source_total "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(line)
			}
			return f
		}
	}
	t.Fatalf("/metrics (%d) has no batpak_connections_refused_per_source_total", res.StatusCode)
	return 0
}

// TestConnectionsPerSource: past server.max_connections_per_source, a
// new connection from the same address is answered at once with 429
// TOO_MANY_CONNECTIONS (a problem document, Retry-After) and closed,
// while the connections it holds keep working; closing one makes room
// for one more; another address is not affected; the refusals are
// counted.
func TestConnectionsPerSource(t *testing.T) {
	const limit = 3
	ps := startTunedServer(t, t.TempDir(), func(c *server.Config) { c.MaxConnectionsPerSource = limit })
	addr := strings.TrimPrefix(ps.base, "http://")
	var held []net.Conn
	for i := range limit {
		c := dialFrom(t, "127.0.0.1", addr)
		if res, _ := healthz(t, c); res.StatusCode != 200 {
			t.Fatalf("connection %d of %d: %d", i+1, limit, res.StatusCode)
		}
		held = append(held, c)
	}

	// The next one is answered as soon as its request is in.
	extra := dialFrom(t, "127.0.0.1", addr)
	_ = extra.SetDeadline(time.Now().Add(3 * time.Second))
	began := time.Now()
	fmt.Fprintf(extra, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(extra), nil)
	if err != nil {
		t.Fatalf("connection %d from one address: no answer: %v", limit+1, err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("the refusal took %v", d)
	}
	var p struct {
		Type, Title, Detail, Code string
		Status                    int
	}
	if res.StatusCode != 429 || res.Header.Get("Retry-After") != "1" || res.Header.Get("Content-Type") != "application/problem+json" ||
		json.Unmarshal(body, &p) != nil || p.Code != "TOO_MANY_CONNECTIONS" || p.Status != 429 ||
		!strings.Contains(p.Detail, "server.max_connections_per_source") || !strings.Contains(p.Detail, "127.0.0.1") {
		t.Fatalf("connection %d from one address: %d %v\n%s", limit+1, res.StatusCode, res.Header, body)
	}
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatal("the refused connection was left open")
	}

	// The same through an HTTP client that sends its request first.
	res, err = clientFrom("127.0.0.1").Get(ps.base + "/healthz")
	if err != nil {
		t.Fatalf("an HTTP client past the bound got no answer: %v", err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 429 || !strings.Contains(string(body), `"code":"TOO_MANY_CONNECTIONS"`) {
		t.Fatalf("an HTTP client past the bound: %d %s", res.StatusCode, body)
	}

	// The held connections still work.
	for i, c := range held {
		if res, _ := healthz(t, c); res.StatusCode != 200 {
			t.Fatalf("held connection %d after the refusals: %d", i, res.StatusCode)
		}
	}
	// Another address is not affected.
	for range limit {
		if res, _ := healthz(t, dialFrom(t, "127.0.0.2", addr)); res.StatusCode != 200 {
			t.Fatalf("a connection from 127.0.0.2 while 127.0.0.1 is at its bound: %d", res.StatusCode)
		}
	}
	if got := refusedPerSource(t, ps.base); got != 2 {
		t.Fatalf("batpak_connections_refused_per_source_total = %v, want 2", got)
	}

	// Closing a held connection makes room for exactly one more (once
	// the server has seen it close).
	held[0].Close()
	deadline := time.Now().Add(3 * time.Second)
	var next net.Conn
	for {
		c := dialFrom(t, "127.0.0.1", addr)
		res, _ := healthz(t, c)
		if res.StatusCode == 200 {
			next = c
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("a connection after one of %d closed: still %d", limit, res.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if res, _ := healthz(t, dialFrom(t, "127.0.0.1", addr)); res.StatusCode != 429 {
		t.Fatalf("a second connection after one closed: %d, want 429", res.StatusCode)
	}
	_ = next
}

// TestConnectionsPerSourceOff: server.max_connections_per_source 0 in the
// configuration (negative in server.Config) bounds nothing: one address
// may hold every connection of server.max_connections.
func TestConnectionsPerSourceOff(t *testing.T) {
	const many = 12
	ps := startTunedServer(t, t.TempDir(), func(c *server.Config) { c.MaxConnectionsPerSource = -1; c.MaxConnections = many })
	addr := strings.TrimPrefix(ps.base, "http://")
	var held []net.Conn
	for i := range many {
		c := dialFrom(t, "127.0.0.1", addr)
		if res, _ := healthz(t, c); res.StatusCode != 200 {
			t.Fatalf("connection %d with no per-source bound: %d", i, res.StatusCode)
		}
		held = append(held, c)
	}
	for i, c := range held {
		if res, _ := healthz(t, c); res.StatusCode != 200 {
			t.Fatalf("held connection %d: %d", i, res.StatusCode)
		}
	}
	if got := refusedPerSource(t, ps.base); got != 0 {
		t.Fatalf("batpak_connections_refused_per_source_total = %v with no bound", got)
	}
}

// TestTrustedProxyConnectionsNotBoundPerSource: a proxy named in
// server.trusted_proxies carries many clients' connections, so it is not
// held to max_connections_per_source; an address it does not name still
// is, and a network it names covers its addresses.
func TestTrustedProxyConnectionsNotBoundPerSource(t *testing.T) {
	const limit = 2
	ps := startTunedServer(t, t.TempDir(), func(c *server.Config) {
		c.MaxConnectionsPerSource = limit
		c.TrustedProxies = []string{"127.0.0.1", "127.0.1.0/24"}
	})
	addr := strings.TrimPrefix(ps.base, "http://")
	for _, from := range []string{"127.0.0.1", "127.0.1.9"} {
		var held []net.Conn
		for i := range 3 * limit {
			c := dialFrom(t, from, addr)
			if res, _ := healthz(t, c); res.StatusCode != 200 {
				t.Fatalf("connection %d from trusted proxy %s: %d", i+1, from, res.StatusCode)
			}
			held = append(held, c)
		}
		for _, c := range held {
			c.Close()
		}
	}
	for range limit {
		if res, _ := healthz(t, dialFrom(t, "127.0.0.2", addr)); res.StatusCode != 200 {
			t.Fatalf("a connection from 127.0.0.2 within its bound: %d", res.StatusCode)
		}
	}
	if res, _ := healthz(t, dialFrom(t, "127.0.0.2", addr)); res.StatusCode != 429 {
		t.Fatalf("an address not trusted past its bound: %d, want 429", res.StatusCode)
	}
}

// TestTrustedProxiesSetting: an entry that is neither an address nor a
// network is refused at start, naming it.
func TestTrustedProxiesSetting(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.Root, cfg.Stderr, cfg.TrustedProxies = t.TempDir(), io.Discard, []string{"10.0.0.0/8", "proxy.internal"}
	if _, err := server.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), `server.trusted_proxies: trusted proxy "proxy.internal": not an address or a network`) {
		t.Fatalf("trusted_proxies with a host name: %v", err)
	}
}

// TestConnectionsPerSourceSetting: the setting's range is enforced at
// start with an error naming it.
func TestConnectionsPerSourceSetting(t *testing.T) {
	cfg := server.DefaultConfig()
	if cfg.MaxConnectionsPerSource != 256 {
		t.Fatalf("default server.max_connections_per_source = %d, want 256", cfg.MaxConnectionsPerSource)
	}
	cfg.Root, cfg.Stderr, cfg.MaxConnectionsPerSource = t.TempDir(), io.Discard, 1_000_001
	if _, err := server.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "server.max_connections_per_source = 1000001") {
		t.Fatalf("max_connections_per_source 1000001: %v", err)
	}
}

// TestHeldRefusalsYieldTheirConnections: a refusal held for
// rate_refusal_delay does not keep its connection slot from a new
// client: with every slot taken by a tenant's held refusals, another
// tenant's request is served once they have been held for half the
// delay, well before it ends — one held refusal is answered at once
// (its 429, the connection closed after it) to make room — and the
// others are answered after the whole delay.
func TestHeldRefusalsYieldTheirConnections(t *testing.T) {
	const limit = 4
	const delay = time.Second
	ps := startTunedServer(t, t.TempDir(), func(c *server.Config) { c.MaxConnections, c.RateRefusalDelay = limit, delay })
	ctx := context.Background()
	for _, id := range []string{"acme", "globex"} {
		if _, err := ps.srv.Plane().CreateTenant(ctx, id, control.Quotas{RequestsPerSecond: 0.001, RequestsBurst: 1}, control.Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	acme, globex := issueKey(t, ps.srv, "acme", control.RoleReader), issueKey(t, ps.srv, "globex", control.RoleReader)
	addr := strings.TrimPrefix(ps.base, "http://")
	get := func(conn net.Conn, tenant, key string) {
		fmt.Fprintf(conn, "GET /v1/tenants/%s/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tenant, key)
	}
	// acme spends its one token, then every slot holds one of its refusals.
	conns := make([]net.Conn, limit)
	readers := make([]*bufio.Reader, limit)
	for i := range conns {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conns[i], readers[i] = conn, bufio.NewReader(conn)
		get(conn, "acme", acme)
		if i == 0 {
			res, err := http.ReadResponse(readers[i], nil)
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("acme's first request: %v", err)
			}
			res.Body.Close()
			get(conn, "acme", acme)
		}
	}
	held := time.Now()
	time.Sleep(100 * time.Millisecond)
	c := &http.Client{Timeout: delay * 85 / 100, Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequest("GET", ps.base+"/v1/tenants/globex/stats", nil)
	req.Header.Set("Authorization", "Bearer "+globex)
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("globex's request while acme's held refusals take every slot: %v after %v", err, time.Since(held))
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("globex's request: %d", res.StatusCode)
	}
	early := 0
	for i, conn := range conns {
		conn.SetReadDeadline(time.Now().Add(3 * delay))
		res, err := http.ReadResponse(readers[i], nil)
		if err != nil {
			t.Fatalf("a held refusal got no answer: %v", err)
		}
		res.Body.Close()
		if res.StatusCode != 429 {
			t.Fatalf("a held refusal answered %d", res.StatusCode)
		}
		if res.Close {
			early++
		}
	}
	if early == 0 {
		t.Fatal("no held refusal was answered early, its connection closed, for the new client")
	}
}

// TestShutdownClosesSpareConnections: a client's connection that has sent
// nothing (an HTTP client dials spares ahead) does not hold a graceful
// shutdown: it ends at once and without error, not after net/http's 5 s
// or at the shutdown timeout. A request under way still finishes.
func TestShutdownClosesSpareConnections(t *testing.T) {
	cfg := servertest.Config(t)
	cfg.ShutdownTimeout = 4 * time.Second
	srv := servertest.Start(t, cfg)
	addr := strings.TrimPrefix(srv.URL, "http://")
	spare, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer spare.Close()
	res, err := http.Get(srv.URL + "/healthz") // the server has accepted connections by now
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	start := time.Now()
	if err := srv.Stop(); err != nil {
		t.Fatalf("shutdown with a spare connection open: %v (after %v)", err, time.Since(start))
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("shutdown took %v with a spare connection open", took)
	}
	spare.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := spare.Read(make([]byte, 1)); err == nil {
		t.Fatal("the spare connection is still open")
	}
}
