package server

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/httpapi"
)

// TestSourceOf: a connection counts against its IPv4 address (also when
// a dual-stack listener shows it IPv4-mapped) or its IPv6 /64.
func TestSourceOf(t *testing.T) {
	l := newConnLimiter(10, 10, httpapi.TrustedProxies{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:9::/48")})
	for _, tc := range []struct{ ip, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"},
		{"2001:db8:1:2::1", "2001:db8:1:2::"},
		{"2001:db8:1:3::1", "2001:db8:1:3::"},
		{"fe80::1%eth0", "fe80::"},
	} {
		ip, zone, _ := strings.Cut(tc.ip, "%")
		got, ok := l.sourceOf(&net.TCPAddr{IP: net.ParseIP(ip), Zone: zone, Port: 4000})
		if !ok || got != netip.MustParseAddr(tc.want) {
			t.Errorf("source of %s: %v %v, want %s", tc.ip, got, ok, tc.want)
		}
	}
	if _, ok := l.sourceOf(&net.UnixAddr{Name: "/tmp/s", Net: "unix"}); ok {
		t.Error("a unix socket address counted as a source")
	}
	// A trusted proxy's connections carry many clients': not counted.
	for _, ip := range []string{"10.1.2.3", "::ffff:10.1.2.3", "2001:db8:9:1::5"} {
		if src, ok := l.sourceOf(&net.TCPAddr{IP: net.ParseIP(ip), Port: 4000}); ok {
			t.Errorf("trusted proxy %s counted as source %v", ip, src)
		}
	}
}

// TestSourceCountsUnderChurn: many clients of one address connecting and
// closing at once never have more than the bound served, every
// connection's count is given back exactly once (its Close called twice,
// from two goroutines), and once they are gone nothing is counted and
// no slot is held. Run with -race.
func TestSourceCountsUnderChurn(t *testing.T) {
	const perSource = 4
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newConnLimiter(1000, perSource, nil)
	ln := l.wrap(raw, true)
	defer ln.Close()
	var served, most atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				n := served.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				_, _ = bufio.NewReader(c).ReadString('\n')
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
				served.Add(-1)
				var both sync.WaitGroup
				for range 2 {
					both.Add(1)
					go func() { defer both.Done(); _ = c.Close() }()
				}
				both.Wait()
			}()
		}
	}()
	var clients sync.WaitGroup
	var ok, refused, closed atomic.Int32
	for range 24 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for range 15 {
				c, err := net.DialTimeout("tcp", raw.Addr().String(), 3*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				b, _ := io.ReadAll(c)
				switch {
				case strings.HasPrefix(string(b), "HTTP/1.1 200"):
					ok.Add(1)
				case strings.HasPrefix(string(b), "HTTP/1.1 429"):
					refused.Add(1)
				case len(b) == 0:
					// Refused while too many refusals of this address
					// were being answered: closed without an answer.
					closed.Add(1)
				default:
					t.Errorf("answer %q", b)
				}
				c.Close()
			}
		}()
	}
	clients.Wait()
	if m := most.Load(); m > perSource {
		t.Fatalf("%d connections of one address served at once, bound %d", m, perSource)
	}
	if ok.Load() == 0 || refused.Load() == 0 || uint64(refused.Load()+closed.Load()) != l.refused.Load() {
		t.Fatalf("served %d, refused %d with an answer and %d without (counted %d)", ok.Load(), refused.Load(), closed.Load(), l.refused.Load())
	}
	src := netip.MustParseAddr("127.0.0.1")
	deadline := time.Now().Add(5 * time.Second)
	for l.openFrom(src) != 0 || len(l.slots) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after every client left: %d counted against %v, %d slots held", l.openFrom(src), src, len(l.slots))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
