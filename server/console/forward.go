package console

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/batpak-go/batpak/server/wire"
)

// MaxForwards bounds the requests a cluster follower's console has
// forwarded to its leader at once, all sessions together (and so the
// connections it holds open there); one past it is answered 503 BUSY at
// once, never queued.
const MaxForwards = 64

// MaxForwardDuration bounds a forwarded request from its start to the end
// of the leader's response, a stream's included: no session holds a
// forward longer.
const MaxForwardDuration = time.Minute

// MaxForwardsPerTenant bounds the requests one tenant's sessions (or the
// operator's, together) have forwarded to the leader at once; one past
// it is answered 503 BUSY: a tenant sending slow bodies or holding
// streams through the console holds at most this many of MaxForwards,
// each for at most MaxForwardDuration.
const MaxForwardsPerTenant = 4

// forwardTimeout bounds the wait for the leader's response headers to a
// forwarded request.
const forwardTimeout = 30 * time.Second

// forwardTransport is the client side of forwarded requests: leaderTLS
// (nil: the system's roots) verifies an https leader; no proxy from the
// environment.
func forwardTransport(leaderTLS *tls.Config) *http.Transport {
	return &http.Transport{
		TLSClientConfig:       leaderTLS.Clone(),
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          MaxForwards,
		MaxIdleConnsPerHost:   MaxForwards,
		MaxConnsPerHost:       MaxForwards,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: forwardTimeout,
	}
}

// forwardSlot takes one of tenant's MaxForwardsPerTenant forwarding
// slots ("" is the operator's) and one of the MaxForwards, if both are
// free; it answers which bound was reached otherwise.
func (c *Console) forwardSlot(tenant string) (ok bool, why string) {
	c.fwdMu.Lock()
	defer c.fwdMu.Unlock()
	if c.fwdBusy[tenant] >= MaxForwardsPerTenant {
		return false, fmt.Sprintf("this session's tenant has %d requests on their way to the leader already; retry", MaxForwardsPerTenant)
	}
	if c.fwdTotal >= MaxForwards {
		return false, fmt.Sprintf("this node has %d requests on their way to the leader already; retry", MaxForwards)
	}
	if c.fwdBusy == nil {
		c.fwdBusy = map[string]int{}
	}
	c.fwdBusy[tenant]++
	c.fwdTotal++
	return true, ""
}

func (c *Console) forwardDone(tenant string) {
	c.fwdMu.Lock()
	defer c.fwdMu.Unlock()
	c.fwdTotal--
	if c.fwdBusy[tenant]--; c.fwdBusy[tenant] <= 0 {
		delete(c.fwdBusy, tenant)
	}
}

// bodyWatch records whether anything read a request's body.
type bodyWatch struct {
	io.ReadCloser
	read bool
}

func (b *bodyWatch) Read(p []byte) (int, error) {
	b.read = true
	return b.ReadCloser.Read(p)
}

// untouched reports whether the body is still whole: nobody read from it
// (a nil watch is a request without a body).
func (b *bodyWatch) untouched() bool { return b == nil || !b.read }

// forward sends r (an API request made with s's credential), which this
// node's API answered with a redirect to location — a cluster follower
// sends requests for its leader there —, to the leader itself and relays
// its answer: a change made through a follower's console is made on the
// leader, and the session stays on this node. It does not forward, and
// answers 503 NOT_LEADER naming the leader's console instead, when
//
//   - the API read part of the request's body before redirecting it
//     (leadership moved while the request was served): the body is gone;
//   - the location is not an absolute http or https URL;
//   - the browser's request came over TLS (or the console serves TLS)
//     and the leader's URL is plain http: the session's credential would
//     cross the network in clear;
//   - the leader cannot be reached, or its https certificate does not
//     verify against Options.LeaderTLS's roots (cluster.api_ca with the
//     system's) or, without them, the system's roots (logged);
//   - the leader itself redirects (leadership moved again): never
//     followed further.
//
// Only the leader's URL from this node's own API and the request's path,
// query, method, body and content headers reach the leader, with the
// session's credential; the browser's cookies, CSRF token, Origin and
// fetch metadata do not.
func (c *Console) forward(w http.ResponseWriter, r *http.Request, s *session, location string, whole bool) {
	if !whole {
		notLeader(w, location, "leadership moved while the request was read")
		return
	}
	target, err := url.Parse(location)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		notLeader(w, "", "the leader's URL is not an http or https URL")
		return
	}
	if target.Scheme != "https" && (c.opts.Secure || r.TLS != nil) {
		notLeader(w, location, "its URL is plain http, and the session's credential would cross the network in clear")
		return
	}
	if ok, why := c.forwardSlot(s.principal.Tenant); !ok {
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusServiceUnavailable, wire.CodeBusy, why)
		return
	}
	defer c.forwardDone(s.principal.Tenant)
	ctx, cancel := context.WithTimeout(r.Context(), MaxForwardDuration)
	defer cancel()
	r = r.WithContext(ctx)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			u := *target
			pr.Out.URL = &u
			pr.Out.Host = ""
			pr.Out.RequestURI = ""
			h := pr.Out.Header
			for _, k := range []string{"Cookie", "X-CSRF-Token", "Origin", "Referer", "Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Sec-Fetch-User"} {
				h.Del(k)
			}
			h.Set("Authorization", "Bearer "+s.credential)
		},
		Transport:     c.forwards,
		FlushInterval: -1,
		ModifyResponse: func(res *http.Response) error {
			res.Header.Del("Set-Cookie") // the browser's cookies are this node's
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				return // the browser went away, or the session ended
			}
			c.opts.Logger.Warn("console: forwarding a request to the leader failed", "leader", target.Redacted(), "err", err)
			notLeader(w, location, "the leader could not be reached")
		},
	}
	rp.ServeHTTP(&noStoreWriter{ResponseWriter: w}, r)
}
