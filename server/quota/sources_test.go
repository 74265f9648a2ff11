package quota_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/quota"
)

func TestSourceBuckets(t *testing.T) {
	c := newClock()
	s := quota.NewSourcesWithClock(c.now, 4, 3)
	for i := range 3 {
		if ex := s.Allow("192.0.2.1:40000"); ex != nil {
			t.Fatalf("request %d of a bucket of 3 refused: %v", i+1, ex)
		}
	}
	// Another port of the same address is the same source.
	want(t, s.Allow("192.0.2.1:40001"), "anonymous_requests_per_second", 4, 250*time.Millisecond)
	c.add(249 * time.Millisecond)
	if ex := s.Allow("192.0.2.1:40000"); ex == nil {
		t.Fatal("a request allowed before its token refilled")
	}
	c.add(time.Millisecond)
	if ex := s.Allow("192.0.2.1:40000"); ex != nil {
		t.Fatalf("a request refused once its token refilled: %v", ex)
	}
	// Another address has a bucket of its own; an IPv4-mapped IPv6
	// address is the IPv4 one; one /64 is one source.
	if ex := s.Allow("192.0.2.2:1"); ex != nil {
		t.Fatalf("another address refused: %v", ex)
	}
	if ex := s.Allow("[::ffff:192.0.2.1]:1"); ex == nil {
		t.Fatal("192.0.2.1 as an IPv4-mapped address has a bucket of its own")
	}
	for i := range 3 {
		if ex := s.Allow(fmt.Sprintf("[2001:db8:1:2::%x]:1", i+1)); ex != nil {
			t.Fatalf("request %d from the /64 refused: %v", i+1, ex)
		}
	}
	if ex := s.Allow("[2001:db8:1:2:ffff::1%eth0]:1"); ex == nil {
		t.Fatal("a fourth address of the same /64 has a bucket of its own")
	}
	if ex := s.Allow("[2001:db8:1:3::1]:1"); ex != nil {
		t.Fatalf("another /64 refused: %v", ex)
	}
	// What is not an IP address (a Unix socket), and no Sources, allow.
	for range 10 {
		if s.Allow("@") != nil || s.Allow("") != nil {
			t.Fatal("a request from no IP address refused")
		}
		var none *quota.Sources
		if none.Allow("192.0.2.1:1") != nil {
			t.Fatal("nil Sources refused")
		}
	}
	if quota.NewSources(0, 10) != nil || quota.NewSources(-1, 0) != nil {
		t.Fatal("a zero or negative rate is a limit")
	}
	// A burst of 0 is twice the rate.
	s = quota.NewSourcesWithClock(c.now, 5, 0)
	for i := range 10 {
		if ex := s.Allow("192.0.2.9:1"); ex != nil {
			t.Fatalf("request %d of a default bucket of 10 refused: %v", i+1, ex)
		}
	}
	if s.Allow("192.0.2.9:1") == nil {
		t.Fatal("the 11th request of a default bucket of 10 allowed")
	}
}

func TestSourceBucketsAreBounded(t *testing.T) {
	c := newClock()
	s := quota.NewSourcesWithClock(c.now, 1, 2)
	addr := func(i int) string {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 1).String()
	}
	// A source that spent its bucket, then as many other sources as the
	// buckets hold, each once: the first is dropped with an eighth of the
	// others when room is needed, and holds a full bucket again.
	s.Allow(addr(0))
	s.Allow(addr(0))
	if s.Allow(addr(0)) == nil {
		t.Fatal("a spent bucket allowed")
	}
	for i := 1; i <= quota.MaxSources+1000; i++ {
		s.Allow(addr(i))
		if n := s.Len(); n > quota.MaxSources {
			t.Fatalf("%d buckets held, at most %d", n, quota.MaxSources)
		}
	}
	if n := s.Len(); n < quota.MaxSources-quota.MaxSources/8 {
		t.Fatalf("%d buckets held after the flood: more dropped than needed", n)
	}
	// Buckets full again are the ones dropped first: a source that spent
	// its bucket keeps it while quiet ones make room.
	c.add(10 * time.Second)
	s.Allow(addr(1 << 20))
	s.Allow(addr(1 << 20))
	for i := 1; i <= quota.MaxSources/2; i++ {
		s.Allow(addr(2<<20 + i))
	}
	if n := s.Len(); n > 1+quota.MaxSources/2 {
		t.Fatalf("%d buckets held: the full ones were not all dropped", n)
	}
	if s.Allow(addr(1<<20)) == nil {
		t.Fatal("a spent bucket was dropped while full ones were held")
	}
}
