package quota

import (
	"math"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Sources holds a request bucket per source address for the requests
// that no tenant is charged for: those without a valid credential (none,
// a wrong or revoked one, a JWT naming a tenant the server does not
// hold), the routes that read none (health, readiness, the OpenAPI
// document, public metrics, the web console's pages and sign-in) and
// paths no route has. A source is an IPv4 address or an IPv6 /64 (what
// one host is given), as for the connection limits.
//
// A source's bucket starts full (burst tokens) and refills at the rate;
// Allow takes one token or refuses. The buckets live in memory: at most
// MaxSources at once. When a new source finds them all taken, the
// buckets that are full again (their sources quiet for burst/rate) are
// dropped, since a fresh bucket is the same; if none is, an eighth of
// them are dropped, whatever their state, so a flood from more sources
// than that costs memory and time bounded by MaxSources (those sources
// start again with a full bucket). Safe for concurrent use.
type Sources struct {
	now   func() time.Time
	rate  rate.Limit
	burst int

	mu sync.Mutex
	m  map[netip.Addr]*rate.Limiter
}

// MaxSources is how many source buckets Sources holds at once (a few
// MiB).
const MaxSources = 1 << 16

// NewSources makes the buckets of perSecond requests a second per source,
// burst at once; a zero or negative rate is no limit (nil). A burst of 0
// is twice the rate (at least 1).
func NewSources(perSecond float64, burst int) *Sources {
	return NewSourcesWithClock(time.Now, perSecond, burst)
}

// NewSourcesWithClock is NewSources on the clock now (for tests).
func NewSourcesWithClock(now func() time.Time, perSecond float64, burst int) *Sources {
	if perSecond <= 0 || math.IsNaN(perSecond) || math.IsInf(perSecond, 0) {
		return nil
	}
	if burst <= 0 {
		burst = int(min(max(2*perSecond, 1), math.MaxInt32))
	}
	return &Sources{now: now, rate: rate.Limit(perSecond), burst: burst, m: map[netip.Addr]*rate.Limiter{}}
}

// SourceOf is the source of a request from remoteAddr (an
// http.Request's RemoteAddr, "host:port"): the IPv4 address, or the
// IPv6 /64 (an IPv4-mapped IPv6 address counts as IPv4). ok is false for
// an address that is not an IP one (a Unix socket's).
func SourceOf(remoteAddr string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	return SourceOfAddr(ap.Addr())
}

// SourceOfAddr is the source of a request from address a: a itself for
// IPv4 (an IPv4-mapped IPv6 address counts as IPv4), its /64 for IPv6.
// ok is false for the zero Addr.
func SourceOfAddr(a netip.Addr) (netip.Addr, bool) {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a, true
	}
	p, err := a.Prefix(64)
	if err != nil {
		return netip.Addr{}, false
	}
	return p.Addr(), true
}

// Allow takes a token from the bucket of remoteAddr's source (see
// SourceOf): nil when the request may go on, else how long until a
// token is there (Quota "anonymous_requests_per_second"). A nil Sources,
// and an address that is not an IP one, always allow.
func (s *Sources) Allow(remoteAddr string) *Exceeded {
	if s == nil {
		return nil
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return nil
	}
	return s.AllowAddr(ap.Addr())
}

// AllowAddr is Allow for a request from address a (a client's address
// as a trusted proxy passed it on, say); the zero Addr always allows.
func (s *Sources) AllowAddr(a netip.Addr) *Exceeded {
	if s == nil {
		return nil
	}
	src, ok := SourceOfAddr(a)
	if !ok {
		return nil
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	lim := s.m[src]
	if lim == nil {
		if len(s.m) >= MaxSources {
			s.makeRoom(now)
		}
		lim = rate.NewLimiter(s.rate, s.burst)
		s.m[src] = lim
	}
	if lim.AllowN(now, 1) {
		return nil
	}
	wait := time.Duration(math.Ceil((1 - lim.TokensAt(now)) / float64(s.rate) * float64(time.Second)))
	return &Exceeded{Quota: "anonymous_requests_per_second", Limit: float64(s.rate), RetryAfter: max(wait, time.Microsecond)}
}

// makeRoom drops the buckets that are full again, or an eighth of them
// if none is (s.mu held).
func (s *Sources) makeRoom(now time.Time) {
	full := float64(s.burst)
	for a, lim := range s.m {
		if lim.TokensAt(now) >= full {
			delete(s.m, a)
		}
	}
	for a := range s.m {
		if len(s.m) <= MaxSources-MaxSources/8 {
			break
		}
		delete(s.m, a)
	}
}

// Len is how many source buckets are held.
func (s *Sources) Len() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
