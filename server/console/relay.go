package console

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/batpak-go/batpak/server/wire"
)

// MaxRelays bounds the requests a cluster node relays at once to the
// nodes their sessions live on, all sessions together; one past it is
// answered 503 BUSY at once, never queued.
const MaxRelays = 64

// MaxRelayDuration bounds a relayed request from its start to the end of
// the home node's response, a live tail's included (the page reconnects
// a tail that ends).
const MaxRelayDuration = 10 * time.Minute

// MaxRelaysPerTenant bounds the requests one tenant's sessions (or the
// operator's, together) have relayed through a node at once; one past it
// is answered 503 BUSY: a tenant holding streams open through the
// console holds at most this many of MaxRelays.
const MaxRelaysPerTenant = 8

// RelayHeader marks a request one node's console relayed to another
// (its value is the relaying node's id). A request that carries it is
// served where it arrives, never relayed again.
const RelayHeader = "Batpak-Console-Relayed-By"

// relayTenantHeader is the home node's answer to a relayed request of a
// live session: the session's tenant ("-" for the operator), so that the
// relaying node can count the tenant's relays. It is not passed on to
// the browser.
const relayTenantHeader = "Batpak-Console-Session-Tenant"

// errTenantRelays: the tenant has MaxRelaysPerTenant relays in flight.
var errTenantRelays = errors.New("console: the tenant's relays are all in use")

// cookieValue is the session cookie's value for a session of this node
// whose id is token: the token alone on a single server, and on a
// cluster node the token, a dot and the node's id in unpadded base64url,
// so that any node can tell where the session lives.
func (c *Console) cookieValue(token string) string {
	if c.opts.NodeID == "" {
		return token
	}
	return token + "." + base64.RawURLEncoding.EncodeToString([]byte(c.opts.NodeID))
}

// splitCookie parses a session cookie's value into its session id and the
// id of the node it lives on ("" when the value names none, as a single
// server's do). A value that does not parse names no node and an id no
// session has.
func splitCookie(v string) (token, home string) {
	token, tag, ok := strings.Cut(v, ".")
	if !ok {
		return v, ""
	}
	b, err := base64.RawURLEncoding.DecodeString(tag)
	if err != nil || len(b) == 0 {
		return "", ""
	}
	return token, string(b)
}

// livesElsewhere reports whether r is a request of a session that lives
// on another cluster node, and that node's id. Sign-in, the page and its
// files are served wherever they arrive; so is a request another node
// relayed (RelayHeader), whatever its cookie says.
func (c *Console) livesElsewhere(r *http.Request) (string, bool) {
	if c.opts.MemberURL == nil || r.Header.Get(RelayHeader) != "" {
		return "", false
	}
	switch p := r.URL.Path; {
	case p == Prefix || p == Prefix+"/" || strings.HasPrefix(p, Prefix+"/static/"):
		return "", false
	case p == Prefix+"/session" && r.Method == http.MethodPost:
		return "", false
	}
	ck, err := r.Cookie(CookieName)
	if err != nil {
		return "", false
	}
	_, home := splitCookie(ck.Value)
	if home == "" || home == c.opts.NodeID {
		return "", false
	}
	return home, true
}

// relay sends r, a request of a session that lives on node home, to that
// node's console and passes its answer back: a browser whose requests a
// load balancer spreads over the cluster keeps its session on every node.
// The request goes as the browser sent it — cookie, CSRF token, Origin,
// fetch metadata and Host — so the home node checks it exactly as it
// would have checked it directly; only RelayHeader is added. The session
// (its credential above all) never leaves its node.
//
// It does not relay, and answers as a node that holds no such session
// (GET /console/session: signed_in false; anything else: 401, so the
// page asks to sign in again, here), when home is not a member of the
// cluster now, when the browser came over TLS (or the console serves
// TLS) and home's URL is plain http (the cookie would cross the network
// in clear), or when home cannot be reached or its https certificate does
// not verify against Options.LeaderTLS's roots. At most MaxRelays
// requests are relayed at once (503 BUSY past it), each for at most
// MaxRelayDuration.
func (c *Console) relay(w http.ResponseWriter, r *http.Request, home string) {
	base, ok := c.opts.MemberURL(home)
	if !ok {
		c.homeGone(w, r, fmt.Sprintf("this session was signed in on node %q, which is not a member of this cluster now", home))
		return
	}
	target, err := url.Parse(base)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		c.homeGone(w, r, fmt.Sprintf("this session lives on node %q, whose URL is not an http or https URL", home))
		return
	}
	if target.Scheme != "https" && (c.opts.Secure || r.TLS != nil) {
		c.homeGone(w, r, fmt.Sprintf("this session lives on node %q, whose URL is plain http: the session's cookie would cross the network in clear", home))
		return
	}
	if c.relaying.Add(1) > MaxRelays {
		c.relaying.Add(-1)
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusServiceUnavailable, wire.CodeBusy, fmt.Sprintf("this node relays %d requests to the nodes their sessions live on already; retry", MaxRelays))
		return
	}
	defer c.relaying.Add(-1)
	var tenant string
	var counted bool
	defer func() {
		if counted {
			c.relayDone(tenant)
		}
	}()
	ctx, cancel := context.WithTimeout(r.Context(), MaxRelayDuration)
	defer cancel()
	r = r.WithContext(ctx)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the browser's origin checks hold as sent
			pr.Out.Header.Set(RelayHeader, c.opts.NodeID)
		},
		Transport:     c.relays,
		FlushInterval: -1,
		ModifyResponse: func(res *http.Response) error {
			for k := range w.Header() {
				res.Header.Del(k) // set here already (ServeHTTP): not twice
			}
			t, ok := res.Header[relayTenantHeader]
			res.Header.Del(relayTenantHeader)
			if ok && len(t) == 1 {
				if !c.relaySlot(t[0]) {
					return errTenantRelays
				}
				tenant, counted = t[0], true
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				return // the browser went away
			}
			if errors.Is(err, errTenantRelays) {
				w.Header().Set("Retry-After", "1")
				problem(w, http.StatusServiceUnavailable, wire.CodeBusy, fmt.Sprintf("this session's tenant has %d requests relayed through this node already; retry", MaxRelaysPerTenant))
				return
			}
			c.opts.Logger.Warn("console: relaying a session's request to its node failed", "node", home, "url", target.Redacted(), "err", err)
			c.homeGone(w, r, fmt.Sprintf("this session lives on node %q, which could not be reached", home))
		},
	}
	rp.ServeHTTP(&noStoreWriter{ResponseWriter: w}, r)
}

// relaySlot takes one of tenant's MaxRelaysPerTenant relay slots ("-" is
// the operator's), if one is free.
func (c *Console) relaySlot(tenant string) bool {
	c.fwdMu.Lock()
	defer c.fwdMu.Unlock()
	if c.relayBusy[tenant] >= MaxRelaysPerTenant {
		return false
	}
	if c.relayBusy == nil {
		c.relayBusy = map[string]int{}
	}
	c.relayBusy[tenant]++
	return true
}

func (c *Console) relayDone(tenant string) {
	c.fwdMu.Lock()
	defer c.fwdMu.Unlock()
	if c.relayBusy[tenant]--; c.relayBusy[tenant] <= 0 {
		delete(c.relayBusy, tenant)
	}
}

// markRelayed tells the node that relayed r (RelayHeader) whose session
// it is, for its count of each tenant's relays (relayTenantHeader).
func markRelayed(w http.ResponseWriter, r *http.Request, s *session) {
	if r.Header.Get(RelayHeader) == "" {
		return
	}
	t := s.principal.Tenant
	if s.principal.Operator {
		t = "-"
	}
	w.Header().Set(relayTenantHeader, t)
}

// homeGone answers a request whose session's node cannot serve it as a
// node without the session does, saying why.
func (c *Console) homeGone(w http.ResponseWriter, r *http.Request, why string) {
	if r.Method == http.MethodGet && r.URL.Path == Prefix+"/session" {
		writeJSON(w, http.StatusOK, map[string]any{"signed_in": false, "detail": why + ": sign in again"})
		return
	}
	problem(w, http.StatusUnauthorized, wire.CodeUnauthenticated, why+": sign in again")
}
