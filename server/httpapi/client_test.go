package httpapi_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/httpapi"
)

// A request's client is its peer unless the peer is a trusted proxy;
// then X-Forwarded-For is read from the right, past the trusted
// proxies, and stops at what is not an address.
func TestTrustedProxiesClient(t *testing.T) {
	trusted, err := httpapi.ParseTrustedProxies([]string{"10.0.0.0/8", " 192.0.2.7 ", "2001:db8:9::/48", ""})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
		via        bool
	}{
		{"no proxy: the peer, whatever it claims", "198.51.100.9:5000", []string{"203.0.113.1"}, "198.51.100.9", false},
		{"trusted, no header", "10.1.1.1:5000", nil, "10.1.1.1", false},
		{"trusted, one client", "10.1.1.1:5000", []string{"203.0.113.1"}, "203.0.113.1", true},
		{"a spoofed entry left of the real client is not read", "10.1.1.1:5000", []string{"1.1.1.1, 203.0.113.1"}, "203.0.113.1", true},
		{"past a chain of trusted proxies", "10.1.1.1:5000", []string{"203.0.113.1, 192.0.2.7", "10.2.2.2"}, "203.0.113.1", true},
		{"every entry trusted: the leftmost", "10.1.1.1:5000", []string{"10.3.3.3, 10.2.2.2"}, "10.3.3.3", true},
		{"an entry that is not an address stops at the last trusted", "10.1.1.1:5000", []string{"203.0.113.1, unknown, 10.2.2.2"}, "10.2.2.2", true},
		{"garbage right away: the peer", "10.1.1.1:5000", []string{"not-an-ip"}, "10.1.1.1", false},
		{"entries with ports", "10.1.1.1:5000", []string{"[2001:db8:1::7]:4711, 10.2.2.2:80"}, "2001:db8:1::7", true},
		{"IPv4-mapped peer and entry", "[::ffff:10.1.1.1]:5000", []string{"::ffff:203.0.113.1"}, "203.0.113.1", true},
		{"IPv6 proxy", "[2001:db8:9:1::1]:5000", []string{"2001:db8:2::5"}, "2001:db8:2::5", true},
		{"empty entries are skipped", "10.1.1.1:5000", []string{"203.0.113.1, , "}, "203.0.113.1", true},
	} {
		r := httptest.NewRequest("GET", "/healthz", nil)
		r.RemoteAddr = tc.peer
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		got, via, ok := trusted.Client(r)
		if !ok || got != netip.MustParseAddr(tc.want) || via != tc.via {
			t.Errorf("%s: %v via=%v ok=%v, want %s via=%v", tc.name, got, via, ok, tc.want, tc.via)
		}
	}
	// A chain longer than MaxForwardedHops of trusted entries stops at
	// the last one read: the client named further left is not reached.
	r := httptest.NewRequest("GET", "/healthz", nil)
	r.RemoteAddr = "10.1.1.1:5000"
	r.Header.Set("X-Forwarded-For", "203.0.113.1"+strings.Repeat(", 10.9.9.9", httpapi.MaxForwardedHops))
	if got, _, _ := trusted.Client(r); got != netip.MustParseAddr("10.9.9.9") {
		t.Errorf("past MaxForwardedHops: %v", got)
	}
	// Without trusted proxies the header means nothing.
	r = httptest.NewRequest("GET", "/healthz", nil)
	r.RemoteAddr = "127.0.0.1:5000"
	r.Header.Set("X-Forwarded-For", "203.0.113.1")
	if got, via, _ := httpapi.TrustedProxies(nil).Client(r); got != netip.MustParseAddr("127.0.0.1") || via {
		t.Errorf("no trusted proxies: %v via=%v", got, via)
	}
	// A peer that is not an IP address has no client address.
	r.RemoteAddr = "@"
	if _, _, ok := trusted.Client(r); ok {
		t.Error("a non-IP peer gave a client address")
	}
}

func TestParseTrustedProxiesRefusesWhatIsNotOne(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"10.0.0.0/33", `"10.0.0.0/33": not an address or a network`},
		{"example.com", `"example.com": not an address or a network`},
		{"10.1.2.3/8", "bits set past its length /8 (did you mean 10.0.0.0/8?)"},
		{"fe80::1%eth0", `"fe80::1%eth0": not an address`},
	} {
		_, err := httpapi.ParseTrustedProxies([]string{"192.0.2.7", tc.in})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.in, err, tc.want)
		}
	}
	p, err := httpapi.ParseTrustedProxies([]string{"::ffff:10.0.0.0/104"})
	if err != nil || len(p) != 1 || p[0] != netip.MustParsePrefix("10.0.0.0/8") || !p.Contains(netip.MustParseAddr("10.4.5.6")) {
		t.Errorf("an IPv4-mapped network: %v %v", p, err)
	}
}

// Behind a trusted proxy each client's address has its own bucket of
// anonymous requests and is the access log's remote; a client that is
// not behind one cannot pick its bucket with X-Forwarded-For.
func TestTrustedProxyNamesTheClient(t *testing.T) {
	e := start(t, func(c *server.Config) {
		c.RateRefusalDelay = -1
		c.AnonymousRequestsPerSecond, c.AnonymousRequestsBurst = 1, 3
		c.TrustedProxies = []string{"127.0.0.1"}
	})
	for range 3 {
		e.must(e.req("GET", "/healthz", "", nil, "X-Forwarded-For", "203.0.113.1"), 200)
	}
	if r := e.req("GET", "/healthz", "", nil, "X-Forwarded-For", "203.0.113.1"); r.status != 429 {
		t.Fatalf("the proxied client past its bucket: %d %s", r.status, r.body)
	}
	// Another client behind the same proxy, and the proxy itself, have
	// buckets of their own.
	e.must(e.req("GET", "/healthz", "", nil, "X-Forwarded-For", "203.0.113.2"), 200)
	e.must(e.req("GET", "/healthz", "", nil), 200)
	if !strings.Contains(e.logs.String(), "remote=203.0.113.2 proxy=127.0.0.1:") {
		t.Fatalf("access log does not name the client and its proxy:\n%s", e.logs.String())
	}

	// 127.0.0.2 is not trusted: what it says of itself is ignored, and
	// its requests are charged to its own address.
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	defer other.CloseIdleConnections()
	statuses := []int{}
	for i := range 4 {
		r, _ := http.NewRequest("GET", e.base+"/healthz", nil)
		// A fresh address each time: were it believed, never refused.
		r.Header.Set("X-Forwarded-For", "198.51.100."+string(rune('1'+i)))
		res, err := other.Do(r)
		if err != nil {
			t.Skipf("no second loopback address here: %v", err)
		}
		res.Body.Close()
		statuses = append(statuses, res.StatusCode)
	}
	if statuses[3] != 429 {
		t.Fatalf("an untrusted peer chose its bucket with X-Forwarded-For: %v", statuses)
	}
	if strings.Contains(e.logs.String(), "remote=198.51.100.") {
		t.Fatalf("access log believed an untrusted peer's X-Forwarded-For:\n%s", e.logs.String())
	}
}

// A request came over TLS when it did, or when a trusted proxy says so in
// X-Forwarded-Proto; the header from anyone else is ignored.
func TestTrustedProxiesHTTPS(t *testing.T) {
	trusted, err := httpapi.ParseTrustedProxies([]string{"10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url, peer string
		proto           []string
		list            httpapi.TrustedProxies
		want            bool
	}{
		{"plain http", "http://x/", "10.1.1.1:5000", nil, trusted, false},
		{"TLS", "https://x/", "198.51.100.9:5000", nil, trusted, true},
		{"a trusted proxy says https", "http://x/", "10.1.1.1:5000", []string{"https"}, trusted, true},
		{"in capitals", "http://x/", "10.1.1.1:5000", []string{"HTTPS"}, trusted, true},
		{"its first entry counts", "http://x/", "10.1.1.1:5000", []string{"https, http"}, trusted, true},
		{"a trusted proxy says http", "http://x/", "10.1.1.1:5000", []string{"http"}, trusted, false},
		{"an address not trusted says https", "http://x/", "198.51.100.9:5000", []string{"https"}, trusted, false},
		{"no trusted proxies", "http://x/", "10.1.1.1:5000", []string{"https"}, nil, false},
		{"IPv4-mapped trusted peer", "http://x/", "[::ffff:10.1.1.1]:5000", []string{"https"}, trusted, true},
		{"a peer with no address", "http://x/", "@", []string{"https"}, trusted, false},
	} {
		r := httptest.NewRequest("GET", tc.url, nil)
		r.RemoteAddr = tc.peer
		for _, v := range tc.proto {
			r.Header.Add("X-Forwarded-Proto", v)
		}
		if got := tc.list.HTTPS(r); got != tc.want {
			t.Errorf("%s: HTTPS %v, want %v", tc.name, got, tc.want)
		}
	}
}
