package console

import (
	"context"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/quota"
	"github.com/batpak-go/batpak/server/tenancy"
	"github.com/batpak-go/batpak/server/tenantplugin"
	"github.com/batpak-go/batpak/server/tenantpolicy"
	"github.com/batpak-go/batpak/server/wire"
)

//go:embed assets
var assets embed.FS

// Prefix is the path the console is served under.
const Prefix = "/console"

// CookieName is the session cookie's name.
const CookieName = "batpak_console"

// MaxSignInBytes bounds a sign-in request's body; MaxEvaluateBytes an
// "evaluate this input" request's.
const (
	MaxSignInBytes   = 4 << 10
	MaxEvaluateBytes = 1 << 20
)

// evaluateTimeout bounds one "evaluate this input" request, waiting for a
// policy slot included (the evaluation itself stops at the policy
// timeout).
const evaluateTimeout = 5 * time.Second

// DefaultMaxJSONDepth is Options.MaxJSONDepth's default (the server's
// max_json_depth default).
const DefaultMaxJSONDepth = 512

// MaxOverviewTenants bounds the tenants the operator overview lists (the
// first, by id); the answer says how many there are.
const MaxOverviewTenants = 200

// UsageRefresh is how long the overview reuses a tenant's storage and
// event count before it reads the store again (which may open it).
const UsageRefresh = 10 * time.Second

// ContentSecurityPolicy is sent with every console response: scripts,
// styles and connections from the console's own origin only, no inline
// code, no framing.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// StrictTransportSecurity is sent with every console answer to a request
// that came over TLS (directly or through a trusted proxy: Options.HTTPS):
// the browser uses https for the host for a year. No includeSubDomains,
// no preload: the host's other names and services are not the console's
// to decide.
const StrictTransportSecurity = "max-age=31536000"

// Options wire a console to the server's parts. Auth and API are
// required; the others turn pages on (nil: that page says it is not
// available).
type Options struct {
	// Auth verifies the credential pasted at sign-in, and re-verifies it
	// on every request of the session.
	Auth *auth.Authenticator
	// API is the JSON API (httpapi.API.Handler()): the console's data
	// requests are API requests made with the session's credential.
	API      http.Handler
	Plane    *control.Plane
	Tenants  *tenancy.Registry
	Policies *tenantpolicy.Manager
	Plugins  *tenantplugin.Manager
	// Quotas is the API's quota manager (the overview's open streams per
	// tenant).
	Quotas *quota.Manager
	// ChargeRequest charges a request of a tenant's session to the
	// tenant's request rate (httpapi.API.ChargeRequest): false when it
	// was refused and answered. Every request of a tenant's session and
	// sign-in is charged through it, those the /api/ proxy passes to the
	// API too (marked quota.WithRequestCharged, so the API does not charge
	// them again). Nil: nothing is charged.
	ChargeRequest func(w http.ResponseWriter, r *http.Request, tenant string) bool
	// ChargeSource charges a request no tenant is charged for to its
	// source's bucket (httpapi.API.ChargeSource): false when it was
	// refused and answered. The console's pages and files, every sign-in
	// attempt, and requests with no live session go through it. Nil:
	// nothing is charged.
	ChargeSource func(w http.ResponseWriter, r *http.Request) bool
	// NoteCaller names the tenant and principal of a request the console
	// answers on its access log line (httpapi.API.NoteCaller): a sign-in
	// whose credential authenticated, and every request of a session.
	// Nil: the access log names none.
	NoteCaller func(w http.ResponseWriter, tenant, principal string)
	// Metrics is the registry of the server's own metrics (sampled every
	// second for the dashboards).
	Metrics prometheus.Gatherer
	// Secure marks the session cookie Secure (set when the server speaks
	// TLS).
	Secure bool
	// HTTPS reports whether a request reached the server over TLS,
	// directly or through a trusted proxy that terminated it
	// (httpapi.TrustedProxies.HTTPS: X-Forwarded-Proto: https from a
	// server.trusted_proxies address): its answer's cookie is Secure and
	// the answer carries Strict-Transport-Security. Nil: a request
	// reached it over TLS when r.TLS is set.
	HTTPS func(r *http.Request) bool
	// Cluster marks a cluster node's console: the operator's overview
	// says so (cluster: true), and the page then shows GET /v1/cluster.
	Cluster bool
	// MaxSessions bounds the sessions held at once. Default
	// DefaultMaxSessions.
	MaxSessions int
	// IdleTimeout and Lifetime end sessions (defaults DefaultIdleTimeout,
	// DefaultLifetime).
	IdleTimeout, Lifetime time.Duration
	// MaxJSONDepth bounds the nesting of a payload to evaluate, as
	// server.max_json_depth bounds a written one's. Default
	// DefaultMaxJSONDepth.
	MaxJSONDepth int
	// LeaderTLS verifies an https member's certificate when a follower
	// forwards a change to its leader, or a node relays a session's
	// request to the node it lives on (the cluster's cluster.api_ca);
	// nil: the system's roots.
	LeaderTLS *tls.Config
	// NodeID is this cluster node's id ("" on a single server): a
	// session's cookie names the node it lives on (see the package doc).
	NodeID string
	// WriteTimeout is the server's write timeout (server.write_timeout):
	// a relayed answer is exempt from it as a whole, and each of its
	// writes gets it. 0: none.
	WriteTimeout time.Duration
	// MemberURL gives the API URL of the cluster member named id, and
	// whether id is a member now; nil on a single server. A session that
	// lives on another member has its requests relayed there.
	MemberURL func(id string) (string, bool)
	// SampleInterval is the dashboards' sampling period. Default 1s.
	SampleInterval time.Duration
	Logger         *slog.Logger
}

// Console is the web console's handler. Safe for concurrent use.
type Console struct {
	opts     Options
	sessions *sessionStore
	sampler  *sampler
	mux      *http.ServeMux
	origin   *http.CrossOriginProtection
	ctx      context.Context // ends at Close
	cancel   context.CancelFunc
	done     chan struct{}
	once     sync.Once

	usageMu sync.Mutex
	usage   map[string]usageEntry // tenant → its figures, at most MaxOverviewTenants

	evalMu     sync.Mutex
	evaluating map[string]bool // tenants with an evaluation running (one each)

	// forwards carries a cluster follower's requests to its leader;
	// fwdBusy counts each tenant's in flight ("" the operator's),
	// fwdTotal all of them.
	forwards *http.Transport
	fwdMu    sync.Mutex
	fwdBusy  map[string]int
	fwdTotal int

	// relays carries requests of sessions that live on another node
	// there; relaying counts those in flight (relay.go).
	relays    *http.Transport
	relaying  atomic.Int32
	relayBusy map[string]int // each tenant's relayed requests served here, under fwdMu
}

type usageEntry struct {
	at     time.Time
	bytes  int64
	events uint64
}

// New makes a console and starts its sampler and the sweep that ends
// expired sessions, live tails and all (Close stops both).
func New(opts Options) (*Console, error) {
	if opts.Auth == nil || opts.API == nil {
		return nil, errors.New("console: Options.Auth and Options.API are required")
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = DefaultMaxSessions
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.Lifetime <= 0 {
		opts.Lifetime = DefaultLifetime
	}
	if opts.MaxJSONDepth <= 0 {
		opts.MaxJSONDepth = DefaultMaxJSONDepth
	}
	if opts.SampleInterval <= 0 {
		opts.SampleInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Console{opts: opts, sessions: newSessionStore(opts.MaxSessions, opts.IdleTimeout, opts.Lifetime),
		sampler: newSampler(opts.Metrics, opts.Tenants, opts.Policies), mux: http.NewServeMux(),
		origin: http.NewCrossOriginProtection(), done: make(chan struct{}), usage: map[string]usageEntry{},
		evaluating: map[string]bool{}, forwards: forwardTransport(opts.LeaderTLS), relays: relayTransport(opts.LeaderTLS)}
	c.routes()
	ctx, cancel := context.WithCancel(context.Background())
	c.ctx, c.cancel = ctx, cancel
	var bg sync.WaitGroup
	bg.Go(func() { c.sampler.run(ctx, opts.SampleInterval) })
	bg.Go(func() { c.sessions.sweepEvery(ctx) })
	go func() {
		bg.Wait()
		close(c.done)
	}()
	return c, nil
}

// Close stops the sampler and the sweep that ends expired sessions.
// Sessions end with the process.
func (c *Console) Close() {
	c.once.Do(func() {
		c.cancel()
		<-c.done
		c.forwards.CloseIdleConnections()
		c.relays.CloseIdleConnections()
	})
}

// ServeHTTP serves every path under Prefix. A request relayed to the
// node its session lives on, and one the mux answers itself (a redirect
// to a clean path or to /console/api/, a path it has no pattern for such
// as /console%2Fx), is charged to its source here (Options.ChargeSource):
// this node cannot tell a live session elsewhere from a forged cookie,
// and the mux's own answers reach no handler that would charge them.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.secureHeaders(w.Header(), r)
	if home, ok := c.livesElsewhere(r); ok {
		if c.chargeSource(w, r) {
			c.relay(w, r, home)
		}
		return
	}
	if h, pattern := c.mux.Handler(r); (pattern == "" || reflect.TypeOf(h) == redirectType) && !c.chargeSource(w, r) {
		return
	}
	c.mux.ServeHTTP(w, r)
}

// redirectType is the type of the handlers http.ServeMux answers a path
// to clean, or a subtree without its slash, with.
var redirectType = reflect.TypeOf(http.RedirectHandler("/", http.StatusMovedPermanently))

// secureHeaders sets the headers every console answer to r carries:
// Strict-Transport-Security too when r came over TLS.
func (c *Console) secureHeaders(h http.Header, r *http.Request) {
	if c.overTLS(r) {
		h.Set("Strict-Transport-Security", StrictTransportSecurity)
	}
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// overTLS reports whether r reached the server over TLS, directly or
// through a trusted proxy (Options.HTTPS).
func (c *Console) overTLS(r *http.Request) bool {
	if c.opts.HTTPS != nil {
		return c.opts.HTTPS(r)
	}
	return r.TLS != nil
}

func (c *Console) routes() {
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	c.mux.Handle("GET "+Prefix+"/static/", c.anonymous(http.StripPrefix(Prefix+"/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") || r.URL.Path == "index.html" {
			problem(w, http.StatusNotFound, wire.CodeNotFound, "no such file")
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))))
	c.mux.Handle("GET "+Prefix, c.anonymous(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"/", http.StatusFound)
	})))
	c.mux.Handle("GET "+Prefix+"/{$}", c.anonymous(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := assets.ReadFile("assets/index.html")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(b)
	})))
	c.mux.Handle("POST "+Prefix+"/session", c.anonymous(http.HandlerFunc(c.signIn)))
	c.mux.HandleFunc("GET "+Prefix+"/session", c.whoAmI)
	c.mux.HandleFunc("DELETE "+Prefix+"/session", c.authed(c.signOut))
	c.mux.HandleFunc("GET "+Prefix+"/overview", c.authed(c.overview))
	c.mux.HandleFunc("GET "+Prefix+"/samples/server", c.authed(c.serverSamples))
	c.mux.HandleFunc("GET "+Prefix+"/samples/tenants/{tenant}", c.authed(c.tenantSamples))
	c.mux.HandleFunc("POST "+Prefix+"/tenants/{tenant}/policy/evaluate", c.authed(c.evaluate))
	c.mux.HandleFunc(Prefix+"/api/", c.authed(c.proxy))
	c.mux.Handle(Prefix+"/", c.anonymous(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		problem(w, http.StatusNotFound, wire.CodeNotFound, "no such console page")
	})))
}

// anonymous charges every request of h to its source's bucket
// (Options.ChargeSource) before h serves it: the console's pages and
// files, and sign-in attempts, which no tenant is charged for until a
// credential is checked.
func (c *Console) anonymous(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.chargeSource(w, r) {
			h.ServeHTTP(w, r)
		}
	})
}

// chargeSource charges r to its source's bucket (Options.ChargeSource):
// false when it was refused and answered. A request another member
// relayed (relayedByMember) is not charged again: the relaying node
// charged its browser's address, and charging the relaying node's
// address here would put every browser relayed through it in one bucket.
func (c *Console) chargeSource(w http.ResponseWriter, r *http.Request) bool {
	return c.opts.ChargeSource == nil || c.relayedByMember(r) || c.opts.ChargeSource(w, r)
}

// relayedByMember reports whether r carries RelayHeader naming a member
// whose API URL's host is an IP address r came from. A member named by a
// host name does not count (its requests are charged to its address as
// any client's); nor does a client that sets the header itself, unless
// it sends from a member's own address; nor a request that carries
// X-Forwarded-For (a member's relay sends none: one that does came
// through a proxy, perhaps on a member's host, from a client that set the
// header itself).
func (c *Console) relayedByMember(r *http.Request) bool {
	id := r.Header.Get(RelayHeader)
	if id == "" || c.opts.MemberURL == nil || len(r.Header.Values("X-Forwarded-For")) > 0 {
		return false
	}
	base, ok := c.opts.MemberURL(id)
	if !ok {
		return false
	}
	u, err := url.Parse(base)
	if err != nil {
		return false
	}
	member, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return false
	}
	from, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && from.Addr().Unmap() == member.Unmap()
}

// problem answers an error as application/problem+json.
func problem(w http.ResponseWriter, status int, code, detail string) {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	b, _ := json.Marshal(wire.Problem{Type: wire.ProblemTypeBase + strings.ToLower(code), Title: http.StatusText(status),
		Status: status, Code: code, Detail: detail})
	_, _ = w.Write(append(b, '\n'))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// bearer is a request that carries credential as the API expects it.
func bearer(credential string) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer "+credential)
	return r
}

// stateChanging: methods that need the CSRF token and a same-origin
// request.
func stateChanging(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}

// sameOrigin refuses a request a browser marked as cross-origin (by
// Sec-Fetch-Site or an Origin other than the request's host) and, for a
// state change, one carrying neither header.
func (c *Console) sameOrigin(r *http.Request) error {
	if err := c.origin.Check(r); err != nil {
		return err
	}
	if stateChanging(r.Method) && r.Header.Get("Origin") == "" && r.Header.Get("Sec-Fetch-Site") == "" {
		return errors.New("a state change needs an Origin or Sec-Fetch-Site header")
	}
	return nil
}

// otherSite reports whether a browser marked r as sent by a page of
// another origin (Sec-Fetch-Site same-site or cross-site): such a request
// does not use the session, whatever its method. A sibling host is the
// same site, so the SameSite cookie alone would go along.
func otherSite(r *http.Request) bool {
	v := r.Header.Get("Sec-Fetch-Site")
	return v == "same-site" || v == "cross-site"
}

type sessionHandler func(w http.ResponseWriter, r *http.Request, s *session, id string)

// current returns the request's live session, if its credential still
// authenticates as the principal that signed in, with the cookie's value;
// else nil and why not. A session whose credential stopped
// authenticating (a revoked key, a changed operator credential) ends.
func (c *Console) current(r *http.Request) (*session, string, string) {
	ck, err := r.Cookie(CookieName)
	var s *session
	var token string
	if err == nil {
		var home string
		token, home = splitCookie(ck.Value)
		if home == c.opts.NodeID {
			s = c.sessions.get(token)
		}
	}
	if s == nil {
		return nil, "", "not signed in (or the session ended): sign in at " + Prefix + "/"
	}
	p, err := c.opts.Auth.Authenticate(bearer(s.credential))
	if err != nil || p.Operator != s.principal.Operator || p.Tenant != s.principal.Tenant {
		c.sessions.drop(s)
		return nil, "", "the session's credential is no longer valid; sign in again"
	}
	return s, token, ""
}

// authed runs h for a request of a live session (see current); a state
// change also needs the session's CSRF token (X-CSRF-Token) and a
// same-origin request.
//
// Every request of a tenant session is charged to its tenant's request
// rate here, before anything else is done for it, the /api/ proxy's too
// (the API is told so and does not charge them again).
func (c *Console) authed(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if otherSite(r) {
			if c.chargeSource(w, r) {
				problem(w, http.StatusForbidden, wire.CodeForbidden, "a request from another site (Sec-Fetch-Site: "+r.Header.Get("Sec-Fetch-Site")+") does not use the session")
			}
			return
		}
		s, id, why := c.current(r)
		if s == nil {
			if c.chargeSource(w, r) {
				problem(w, http.StatusUnauthorized, wire.CodeUnauthenticated, why)
			}
			return
		}
		c.noteCaller(w, r, s.principal)
		if !c.charge(w, r, s.principal) {
			return
		}
		done, ok := c.admitRelayed(w, r, s)
		if !ok {
			return
		}
		defer done()
		if stateChanging(r.Method) && !replaced(r) {
			if err := c.sameOrigin(r); err != nil {
				problem(w, http.StatusForbidden, wire.CodeForbidden, "cross-origin request refused: "+err.Error())
				return
			}
			if !s.checkCSRF(r.Header.Get("X-CSRF-Token")) {
				problem(w, http.StatusForbidden, wire.CodeForbidden, "missing or wrong X-CSRF-Token header (reload the console)")
				return
			}
		}
		h(w, r, s, id)
	}
}

// noteCaller names p on r's access log line (Options.NoteCaller) as the
// API names its callers: a key's id and its tenant, or "operator" and
// the tenant the path names, if any.
func (c *Console) noteCaller(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	if c.opts.NoteCaller == nil {
		return
	}
	if p.Operator {
		c.opts.NoteCaller(w, r.PathValue("tenant"), "operator")
		return
	}
	c.opts.NoteCaller(w, p.Tenant, p.ID)
}

// charge charges a tenant principal's request to its tenant's request
// rate (Options.ChargeRequest); false when it was refused and answered.
// The operator's requests are not charged.
func (c *Console) charge(w http.ResponseWriter, r *http.Request, p auth.Principal) bool {
	if p.Operator || c.opts.ChargeRequest == nil {
		return true
	}
	return c.opts.ChargeRequest(w, r, p.Tenant)
}

type sessionView struct {
	SignedIn  bool           `json:"signed_in"`
	Principal string         `json:"principal"`
	Operator  bool           `json:"operator"`
	Tenant    string         `json:"tenant,omitempty"`
	Roles     []control.Role `json:"roles,omitempty"`
	CSRF      string         `json:"csrf_token"`
	Expires   time.Time      `json:"expires"`
}

func (c *Console) view(s *session) sessionView {
	p := s.principal
	name := p.ID
	if p.Operator {
		name = "operator"
	}
	return sessionView{SignedIn: true, Principal: name, Operator: p.Operator, Tenant: p.Tenant, Roles: p.Roles, CSRF: s.csrf,
		Expires: s.created.Add(c.opts.Lifetime)}
}

// signIn: POST /console/session {"credential": "..."}: verified as the API
// verifies a bearer credential; a session cookie on success.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	if err := c.sameOrigin(r); err != nil {
		problem(w, http.StatusForbidden, wire.CodeForbidden, "cross-origin sign-in refused: "+err.Error())
		return
	}
	var in struct {
		Credential string `json:"credential"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxSignInBytes+1))
	if err != nil {
		problem(w, http.StatusBadRequest, wire.CodeInvalidRequest, "could not read the request body")
		return
	}
	if len(body) > MaxSignInBytes {
		problem(w, http.StatusRequestEntityTooLarge, wire.CodePayloadTooLarge, "a sign-in body is at most 4 KiB")
		return
	}
	if err := json.Unmarshal(body, &in); err != nil || strings.TrimSpace(in.Credential) == "" {
		problem(w, http.StatusBadRequest, wire.CodeInvalidRequest, `want {"credential": "<a tenant API key (bpk_…) or the operator credential (bpko_…)>"}`)
		return
	}
	cred := strings.TrimSpace(in.Credential)
	p, err := c.opts.Auth.Authenticate(bearer(cred))
	if err != nil {
		problem(w, http.StatusUnauthorized, wire.CodeUnauthenticated, "the credential is not valid (unknown, revoked or mistyped)")
		return
	}
	c.noteCaller(w, r, p)
	if !p.Operator && c.opts.Plane != nil {
		// A JWT names its tenant in a claim: one the server does not hold
		// (never created, or deleted) gets no session, as the API
		// answers it 404.
		t, ok := c.tenant(p.Tenant)
		if !ok {
			problem(w, http.StatusNotFound, wire.CodeNotFound, "no such tenant: the credential's tenant "+strconv.Quote(p.Tenant)+" does not exist on this server")
			return
		}
		if !c.charge(w, r, p) {
			return
		}
		if t.State == control.StateSuspended {
			problem(w, http.StatusForbidden, wire.CodeTenantSuspended, "the tenant is suspended")
			return
		}
	}
	if old, err := r.Cookie(CookieName); err == nil {
		// A sign-in replaces the browser's session, wherever it lives.
		if token, home := splitCookie(old.Value); home == c.opts.NodeID {
			c.sessions.remove(token)
		} else {
			c.endElsewhere(r, home, old.Value)
		}
	}
	id, s, err := c.sessions.create(cred, p)
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, ErrTooManySessions) {
			status = http.StatusServiceUnavailable
		}
		problem(w, status, wire.CodeBusy, err.Error())
		return
	}
	if !p.Operator {
		c.sampler.watch(p.Tenant) // the dashboard's charts start now
	}
	http.SetCookie(w, c.cookie(r, c.cookieValue(id), int(c.opts.Lifetime.Seconds())))
	writeJSON(w, http.StatusOK, c.view(s))
}

// cookie is the session cookie: Secure when the server speaks TLS, or r
// came over TLS (through a trusted proxy that terminated it too).
func (c *Console) cookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: value, Path: Prefix, HttpOnly: true, Secure: c.opts.Secure || c.overTLS(r),
		SameSite: http.SameSiteStrictMode, MaxAge: maxAge}
}

func (c *Console) tenant(id string) (control.Tenant, bool) {
	if c.opts.Plane == nil {
		return control.Tenant{}, false
	}
	return c.opts.Plane.Tenant(id)
}

// whoAmI: GET /console/session answers the session's view, or
// {"signed_in": false} (200: the page asks before anyone signed in).
func (c *Console) whoAmI(w http.ResponseWriter, r *http.Request) {
	var s *session
	if !otherSite(r) {
		s, _, _ = c.current(r)
	}
	if s == nil {
		if c.chargeSource(w, r) {
			writeJSON(w, http.StatusOK, map[string]any{"signed_in": false})
		}
		return
	}
	c.noteCaller(w, r, s.principal)
	if !c.charge(w, r, s.principal) {
		return
	}
	writeJSON(w, http.StatusOK, c.view(s))
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request, s *session, id string) {
	c.sessions.remove(id)
	http.SetCookie(w, c.cookie(r, "", -1))
	w.Header().Set("Clear-Site-Data", `"cookies", "storage"`)
	w.WriteHeader(http.StatusNoContent)
}

// mayReach reports whether s may see tenant t's data: a tenant session
// its own tenant only; the operator every tenant's figures (never its
// events: the API keeps those from the operator credential too).
func mayReach(s *session, t string) bool {
	return s.principal.Operator || s.principal.Tenant == t
}

// allowedAPIPath reports whether a session may send p (an API path) through
// the console: a tenant session its own tenant's routes, the operator the
// admin and cluster routes. The API authorizes the request again.
func allowedAPIPath(s *session, p string) bool {
	if strings.Contains(p, "..") || strings.Contains(p, "//") {
		return false
	}
	if s.principal.Operator {
		return strings.HasPrefix(p, "/v1/admin/") || p == "/v1/admin/tenants" || p == "/v1/cluster" || strings.HasPrefix(p, "/v1/cluster/")
	}
	own := "/v1/tenants/" + s.principal.Tenant
	return s.principal.Tenant != "" && (p == own || strings.HasPrefix(p, own+"/"))
}

// proxy serves /console/api/<API path> as the API would serve <API path>
// to the session's credential.
func (c *Console) proxy(w http.ResponseWriter, r *http.Request, s *session, _ string) {
	path := strings.TrimPrefix(r.URL.Path, Prefix+"/api")
	if !allowedAPIPath(s, path) {
		problem(w, http.StatusForbidden, wire.CodeForbidden, "this session does not reach "+path)
		return
	}
	// A request in flight (a live tail above all) ends with the session:
	// at sign-out, at its lifetime, or when its credential stops working.
	// authed charged the request to the tenant's request rate.
	ctx, cancel := context.WithDeadline(quota.WithRequestCharged(r.Context()), s.created.Add(c.opts.Lifetime))
	defer cancel()
	go func() {
		select {
		case <-s.ended:
			cancel()
		case <-ctx.Done():
		}
	}()
	r2 := r.Clone(ctx)
	r2.URL.Path = path
	r2.URL.RawPath = ""
	if r.URL.RawPath != "" {
		r2.URL.RawPath = strings.TrimPrefix(r.URL.RawPath, Prefix+"/api")
	}
	r2.RequestURI = r2.URL.RequestURI()
	r2.Header.Del("Cookie")
	r2.Header.Del("X-CSRF-Token")
	r2.Header.Set("Authorization", "Bearer "+s.credential)
	var body *bodyWatch
	if r2.Body != nil && r2.Body != http.NoBody {
		body = &bodyWatch{ReadCloser: r2.Body}
		r2.Body = body
	}
	// Tenant data stays out of the browser's cache, whatever the route
	// would let other clients do. A cluster follower's redirect to its
	// leader is held back: the request is forwarded instead (forward.go).
	kept := w.Header().Clone()
	nw := &noStoreWriter{ResponseWriter: w, hold: true}
	c.opts.API.ServeHTTP(nw, r2)
	if nw.location == "" {
		return
	}
	clear(w.Header())
	for k, v := range kept {
		w.Header()[k] = v
	}
	c.forward(w, r2, s, nw.location, body.untouched())
}

// noStoreWriter sends Cache-Control: no-store with the response, in
// place of any the handler set. A redirect (a cluster follower sends
// requests for its leader with 307 NOT_LEADER) is never passed to the
// browser, which would follow it to the leader without the session's
// credential: with hold set it is kept back, its Location in location,
// for the caller to forward the request (see forward); otherwise it
// becomes a 503 NOT_LEADER problem naming the leader's console.
type noStoreWriter struct {
	http.ResponseWriter
	hold       bool
	sent       bool
	redirected bool
	location   string // a held redirect's target
}

func (w *noStoreWriter) header() {
	if !w.sent {
		w.sent = true
		w.ResponseWriter.Header().Set("Cache-Control", "no-store")
	}
}

func (w *noStoreWriter) WriteHeader(status int) {
	if status >= 300 && status < 400 && status != http.StatusNotModified && !w.sent {
		w.redirected = true
		w.sent = true
		loc := w.ResponseWriter.Header().Get("Location")
		if w.hold && loc != "" {
			w.location = loc
			return
		}
		// The redirect's own framing does not fit the answer that
		// replaces it.
		w.ResponseWriter.Header().Del("Content-Length")
		w.ResponseWriter.Header().Del("Content-Encoding")
		notLeader(w.ResponseWriter, loc, "")
		return
	}
	if status >= 200 { // 1xx answers are not the response
		w.header()
	}
	w.ResponseWriter.WriteHeader(status)
}

// notLeader answers 503 NOT_LEADER naming the console of the leader at
// location (a URL on the leader), with why, if not empty, saying why the
// request was not forwarded there.
func notLeader(w http.ResponseWriter, location, why string) {
	leader := "the leader"
	if u, err := url.Parse(location); err == nil && u.Scheme != "" && u.Host != "" {
		leader = u.Scheme + "://" + u.Host + Prefix + "/"
	}
	h := w.Header()
	h.Del("Location")
	h.Set("Retry-After", "1")
	detail := "this node does not lead the cluster, and changes are made on the leader: sign in to the console at " + leader
	if why != "" {
		detail = "this node does not lead the cluster and did not forward the request to the leader (" + why + "): retry, or sign in to the console at " + leader
	}
	problem(w, http.StatusServiceUnavailable, wire.CodeNotLeader, detail)
}

func (w *noStoreWriter) Write(b []byte) (int, error) {
	if w.redirected {
		return len(b), nil // the redirect's own body
	}
	w.header()
	return w.ResponseWriter.Write(b)
}

func (w *noStoreWriter) FlushError() error {
	w.header()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *noStoreWriter) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *noStoreWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (c *Console) serverSamples(w http.ResponseWriter, r *http.Request, s *session, _ string) {
	if !s.principal.Operator {
		problem(w, http.StatusForbidden, wire.CodeForbidden, "the server's figures take the operator credential")
		return
	}
	smp, _ := c.sampler.serverSamples()
	writeJSON(w, http.StatusOK, map[string]any{"samples": smp})
}

func (c *Console) tenantSamples(w http.ResponseWriter, r *http.Request, s *session, _ string) {
	t := r.PathValue("tenant")
	if !mayReach(s, t) {
		problem(w, http.StatusForbidden, wire.CodeForbidden, "this session does not reach tenant "+t)
		return
	}
	if _, ok := c.tenant(t); !ok {
		problem(w, http.StatusNotFound, wire.CodeNotFound, "no such tenant")
		return
	}
	smp, ok := c.sampler.watch(t)
	if !ok {
		problem(w, http.StatusServiceUnavailable, wire.CodeBusy, "too many tenant dashboards are open; try again in a few minutes")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"samples": smp, "interval_ms": c.opts.SampleInterval.Milliseconds()})
}

// overviewTenant is one row of the operator overview.
type overviewTenant struct {
	ID             string  `json:"id"`
	State          string  `json:"state"`
	SuspendReason  string  `json:"suspend_reason,omitempty"`
	EventsPerSec   float64 `json:"events_per_sec"`
	RateShared     bool    `json:"rate_shared"` // events_per_sec is of tenant="other" (no series of its own)
	StorageBytes   int64   `json:"storage_bytes"`
	StorageQuota   int64   `json:"storage_quota"`
	Events         uint64  `json:"events"`
	Subscriptions  int     `json:"subscriptions"` // event streams open now
	PolicyActive   string  `json:"policy_active"`
	Plugins        int     `json:"plugins"`
	Quarantined    int     `json:"plugins_quarantined"`
	PluginsUnready int     `json:"plugins_not_loaded"`
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session, _ string) {
	if !s.principal.Operator || c.opts.Plane == nil {
		problem(w, http.StatusForbidden, wire.CodeForbidden, "the overview takes the operator credential")
		return
	}
	all := c.opts.Plane.Tenants()
	total := len(all)
	if len(all) > MaxOverviewTenants {
		all = all[:MaxOverviewTenants]
	}
	samples, per := c.sampler.serverSamples()
	out := make([]overviewTenant, 0, len(all))
	for _, t := range all {
		v := overviewTenant{ID: t.ID, State: string(t.State), SuspendReason: t.SuspendReason,
			StorageQuota: c.opts.Plane.Effective(t.ID).StorageBytes, PolicyActive: c.opts.Plane.ActivePolicy(t.ID)}
		if eps, ok := per[t.ID]; ok {
			v.EventsPerSec = eps
		} else if eps, ok := per["other"]; ok && eps > 0 {
			v.EventsPerSec, v.RateShared = eps, true
		}
		u := c.tenantUsage(r.Context(), t.ID)
		v.StorageBytes, v.Events = u.bytes, u.events
		if c.opts.Quotas != nil {
			v.Subscriptions = c.opts.Quotas.Tenant(t.ID, c.opts.Plane.Effective(t.ID)).Subscriptions()
		}
		if c.opts.Plugins != nil {
			for _, p := range c.opts.Plugins.List(t.ID) {
				v.Plugins++
				if p.Quarantined {
					v.Quarantined++
				}
				if !p.Loaded {
					v.PluginsUnready++
				}
			}
		}
		out = append(out, v)
	}
	c.usageMu.Lock()
	if len(c.usage) > len(all) {
		keep := make(map[string]bool, len(all))
		for _, t := range all {
			keep[t.ID] = true
		}
		for id := range c.usage {
			if !keep[id] {
				delete(c.usage, id)
			}
		}
	}
	c.usageMu.Unlock()
	var last *ServerSample
	if len(samples) > 0 {
		last = &samples[len(samples)-1]
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenants": out, "total": total, "shown": len(out), "server": last, "cluster": c.opts.Cluster})
}

// tenantUsage is id's storage and event count, read from its store at most
// once per UsageRefresh.
func (c *Console) tenantUsage(ctx context.Context, id string) usageEntry {
	now := time.Now()
	c.usageMu.Lock()
	u, ok := c.usage[id]
	c.usageMu.Unlock()
	if ok && now.Sub(u.at) < UsageRefresh || c.opts.Tenants == nil {
		return u
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	l, err := c.opts.Tenants.Acquire(ctx, id)
	if err != nil {
		return u
	}
	us := l.Store().Usage()
	l.Release()
	u = usageEntry{at: now, bytes: us.Bytes, events: us.GlobalSequence}
	c.usageMu.Lock()
	c.usage[id] = u
	c.usageMu.Unlock()
	return u
}

// evaluateRequest is an "evaluate this input" form: a write to judge.
type evaluateRequest struct {
	Action  string          `json:"action"` // append (default), batch, reaction, import
	Entity  string          `json:"entity"`
	Scope   string          `json:"scope"`
	Kind    string          `json:"kind"`
	Payload json.RawMessage `json:"payload"`
}

// evaluate: POST /console/tenants/{t}/policy/evaluate judges a write by
// the tenant's active policy bundle without writing or logging it, with
// the entity's state (input.entity: exists, clock) read from the tenant's
// store as a write proposed now would carry it; the answer's "entity"
// says what it was. One evaluation per tenant runs at a time (another
// gets 429 BUSY), for at most evaluateTimeout.
func (c *Console) evaluate(w http.ResponseWriter, r *http.Request, s *session, _ string) {
	t := r.PathValue("tenant")
	if s.principal.Operator || s.principal.Tenant != t {
		problem(w, http.StatusForbidden, wire.CodeForbidden, "evaluating a tenant's policy takes a key of that tenant")
		return
	}
	if !s.principal.Has(control.RoleWriter) {
		// A reader may not write, so it learns nothing of the policy's
		// reasons from writes; nor from a dry run.
		problem(w, http.StatusForbidden, wire.CodeForbidden, "evaluating the policy takes a writer or admin key")
		return
	}
	if c.opts.Policies == nil {
		problem(w, http.StatusNotFound, wire.CodeNotFound, "tenant policies are not configured on this server")
		return
	}
	if tn, ok := c.tenant(t); ok && tn.State == control.StateSuspended {
		problem(w, http.StatusForbidden, wire.CodeTenantSuspended, "the tenant is suspended")
		return
	}
	// One evaluation per tenant at a time: they share the server's policy
	// slots with every tenant's writes, and have no rate quota of their own.
	c.evalMu.Lock()
	if c.evaluating[t] {
		c.evalMu.Unlock()
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusTooManyRequests, wire.CodeBusy, "an evaluation of this tenant's policy is running; try again when it is done")
		return
	}
	c.evaluating[t] = true
	c.evalMu.Unlock()
	defer func() {
		c.evalMu.Lock()
		delete(c.evaluating, t)
		c.evalMu.Unlock()
	}()
	var in evaluateRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxEvaluateBytes+1))
	if err != nil {
		problem(w, http.StatusBadRequest, wire.CodeInvalidRequest, "could not read the request body")
		return
	}
	if len(body) > MaxEvaluateBytes {
		problem(w, http.StatusRequestEntityTooLarge, wire.CodePayloadTooLarge, "an evaluation request is at most 1 MiB")
		return
	}
	// Read as the API reads a write: the same JSON (I-JSON, each member
	// once, no unknown member, the depth counted with the envelope), so
	// the dry run judges only writes the API would take.
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		problem(w, http.StatusUnsupportedMediaType, wire.CodeUnsupportedMedia, "send the evaluation request as Content-Type: application/json")
		return
	}
	if err := wire.Decode(body, &in, c.opts.MaxJSONDepth+1); err != nil {
		var we *wire.Error
		if errors.As(err, &we) {
			problem(w, http.StatusBadRequest, we.Code, we.Error())
		} else {
			problem(w, http.StatusBadRequest, wire.CodeInvalidJSON, "the request is not JSON: "+err.Error())
		}
		return
	}
	coord, err := core.NewCoordinate(in.Entity, in.Scope)
	if err != nil {
		problem(w, http.StatusBadRequest, wire.CodeInvalidCoordinate, "entity and scope: "+err.Error())
		return
	}
	kind, err := wire.ParseKindString(in.Kind)
	if err != nil {
		problem(w, http.StatusBadRequest, wire.CodeInvalidKind, err.Error())
		return
	}
	if len(in.Payload) == 0 {
		in.Payload = json.RawMessage("null")
	}
	if !json.Valid(in.Payload) {
		problem(w, http.StatusBadRequest, wire.CodeInvalidJSON, "payload is not one JSON value")
		return
	}
	if d, _ := wire.Depth(in.Payload, c.opts.MaxJSONDepth); d > c.opts.MaxJSONDepth {
		problem(w, http.StatusBadRequest, wire.CodeInvalidJSON, fmt.Sprintf("payload nested deeper than %d levels (max_json_depth)", c.opts.MaxJSONDepth))
		return
	}
	if c.opts.Quotas != nil && c.opts.Plane != nil {
		if ex := c.opts.Quotas.Tenant(t, c.opts.Plane.Effective(t)).CheckPayload(len(in.Payload)); ex != nil {
			problem(w, http.StatusRequestEntityTooLarge, wire.CodePayloadTooLarge, "payload: "+ex.Error())
			return
		}
	}
	action := core.ActionAppend
	switch in.Action {
	case "", "append":
	case "batch":
		action = core.ActionBatch
	case "reaction":
		action = core.ActionReaction
	case "import":
		action = core.ActionImport
	default:
		problem(w, http.StatusBadRequest, wire.CodeInvalidRequest, `action: want append, batch, reaction or import, got "`+clip(in.Action)+`"`)
		return
	}
	p := &core.Proposal{Action: action, Coordinate: coord, Kind: kind, Payload: in.Payload, BatchIndex: -1}
	if action == core.ActionBatch {
		p.BatchSize, p.BatchIndex = 1, 0
	}
	ctx, cancel := context.WithTimeout(policy.WithPrincipal(r.Context(), s.principal.Policy()), evaluateTimeout)
	defer cancel()
	if c.opts.Tenants != nil {
		// The entity as a write proposed now sees it (input.entity: its
		// latest event's clock, read from this node's copy of the
		// tenant's store), so that a policy reading it judges the dry run
		// as it would judge the write.
		l, err := c.opts.Tenants.Acquire(ctx, t)
		if err != nil {
			w.Header().Set("Retry-After", "1")
			problem(w, http.StatusServiceUnavailable, wire.CodeBusy, "reading the entity's clock from the tenant's store: "+err.Error())
			return
		}
		p.EntityClock, p.EntityExists = l.Store().EntityClock(coord.Entity)
		l.Release()
	}
	entity := map[string]any{"exists": p.EntityExists, "clock": p.EntityClock}
	rev, err := c.opts.Policies.Evaluate(ctx, t, p)
	var d *policy.Denial
	switch {
	case errors.Is(err, tenantpolicy.ErrNoActivePolicy):
		writeJSON(w, http.StatusOK, map[string]any{"result": "no_policy", "detail": "the tenant has no active policy: every valid write passes its layer", "entity": entity})
	case err == nil:
		writeJSON(w, http.StatusOK, map[string]any{"result": "allowed", "revision": rev, "entity": entity})
	case errors.As(err, &d):
		writeJSON(w, http.StatusOK, map[string]any{"result": "denied", "revision": rev, "reasons": d.Reasons, "entity": entity})
	default:
		problem(w, http.StatusUnprocessableEntity, wire.CodeInvalidRequest, "evaluation failed: "+err.Error())
	}
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
