package httpapi

import (
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"github.com/batpak-go/batpak/internal/keylock"
	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/follow"
	"github.com/batpak-go/batpak/server/hostedworker"
	"github.com/batpak-go/batpak/server/quota"
	"github.com/batpak-go/batpak/server/tenancy"
	"github.com/batpak-go/batpak/server/tenantplugin"
	"github.com/batpak-go/batpak/server/tenantpolicy"
)

// MaxPageLimit is the most events one JSON page holds; a larger limit is
// capped to it. DefaultPageLimit is the page size when none is asked.
const (
	MaxPageLimit     = 1000
	DefaultPageLimit = 100
)

// MaxPageBytes bounds the payload bytes of one JSON query page: a page
// ends before the event that would pass it (with next_after set), so
// large events come in pages of fewer than limit; a page always holds at
// least one event.
const MaxPageBytes = 8 << 20

// Options wire an API to the server's parts. Plane, Auth, Quotas and
// Tenants are required.
type Options struct {
	Plane   *control.Plane
	Auth    *auth.Authenticator
	Quotas  *quota.Manager
	Tenants *tenancy.Registry
	// BackupDir receives snapshots: <BackupDir>/<tenant>/<UTC timestamp>.
	BackupDir string
	// MaxBodyBytes bounds a request body: exactly this many bytes are
	// read, one more is refused with 413 PAYLOAD_TOO_LARGE (a larger
	// Content-Length before anything is read). Default 32 MiB.
	MaxBodyBytes int64
	// MaxJSONDepth bounds how deeply a payload (and a request's own
	// members) may nest: exactly this depth is accepted, one more is
	// refused with 400 INVALID_JSON. Default 512; range 1..4096.
	MaxJSONDepth int
	// WriteTimeout bounds each write of a streaming response (event
	// streams, NDJSON queries, exports, imports, verify, snapshots): a
	// client that stops reading for this long is disconnected. Other
	// responses are bounded as a whole by the http.Server's WriteTimeout
	// (server.write_timeout, the same value). Default 60s.
	WriteTimeout time.Duration
	// ReadTimeout bounds how long an import's body may send nothing: an
	// import is read at its tenant's pace, so the http.Server's
	// ReadTimeout (server.read_timeout, the same value), which bounds a
	// whole body, does not apply to it; each of its reads gets this
	// instead. Default 60s.
	ReadTimeout time.Duration
	// MetricsPublic serves /metrics without a credential; otherwise it
	// takes the operator credential.
	MetricsPublic bool
	// TenantSeries bounds the tenants that get metric series of their own
	// (the first seen); later ones share tenant="other". Default 50.
	TenantSeries int
	// Registry receives the API's metrics; nil makes a fresh one.
	Registry *prometheus.Registry
	// AccessLog gets one line per request (nil: none); Logger gets errors
	// and panics (nil: slog.Default()).
	AccessLog *slog.Logger
	Logger    *slog.Logger
	// SSEHeartbeat is the interval of ": heartbeat" comments on event
	// streams. Default 15s.
	SSEHeartbeat time.Duration
	// SSEBufferEvents bounds a subscriber's unsent backlog (events): past
	// it the stream is cut off with its resumable position. Default 4096.
	// (The hub in Follow enforces it; the server makes the Set with it.)
	SSEBufferEvents int
	// RateRefusalDelay holds a write refused for a tenant's rate
	// (events_per_second, bytes_per_second: 429) this long before the
	// answer is sent, so that a client ignoring Retry-After (whole seconds,
	// at least 1) cannot turn its refusals into a flood of its own; the
	// held request costs no CPU. 0: answered at once.
	RateRefusalDelay time.Duration
	// YieldConn, when set, lets the request r, once it has held its
	// refusal for half of RateRefusalDelay, give up its connection slot
	// to a new client until release is called: when every slot is taken,
	// the server calls wake, and the refusal is answered at once with
	// its connection closed. So held refusals do not keep slots from
	// others, and a slot turns over at most once per half delay.
	YieldConn func(r *http.Request, wake func()) (release func())
	// Sources are the request buckets of the sources (IPv4 addresses,
	// IPv6 /64s) whose requests no tenant is charged for: those without a
	// valid credential, or with a JWT naming a tenant the server does not
	// hold, to the routes that read none (health, readiness, the OpenAPI
	// document, public metrics) and to paths no route has. Past its
	// bucket such a request is refused with 429 TOO_MANY_REQUESTS, held
	// RateRefusalDelay first. Nil: no bound. A request's source is its
	// client's address (TrustedProxies.Client).
	Sources *quota.Sources
	// TrustedProxies are the proxies in front of the server whose
	// X-Forwarded-For is believed: a request one of them passes on is
	// charged to Sources and logged by the client's address it names.
	// Empty: a request's address is its peer's.
	TrustedProxies TrustedProxies
	// Policies keeps the tenants' own policy bundles (the …/policy
	// routes); nil: those routes answer 404.
	Policies *tenantpolicy.Manager
	// Plugins keeps the tenants' plugins (the …/plugins and
	// …/projections routes); nil: those routes answer 404.
	Plugins *tenantplugin.Manager
	// Follow fans tenant stores out to event streams (make it with
	// EncodeEvent as Options.Encode); nil: /subscribe answers 503.
	Follow *follow.Set
	// Workers runs the tenants' hosted handler-plugin workers (the
	// …/workers routes); nil: those routes answer 501 NOT_IMPLEMENTED.
	Workers *hostedworker.Supervisor
	// Cluster, when set, makes this API a cluster node's: state changes
	// are served by the leader only, reads can wait for a sequence or ask
	// for linearizability (see Cluster). Nil: a single server.
	Cluster Cluster
}

// API is the HTTP handler of the server. Safe for concurrent use.
type API struct {
	opts    Options
	mux     *http.ServeMux
	routes  []Route
	metrics *metrics
	log     *slog.Logger
	ready   atomic.Bool
	// stopping closes when Drain is called: streams end with their
	// resumable position.
	stopping chan struct{}
	stopOnce sync.Once
	streamMu sync.Mutex
	draining bool
	streams  sync.WaitGroup
	// commitLocks holds a lock per cursor being committed (commitLock).
	commitLocks keylock.Locks
	// access is closed and replaced whenever a credential or tenant loses
	// access (key revoked, tenant suspended or deleted); see watchAccess.
	accessMu sync.Mutex
	access   chan struct{}
	// tenantMu serialises tenant creation and deletion (see createTenant).
	tenantMu sync.Mutex
	// verifies holds the tenants whose verify is running (see
	// startVerify).
	verifyMu sync.Mutex
	verifies map[string]bool
	// imports holds the tenants an import into is running (startImport;
	// guarded by verifyMu).
	imports map[string]bool
	// digesting is held while a replica digest runs (one at a time);
	// digestRequests counts the digest requests in hand, waiting for
	// their events or running (at most MaxDigestRequests).
	digesting      atomic.Bool
	digestRequests atomic.Int32
	// appliedWaits counts the GET /v1/cluster/applied requests waiting
	// for the control plane (at most MaxAppliedWaits).
	appliedWaits atomic.Int32
	// bodies bounds the large JSON bodies written at once.
	bodies *bodyBudget
	// stalls is the responses holding memory while they are written
	// (bodies' and the event streams'), cut off when their clients stop
	// reading and others wait (CutStalledReaders).
	stalls *stallSet
	// requests bounds the room request bodies take while they are read
	// and handled (readAll).
	requests *requestBudget
	// healthFlight shares one gathering of the members' views among the
	// operator's requests for the cluster's health (clusterHealth).
	healthFlight singleflight.Group
	// memberAsk bounds the cluster-wide answers gathered at once
	// (MaxMemberAsks); tenantAsks holds the tenants gathering one.
	memberAsk  *semaphore.Weighted
	tenantAsks sync.Map
}

// Access says who may call a route.
type Access int

// Route access classes.
const (
	Public   Access = iota // no credential
	Tenant                 // a key of the route's {tenant} with Role
	Operator               // the operator credential
	Metrics                // public or operator, per Options.MetricsPublic
)

// Route is one registered route: its method, path pattern (Go ServeMux
// syntax), who may call it and, for tenant routes, the role it needs.
type Route struct {
	Method  string
	Path    string
	Access  Access
	Role    control.Role
	Body    string // the body's media type, "" when the route takes none
	handler handlerFunc
	stream  bool // streaming response: exempt from the write timeout
	// leader: on a cluster, the route is served by the leader whatever
	// its method: it answers with state only the leader holds (the
	// hosted workers run there; the leader judges every write, so its
	// policy decision log holds the denials) or records a change the
	// leader applies first (a plugin's reset, which every node then
	// applies to its own quarantine).
	leader bool
	// reads: a POST that changes nothing (verify), served by whichever
	// cluster node is asked, like a GET.
	reads bool
	// control: the route changes the shared control plane, or lifts a
	// plugin's quarantine (which would otherwise give a faulting plugin
	// endless retries); on a tenant credential it takes a token of
	// quota.Tenant.AllowControlChange.
	control bool
}

// Pattern is the ServeMux pattern, "METHOD /path".
func (r Route) Pattern() string { return r.Method + " " + r.Path }

// New builds the API's routes and metrics. The API reports ready until
// Drain.
func New(opts Options) *API {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 32 << 20
	}
	if opts.MaxJSONDepth <= 0 {
		opts.MaxJSONDepth = 512
	}
	if opts.TenantSeries <= 0 {
		opts.TenantSeries = 50
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 60 * time.Second
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 60 * time.Second
	}
	if opts.SSEHeartbeat <= 0 {
		opts.SSEHeartbeat = 15 * time.Second
	}
	if opts.SSEBufferEvents <= 0 {
		opts.SSEBufferEvents = 4096
	}
	stalls := newStallSet()
	a := &API{opts: opts, mux: http.NewServeMux(), log: opts.Logger, stopping: make(chan struct{}), access: make(chan struct{}),
		bodies: newBodyBudget(stalls), stalls: stalls, memberAsk: semaphore.NewWeighted(MaxMemberAsks)}
	largest := opts.MaxBodyBytes + 1
	if opts.Policies != nil {
		largest = max(largest, opts.Policies.Limits().MaxBundleBytes+2)
	}
	a.requests = newRequestBudget(largest)
	if a.log == nil {
		a.log = slog.Default()
	}
	a.metrics = newMetrics(opts.Registry, opts.TenantSeries, opts.Tenants)
	opts.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "batpak_slow_readers_cut_total",
		Help: "Responses cut off because their clients read nothing for 2 s while others waited for the response memory they held."},
		func() float64 { return float64(stalls.cutOff.Load()) }))
	a.routes = a.table()
	for i := range a.routes {
		rt := a.routes[i]
		a.mux.Handle(rt.Pattern(), a.guard(rt))
	}
	a.ready.Store(true)
	return a
}

// Routes lists every registered route.
func (a *API) Routes() []Route { return append([]Route(nil), a.routes...) }

// Handler is the API with its middleware (request id, panic recovery,
// access log, metrics).
func (a *API) Handler() http.Handler { return a.middleware(a.mux, "") }

// Wrap gives h the API's middleware (request id, panic → 500 problem,
// access log, metrics under route): for handlers an embedding program
// serves beside the API.
func (a *API) Wrap(route string, h http.Handler) http.Handler { return a.middleware(h, route) }

// WrapPassing is Wrap for a handler that answers some requests itself
// and passes others on to the API's Handler (the web console's data
// requests): those it answers get the middleware here; one it passes on,
// with a context derived from the request's, is the API's request alone
// (the same request id, logged and counted once, by its route).
func (a *API) WrapPassing(route string, h http.Handler) http.Handler {
	return a.middlewarePassing(h, route, true)
}

// Registry is the metrics registry the API reports to.
func (a *API) Registry() *prometheus.Registry { return a.opts.Registry }

// Drain marks the API not ready (/readyz answers 503) and ends every event
// stream with an "event: shutdown" carrying its resumable position. It
// returns once the streams have ended. Call it before http.Server.Shutdown.
func (a *API) Drain() {
	a.ready.Store(false)
	a.stopOnce.Do(func() {
		a.streamMu.Lock()
		a.draining = true
		a.streamMu.Unlock()
		close(a.stopping)
	})
	a.streams.Wait()
}

func (a *API) table() []Route {
	const js = "application/json"
	const nd = "application/x-ndjson"
	t := "/v1/tenants/{tenant}"
	ad := "/v1/admin/tenants"
	return []Route{
		{Method: "GET", Path: "/healthz", Access: Public, handler: a.healthz},
		{Method: "GET", Path: "/readyz", Access: Public, handler: a.readyz},
		{Method: "GET", Path: "/v1/openapi.json", Access: Public, handler: a.openapi},
		{Method: "GET", Path: "/metrics", Access: Metrics, handler: a.serveMetrics},

		{Method: "POST", Path: t + "/events", Access: Tenant, Role: control.RoleWriter, Body: js, handler: a.appendOne},
		{Method: "POST", Path: t + "/batches", Access: Tenant, Role: control.RoleWriter, Body: js, handler: a.appendBatch},
		{Method: "POST", Path: t + "/import", Access: Tenant, Role: control.RoleAdmin, Body: nd, handler: a.importEvents, stream: true},
		{Method: "GET", Path: t + "/events/{id}", Access: Tenant, Role: control.RoleReader, handler: a.getEvent},
		{Method: "GET", Path: t + "/events", Access: Tenant, Role: control.RoleReader, handler: a.queryEvents, stream: true},
		{Method: "GET", Path: t + "/entities/{entity}/events", Access: Tenant, Role: control.RoleReader, handler: a.entityEvents},
		{Method: "GET", Path: t + "/events/{id}/ancestors", Access: Tenant, Role: control.RoleReader, handler: a.ancestors},
		{Method: "GET", Path: t + "/events/{id}/descendants", Access: Tenant, Role: control.RoleReader, handler: a.descendants},
		{Method: "GET", Path: t + "/events/{id}/correlation", Access: Tenant, Role: control.RoleReader, handler: a.correlation},
		{Method: "GET", Path: t + "/stats", Access: Tenant, Role: control.RoleReader, handler: a.stats},
		{Method: "POST", Path: t + "/verify", Access: Tenant, Role: control.RoleAdmin, handler: a.verify, stream: true, reads: true},
		{Method: "GET", Path: t + "/export", Access: Tenant, Role: control.RoleAdmin, handler: a.export, stream: true},
		{Method: "GET", Path: t + "/subscribe", Access: Tenant, Role: control.RoleReader, handler: a.subscribe, stream: true},
		{Method: "GET", Path: t + "/cursors", Access: Tenant, Role: control.RoleReader, handler: a.listCursors},
		{Method: "PUT", Path: t + "/cursors/{name}", Access: Tenant, Role: control.RoleWriter, Body: js, handler: a.defineCursor, control: true},
		{Method: "DELETE", Path: t + "/cursors/{name}", Access: Tenant, Role: control.RoleWriter, handler: a.deleteCursor, control: true},
		{Method: "GET", Path: t + "/cursors/{name}/events", Access: Tenant, Role: control.RoleReader, handler: a.pollCursor},
		{Method: "POST", Path: t + "/cursors/{name}/commit", Access: Tenant, Role: control.RoleWriter, Body: js, handler: a.commitCursor},
		{Method: "POST", Path: t + "/keys", Access: Tenant, Role: control.RoleAdmin, Body: js, handler: a.issueKey, control: true},
		{Method: "GET", Path: t + "/keys", Access: Tenant, Role: control.RoleAdmin, handler: a.listKeys},
		// Revoking a key is not charged (not control): each revocation
		// takes back a key whose issue was, so it cannot grow the control
		// plane by more than the issues did, and it must stay open when
		// the budget is spent, since a leaked writer key can spend it
		// (cursor churn) to keep the tenant's admin from revoking it.
		{Method: "DELETE", Path: t + "/keys/{id}", Access: Tenant, Role: control.RoleAdmin, handler: a.revokeKey},
		{Method: "PUT", Path: t + "/policy", Access: Tenant, Role: control.RoleAdmin, Body: "application/gzip", handler: a.pushPolicy, control: true},
		{Method: "GET", Path: t + "/policy", Access: Tenant, Role: control.RoleReader, handler: a.listPolicies},
		{Method: "POST", Path: t + "/policy/rollback", Access: Tenant, Role: control.RoleAdmin, Body: js, handler: a.rollbackPolicy, control: true},
		{Method: "GET", Path: t + "/policy/decisions", Access: Tenant, Role: control.RoleAdmin, handler: a.policyDecisions, leader: true},
		{Method: "POST", Path: t + "/plugins", Access: Tenant, Role: control.RoleAdmin, Body: js, handler: a.pushPlugin, control: true},
		{Method: "GET", Path: t + "/plugins", Access: Tenant, Role: control.RoleReader, handler: a.listPlugins},
		{Method: "GET", Path: t + "/plugins/{name}", Access: Tenant, Role: control.RoleReader, handler: a.pluginStatus},
		{Method: "POST", Path: t + "/plugins/{name}/swap", Access: Tenant, Role: control.RoleAdmin, Body: js, handler: a.swapPlugin, control: true},
		{Method: "POST", Path: t + "/plugins/{name}/reset", Access: Tenant, Role: control.RoleAdmin, handler: a.resetPlugin, leader: true, control: true},
		{Method: "DELETE", Path: t + "/plugins/{name}", Access: Tenant, Role: control.RoleAdmin, handler: a.deletePlugin, control: true},
		{Method: "GET", Path: t + "/projections/{plugin}/{entity}", Access: Tenant, Role: control.RoleReader, handler: a.projection},
		{Method: "GET", Path: t + "/workers", Access: Tenant, Role: control.RoleReader, handler: a.listWorkers, leader: true},
		{Method: "PUT", Path: t + "/workers/{name}", Access: Tenant, Role: control.RoleAdmin, Body: js, handler: a.startWorker, control: true},
		{Method: "GET", Path: t + "/workers/{name}", Access: Tenant, Role: control.RoleReader, handler: a.getWorker, leader: true},
		{Method: "DELETE", Path: t + "/workers/{name}", Access: Tenant, Role: control.RoleAdmin, handler: a.deleteWorker, control: true},
		{Method: "POST", Path: t + "/workers/{name}/stop", Access: Tenant, Role: control.RoleAdmin, handler: a.stopWorker, control: true},
		{Method: "POST", Path: t + "/workers/{name}/reset", Access: Tenant, Role: control.RoleAdmin, handler: a.resetWorker, control: true},

		{Method: "POST", Path: ad, Access: Operator, Body: js, handler: a.createTenant},
		{Method: "GET", Path: ad, Access: Operator, handler: a.listTenants},
		{Method: "GET", Path: ad + "/{tenant}", Access: Operator, handler: a.getTenant},
		{Method: "POST", Path: ad + "/{tenant}/suspend", Access: Operator, Body: js, handler: a.suspendTenant},
		{Method: "POST", Path: ad + "/{tenant}/resume", Access: Operator, handler: a.resumeTenant},
		{Method: "DELETE", Path: ad + "/{tenant}", Access: Operator, handler: a.deleteTenant},
		{Method: "PUT", Path: ad + "/{tenant}/quotas", Access: Operator, Body: js, handler: a.setQuotas},
		{Method: "PUT", Path: ad + "/{tenant}/settings", Access: Operator, Body: js, handler: a.setSettings},
		{Method: "POST", Path: ad + "/{tenant}/keys", Access: Operator, Body: js, handler: a.issueKey},
		{Method: "GET", Path: ad + "/{tenant}/keys", Access: Operator, handler: a.listKeys},
		{Method: "DELETE", Path: ad + "/{tenant}/keys/{id}", Access: Operator, handler: a.revokeKey},
		{Method: "POST", Path: ad + "/{tenant}/snapshot", Access: Operator, handler: a.snapshot, stream: true},
		{Method: "GET", Path: ad + "/{tenant}/digest", Access: Operator, handler: a.digest, stream: true},

		{Method: "GET", Path: "/v1/cluster", Access: Operator, handler: a.clusterStatus},
		{Method: "GET", Path: "/v1/cluster/digest", Access: Operator, handler: a.controlDigest, stream: true},
		{Method: "GET", Path: "/v1/cluster/applied", Access: Operator, handler: a.controlApplied},
		{Method: "POST", Path: "/v1/cluster/nodes", Access: Operator, Body: js, handler: a.clusterAddNode},
		{Method: "DELETE", Path: "/v1/cluster/nodes/{id}", Access: Operator, handler: a.clusterRemoveNode},
	}
}
