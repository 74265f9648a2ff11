package httpapi

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/quota"
	"github.com/batpak-go/batpak/server/tenancy"
	"github.com/batpak-go/batpak/server/wire"
)

// reqInfo is what the middleware learns about a request as it goes: the
// handlers fill in the tenant and principal for the access log.
type reqInfo struct {
	id        string
	route     string
	tenant    string
	principal string
	// passed: the request was passed on to the API's own handler, whose
	// middleware logged and counted it (see WrapPassing).
	passed bool
}

// passingKey is the context key under which WrapPassing's middleware
// leaves its reqInfo for the API's own middleware to find.
type passingKey struct{}

// infoFrom returns what the middleware knows of the request w answers
// (a fresh record when w did not come through it).
func infoFrom(w http.ResponseWriter) *reqInfo {
	if rec, ok := w.(*recorder); ok && rec.info != nil {
		return rec.info
	}
	return &reqInfo{}
}

// NoteCaller names tenant and principal (a key's id, or "operator", as
// the API's routes name them) on the access log line of the request w
// answers: for a handler served beside the API through Wrap or
// WrapPassing that authenticates its requests itself (the web console's
// sign-in and session routes). w is the writer the middleware gave the
// handler, or one that unwraps to it (Unwrap() http.ResponseWriter);
// any other is left alone.
func (a *API) NoteCaller(w http.ResponseWriter, tenant, principal string) {
	if rec := recorderOf(w); rec != nil && rec.info != nil {
		rec.info.tenant, rec.info.principal = tenant, principal
	}
}

// recorder remembers the status and bytes of a response, and carries the
// request's reqInfo to the handlers.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	// writeTimeout, when set (streaming routes), bounds each write and
	// flush: a client that stops reading is cut off after it, instead of
	// holding its handler (and tenant) forever.
	writeTimeout time.Duration
	deadlineMu   sync.Mutex
	cut          bool // cutOff was called: the deadline is final
	info         *reqInfo
	// bodies bounds the large JSON bodies written at once (writeJSON);
	// ctx is the request's, for the wait.
	bodies *bodyBudget
	ctx    context.Context
	// body tracks the request body (nil: none): an error answered before
	// it was read to its end closes the connection (see WriteHeader).
	body *trackedBody
	// stalledSince is when the write under way began (UnixNano; 0: none
	// under way): a piece of at most stallPiece bytes blocked since then
	// on a client that does not read (see stallSet).
	stalledSince atomic.Int64
}

// unreadBodyWait is how long the server waits, after an error answered
// before the request body was read to its end, for the rest of the body
// (it reads up to 256 KiB of it to keep the connection) before it drops
// the connection instead.
const unreadBodyWait = time.Second

// trackedBody is a request body that remembers whether it was read to
// its end.
type trackedBody struct {
	io.ReadCloser
	eof atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}

// recorderOf is the recorder w is, or unwraps to; nil when none.
func recorderOf(w http.ResponseWriter) *recorder {
	for w != nil {
		if rec, ok := w.(*recorder); ok {
			return rec
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
	return nil
}

// reqState is a request's recorder and reqInfo in one allocation.
type reqState struct {
	rec recorder
	ri  reqInfo
}

// extend gives the next write writeTimeout to finish.
func (w *recorder) extend() {
	if w.writeTimeout > 0 {
		w.deadlineMu.Lock()
		if !w.cut {
			_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.writeTimeout))
		}
		w.deadlineMu.Unlock()
	}
}

// cutOff gives the response d more to write, however long it has been
// allowed so far (a write blocked on a full socket is interrupted then).
// Safe to call while a handler writes.
func (w *recorder) cutOff(d time.Duration) {
	w.deadlineMu.Lock()
	w.cut = true
	_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(d))
	w.deadlineMu.Unlock()
}

// WriteHeader sends the status. After an error answered before the
// request body was read to its end (a refused credential, an unknown
// route, a rate refusal, a bad header) the server reads the rest of the
// body (up to 256 KiB) before it answers, to keep the connection: that
// read gets unreadBodyWait, not read_timeout, so a slow body (no
// credential needed) cannot hold a connection slot and its answer for
// long; past it the connection is dropped.
func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	if code >= 400 && w.body != nil && !w.body.eof.Load() {
		_ = http.NewResponseController(w.ResponseWriter).SetReadDeadline(time.Now().Add(unreadBodyWait))
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write writes b a piece of at most stallPiece bytes at a time, each
// marked as under way (stalledSince) while it is written: a write the
// client takes nothing of shows as stalled.
func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.extend()
	written := 0
	for {
		piece := b[written:min(len(b), written+stallPiece)]
		w.stalledSince.Store(time.Now().UnixNano())
		n, err := w.ResponseWriter.Write(piece)
		w.stalledSince.Store(0)
		written += n
		w.bytes += int64(n)
		if err != nil || written == len(b) {
			return written, err
		}
	}
}

func (w *recorder) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.extend()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		w.stalledSince.Store(time.Now().UnixNano())
		f.Flush()
		w.stalledSince.Store(0)
	}
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

var (
	idPrefix  = newIDPrefix()
	idCounter atomic.Uint64
)

func newIDPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// requestID returns the incoming X-Request-Id when it is sane (1..128
// characters of A-Z a-z 0-9 . _ : -), else a fresh one.
func requestID(r *http.Request) string {
	in := r.Header.Get("X-Request-Id")
	if len(in) > 0 && len(in) <= 128 {
		ok := true
		for i := 0; i < len(in) && ok; i++ {
			c := in[i]
			ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
		}
		if ok {
			return in
		}
	}
	return idPrefix + "-" + strconv.FormatUint(idCounter.Add(1), 36)
}

// middleware: request id (and X-Content-Type-Options: nosniff), panic →
// 500, unknown route → problem, access log and request metrics.
func (a *API) middleware(next http.Handler, route string) http.Handler {
	return a.middlewarePassing(next, route, false)
}

// middlewarePassing is middleware; with passing, a request next passes on
// to the API's handler (with a context derived from its own) is left to
// the API's middleware: one request id for both, its body tracked there,
// and logged and counted once, there.
func (a *API) middlewarePassing(next http.Handler, route string, passing bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		st := &reqState{ri: reqInfo{id: requestID(r)}}
		if outer, ok := r.Context().Value(passingKey{}).(*reqInfo); ok {
			st.ri.id, outer.passed = outer.id, true
		}
		ri, rec := &st.ri, &st.rec
		rec.ResponseWriter, rec.info = w, ri
		rec.bodies, rec.ctx = a.bodies, r.Context()
		if passing {
			r = r.WithContext(context.WithValue(r.Context(), passingKey{}, ri))
		} else if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			rec.body = &trackedBody{ReadCloser: r.Body}
			r.Body = rec.body
		}
		h := w.Header()
		h["X-Request-Id"] = []string{ri.id}
		// No answer is to be read as anything but the type it says
		// (a problem, a tenant's JSON, an event stream).
		h["X-Content-Type-Options"] = nosniff
		finish := func() {
			if !ri.passed {
				a.finish(rec, r, ri, start)
			}
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					finish()
					panic(p)
				}
				a.log.Error("handler panic", "request_id", ri.id, "route", ri.route, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				a.metrics.panics.Inc()
				if rec.status == 0 {
					writeProblem(rec, ri.id, &apiError{status: 500, code: wire.CodeInternal, detail: "internal error; quote request id " + ri.id})
				}
			}
			finish()
		}()
		if route != "" {
			ri.route = route
		} else if h, pattern := a.mux.Handler(r); pattern == "" || IsRedirect(h) {
			// No route, or the mux's own redirect to a cleaned path
			// (//healthz, /v1/../x): answered without a route's checks,
			// so charged to the source here.
			c := &call{a: a, w: rec, r: r, info: ri}
			if err := a.chargeSource(c); err != nil {
				a.fail(c, err)
				return
			}
			if pattern == "" {
				a.noRoute(rec, r, ri)
				return
			}
		}
		next.ServeHTTP(rec, r)
	})
}

// nosniff is every answer's X-Content-Type-Options (shared: a header
// value is replaced, never written into).
var nosniff = []string{"nosniff"}

// HealthWatchAgent is the User-Agent of the leader's health watch's
// requests (GET /v1/cluster): the access log records the ones answered
// 200 at debug level, not among every request.
const HealthWatchAgent = "batpak-cluster-health-watch"

func (a *API) finish(rec *recorder, r *http.Request, ri *reqInfo, start time.Time) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	d := time.Since(start)
	route := ri.route
	if route == "" {
		route = "unmatched"
	}
	a.metrics.observeRequest(route, rec.status, d)
	if a.opts.AccessLog != nil {
		level := slog.LevelInfo
		if route == "GET /v1/cluster" && rec.status == http.StatusOK && ri.principal == "operator" && r.Header.Get("User-Agent") == HealthWatchAgent {
			// The leader's health watch, every few seconds: seen with
			// the access log at debug level only.
			level = slog.LevelDebug
		}
		attrs := []slog.Attr{slog.String("request_id", ri.id), slog.String("method", r.Method), slog.String("route", route),
			slog.Int("status", rec.status), slog.Duration("duration", d), slog.Int64("bytes", rec.bytes),
			slog.String("tenant", ri.tenant), slog.String("principal", ri.principal), slog.String("remote", r.RemoteAddr)}
		if client, via, _ := a.opts.TrustedProxies.Client(r); via {
			// Passed on by a trusted proxy: remote is the client it
			// names, proxy the address that connected.
			attrs[len(attrs)-1] = slog.String("remote", client.String())
			attrs = append(attrs, slog.String("proxy", r.RemoteAddr))
		}
		a.opts.AccessLog.LogAttrs(r.Context(), level, "request", attrs...)
	}
}

// noRoute answers a path no route has (404) or a method the path does not
// take (405, with Allow), as problems.
func (a *API) noRoute(w http.ResponseWriter, r *http.Request, ri *reqInfo) {
	probe := &headerProbe{h: http.Header{}}
	h, _ := a.mux.Handler(r)
	h.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", probe.h.Get("Allow"))
		writeProblem(w, ri.id, &apiError{status: 405, code: wire.CodeMethodNotAllowed, detail: r.Method + " is not allowed here (Allow: " + probe.h.Get("Allow") + ")"})
		return
	}
	writeProblem(w, ri.id, &apiError{status: 404, code: wire.CodeNotFound, detail: "no such route"})
}

// headerProbe captures what the mux's own 404/405 handler would answer.
type headerProbe struct {
	h      http.Header
	status int
}

func (p *headerProbe) Header() http.Header         { return p.h }
func (p *headerProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *headerProbe) WriteHeader(code int)        { p.status = code }

// handlerFunc is a route's handler: it writes the response, or returns an
// error that guard turns into a problem (when nothing was written yet).
type handlerFunc func(c *call) error

// call is one request as a handler sees it.
type call struct {
	a         *API
	w         http.ResponseWriter
	r         *http.Request
	route     *Route
	info      *reqInfo
	principal auth.Principal
	tenant    string // the {tenant} of the path, once checked
	lease     *tenancy.Lease
	maxBatch  int // a batch body's bound on events (0: none)
	// bodyHeld is the request budget the request body holds
	// (chargeBody), charged to bodyOwner's share.
	bodyHeld  int64
	bodyOwner string
	// charged: the request took its token (its tenant's or its
	// source's); it is charged once, whichever check comes first.
	charged bool
}

// store leases the call's tenant store (released when the call ends).
func (c *call) store() (*core.Store, error) {
	if c.lease == nil {
		l, err := c.a.opts.Tenants.Acquire(c.r.Context(), c.tenant)
		if err != nil {
			return nil, err
		}
		c.lease = l
	}
	return c.lease.Store(), nil
}

// writeCtx carries the authenticated principal to the store's write gate.
func (c *call) writeCtx() context.Context {
	return policy.WithPrincipal(c.r.Context(), c.principal.Policy())
}

// guard runs the checks every route of its access class needs, in the
// documented order, then the handler; it maps the handler's error.
func (a *API) guard(rt Route) http.Handler {
	pattern := rt.Pattern()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri := infoFrom(w)
		ri.route = pattern
		c := &call{a: a, w: w, r: r, route: &rt, info: ri}
		defer func() {
			if c.lease != nil {
				c.lease.Release()
			}
			c.releaseBody()
		}()
		if rt.stream {
			// Streams and long operations are exempt from the server's
			// write timeout as a whole; each of their writes gets it.
			_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
			if rec, ok := w.(*recorder); ok {
				rec.writeTimeout = a.opts.WriteTimeout
			}
		}
		err := checkQuery(c)
		if err != nil && !(rt.Access == Public || rt.Access == Metrics && a.opts.MetricsPublic) {
			// Requests with a query refused are charged too: to the
			// credential's tenant, or to their source.
			p, aerr := a.opts.Auth.Authenticate(c.r)
			if ex := a.chargeCaller(c, p, aerr); ex != nil {
				err = ex
			}
		} else if err != nil {
			if ex := a.chargeSource(c); ex != nil {
				err = ex
			}
		}
		if err == nil {
			if err = a.clusterPlace(c); err != nil && err != errAnswered {
				// Refused before the credential was looked at (a bad
				// consistency, a stopped plane, a removed node): charged
				// all the same, to the credential's tenant or the source.
				p, aerr := a.opts.Auth.Authenticate(c.r)
				if ex := a.chargeCaller(c, p, aerr); ex != nil {
					err = ex
				}
			}
		}
		if err == nil {
			err = a.clusterUnknownCredential(c, a.admit(c))
		}
		if err == nil {
			err = a.clusterRead(c)
		}
		if err == nil && rt.control && rt.Access == Tenant {
			class := quota.Member
			if slices.Contains(c.principal.Roles, control.RoleAdmin) {
				class = quota.Admin
			}
			if ex := a.quotaOf(c).AllowControlChange(class); ex != nil {
				err = ex
			}
		}
		if err == nil && rt.stream && rt.Access == Tenant {
			// A long response of tenant data ends as soon as its key is
			// revoked or its tenant suspended or deleted.
			ctx, cancel := context.WithCancelCause(c.r.Context())
			defer cancel(nil)
			go a.watchAccess(ctx, cancel, c)
			c.r = c.r.WithContext(ctx)
			if rec, ok := w.(*recorder); ok {
				// A stream holds memory while it is written (the events
				// a subscription or an export read): one whose client
				// stops reading is cut off once others wait for memory.
				a.stalls.add(rec)
				defer a.stalls.remove(rec)
				// A write blocked on a slow reader is not waited for:
				// the response has lostAccessGrace to end.
				stop := context.AfterFunc(ctx, func() {
					if errors.Is(context.Cause(ctx), errAccessLost) {
						rec.cutOff(lostAccessGrace)
					}
				})
				defer stop()
			}
		}
		if err == nil {
			err = rt.handler(c)
		}
		if err != nil && err != errAnswered {
			a.fail(c, err)
		}
	})
}

// chargeRequest takes a token from the request bucket of p's tenant
// (requests_per_second) for the request c, whatever its route and
// whether it will be allowed, so that a tenant's credentials cannot make
// requests past the rate that are answered for free; the refusal is held
// Options.RateRefusalDelay. The operator, a JWT naming a tenant the
// server does not hold, and a request the web console charged before it
// passed it on (quota.RequestCharged) are not charged to a tenant (see
// chargeCaller for who is).
func (a *API) chargeRequest(c *call, p auth.Principal) error {
	if p.Operator || p.Tenant == "" || quota.RequestCharged(c.r.Context()) || c.charged {
		return nil
	}
	if _, ok := a.opts.Plane.Tenant(p.Tenant); !ok {
		return nil
	}
	c.charged = true
	if ex := a.opts.Quotas.Tenant(p.Tenant, a.opts.Plane.Effective(p.Tenant)).AllowRequest(); ex != nil {
		// The refusal is counted and logged as the credential's tenant's.
		c.tenant, c.info.tenant = p.Tenant, p.Tenant
		return a.holdRefusal(c, ex)
	}
	return nil
}

// ChargeRequest charges a request that another handler serves (the web
// console's own routes) to tenant's request bucket as the API's routes
// are charged: true when it may go on; false when it was refused, after
// the refusal was held Options.RateRefusalDelay and answered 429
// QUOTA_EXCEEDED "requests_per_second" with Retry-After on w.
func (a *API) ChargeRequest(w http.ResponseWriter, r *http.Request, tenant string) bool {
	c := &call{a: a, w: w, r: r, info: infoFrom(w)}
	err := a.chargeRequest(c, auth.Principal{Tenant: tenant})
	if err == nil {
		return true
	}
	a.fail(c, err)
	return false
}

// planeStopped fails closed once the control plane no longer applies
// changes (a cluster node met a change it cannot read): revoked keys and
// suspended tenants would still pass.
func (a *API) planeStopped() error {
	if err := a.opts.Plane.Err(); err != nil {
		return &apiError{status: 503, code: wire.CodeBusy, retryAfter: 5 * time.Second,
			detail: "this node's control plane stopped applying changes, so its keys and tenants may be stale; use another node (" + err.Error() + ")"}
	}
	return nil
}

// admit authenticates and authorizes c for its route.
func (a *API) admit(c *call) error {
	rt := c.route
	if rt.Access == Public || rt.Access == Metrics && a.opts.MetricsPublic {
		return a.chargeSource(c)
	}
	if err := a.planeStopped(); err != nil {
		return err
	}
	if len(c.r.Header.Values("Authorization")) > 1 {
		// A proxy in front may read another of them than we would.
		if ex := a.chargeSource(c); ex != nil {
			return ex
		}
		return errInvalid("Authorization", "more than one Authorization header: send one, Authorization: Bearer <key>")
	}
	p, err := a.opts.Auth.Authenticate(c.r)
	if ex := a.chargeCaller(c, p, err); ex != nil {
		return ex
	}
	if err != nil {
		if errors.Is(err, auth.ErrUnauthenticated) {
			return credentialProblem(c.r.Header.Get("Authorization"))
		}
		return err
	}
	c.principal = p
	c.info.principal = p.ID
	// Who makes a control-plane change is on its record (control.Change.
	// By), and what a tenant's credentials change is charged to its
	// budgets from that record after a restart (control.Plane.Spending).
	c.r = c.r.WithContext(policy.WithPrincipal(c.r.Context(), p.Policy()))
	if p.Operator {
		c.info.principal = "operator"
	}
	if rt.Access != Tenant {
		if !p.Operator {
			return errForbidden("this route takes the operator credential")
		}
		if t := c.r.PathValue("tenant"); t != "" {
			c.info.tenant = t
		}
		return nil
	}
	t := c.r.PathValue("tenant")
	switch {
	case p.Operator:
		return errForbidden("the operator credential does not reach tenant data; use a tenant key")
	case p.Tenant != t:
		return errForbidden("this credential does not grant access to this tenant")
	case !p.Has(rt.Role):
		return errForbidden("this route needs the " + string(rt.Role) + " role")
	}
	c.tenant = t
	c.info.tenant = t
	ten, ok := a.opts.Plane.Tenant(t)
	if !ok {
		return &apiError{status: 404, code: wire.CodeNotFound, detail: "no such tenant"}
	}
	if ten.State == control.StateSuspended {
		return &apiError{status: 403, code: wire.CodeTenantSuspended, detail: "the tenant is suspended"}
	}
	return nil
}
