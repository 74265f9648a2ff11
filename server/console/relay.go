package console

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/server/wire"
)

// MaxRelays bounds the requests a cluster node relays at once to the
// nodes their sessions live on, all sessions together; one past it is
// answered 503 BUSY at once, never queued.
const MaxRelays = 64

// MaxRelayDuration bounds a relayed request from its start to the end of
// the home node's response, a live tail's included (the page reconnects
// a tail that ends); a write the browser does not take within the
// server's write timeout ends it sooner.
const MaxRelayDuration = 10 * time.Minute

// MaxRelaysPerTenant bounds the requests of one tenant's sessions (or
// the operator's, together) that other nodes have relayed to their home
// node and it is serving at once; the home node answers one past it 503
// BUSY before doing anything, without reading its body. One tenant's
// sessions living on k nodes thus hold at most k × MaxRelaysPerTenant
// of another node's MaxRelays, plus, briefly, requests on their way to
// a refusal. A sign-out is never refused.
const MaxRelaysPerTenant = 8

// RelayHeader marks a request one node's console relayed to another
// (its value is the relaying node's id). A request that carries it is
// served where it arrives, never relayed again.
const RelayHeader = "Batpak-Console-Relayed-By"

// replacedHeader marks the sign-out a node sends to a session's home when
// the browser holding it signed in again there (endElsewhere).
const replacedHeader = "Batpak-Console-Replaced"

// endElsewhereTimeout bounds endElsewhere's sign-out.
const endElsewhereTimeout = 5 * time.Second

// relayExpectTimeout bounds the wait for the home node's go-ahead (100
// Continue) before a relayed request's body is sent anyway.
const relayExpectTimeout = 5 * time.Second

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
// would have checked it directly; only RelayHeader is added (and Expect:
// 100-continue on a request with a body, so that a request the home node
// refuses — no such session, a tenant past MaxRelaysPerTenant — is
// answered without waiting for its body). The session (its credential
// above all) never leaves its node. The home node's answer is passed on
// as it is (a 1xx excepted), a stream's included: each write gets the
// server's write timeout, and MaxRelayDuration bounds the whole.
//
// It does not relay, and answers as a node that holds no such session
// (GET /console/session: signed_in false; anything else: 401, so the
// page asks to sign in again, here; see homeGone for the cookie), when
// home is not a member of the cluster now, when the browser came over
// TLS (or the console serves TLS) and home's URL is plain http (the
// cookie would cross the network in clear), or when the request could
// not be sent to home (no connection; its https certificate does not
// verify against Options.LeaderTLS's roots). A home node that was sent
// the request but did not answer (a timeout, a connection cut) is
// answered 503: OUTCOME_UNKNOWN for a change, which may have been made,
// BUSY otherwise. At most MaxRelays requests are relayed at once (503
// BUSY past it). A sign-out that cannot be relayed, or that home answers
// 5xx, expires the cookie in the browser all the same.
func (c *Console) relay(w http.ResponseWriter, r *http.Request, home string) {
	base, ok := c.opts.MemberURL(home)
	if !ok {
		c.homeGone(w, r, fmt.Sprintf("this session was signed in on node %q, which is not a member of this cluster now", home), true)
		return
	}
	target, err := url.Parse(base)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		c.homeGone(w, r, fmt.Sprintf("this session lives on node %q, whose URL is not an http or https URL", home), true)
		return
	}
	if target.Scheme != "https" && (c.opts.Secure || r.TLS != nil) {
		c.homeGone(w, r, fmt.Sprintf("this session lives on node %q, whose URL is plain http: the session's cookie would cross the network in clear", home), true)
		return
	}
	if c.relaying.Add(1) > MaxRelays {
		c.relaying.Add(-1)
		c.relayFailed(w, r, http.StatusServiceUnavailable, wire.CodeBusy, fmt.Sprintf("this node relays %d requests to the nodes their sessions live on already; retry", MaxRelays))
		return
	}
	defer c.relaying.Add(-1)
	ctx, cancel := context.WithTimeout(r.Context(), MaxRelayDuration)
	defer cancel()
	rc := http.NewResponseController(w)
	// MaxRelayDuration cuts a write the browser does not take, too.
	defer context.AfterFunc(ctx, func() { _ = rc.SetWriteDeadline(time.Now()) })()
	// The home node's answer may come before the body is read (a
	// refusal): it is passed on at once, and the connection closed after
	// it unless the body was read to its end.
	_ = rc.EnableFullDuplex()
	body := &bodyEnd{ReadCloser: r.Body, want: r.ContentLength}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		body.done.Store(true)
	} else {
		r.Body = body
	}
	r = r.WithContext(ctx)
	var wrote atomic.Bool // the request reached the home node
	out := &relayWriter{ResponseWriter: w, rc: rc, timeout: c.opts.WriteTimeout}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the browser's origin checks hold as sent
			pr.Out.Header.Set(RelayHeader, c.opts.NodeID)
			if pr.Out.ContentLength != 0 {
				pr.Out.Header.Set("Expect", "100-continue")
			}
			pr.Out = pr.Out.WithContext(httptrace.WithClientTrace(pr.Out.Context(), &httptrace.ClientTrace{
				WroteHeaders: func() { wrote.Store(true) },
			}))
		},
		Transport:     c.relays,
		FlushInterval: -1,
		ModifyResponse: func(res *http.Response) error {
			for k := range w.Header() {
				res.Header.Del(k) // set here already (ServeHTTP): not twice
			}
			// The home node saw this node's request, not the browser's:
			// whether it came over TLS is this node's to say.
			res.Header.Del("Strict-Transport-Security")
			if !body.done.Load() {
				res.Header.Set("Connection", "close")
			}
			if signOut(r) && res.StatusCode >= 500 {
				// The session may live on there, but not in this browser.
				res.Header.Add("Set-Cookie", c.cookie(r, "", -1).String())
				res.Header.Set("Clear-Site-Data", `"cookies", "storage"`)
			}
			out.streaming = true // each write gets its own deadline
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				return // the browser went away
			}
			c.secureHeaders(w.Header(), r) // a 1xx passed through took them
			if !body.done.Load() {
				w.Header().Set("Connection", "close")
			}
			c.opts.Logger.Warn("console: relaying a session's request to its node failed", "node", home, "url", target.Redacted(), "reached", wrote.Load(), "err", err)
			if !wrote.Load() {
				c.homeGone(w, r, fmt.Sprintf("this session lives on node %q, which could not be reached", home), false)
				return
			}
			if stateChanging(r.Method) {
				c.relayFailed(w, r, http.StatusServiceUnavailable, wire.CodeOutcomeUnknown, fmt.Sprintf("this session's node %q did not answer: the change may or may not have been made; look before you retry", home))
				return
			}
			c.relayFailed(w, r, http.StatusServiceUnavailable, wire.CodeBusy, fmt.Sprintf("this session's node %q did not answer; retry", home))
		},
	}
	rp.ServeHTTP(out, r)
}

// signOut reports whether r is a sign-out (DELETE /console/session).
func signOut(r *http.Request) bool {
	return r.Method == http.MethodDelete && r.URL.Path == Prefix+"/session"
}

// bodyEnd watches a relayed request's body: done once it was read to its
// end (EOF, or its Content-Length).
type bodyEnd struct {
	io.ReadCloser
	want int64
	n    atomic.Int64
	done atomic.Bool
}

func (b *bodyEnd) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if (b.want > 0 && b.n.Add(int64(n)) >= b.want) || err == io.EOF {
		b.done.Store(true)
	}
	return n, err
}

// relayWriter passes a relayed answer on. 1xx answers (the home node's
// 100 Continue to this node) are not passed on: the browser did not ask.
// Once the answer streams, each write and flush gets timeout (the
// server's write timeout; none when 0) as its own deadline instead of
// the request's as a whole, as an API stream's does.
type relayWriter struct {
	http.ResponseWriter
	rc        *http.ResponseController
	timeout   time.Duration
	streaming bool
}

func (w *relayWriter) extend() {
	if w.streaming && w.timeout > 0 {
		_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	}
}

func (w *relayWriter) WriteHeader(status int) {
	if status < 200 {
		return
	}
	w.extend()
	w.ResponseWriter.WriteHeader(status)
}

func (w *relayWriter) Write(b []byte) (int, error) {
	w.extend()
	return w.ResponseWriter.Write(b)
}

func (w *relayWriter) FlushError() error {
	w.extend()
	return w.rc.Flush()
}

func (w *relayWriter) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *relayWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// endElsewhere ends, in the background and on a best-effort basis, the
// session whose cookie value is cookie on node home, which a sign-in of
// the same browser here replaces: it sends home the sign-out the browser
// would send, marked with replacedHeader (and RelayHeader) in place of
// the CSRF token it does not hold here. Nothing is sent when home is not
// a member, is this node, or would be reached over plain http from a TLS
// console, nor when MaxRelays are in use.
func (c *Console) endElsewhere(r *http.Request, home, cookie string) {
	if c.opts.MemberURL == nil || home == "" || home == c.opts.NodeID || r.Header.Get(RelayHeader) != "" {
		return
	}
	base, ok := c.opts.MemberURL(home)
	target, err := url.Parse(base)
	if !ok || err != nil || (target.Scheme != "https" && (target.Scheme != "http" || c.opts.Secure || r.TLS != nil)) || target.Host == "" {
		return
	}
	if c.relaying.Add(1) > MaxRelays {
		c.relaying.Add(-1)
		return
	}
	parent := c.ctx
	if parent == nil {
		parent = context.Background()
	}
	go func() {
		defer c.relaying.Add(-1)
		ctx, cancel := context.WithTimeout(parent, endElsewhereTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, target.JoinPath(Prefix, "session").String(), nil)
		if err != nil {
			return
		}
		req.AddCookie(&http.Cookie{Name: CookieName, Value: cookie})
		req.Header.Set(RelayHeader, c.opts.NodeID)
		req.Header.Set(replacedHeader, "1")
		res, err := c.relays.RoundTrip(req)
		if err != nil {
			c.opts.Logger.Info("console: ending a replaced session on its node failed (it expires there)", "node", home, "err", err)
			return
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusUnauthorized {
			c.opts.Logger.Info("console: ending a replaced session on its node failed (it expires there)", "node", home, "status", res.StatusCode)
		}
	}()
}

// replaced reports whether r is the sign-out endElsewhere sends: it ends
// the session its cookie names without the CSRF token and origin checks
// (whoever holds the cookie may end its session; a browser cannot send
// the header from another origin's page without a CORS preflight the
// console never allows, and a request it marks as another site's is
// refused before this).
func replaced(r *http.Request) bool {
	return r.Method == http.MethodDelete && r.URL.Path == Prefix+"/session" &&
		r.Header.Get(RelayHeader) != "" && r.Header.Get(replacedHeader) == "1"
}

// relayTransport is the client side of relayed requests: a forward's
// (forwardTransport), waiting at most relayExpectTimeout for the home
// node's 100 Continue.
func relayTransport(memberTLS *tls.Config) *http.Transport {
	t := forwardTransport(memberTLS)
	t.ExpectContinueTimeout = relayExpectTimeout
	return t
}

// relayFailed answers a request that was not relayed with status, code
// and detail; a sign-out also expires the browser's cookie (its session
// lives on where it was, until it expires there: the browser no longer
// holds it).
func (c *Console) relayFailed(w http.ResponseWriter, r *http.Request, status int, code, detail string) {
	c.secureHeaders(w.Header(), r)
	if signOut(r) {
		http.SetCookie(w, c.cookie(r, "", -1))
		w.Header().Set("Clear-Site-Data", `"cookies", "storage"`)
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	problem(w, status, code, detail)
}

// relayedSlot takes one of tenant's MaxRelaysPerTenant slots for a
// relayed request on the session's home node ("-" is the operator's), if
// one is free.
func (c *Console) relayedSlot(tenant string) bool {
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

func (c *Console) relayedDone(tenant string) {
	c.fwdMu.Lock()
	defer c.fwdMu.Unlock()
	if c.relayBusy[tenant]--; c.relayBusy[tenant] <= 0 {
		delete(c.relayBusy, tenant)
	}
}

// admitRelayed counts r against its session's tenant's
// MaxRelaysPerTenant when another node relayed it (a sign-out is never
// refused); it answers 503 BUSY and false past that bound. The caller calls done once r is served.
func (c *Console) admitRelayed(w http.ResponseWriter, r *http.Request, s *session) (done func(), ok bool) {
	if r.Header.Get(RelayHeader) == "" || signOut(r) {
		return func() {}, true
	}
	t := s.principal.Tenant
	if s.principal.Operator {
		t = "-"
	}
	if !c.relayedSlot(t) {
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusServiceUnavailable, wire.CodeBusy, fmt.Sprintf("this session has %d requests relayed from other nodes in progress already (with its tenant's other sessions); retry", MaxRelaysPerTenant))
		return nil, false
	}
	return func() { c.relayedDone(t) }, true
}

// homeGone answers a request whose session's node cannot serve it as a
// node without the session does, saying why. For good (the node is not a
// member, or cannot be relayed to as configured) or for a sign-out it
// expires the cookie; a home that could not be reached just now may be
// back at the next request, so the cookie stays (signing in again here
// replaces it).
func (c *Console) homeGone(w http.ResponseWriter, r *http.Request, why string, forGood bool) {
	c.secureHeaders(w.Header(), r)
	if forGood || signOut(r) {
		http.SetCookie(w, c.cookie(r, "", -1))
	}
	if signOut(r) {
		w.Header().Set("Clear-Site-Data", `"cookies", "storage"`)
	}
	if r.Method == http.MethodGet && r.URL.Path == Prefix+"/session" {
		writeJSON(w, http.StatusOK, map[string]any{"signed_in": false, "detail": why + ": sign in again"})
		return
	}
	problem(w, http.StatusUnauthorized, wire.CodeUnauthenticated, why+": sign in again")
}
