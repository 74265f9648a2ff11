package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options tune a Client. The zero value is usable.
type Options struct {
	// HTTPClient sends the requests (default: a client with keep-alive
	// connections and no overall timeout, since subscriptions are long).
	// New uses a copy of it whose CheckRedirect follows no redirect: the
	// Client itself follows a cluster follower's NOT_LEADER redirect, and
	// no other, so the credential goes to no other host, port or scheme.
	// For a server whose certificate a private CA signed, give a client
	// whose transport's TLSClientConfig.RootCAs holds that CA.
	HTTPClient *http.Client
	// MaxResponseBytes bounds what the Client reads of one answer: a JSON
	// response body (once decompressed, if HTTPClient asks for
	// compression; the default one does not, as a batpak server never
	// compresses) or one message of an event stream. Default 256 MiB, the
	// most a server holds for its own large answers; a query page is far
	// below it. Past it the call fails with an error naming the limit.
	// Decoding an answer near the bound holds a few times its size: lower
	// it where memory is tight.
	MaxResponseBytes int64
	// MaxRetries bounds how often a safe request is sent again (default 3;
	// negative: never), but while the server cannot be had — no
	// connection, 502 or 504, a cluster between leaders (NOT_LEADER,
	// OUTCOME_UNKNOWN) or a replica not caught up (NOT_CAUGHT_UP) — it is
	// sent again until RetryFor has passed since the call began.
	MaxRetries int
	// RetryFor is how long a safe request keeps being sent again while
	// the server cannot be had (see MaxRetries): default DefaultRetryFor
	// (10 s, longer than a cluster's election); negative: no longer than
	// MaxRetries allows. A write whose answer was lost and that ran out
	// of retries fails with an *OutcomeUnknownError naming its
	// idempotency keys.
	RetryFor time.Duration
	// IdleTimeout ends a request during which the server sent nothing for
	// that long: neither took the request's body nor answered, or sent
	// nothing while the caller waited to read the answer (a caller slow
	// to read is not a silent server); a JSON answer must also come at 1
	// MiB per IdleTimeout or faster. The request fails with an *IdleError
	// and is not sent again. Calls the server works on before it answers
	// (Verify, Import, Admin.Snapshot, the digests, plugin and policy
	// uploads) wait for the answer's headers, once the request is sent,
	// as long as their context lets them. Default
	// DefaultIdleTimeout (5 minutes); negative: no bound (a context
	// deadline still applies). A subscription's stream, whose server
	// sends a heartbeat every 15 s, is taken for dead after
	// StreamIdleTimeout (45 s) of silence whatever IdleTimeout is, and
	// reconnects.
	IdleTimeout time.Duration
	// ReconnectFor is how long a subscription keeps trying to reconnect
	// to a server that brings it nothing (refused or hung connections,
	// 503s, streams ending at once) before its Events end with an error;
	// a connection that delivers an event or stays up 10 s starts it
	// afresh. Default DefaultReconnectFor (2 minutes); negative: until the
	// subscription's context ends or Close.
	ReconnectFor time.Duration
	// MaxErrorBytes bounds how much of an error response is read (default 64 KiB).
	MaxErrorBytes int64
	// Consistency is how a replicated cluster serves this client's reads
	// (GET requests): "" or "local", by the node asked, from what it has
	// applied; "linearizable", by the leader once it has confirmed its
	// leadership and applied everything committed before the read (it
	// sees every acknowledged write; it costs the leader a barrier, shared
	// by concurrent reads); "session" (read-your-writes), by the node
	// asked once it has applied this client's own writes: the Client
	// remembers, per tenant, the highest GlobalSequence of the receipts
	// it received (Append, AppendBatch) and sends it as min_seq with
	// that tenant's reads, which wait for it (at most the cluster's
	// server.cluster.read_wait, then NOT_CAUGHT_UP, retried); and, per
	// named cursor, the position it last committed (or 0 once it
	// defined the cursor), sent as min_position with PollCursor: a
	// follower whose copy of the cursor is behind it sends the poll to
	// the leader, so no event the Client committed is handed out again.
	// Copies made
	// by WithMinSequence share what the session remembers; other Clients
	// (and other processes) do not. A single server serves every read the
	// same way and ignores it. New refuses any other value.
	Consistency string
}

// Client talks to one batpak server with one credential. Safe for
// concurrent use.
type Client struct {
	base    *url.URL
	token   string
	hc      *http.Client
	retries int
	// retryFor is Options.RetryFor (0: no longer than retries allows).
	retryFor time.Duration
	maxErr   int64
	maxResp  int64 // Options.MaxResponseBytes
	// reconnectFor is Options.ReconnectFor (0: for ever).
	reconnectFor time.Duration
	consist      string // Options.Consistency sent as consistency=: "" or "linearizable"
	// session remembers the tenants' sequences written through this
	// Client (Consistency "session"); nil otherwise.
	session *session
	// minSeq, when hasMin, is the least min_seq of every tenant read
	// (WithMinSequence).
	minSeq uint64
	hasMin bool
}

// session is what Consistency "session" remembers: per tenant (its id
// as a path segment), the highest global sequence of a receipt; and per
// named cursor (tenant and name as path segments), the definition it
// knows and the position this Client last committed or was answered.
type session struct {
	mu      sync.Mutex
	seen    map[string]uint64
	cursors map[string]cursorMark
}

// cursorMark is what a session knows of a named cursor: its definition's
// id (idKnown: one was answered) and a position it has passed.
type cursorMark struct {
	id      string
	idKnown bool
	pos     uint64
}

// cursorAt records what an answer said of cursor key: its definition's
// id when the answer named one (id not nil), and pos — as it is after a commit (it may move back,
// after a reset), or with atLeast only when further (a poll's answer,
// which a commit made meanwhile may have passed), unless the answer
// names another definition, whose position starts anew.
func (s *session) cursorAt(key string, id *string, pos uint64, atLeast bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cursors == nil {
		s.cursors = map[string]cursorMark{}
	}
	m, ok := s.cursors[key]
	if id != nil && (!m.idKnown || m.id != *id) {
		m.id, m.idKnown, atLeast = *id, true, false
	}
	if !ok || !atLeast || pos > m.pos {
		m.pos = pos
	}
	s.cursors[key] = m
}

func (s *session) forgetCursor(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cursors, key)
}

// cursor is what the session knows of cursor key, if anything.
func (s *session) cursor(key string) (cursorMark, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.cursors[key]
	return m, ok
}

// saw records that tenant (a path segment) holds sequence seq.
func (s *session) saw(tenant string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.seen[tenant]; !ok || seq > old {
		s.seen[tenant] = seq
	}
}

// highest is the highest sequence recorded for tenant.
func (s *session) highest(tenant string) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq, ok := s.seen[tenant]
	return seq, ok
}

// WithMinSequence returns a copy of c whose reads of a tenant's data wait
// until the node serving them has applied the tenant's global sequence
// seq (the GlobalSequence of a receipt): they carry min_seq=seq (or the
// session's, when Consistency is "session" and it is higher). Meant for
// one tenant's reads, since each tenant has its own sequence:
//
//	c.WithMinSequence(r.GlobalSequence).Tenant("acme").Get(ctx, r.ID)
//
// A cluster node that has not applied seq within server.cluster.read_wait
// answers NOT_CAUGHT_UP (retried like other safe requests); a single
// server has every write it acknowledged and answers at once. The copy
// shares c's connections and session. Tenant.WithMinSequence does the
// same for one Tenant.
func (c *Client) WithMinSequence(seq uint64) *Client {
	cp := *c
	cp.minSeq, cp.hasMin = seq, true
	return &cp
}

// tenantOf is the tenant (as an escaped path segment) of a request under
// /v1/tenants/{tenant}/, or "".
func tenantOf(path string) string {
	rest, ok := strings.CutPrefix(path, "/v1/tenants/")
	if !ok {
		return ""
	}
	t, _, _ := strings.Cut(rest, "/")
	return t
}

// readParams are the parameters c adds to a read (GET) of path:
// consistency and min_seq.
func (c *Client) readParams(path string) url.Values {
	var v url.Values
	if c.consist != "" {
		v = url.Values{"consistency": {c.consist}}
	}
	tenant := tenantOf(path)
	if tenant == "" {
		return v
	}
	seq, ok := c.minSeq, c.hasMin
	if c.session != nil {
		if s, seen := c.session.highest(tenant); seen && (!ok || s > seq) {
			seq, ok = s, true
		}
	}
	if ok {
		if v == nil {
			v = url.Values{}
		}
		v.Set("min_seq", strconv.FormatUint(seq, 10))
	}
	return v
}

// sawReceipts records, for Consistency "session", that tenant holds the
// receipts' sequences. The server's receipts are trusted: one naming a
// sequence the tenant never reaches makes this Client's later reads of
// it wait for it (NOT_CAUGHT_UP); a new Client starts afresh.
func (c *Client) sawReceipts(tenant string, rs ...Receipt) {
	if c.session == nil || len(rs) == 0 {
		return
	}
	top := rs[0].GlobalSequence
	for _, r := range rs[1:] {
		top = max(top, r.GlobalSequence)
	}
	c.session.saw(seg(tenant), top)
}

// New makes a Client for the server at baseURL ("http://127.0.0.1:7070")
// authenticating with token (an API key "bpk_…", the operator credential
// or a JWT; empty for none). It fails only on a malformed URL or an
// unknown Options.Consistency (want local, linearizable or session).
func New(baseURL, token string, opts ...Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: server URL %q: want http(s)://host:port", baseURL)
	}
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	var sess *session
	switch o.Consistency {
	case "", "local":
		o.Consistency = ""
	case "linearizable":
	case "session":
		o.Consistency, sess = "", &session{seen: map[string]uint64{}}
	default:
		return nil, fmt.Errorf("client: consistency %q: want local, linearizable or session", o.Consistency)
	}
	c := &Client{base: u, token: token, retries: o.MaxRetries, maxErr: o.MaxErrorBytes, maxResp: o.MaxResponseBytes, consist: o.Consistency, session: sess}
	if o.HTTPClient != nil {
		hc := *o.HTTPClient
		c.hc = &hc
	} else {
		// A batpak server never compresses its answers: asking for gzip
		// would only let a hostile one send a small body that inflates.
		c.hc = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
			DisableCompression:  true,
		}}
	}
	c.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	switch {
	case o.ReconnectFor == 0:
		c.reconnectFor = DefaultReconnectFor
	case o.ReconnectFor > 0:
		c.reconnectFor = o.ReconnectFor
	}
	rt := c.hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	c.hc.Transport = &idleTransport{rt: rt, idle: max(o.IdleTimeout, 0)}
	if c.maxResp <= 0 {
		c.maxResp = DefaultMaxResponseBytes
	}
	if c.retries == 0 {
		c.retries = 3
	} else if c.retries < 0 {
		c.retries = 0
	}
	switch {
	case o.RetryFor == 0:
		c.retryFor = DefaultRetryFor
	case o.RetryFor > 0:
		c.retryFor = o.RetryFor
	}
	if c.maxErr <= 0 {
		c.maxErr = 64 << 10
	}
	return c, nil
}

// DefaultRetryFor is Options.RetryFor's default.
const DefaultRetryFor = 10 * time.Second

// DefaultMaxResponseBytes is Options.MaxResponseBytes' default.
const DefaultMaxResponseBytes = 256 << 20

// boundedReader reads at most max bytes of r; past them it fails with an
// error naming the limit and what was being read.
type boundedReader struct {
	r         io.Reader
	left, max int64
	what      string
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells an answer of exactly max bytes from a larger one.
		var one [1]byte
		n, err := b.r.Read(one[:])
		if n > 0 {
			return 0, b.err()
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *boundedReader) err() error {
	return fmt.Errorf("client: the server's answer to %s is larger than %d bytes (Options.MaxResponseBytes)", b.what, b.max)
}

// decodeBounded decodes one JSON value of an answer's body, read up to
// the Client's MaxResponseBytes.
func (c *Client) decodeBounded(body io.Reader, what string, out any) error {
	b := &boundedReader{r: body, left: c.maxResp, max: c.maxResp, what: what}
	if err := json.NewDecoder(b).Decode(out); err != nil {
		if b.left <= 0 {
			return b.err()
		}
		return fmt.Errorf("client: decoding %s response: %w", what, err)
	}
	return nil
}

// maxLeaderHops bounds the redirects to a cluster's leader one request
// follows.
const maxLeaderHops = 3

// leaderRedirect reports whether resp sends the request to a cluster's
// leader: a 307 or 308 whose body is a NOT_LEADER problem (what a batpak
// follower answers; a proxy's or a login page's redirect is not
// followed, so the credential goes nowhere else), with a Location that
// does not leave https. It reads the body (at most 64 KiB) and leaves it
// readable again for the caller.
func leaderRedirect(resp *http.Response, from *url.URL) bool {
	if resp.StatusCode != http.StatusTemporaryRedirect && resp.StatusCode != http.StatusPermanentRedirect {
		return false
	}
	loc, err := from.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Host == "" || (loc.Scheme != "http" && loc.Scheme != "https") {
		return false
	}
	if from.Scheme == "https" && loc.Scheme != "https" {
		return false
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(raw), resp.Body), resp.Body}
	var p struct {
		Code string `json:"code"`
	}
	return json.Unmarshal(raw, &p) == nil && p.Code == CodeNotLeader
}

// request is one API call.
type request struct {
	method string
	path   string     // under the base URL, already escaped
	query  url.Values // optional
	body   []byte     // nil: no body
	ctype  string     // body content type (default application/json)
	accept string     // default application/json
	header http.Header
	// safe: the request may be sent again (a read, or a write with an
	// idempotency key).
	safe bool
	// readOnly: a request other than a GET that changes nothing (a
	// verify): its lost answer is not a write's unknown outcome.
	readOnly bool
	// slow: the server works on the request before it answers (a verify,
	// a snapshot, a digest, an import), perhaps for longer than
	// Options.IdleTimeout: the wait for the answer's headers is bounded by
	// the context alone once the request is sent.
	slow bool
}

// send performs r with retries, returning the successful response (the
// caller closes its body) or an *Error / transport error.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	return c.sendRead(ctx, r, nil)
}

// sendRead is send, reading a successful response with read (when
// non-nil: the response is then closed, and returned only to say it
// came): an answer whose body broke off is a lost answer, and a safe
// request is sent again. A write whose answer was lost — its request
// went out, then the connection broke or the body was cut, or a cluster
// lost its leader after proposing it — and that runs out of retries
// fails with an *OutcomeUnknownError.
func (c *Client) sendRead(ctx context.Context, r request, read func(*http.Response) error) (*http.Response, error) {
	var last error
	attempts := 1
	if r.safe {
		attempts += c.retries
	}
	start := time.Now()
	unanswered := false // an attempt before was sent, its answer lost
	var wrote atomic.Bool
	// resent: within one hop, the transport sent the request again on a
	// new connection after it had written it on one that broke before an
	// answer (net/http does so for a request with an Idempotency-Key):
	// the first may have arrived, whatever the second is answered.
	var resent atomic.Bool
	// Each hop of an attempt (a follower's redirect to its leader) starts
	// afresh (clearWrote): only the headers of the hop that failed count.
	sent := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GetConn: func(string) {
			if wrote.Load() {
				resent.Store(true)
			}
		},
		WroteHeaders: func() { wrote.Store(true) },
	})
	sent = context.WithValue(sent, wroteKey{}, &wrote) // once clears it before each hop (an HTTP/2 stream gets no GetConn)
	write := r.method != http.MethodGet && !r.readOnly
	outcome := func(err error) error {
		var pe *Error
		if write && (unanswered || errors.As(err, &pe) && pe.Code == CodeOutcomeUnknown) {
			return &OutcomeUnknownError{Err: err}
		}
		return err
	}
	for i := 0; i < attempts; i++ {
		if i > 0 {
			if err := sleep(ctx, backoff(i, last)); err != nil {
				return nil, outcome(err) // the caller gave up waiting: a write sent before may be written
			}
		}
		wrote.Store(false)
		resent.Store(false)
		resp, err := c.once(sent, r)
		// A send the transport made again may have arrived the first
		// time, unless the answer to the later one rules that out: a
		// refusal of the request itself (a 4xx but 429), which the first
		// would have had too. (The transport also sends again a request
		// that never left its buffer: that is taken for "may have
		// arrived" when the answer is not such a refusal.)
		if resent.Load() && err != nil && (!refusedAsSent(err) || r.method == http.MethodDelete && errors.Is(err, ErrNotFound)) {
			unanswered = true // (a DELETE's 404: the first may have deleted it)
		}
		if err == nil && read != nil {
			err = read(resp)
			resp.Body.Close()
			if err != nil && !lostBody(err) {
				return nil, err // an answer, but not one this client reads: not sent again
			}
		}
		if err == nil {
			noteAnswer(ctx, resp)
			return resp, nil
		}
		if ctx.Err() != nil {
			// Given up while a request was out: it may have arrived.
			unanswered = unanswered || wrote.Load()
			return nil, outcome(ctx.Err())
		}
		if unanswered && r.method == http.MethodDelete && errors.Is(err, ErrNotFound) {
			// The delete sent before arrived and did its work; only its
			// answer was lost.
			resp := &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody, Header: http.Header{}}
			noteAnswer(ctx, resp)
			return resp, nil
		}
		var pe *Error
		// A transport error after the request went out (not a refused
		// connection, nor a failed TLS handshake), or an answer whose
		// body broke off: it may have arrived.
		// So is a gateway's 502 or 504: it may have passed the request on.
		unanswered = unanswered || !errors.As(err, &pe) && wrote.Load() ||
			pe != nil && (pe.Status == http.StatusBadGateway || pe.Status == http.StatusGatewayTimeout)
		last = err
		if errors.As(err, &pe) && pe.RetryAfter > maxRetryWait {
			return nil, outcome(err) // the server asks for a longer wait than a retry takes
		}
		didNothing := errors.Is(err, ErrNotLeader) || errors.Is(err, ErrTooManyConnections)
		if didNothing && attempts < 1+c.retries {
			// A cluster node that does not lead did nothing, nor does a
			// server refusing a connection for its address (it answers
			// before it reads the request): any request may go again.
			attempts = 1 + c.retries
		}
		// Refusals before any work (BUSY, TOO_MANY_REQUESTS) and a request
		// that never went out did nothing either.
		nothingDone := didNothing || errors.Is(err, ErrBusy) || errors.Is(err, ErrTooManyRequests) || pe == nil && !wrote.Load()
		if !retryable(err) || !r.safe && !nothingDone {
			// A request that may not go twice goes again only after an
			// answer saying it did nothing.
			return nil, outcome(err)
		}
		if i == attempts-1 && (r.safe || errors.Is(err, ErrNotLeader)) && unavailable(err) &&
			time.Since(start)+backoff(i+1, err) < c.retryFor {
			attempts++ // the server or its cluster is coming back: wait for it (Options.RetryFor)
		}
	}
	return nil, outcome(last)
}

// refusedAsSent reports whether err is the server's refusal of the
// request as it was sent — a 4xx other than 429 — which the same request
// sent before would have had too: it did nothing either time.
func refusedAsSent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests
}

// unavailable reports whether err says the server cannot be had for now
// rather than that it is busy: no connection or no answer, a gateway's
// 502 or 504, a cluster between leaders, a replica not caught up.
func unavailable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return true // a transport error (retryable has refused an *IdleError)
	}
	switch e.Code {
	case CodeNotLeader, CodeOutcomeUnknown, CodeNotCaughtUp:
		return true
	}
	return e.Code == "" && (e.Status == http.StatusBadGateway || e.Status == http.StatusGatewayTimeout)
}

// lostBody reports whether err, reading a successful answer's body, is
// the body breaking off (the connection closed or reset, the body cut
// short or missing) rather than a body that came whole and is wrong.
func lostBody(err error) bool {
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &ne) && !ne.Timeout()
}

func (c *Client) once(ctx context.Context, r request) (*http.Response, error) {
	u := *c.base
	u.Path = c.base.Path + r.path
	u.RawPath = c.base.EscapedPath() + r.path
	q := r.query
	if r.method == http.MethodGet {
		if extra := c.readParams(r.path); extra != nil {
			q = url.Values{}
			for k, vs := range r.query {
				q[k] = vs
			}
			for k, vs := range extra {
				q[k] = vs
			}
		}
	}
	if q != nil {
		u.RawQuery = q.Encode()
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	if r.slow {
		ctx = context.WithValue(ctx, slowKey{}, true)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, err
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	if r.body != nil {
		ct := r.ctype
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	accept := r.accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	clearWrote(ctx)
	resp, err := c.hc.Do(req)
	for hop := 0; err == nil && hop < maxLeaderHops && leaderRedirect(resp, req.URL); hop++ {
		// A cluster follower sent the request to its leader: the same
		// request, with the same credential, goes there (never from
		// https to http).
		loc, _ := req.URL.Parse(resp.Header.Get("Location"))
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if body != nil {
			body = bytes.NewReader(r.body)
		}
		next, nerr := http.NewRequestWithContext(ctx, r.method, loc.String(), body)
		if nerr != nil {
			return nil, nerr
		}
		next.Header = req.Header.Clone()
		req = next
		clearWrote(ctx)
		resp, err = c.hc.Do(req)
	}
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 300 || resp.StatusCode == http.StatusNotModified && req.Header.Get("If-None-Match") != "" {
		// 304 answers a conditional read only (a projection's ETag):
		// to anything else it is a refusal, not a success.
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, c.problem(resp)
}

// problem reads an error response into an *Error.
func (c *Client) problem(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, c.maxErr))
	e := &Error{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	if s := resp.Header.Get("Retry-After"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if errors.Is(err, strconv.ErrRange) {
			n, err = math.MaxUint64, nil // past what a uint64 holds: as long as a Duration holds
		}
		if err == nil {
			// Seconds past what a Duration holds (~292 years) are
			// taken as that much, not wrapped around to a short or
			// negative wait.
			e.RetryAfter = time.Duration(min(n, uint64(math.MaxInt64/int64(time.Second)))) * time.Second
		}
	}
	var doc map[string]json.RawMessage
	if json.Unmarshal(raw, &doc) == nil {
		str := func(k string) string {
			var s string
			_ = json.Unmarshal(doc[k], &s)
			delete(doc, k)
			return s
		}
		e.Code, e.Title, e.Detail = str("code"), str("title"), str("detail")
		if id := str("request_id"); e.RequestID == "" {
			e.RequestID = id
		}
		delete(doc, "type")
		delete(doc, "status")
		if len(doc) > 0 {
			e.Extensions = doc
		}
	} else {
		e.Title = http.StatusText(resp.StatusCode)
		e.Detail = strings.TrimSpace(string(raw))
	}
	return e
}

// do sends r and decodes a JSON response into out (when non-nil); a
// safe request whose answer broke off is sent again (sendRead).
func (c *Client) do(ctx context.Context, r request, out any) error {
	_, err := c.sendRead(ctx, r, func(resp *http.Response) error {
		if out == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			return nil
		}
		return c.decodeBounded(resp.Body, r.method+" "+r.path, out)
	})
	return err
}

// wroteKey holds, in a request's context, whether the hop under way
// wrote its headers (send's DELETE check).
type wroteKey struct{}

// clearWrote starts a hop: its headers are not written yet.
func clearWrote(ctx context.Context) {
	if w, ok := ctx.Value(wroteKey{}).(*atomic.Bool); ok {
		w.Store(false)
	}
}

// maxBackoffExponent bounds the doublings of backoff's wait (50 ms << 6
// is past its 2 s ceiling already), so that no count of attempts can
// shift it past what a Duration holds.
const maxBackoffExponent = 7

// maxRetryWait is the longest Retry-After a request waits out before it
// is sent again: one that asks for longer fails at once, with the
// server's RetryAfter for the caller to decide.
const maxRetryWait = 5 * time.Second

// backoff is the wait before attempt i (≥ 1): the server's Retry-After when
// it gave one (at most maxRetryWait), else 50 ms doubling, with jitter.
func backoff(i int, last error) time.Duration {
	var e *Error
	if errors.As(last, &e) && e.RetryAfter > 0 {
		return min(e.RetryAfter, maxRetryWait)
	}
	d := 50 * time.Millisecond << (min(i, maxBackoffExponent) - 1)
	d = min(d, 2*time.Second)
	var b [1]byte
	_, _ = rand.Read(b[:])
	return d/2 + d*time.Duration(b[0])/512
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// newKey makes a fresh idempotency key.
func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "bpc-" + hex.EncodeToString(b[:])
}

func jsonBody(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("client: encoding request: %w", err)
	}
	return b, nil
}

// seg escapes one path segment.
func seg(s string) string { return url.PathEscape(s) }
