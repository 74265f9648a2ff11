package httpapi

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// TrustedProxies are the reverse proxies and load balancers in front of
// the server (server.trusted_proxies): addresses and networks whose
// X-Forwarded-For header the server believes. A request from anywhere
// else is from its peer's address whatever that header says, so a
// client cannot pass itself off as another address. The empty list (the
// default) believes no one.
type TrustedProxies []netip.Prefix

// MaxForwardedHops is how many X-Forwarded-For entries Client reads from
// the right before it stops at the last proxy it trusted.
const MaxForwardedHops = 32

// ParseTrustedProxies reads a list of IP addresses and CIDR networks
// ("10.0.0.0/8", "192.0.2.7", "2001:db8::/32"). An entry that is
// neither is an error naming it; a network with bits set past its
// length ("10.1.2.3/8") is refused as a likely typo.
func ParseTrustedProxies(list []string) (TrustedProxies, error) {
	var out TrustedProxies
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("trusted proxy %q: not an address or a network (want 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)", s)
			}
			if p.Addr().Zone() != "" {
				return nil, fmt.Errorf("trusted proxy %q: a network takes no zone", s)
			}
			if p.Masked() != p {
				return nil, fmt.Errorf("trusted proxy %q: has bits set past its length /%d (did you mean %s?)", s, p.Bits(), p.Masked())
			}
			if p.Addr().Is4In6() {
				p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("trusted proxy %q: not an address or a network (want 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Contains reports whether a (an IPv4-mapped IPv6 address counts as
// IPv4) is one of the trusted proxies.
func (t TrustedProxies) Contains(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Client is the address r came from. For a request whose peer
// (RemoteAddr) is not a trusted proxy, the peer's address, whatever
// X-Forwarded-For says. For one a trusted proxy passed on, the
// X-Forwarded-For entries (every such header, in order) are read from
// the right, each proxy having added the address it was reached from:
// the first that is not a trusted proxy is the client. Reading stops
// at an entry that is not an IP address (an "unknown", an obfuscated
// name) or after MaxForwardedHops entries, and the last trusted address
// read is then taken; an entry may carry a port ("192.0.2.7:4711",
// "[2001:db8::7]:4711"), which is ignored. viaProxy is true when the
// address is not the peer's; ok is false when the peer has no IP
// address (a Unix socket).
func (t TrustedProxies) Client(r *http.Request) (client netip.Addr, viaProxy, ok bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false, false
	}
	client = ap.Addr().Unmap().WithZone("")
	if len(t) == 0 || !t.Contains(client) {
		return client, false, true
	}
	values := r.Header.Values("X-Forwarded-For")
	hops := 0
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for v != "" {
			entry := v
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				v = ""
			}
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			if hops++; hops > MaxForwardedHops {
				return client, viaProxy, true
			}
			a, ok := forwardedAddr(entry)
			if !ok {
				return client, viaProxy, true
			}
			client, viaProxy = a, true
			if !t.Contains(a) {
				return client, true, true
			}
		}
	}
	return client, viaProxy, true
}

// HTTPS reports whether r reached the server over TLS: directly (r.TLS),
// or through a trusted proxy that says so. A request whose peer is one of
// t and whose X-Forwarded-Proto (its first entry: the scheme the client
// used with the first proxy) is "https" came over TLS to that proxy (a
// TLS-terminating proxy speaking plain http to the server). From any
// other peer the header is ignored.
func (t TrustedProxies) HTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || len(t) == 0 || !t.Contains(ap.Addr()) {
		return false
	}
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	return strings.EqualFold(strings.TrimSpace(proto), "https")
}

// forwardedAddr reads one X-Forwarded-For entry: an address, or an
// address and port.
func forwardedAddr(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}
