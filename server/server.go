package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy/opa"
	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/cluster"
	"github.com/batpak-go/batpak/server/console"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/follow"
	"github.com/batpak-go/batpak/server/hostedworker"
	"github.com/batpak-go/batpak/server/httpapi"
	"github.com/batpak-go/batpak/server/plugincompiler"
	"github.com/batpak-go/batpak/server/quota"
	"github.com/batpak-go/batpak/server/tenancy"
	"github.com/batpak-go/batpak/server/tenantplugin"
	"github.com/batpak-go/batpak/server/tenantpolicy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// MaxTrustedProxies is how many entries Config.TrustedProxies may have.
const MaxTrustedProxies = 1024

// Config configures a Server. Zero fields take the defaults of
// DefaultConfig (config.yaml's server: section documents each key).
type Config struct {
	Root                string // server.root: directory of everything the server keeps
	Listen              string // server.listen: host:port; default 127.0.0.1:7070
	TLSCert, TLSKey     string // server.tls_cert, server.tls_key: PEM files; both or neither
	AllowInsecureRemote bool   // server.allow_insecure_remote: plain HTTP on a non-loopback address
	OperatorToken       string // server.operator_token (env BATPAK_OPERATOR_TOKEN)
	// Cluster, when set, makes the server one node of a replicated
	// cluster (see ClusterConfig); nil: a single server.
	Cluster *ClusterConfig

	// MaxOpenTenants bounds the tenant stores open at once
	// (server.max_open_tenants: default 10000; range 1..1000000): the
	// registry's, and on a cluster node the node's own as well
	// (cluster.Config.MaxOpenStores).
	MaxOpenTenants int
	// MaxConnections bounds the client connections served at once (event
	// streams included). When all are taken, the connection idle longest
	// (kept alive between requests, or connected with nothing sent yet)
	// is closed to make room; with none idle, more wait in the listen
	// backlog until one ends.
	// server.max_connections: default 4096; range 1..1000000. Each costs a
	// file descriptor beside the open tenants' (one each).
	MaxConnections int
	// MaxConnectionsPerSource bounds the connections open at once from
	// one source: an IPv4 address, or an IPv6 /64 (one host is given a
	// /64), so that one client reconnecting fast cannot take every slot of
	// MaxConnections. A connection past it is refused as soon as it is
	// accepted, without taking a slot: over plain HTTP it is answered 429
	// TOO_MANY_CONNECTIONS (a problem document, Retry-After: 1) and
	// closed; over TLS it is only closed. Refusals are counted
	// (batpak_connections_refused_per_source_total).
	// server.max_connections_per_source: default 256; range 1..1000000;
	// negative: no bound (0 in config.yaml). Behind a proxy every client
	// shares the proxy's address: raise it to max_connections there, or
	// turn it off.
	MaxConnectionsPerSource int
	// AnonymousRequestsPerSecond bounds, per source (an IPv4 address, an
	// IPv6 /64), the requests no tenant is charged for: those without a
	// valid credential (none, a wrong, revoked or expired one, a JWT
	// naming a tenant the server does not hold), to routes that read
	// none (health, readiness, the OpenAPI document, public metrics, the
	// web console's pages and sign-in) and to paths no route has. Past
	// its bucket of AnonymousRequestsBurst such a request is refused with
	// 429 TOO_MANY_REQUESTS (Retry-After), held RateRefusalDelay first,
	// and counted (batpak_anonymous_requests_refused_total); requests
	// with a valid tenant credential are charged to the tenant's
	// requests_per_second instead, and the operator's to nothing.
	// server.anonymous_requests_per_second: default 1000; range
	// 1..1000000; negative: no bound (0 in config.yaml). Behind a proxy
	// every client shares the proxy's address unless TrustedProxies
	// names it.
	AnonymousRequestsPerSecond int
	// AnonymousRequestsBurst is that bucket's size
	// (server.anonymous_requests_burst): default twice the rate; range
	// 1..1000000.
	AnonymousRequestsBurst int
	// TrustedProxies are the reverse proxies and load balancers in front
	// of the server (server.trusted_proxies): IP addresses and CIDR
	// networks ("10.0.0.0/8", "192.0.2.7"), at most 1,024. A request
	// from one of them is taken to come from the client its
	// X-Forwarded-For names (read from the right, past the trusted
	// proxies: httpapi.TrustedProxies.Client): its source for
	// AnonymousRequestsPerSecond and the access log's remote (with the
	// proxy's address beside it). Their connections are not held to
	// MaxConnectionsPerSource (a proxy carries many clients'). Requests
	// from any other address are from that address, whatever they say.
	// A trusted proxy's X-Forwarded-Proto: https (a proxy that terminated
	// TLS) makes the console's cookie Secure and its answers carry
	// Strict-Transport-Security (httpapi.TrustedProxies.HTTPS).
	// Default: none.
	TrustedProxies []string
	// TenantIdleTimeout closes a tenant store unused this long
	// (server.tenant_idle_timeout: default 5m; ≥ 1s): the registry's, and
	// on a cluster node the node's own once nothing holds it
	// (cluster.Config.StoreIdleTimeout).
	TenantIdleTimeout time.Duration

	MaxBodyBytes int64 // server.max_body_bytes: default 32 MiB; range 1 KiB..1 GiB
	MaxJSONDepth int   // server.max_json_depth: default 512; range 1..4096

	ReadHeaderTimeout time.Duration // server.read_header_timeout: default 5s
	ReadTimeout       time.Duration // server.read_timeout: default 60s
	WriteTimeout      time.Duration // server.write_timeout: default 60s (a stream: each write)
	IdleTimeout       time.Duration // server.idle_timeout: default 120s
	ShutdownTimeout   time.Duration // server.shutdown_timeout: default 20s

	SSEHeartbeat    time.Duration // server.sse_heartbeat: default 15s
	SSEBufferEvents int           // server.sse_buffer_events: default 4096

	// RateRefusalDelay (server.rate_refusal_delay) holds a write refused
	// for a tenant's events or bytes rate this long before the 429 is
	// sent (it says Retry-After in whole seconds, at least 1, so a client
	// that obeys it loses nothing), so that a client flooding past its
	// rate gets at most one refusal per connection per delay and costs
	// the other tenants little CPU. Once held for half the delay, it
	// gives up its connection slot to a new client that needs one
	// (answered at once, the connection closed after it). Default 100ms;
	// range 0..1s, negative: none.
	RateRefusalDelay time.Duration

	MetricsPublic bool   // server.metrics_public: /metrics without the operator credential
	AccessLog     string // server.access_log: text (default), json or off

	// DisableConsole turns off the web console (server.console: false),
	// otherwise served under /console/ on the API's listener (see
	// server/console).
	DisableConsole bool

	JWT *auth.JWTConfig // server.jwt.*: nil turns JWTs off

	// Quotas are the defaults of every tenant (server.quotas.*).
	Quotas control.Quotas

	// PolicyDir is the platform policy (policy.dir) that gates every
	// tenant's writes; "" admits every valid write.
	PolicyDir string
	// PolicyTimeout bounds one policy evaluation (wall time, the input's
	// conversion included); an evaluation past it denies the write
	// (POLICY_DENIED, reason POLICY_ERROR). Default 1s; range 1ms..1m.
	// Evaluations run at most one per CPU at once, so the bound is about
	// the policy's own cost, but a loaded machine stretches wall time:
	// keep it well above the policy's typical evaluation.
	PolicyTimeout time.Duration

	// PolicyBundleMaxBytes bounds a tenant's uploaded policy bundle
	// (PUT /v1/tenants/{t}/policy, as uploaded): exactly this many bytes
	// are accepted, one more is refused (413). Default 4 MiB; range
	// 1 KiB..64 MiB. (server.policy_bundle_max_bytes)
	PolicyBundleMaxBytes int64
	// PolicyBundleMaxFiles bounds the entries of an uploaded bundle's
	// archive. Default 256; range 1..10000.
	PolicyBundleMaxFiles int
	// PolicyBundleMaxFileBytes bounds one file of an uploaded bundle
	// (uncompressed). Default 1 MiB; range 1 KiB..16 MiB.
	PolicyBundleMaxFileBytes int64
	// PolicyBundleMaxTotalBytes bounds the files of an uploaded bundle
	// together (uncompressed), so that a small archive cannot expand past
	// it: exactly this many bytes are accepted, one more is refused (400
	// naming server.policy_bundle_max_total_bytes). Default 16 MiB; range
	// 1 KiB..256 MiB.
	PolicyBundleMaxTotalBytes int64
	// PolicyMaxRevisions bounds the policy revisions each tenant keeps
	// for rollback: accepting one more drops the oldest (never the one
	// it replaces) and removes its bundle. Default 32; range 2..1000.
	// (server.policy_max_revisions)
	PolicyMaxRevisions int
	// PolicyBundleCheckTimeout bounds the checks of one uploaded bundle,
	// its Rego tests and its compilation together (each test is also
	// bounded by 5s): a bundle still checking then is refused (422 naming
	// server.policy_bundle_check_timeout). A tenant's uploads run one at
	// a time, so this is also the longest one upload holds the tenant's
	// next. Default 30s; range 1s..10m.
	PolicyBundleCheckTimeout time.Duration
	// PolicyChecks is how many tenant policy bundles are checked at once
	// (uploads, rollbacks and loads of stored revisions, all tenants
	// together); one tenant's take at most half of them (at least one),
	// so that its bundles slow to check never hold up another tenant's
	// upload. An upload that finds its tenant's previous change running,
	// or no slot it may take, for 20 s is answered 503 BUSY with
	// Retry-After, nothing changed. Each running check is a child
	// process of at most PolicyMemory. Default 2; range 1..64.
	// (server.policy_checks)
	PolicyChecks int
	// PolicyMemory bounds the memory of each child process that checks
	// and evaluates tenants' policy bundles (see
	// tenantpolicy.Options.Isolate): a child past it is killed, and the
	// write it was judging is denied (or the upload refused) with a
	// message naming server.policy_memory. It needs a binary whose main
	// calls tenantpolicy.RunChild (cmd/batpak does); in any other, tenants'
	// bundles are checked and evaluated in the server's process, bounded
	// only by their timeouts, and New logs a warning. Default 1 GiB;
	// range 64 MiB..64 GiB. (server.policy_memory)
	PolicyMemory int64
	// PolicyDecisionMaxBytes bounds what a decision log entry keeps of
	// each input field the deciding policy reads and of each reason's
	// message and context: exactly this many bytes of JSON are kept, a
	// longer one is replaced by a string noting its size (so a log entry
	// never holds a whole large payload). Default 4 KiB; range
	// 256 B..1 MiB. (server.policy_decision_max_bytes)
	PolicyDecisionMaxBytes int
	// PolicyDecisionLogSize is how many policy decisions (denials, and
	// the allowed writes a tenant's settings.decision_allow_sample picks)
	// each tenant's decision log keeps on disk under <root>/decisions
	// (GET /v1/tenants/{t}/policy/decisions; kept across restarts): a
	// query sees exactly the newest this many, within
	// PolicyDecisionLogBytes. Default 1000; range up to 100000; negative:
	// no log.
	PolicyDecisionLogSize int
	// PolicyDecisionLogBytes bounds each tenant's decision log on disk:
	// a query sees the newest decisions within this many bytes of JSON,
	// and the files take at most 5/4 of it. Default 4 MiB; range
	// 64 KiB..1 GiB. (server.policy_decision_log_bytes)
	PolicyDecisionLogBytes int64
	// PolicyDecisionPrincipalRefill paces what one principal (an API key,
	// or a JWT's subject) adds to its tenant's decision log: an eighth of
	// the log's entries and bytes at once, refilled over this long; past
	// it, its decisions are counted as suppressed, not recorded, so that
	// no writer can push the log's older entries (its own earlier denials
	// among them) out by provoking denials. Default 10m; negative: no
	// pacing. (server.policy_decision_principal_refill)
	PolicyDecisionPrincipalRefill time.Duration
	// PolicyDecisionQueue bounds the decisions waiting to be written to
	// the decision logs (one writer for all tenants, one tenant at most a
	// quarter of them; also at most 32 MiB): a write never waits for the
	// log's disk, and a decision
	// past the bound is dropped and counted
	// (batpak_policy_decision_log_dropped_total, the tenant's stats).
	// Default 4096; range 1..1048576. (server.policy_decision_queue)
	PolicyDecisionQueue int

	// Plugins are the ceilings of every tenant's plugin limits
	// (server.plugins.*; see tenantplugin.Limits for each default and
	// range): a tenant's quotas (control.Quotas.Plugin*, Max*) set its own
	// limits, never above these.
	Plugins tenantplugin.Limits
	// PluginStateCacheBytes bounds the projected states the server keeps
	// in memory for all tenants together (the projection endpoint's
	// cache; least recently used dropped first; each state counted with
	// its key and about 320 bytes of the cache's own), a tenant at most half of
	// it (its own least recently used dropped first). Default 64 MiB;
	// range 1 MiB..16 GiB. (server.plugin_state_cache_bytes)
	PluginStateCacheBytes int64
	// PluginLogLines is how many recent log lines and faults each
	// plugin's status keeps in memory. Default 100; range 1..10000.
	PluginLogLines int
	// PluginSource provides the handler plugins that hosted workers run.
	// nil (the default): the tenants' own uploaded plugins (Plugins), the
	// active version of the plugin the worker names. Tests and embedders
	// may give another source. See server/hostedworker.
	PluginSource hostedworker.PluginSource
	// PluginChecks is how many plugin uploads and swaps are checked and
	// compiled at once, all tenants together (a tenant's own changes run
	// one at a time): it bounds the memory compiling takes (about 23× a
	// module's size) without one tenant's slow upload holding every
	// other's. Default 2; range 1..64. (server.plugin_checks)
	PluginChecks int
	// PluginCallsRunning is how many plugin calls (projection folds,
	// hosted workers' handlers) run at once, all tenants together, a
	// tenant at most half: a call waits for its turn before its timeout
	// starts, so one tenant's busy plugins cannot make another's time out.
	// Default: the machine's processors, at least 2; range 1..1024.
	// (server.plugin_calls_running)
	PluginCallsRunning int
	// PluginCompile bounds compiling one uploaded or stored plugin module:
	// a child process (this binary again, see server/plugincompiler)
	// compiles it and is killed past the time or memory limit, and the
	// module is refused. Defaults 30 s and 1 GiB. It needs a binary whose
	// main calls plugincompiler.RunChild (cmd/batpak does); in any other,
	// modules compile in the server's process, unbounded, and New logs a
	// warning. (server.plugin_compile_timeout, server.plugin_compile_memory)
	PluginCompile plugincompiler.Limits
	// PluginCacheBytes bounds the compile cache (<root>/plugin-cache):
	// each distinct module a tenant uploads adds its compiled form (up to
	// about 40× its size), and a tenant can upload and delete modules
	// without end; past the bound the oldest compiled modules are removed
	// (they are compiled again, bounded, when next loaded). Default
	// 4 GiB; range 64 MiB..16 TiB. (server.plugin_cache_bytes)
	PluginCacheBytes int64
	// PluginCodeBytes bounds the server's memory its tenants' loaded
	// plugin modules' compiled code holds, all tenants together, a tenant
	// at most half (each module charged plugins.CodeEstimate before it is
	// compiled, then what it compiled to): an upload, swap or load past it is refused
	// (507 QUOTA_EXCEEDED naming the setting). Default 2 GiB; range
	// 64 MiB..1 TiB. (server.plugin_code_bytes)
	PluginCodeBytes int64
	// PluginIdleBytes bounds the memory of the plugin instances kept idle
	// between calls, all tenants together, a tenant at most half: past it
	// an instance is closed after its call instead of kept. Default
	// 1 GiB; range 16 MiB..1 TiB. (server.plugin_idle_bytes)
	PluginIdleBytes int64
	// WorkersMaxDefined bounds the hosted workers each tenant has defined
	// in any state, stopped ones included (their definitions and cursors
	// are kept): a start under a new name past it is refused, 409
	// CONFLICT naming server.workers_max_defined, until workers are
	// deleted (DELETE …/workers/{name}). Never below the tenant's
	// max_workers. Default 256; range 1..65536. See
	// hostedworker.Options.MaxDefined. (server.workers_max_defined)
	WorkersMaxDefined int
	// WorkersInFlight bounds the hosted workers, all tenants' together,
	// reading a batch of events and calling their plugin at once (each
	// up to 8 MiB of events and the plugin's max_output_bytes), a tenant
	// at most half, a turn that frees going to the waiting tenant holding
	// the fewest; the others wait their turn before reading. Default 8; range 1..1024. See
	// hostedworker.Options.InFlight. (server.workers_in_flight)
	WorkersInFlight int
	// WorkersMaxReactionDepth bounds chains of hosted workers' reactions:
	// a worker asked to react to an event already that many generations
	// of workers' reactions deep faults (kind "loop") and writes nothing
	// for it, so a worker reacting to its own reactions without end is
	// quarantined rather than filling its tenant's storage. Default 16;
	// range 1..1024. See hostedworker.Options.MaxReactionDepth.
	// (server.workers_max_reaction_depth)
	WorkersMaxReactionDepth int

	// Logger receives the server's own messages (default: text on Stderr);
	// Stderr receives the access log and the generated operator token
	// (default os.Stderr).
	Logger *slog.Logger
	Stderr io.Writer
}

// DefaultQuotas are the per-tenant defaults of config.yaml.
func DefaultQuotas() control.Quotas {
	return control.Quotas{
		StorageBytes: 10 << 30, IndexBytes: 1 << 30, EventsPerSecond: 20000, EventsBurst: 40000,
		BytesPerSecond: 64 << 20, BytesBurst: 128 << 20, RequestsPerSecond: 20000, RequestsBurst: 40000,
		MaxPayloadBytes: 1 << 20,
		MaxBatchEvents:  4096, MaxSubscriptions: 1100, MaxCursors: 100, MaxWorkers: 16,
		UploadBytesPerHour: 256 << 20, ControlChangesPerDay: 5000,
	}
}

// DefaultConfig is the configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		Root: "batpak-server", Listen: "127.0.0.1:7070",
		MaxOpenTenants: 10000, TenantIdleTimeout: 5 * time.Minute, MaxConnections: 4096,
		MaxConnectionsPerSource: 256, AnonymousRequestsPerSecond: 1000,
		MaxBodyBytes: 32 << 20, MaxJSONDepth: 512,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 60 * time.Second, WriteTimeout: 60 * time.Second,
		IdleTimeout: 120 * time.Second, ShutdownTimeout: 20 * time.Second,
		SSEHeartbeat: 15 * time.Second, SSEBufferEvents: 4096,
		PolicyTimeout: time.Second, RateRefusalDelay: 100 * time.Millisecond,
		AccessLog: "text", Quotas: DefaultQuotas(),
	}
}

// withDefaults fills zero fields and checks ranges.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	set := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if c.Root == "" {
		c.Root = d.Root
	}
	if c.WorkersMaxDefined < 0 || c.WorkersMaxDefined > hostedworker.MaxDefinedLimit {
		return c, fmt.Errorf("server: WorkersMaxDefined is %d, want 1..%d (0: the default %d)", c.WorkersMaxDefined, hostedworker.MaxDefinedLimit, hostedworker.DefaultMaxDefined)
	}
	if c.WorkersInFlight < 0 || c.WorkersInFlight > hostedworker.MaxInFlight {
		return c, fmt.Errorf("server.workers_in_flight (WorkersInFlight) is %d: want 1..%d (0: the default %d)", c.WorkersInFlight, hostedworker.MaxInFlight, hostedworker.DefaultInFlight)
	}
	if c.WorkersMaxReactionDepth < 0 || c.WorkersMaxReactionDepth > hostedworker.MaxReactionDepthLimit {
		return c, fmt.Errorf("server.workers_max_reaction_depth (WorkersMaxReactionDepth) is %d: want 1..%d (0: the default %d)", c.WorkersMaxReactionDepth, hostedworker.MaxReactionDepthLimit, hostedworker.DefaultMaxReactionDepth)
	}
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = d.MaxConnections
	}
	if c.MaxConnectionsPerSource == 0 {
		c.MaxConnectionsPerSource = d.MaxConnectionsPerSource
	}
	if c.AnonymousRequestsPerSecond == 0 {
		c.AnonymousRequestsPerSecond = d.AnonymousRequestsPerSecond
	}
	if c.AnonymousRequestsBurst == 0 && c.AnonymousRequestsPerSecond > 0 {
		c.AnonymousRequestsBurst = min(2*c.AnonymousRequestsPerSecond, 1_000_000)
	}
	if c.MaxOpenTenants == 0 {
		c.MaxOpenTenants = d.MaxOpenTenants
	}
	set(&c.TenantIdleTimeout, d.TenantIdleTimeout)
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.MaxJSONDepth == 0 {
		c.MaxJSONDepth = d.MaxJSONDepth
	}
	set(&c.ReadHeaderTimeout, d.ReadHeaderTimeout)
	set(&c.ReadTimeout, d.ReadTimeout)
	set(&c.WriteTimeout, d.WriteTimeout)
	set(&c.IdleTimeout, d.IdleTimeout)
	set(&c.ShutdownTimeout, d.ShutdownTimeout)
	set(&c.SSEHeartbeat, d.SSEHeartbeat)
	set(&c.PolicyTimeout, d.PolicyTimeout)
	set(&c.RateRefusalDelay, d.RateRefusalDelay)
	if c.SSEBufferEvents == 0 {
		c.SSEBufferEvents = d.SSEBufferEvents
	}
	if c.PluginStateCacheBytes == 0 {
		c.PluginStateCacheBytes = 64 << 20
	}
	if c.PluginChecks == 0 {
		c.PluginChecks = tenantplugin.DefaultChecks
	}
	if c.PluginCallsRunning == 0 {
		c.PluginCallsRunning = tenantplugin.DefaultRunning()
	}
	var err error
	if c.PluginCompile, err = c.PluginCompile.WithDefaults(); err != nil {
		return c, err
	}
	if c.PluginCacheBytes == 0 {
		c.PluginCacheBytes = tenantplugin.DefaultCacheMaxBytes
	}
	if c.PluginCacheBytes < 64<<20 || c.PluginCacheBytes > 16<<40 {
		return c, fmt.Errorf("plugin cache bytes = %d: want 64MiB..16TiB (server.plugin_cache_bytes)", c.PluginCacheBytes)
	}
	if c.PluginCodeBytes == 0 {
		c.PluginCodeBytes = tenantplugin.DefaultCodeBytes
	}
	if c.PluginCodeBytes < 64<<20 || c.PluginCodeBytes > 1<<40 {
		return c, fmt.Errorf("plugin code bytes = %d: want 64MiB..1TiB (server.plugin_code_bytes)", c.PluginCodeBytes)
	}
	if c.PluginIdleBytes == 0 {
		c.PluginIdleBytes = tenantplugin.DefaultIdleBytes
	}
	if c.PluginIdleBytes < 16<<20 || c.PluginIdleBytes > 1<<40 {
		return c, fmt.Errorf("plugin idle bytes = %d: want 16MiB..1TiB (server.plugin_idle_bytes)", c.PluginIdleBytes)
	}
	if c.PolicyMemory == 0 {
		c.PolicyMemory = tenantpolicy.DefaultMemoryBytes
	}
	if c.PolicyMemory < tenantpolicy.MinMemoryBytes || c.PolicyMemory > tenantpolicy.MaxMemoryBytes {
		return c, fmt.Errorf("policy memory = %d bytes: want 64MiB..64GiB (server.policy_memory)", c.PolicyMemory)
	}
	if c.Plugins, err = c.Plugins.WithDefaults(); err != nil {
		return c, err
	}
	if c.AccessLog == "" {
		c.AccessLog = d.AccessLog
	}
	if c.Quotas == (control.Quotas{}) {
		c.Quotas = d.Quotas
	} else if err := c.Quotas.Validate(); err != nil {
		return c, fmt.Errorf("server quotas: %w", err)
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(c.Stderr, nil))
	}
	switch {
	case c.MaxConnections < 1 || c.MaxConnections > 1_000_000:
		return c, fmt.Errorf("server.max_connections = %d: want 1..1000000", c.MaxConnections)
	case c.MaxConnectionsPerSource > 1_000_000:
		return c, fmt.Errorf("server.max_connections_per_source = %d: want 1..1000000 (0 in config.yaml, negative in server.Config: no bound)", c.MaxConnectionsPerSource)
	case c.AnonymousRequestsPerSecond > 1_000_000:
		return c, fmt.Errorf("server.anonymous_requests_per_second = %d: want 1..1000000 (0 in config.yaml, negative in server.Config: no bound)", c.AnonymousRequestsPerSecond)
	case c.AnonymousRequestsBurst < 0 || c.AnonymousRequestsBurst > 1_000_000:
		return c, fmt.Errorf("server.anonymous_requests_burst = %d: want 1..1000000", c.AnonymousRequestsBurst)
	case c.MaxOpenTenants < 1 || c.MaxOpenTenants > 1_000_000:
		return c, fmt.Errorf("server.max_open_tenants = %d: want 1..1000000", c.MaxOpenTenants)
	case c.TenantIdleTimeout < time.Second:
		return c, fmt.Errorf("server.tenant_idle_timeout = %v: want at least 1s", c.TenantIdleTimeout)
	case c.MaxBodyBytes < 1<<10 || c.MaxBodyBytes > 1<<30:
		return c, fmt.Errorf("server.max_body_bytes = %d: want 1KiB..1GiB", c.MaxBodyBytes)
	case c.MaxJSONDepth < 1 || c.MaxJSONDepth > core.MaxMaxJSONDepth:
		return c, fmt.Errorf("server.max_json_depth = %d: want 1..%d", c.MaxJSONDepth, core.MaxMaxJSONDepth)
	case c.PolicyTimeout < time.Millisecond || c.PolicyTimeout > time.Minute:
		return c, fmt.Errorf("policy timeout = %v: want 1ms..1m", c.PolicyTimeout)
	case c.RateRefusalDelay > time.Second:
		return c, fmt.Errorf("server.rate_refusal_delay = %v: want at most 1s (negative: none)", c.RateRefusalDelay)
	case c.PluginStateCacheBytes != 0 && (c.PluginStateCacheBytes < 1<<20 || c.PluginStateCacheBytes > 16<<30):
		return c, fmt.Errorf("server.plugin_state_cache_bytes = %d: want 1MiB..16GiB", c.PluginStateCacheBytes)
	case c.PluginChecks < 1 || c.PluginChecks > tenantplugin.MaxChecks:
		return c, fmt.Errorf("server.plugin_checks = %d: want 1..%d", c.PluginChecks, tenantplugin.MaxChecks)
	case c.PluginCallsRunning < 1 || c.PluginCallsRunning > tenantplugin.MaxRunning:
		return c, fmt.Errorf("server.plugin_calls_running = %d: want 1..%d", c.PluginCallsRunning, tenantplugin.MaxRunning)
	case c.SSEBufferEvents < 1:
		return c, fmt.Errorf("server.sse_buffer_events = %d: want at least 1", c.SSEBufferEvents)
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return c, errors.New("server.tls_cert and server.tls_key go together: give both or neither")
	case len(c.TrustedProxies) > MaxTrustedProxies:
		return c, fmt.Errorf("server.trusted_proxies has %d entries: want at most %d (name networks rather than addresses)", len(c.TrustedProxies), MaxTrustedProxies)
	}
	if _, err := httpapi.ParseTrustedProxies(c.TrustedProxies); err != nil {
		return c, fmt.Errorf("server.trusted_proxies: %w", err)
	}
	if c.OperatorToken != "" && !operatorRE.MatchString(c.OperatorToken) {
		return c, errors.New("the operator credential (server.operator_token, BATPAK_OPERATOR_TOKEN or server.operator_token_file) is not one: want bpko_ and 52 characters of a-z and 2-7, such as bpko_$(head -c 32 /dev/urandom | base32 | tr -d = | tr A-Z a-z) makes (or start a new root without one: its first start generates and prints one)")
	}
	switch c.AccessLog {
	case "text", "json", "off":
	default:
		return c, fmt.Errorf("server.access_log = %q: want text, json or off", c.AccessLog)
	}
	if c.TLSCert == "" && !c.AllowInsecureRemote && !isLoopback(c.Listen) {
		return c, fmt.Errorf("server.listen = %s is not a loopback address and no TLS is configured: set server.tls_cert and server.tls_key, or server.allow_insecure_remote: true", c.Listen)
	}
	return c, nil
}

var operatorRE = regexp.MustCompile(`^` + auth.OperatorPattern + `$`)

// isLoopback reports whether addr (host:port) listens on loopback only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server is a running batpak server's parts.
type Server struct {
	cfg     Config
	plane   *control.Plane
	tenants *tenancy.Registry
	api     *httpapi.API
	quotas  *quota.Manager // every tenant's buckets, shared by the API, workers and console
	// uploadQuotas is quotas for the plugin and policy managers' check charges
	// (made before quotas is).
	uploadQuotas atomic.Pointer[quota.Manager]
	http         *http.Server
	conns        *connLimiter // server.max_connections (idle ones yielding), _per_source
	gate         *opa.Gate
	// policies keeps the tenants' own policy bundles: every tenant
	// store's admission asks the platform policy, then the tenant's.
	policies *tenantpolicy.Manager
	// policiesReady is policies once set: a cluster node's stores may be
	// opened (and their admission built) before it is.
	policiesReady atomic.Pointer[tenantpolicy.Manager]
	// tenantsReady is tenants once set (the plane's change hook may run
	// before it is).
	tenantsReady atomic.Pointer[tenancy.Registry]
	// node is this server's cluster node; nil for a single server.
	node *clusterNode
	// plugins keeps the tenants' plugins; states is the projection cache
	// of every tenant store.
	plugins *tenantplugin.Manager
	states  *tenantplugin.StateCache
	follow  *follow.Set
	// workers runs the hosted workers (on a cluster node: while it leads).
	workers *hostedworker.Supervisor
	// effects applies control-plane changes another node made (cluster
	// only); leaderStop and leaderDone end the leadership watcher.
	effects    *effects
	blobs      *blobCollector      // removes unreferenced blobs (cluster only)
	replicas   *replicaChecker     // compares members' copies while leading (cluster only)
	health     *clusterHealthWatch // the leader's watch over the members' health
	leaderStop chan struct{}
	leaderDone chan struct{}
	// console is the web console (nil when disabled).
	console *console.Console

	mu       sync.Mutex
	ln       net.Listener
	closed   bool
	shutOnce sync.Once
	shutErr  error
	// Token is the operator credential generated at this start ("" when
	// one was configured or stored already).
	Token string
	// tokenUnshown: Token is still to be printed to Config.Stderr, which
	// Listen does once it has bound the address (or failed to: the
	// credential is recorded either way).
	tokenUnshown bool
}

// notAStore refuses a root that is a store's own directory (a LOCK file
// or "<id>.seg" segment files in it, as the core package documentation
// lays a store out: the CLI's --data-dir, say), which the server
// would fill with its own directories beside the store's files.
func notAStore(root string) error {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil // none yet, or MkdirAll says why
	}
	for _, e := range ents {
		if n := e.Name(); n == "LOCK" || strings.HasSuffix(n, ".seg") && !e.IsDir() {
			return fmt.Errorf("server: %s holds a batpak store (%s), not a server root: give the server a directory of its own (it keeps each tenant's store in tenants/<id>, and batpak import copies a store's events into a tenant)", root, n)
		}
	}
	return nil
}

// New opens the control plane, the tenant registry and the platform policy
// and builds the API. It does not listen yet (Serve does). On first start
// without a configured operator credential it generates one, stores its
// hash and prints it once on Config.Stderr.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := notAStore(cfg.Root); err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.Root, filepath.Join(cfg.Root, "tenants"), filepath.Join(cfg.Root, "backups")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	limits, err := tenantpolicy.Limits{MaxBundleBytes: cfg.PolicyBundleMaxBytes, MaxFiles: cfg.PolicyBundleMaxFiles,
		MaxFileBytes: cfg.PolicyBundleMaxFileBytes, MaxTotalBytes: cfg.PolicyBundleMaxTotalBytes,
		MaxRevisions: cfg.PolicyMaxRevisions}.WithDefaults()
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s := &Server{cfg: cfg}
	if cfg.PolicyDir != "" {
		g, err := opa.Load(ctx, cfg.PolicyDir, opa.Options{Timeout: cfg.PolicyTimeout})
		if err != nil {
			return nil, fmt.Errorf("policy.dir: %w", err)
		}
		s.gate = g
	}
	s.states = tenantplugin.NewStateCache(cfg.PluginStateCacheBytes)
	// The API's hook for control-plane changes another node made.
	var api atomic.Pointer[httpapi.API]
	var fx atomic.Pointer[effects]
	onChange := func(ch control.Change) {
		if a := api.Load(); a != nil {
			a.AccessChanged()
		}
		if e := fx.Load(); e != nil {
			e.note(ch)
		}
		if ch.Kind == "tenant.deleted" && s.node != nil {
			// The node's store of the tenant is dropped by the deleting
			// leader's DropStore; here the registry lets go of it (off
			// the plane's goroutine: Forget waits for leases to end).
			id := ch.TenantID()
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
				defer cancel()
				if t := s.tenantsReady.Load(); t != nil {
					_ = t.Forget(ctx, id)
				}
			}()
		}
	}
	if cfg.Cluster != nil {
		// Bundles and modules travel as raft entries (blobs): each must
		// fit in one.
		switch {
		case limits.MaxBundleBytes > cluster.DefaultMaxBytes:
			return nil, fmt.Errorf("cluster: server.policy_bundle_max_bytes is %d; a cluster node replicates a bundle as one raft entry of at most %d bytes", limits.MaxBundleBytes, cluster.DefaultMaxBytes)
		case cfg.Plugins.ModuleBytes > cluster.DefaultMaxBytes:
			return nil, fmt.Errorf("cluster: server.plugins.module_bytes is %d; a cluster node replicates a module as one raft entry of at most %d bytes", cfg.Plugins.ModuleBytes, cluster.DefaultMaxBytes)
		}
		if s.node, err = s.openClusterNode(*cfg.Cluster); err != nil {
			if strings.HasPrefix(err.Error(), "cluster: ") {
				return nil, err // raft's package names itself
			}
			return nil, fmt.Errorf("cluster: %w", err)
		}
		s.plane, err = control.Open(control.Options{Store: s.node.sys, Defaults: cfg.Quotas, OnChange: onChange})
		if err != nil {
			s.node.close()
			return nil, fmt.Errorf("control plane: %w", err)
		}
		s.node.plane.Store(s.plane)
	} else {
		s.plane, err = control.Open(control.Options{Dir: filepath.Join(cfg.Root, "system"), Defaults: cfg.Quotas})
		if err != nil {
			return nil, controlPlaneError(filepath.Join(cfg.Root, "system"), err)
		}
	}
	fail := func(err error) (*Server, error) {
		if s.tenants != nil {
			_ = s.tenants.Close(context.Background())
		}
		if s.plugins != nil {
			_ = s.plugins.Close(context.Background())
		}
		_ = s.plane.Close()
		if s.node != nil {
			_ = s.node.close()
		}
		return nil, err
	}
	if err := s.bootstrapOperator(ctx); err != nil {
		return fail(err)
	}
	var policyBlobs tenantpolicy.Blobs
	var pluginBlobs tenantplugin.Blobs
	if s.node != nil {
		policyBlobs, pluginBlobs = nodeBlobs{s.node.n}, nodeBlobs{s.node.n}
	}
	s.policies, err = tenantpolicy.Open(ctx, tenantpolicy.Options{
		Blobs: policyBlobs,
		Dir:   filepath.Join(cfg.Root, "policies"), Plane: s.plane, Limits: limits,
		Timeout: cfg.PolicyTimeout, Logger: cfg.Logger, DecisionLogSize: cfg.PolicyDecisionLogSize, CheckTimeout: cfg.PolicyBundleCheckTimeout, Checks: cfg.PolicyChecks,
		DecisionMaxBytes: cfg.PolicyDecisionMaxBytes, DecisionDir: filepath.Join(cfg.Root, "decisions"),
		DecisionLogBytes: cfg.PolicyDecisionLogBytes, DecisionQueue: cfg.PolicyDecisionQueue,
		DecisionPrincipalRefill: cfg.PolicyDecisionPrincipalRefill,
		Isolate:                 tenantpolicy.Available(), MemoryBytes: cfg.PolicyMemory,
		OnCheck: s.chargeCheck,
	})
	if err != nil {
		return fail(fmt.Errorf("tenant policies: %w", err))
	}
	s.policiesReady.Store(s.policies)
	if !tenantpolicy.Available() {
		cfg.Logger.Warn("tenants' policy bundles are checked and evaluated in the server's process, bounded only by their timeouts: this binary's main does not call tenantpolicy.RunChild")
	}
	var compiler func(context.Context, string, []byte, []byte) error
	var compilerID string
	if pc, err := plugincompiler.New(cfg.PluginCompile); err == nil {
		compiler, compilerID = pc.Compile, pc.ID()
	} else if errors.Is(err, plugincompiler.ErrUnavailable) {
		cfg.Logger.Warn("tenants' plugin modules compile in the server's process, with no time or memory bound: this binary's main does not call plugincompiler.RunChild")
	} else {
		return fail(fmt.Errorf("tenant plugins: %w", err))
	}
	s.plugins, err = tenantplugin.Open(ctx, tenantplugin.Options{
		Dir: filepath.Join(cfg.Root, "plugins"), CacheDir: filepath.Join(cfg.Root, "plugin-cache"), CacheMaxBytes: cfg.PluginCacheBytes,
		CodeBytes: cfg.PluginCodeBytes, IdleBytes: cfg.PluginIdleBytes, Compiler: compiler, CompilerID: compilerID, Plane: s.plane,
		Ceilings: cfg.Plugins, LogLines: cfg.PluginLogLines, Checks: cfg.PluginChecks, Running: cfg.PluginCallsRunning, Logger: cfg.Logger, States: s.states,
		Blobs: pluginBlobs, LocalResets: cfg.Cluster != nil && cfg.Cluster.SingleWriteEntries, Node: clusterNodeID(cfg),
		OnCheck: s.chargeCheck,
	})
	if err != nil {
		return fail(fmt.Errorf("tenant plugins: %w", err))
	}
	var opHash [32]byte
	if cfg.OperatorToken != "" {
		opHash = auth.HashToken(cfg.OperatorToken)
	}
	authn, err := auth.New(auth.Config{Plane: s.plane, JWT: cfg.JWT, OperatorHash: opHash, Logger: cfg.Logger})
	if err != nil {
		return fail(fmt.Errorf("auth: %w", err))
	}
	plane := s.plane
	s.tenants, err = tenancy.New(tenancy.Config{
		Root:        filepath.Join(cfg.Root, "tenants"),
		MaxOpen:     cfg.MaxOpenTenants,
		IdleTimeout: cfg.TenantIdleTimeout,
		StoreConfig: func(id string) core.Config { return s.storeConfig(id, s.policies.Admission(id, s.gate)) },
		Exists: func(id string) bool {
			_, ok := plane.Tenant(id)
			return ok
		},
		Logger: cfg.Logger,
		Provider: func() tenancy.Provider {
			if s.node == nil {
				return nil
			}
			return s.node
		}(),
	})
	if err != nil {
		return fail(fmt.Errorf("tenants: %w", err))
	}
	s.tenantsReady.Store(s.tenants)
	if s.node == nil {
		if err := s.removeLeftovers(ctx); err != nil {
			return fail(err)
		}
	}
	quotas := quota.New() // the API's writes and the workers' reactions share the tenants' buckets
	s.quotas = quotas
	s.uploadQuotas.Store(quotas)
	if s.node == nil {
		s.restoreBudgets(false)
	} else {
		// A cluster node does when it begins to lead, before it takes
		// requests as the leader (clusterNode.IsLeader).
		onLead := func(ctx context.Context) error {
			if err := s.plane.WaitApplied(ctx, s.node.sys.Usage().GlobalSequence); err != nil {
				return err
			}
			s.restoreBudgets(true)
			return nil
		}
		s.node.onLead.Store(&onLead)
	}
	source := cfg.PluginSource
	if source == nil {
		source = registrySource{s.plugins}
	}
	// A cluster node runs hosted workers only while it leads (standby
	// until then: see leadership).
	s.workers, err = hostedworker.New(hostedworker.Options{Plane: s.plane, Tenants: s.tenants, Source: source,
		Quotas: quotas, Logger: cfg.Logger, MaxDefined: cfg.WorkersMaxDefined, InFlight: cfg.WorkersInFlight,
		MaxReactionDepth: cfg.WorkersMaxReactionDepth, Standby: s.node != nil})
	if err != nil {
		return fail(fmt.Errorf("hosted workers: %w", err))
	}
	// A subscription finding no room to read cuts off the streams whose
	// clients stopped reading (the API is made below, before any stream).
	starved := func() {
		if s.api != nil {
			s.api.CutStalledReaders()
		}
	}
	s.follow, err = follow.NewSet(follow.Options{Encode: httpapi.EncodeEvent, MaxBacklogEvents: min(cfg.SSEBufferEvents, 1<<20), Starved: starved})
	if err != nil {
		return fail(fmt.Errorf("server.sse_buffer_events: %w", err))
	}
	var access *slog.Logger
	switch cfg.AccessLog {
	case "text":
		access = slog.New(slog.NewTextHandler(cfg.Stderr, nil))
	case "json":
		access = slog.New(slog.NewJSONHandler(cfg.Stderr, nil))
	}
	reg := prometheus.NewRegistry()
	// The process's own: goroutines, heap, GC, open files, resident memory.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	trusted, err := httpapi.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return fail(fmt.Errorf("server.trusted_proxies: %w", err))
	}
	s.conns = newConnLimiter(cfg.MaxConnections, cfg.MaxConnectionsPerSource, trusted)
	reg.MustRegister(s.conns.metrics()...)
	if s.gate != nil {
		registerPolicyMetrics(reg, s.gate)
	}
	reg.MustRegister(decisionLogMetrics{s.policies})
	reg.MustRegister(s.plugins.Metrics()...)
	reg.MustRegister(s.workers.Metrics()...)
	registerSandboxMetrics(reg, s.policies)
	if s.node != nil {
		s.blobs = newBlobCollector(s.plane, s.node, cfg.Logger, s.node.cfg.BlobGrace, s.node.cfg.BlobCollectEvery)
		reg.MustRegister(s.blobs.metrics()...)
		reg.MustRegister(clusterStoreMetrics{s.node.n})
		s.replicas = newReplicaChecker(replicaSource{s}, cfg.Logger, s.node.cfg.ReplicaCheckEvery, cfg.OperatorToken, s.node.memberTLS)
		s.node.replicas.Store(s.replicas)
		reg.MustRegister(s.replicas)
		s.health = newClusterHealthWatch(replicaSource{s}, cfg.Logger, s.node.cfg.HealthCheckEvery, cfg.OperatorToken, s.node.memberTLS)
		reg.MustRegister(s.health)
	}
	s.api = httpapi.New(httpapi.Options{
		Registry: reg,
		Plane:    s.plane, Auth: authn, Quotas: quotas, Tenants: s.tenants, YieldConn: s.conns.yield,
		Sources:        quota.NewSources(float64(cfg.AnonymousRequestsPerSecond), cfg.AnonymousRequestsBurst),
		TrustedProxies: trusted,
		BackupDir:      filepath.Join(cfg.Root, "backups"),
		MaxBodyBytes:   cfg.MaxBodyBytes, MaxJSONDepth: cfg.MaxJSONDepth, WriteTimeout: cfg.WriteTimeout,
		ReadTimeout:   cfg.ReadTimeout,
		MetricsPublic: cfg.MetricsPublic, AccessLog: access, Logger: cfg.Logger,
		SSEHeartbeat: cfg.SSEHeartbeat, SSEBufferEvents: cfg.SSEBufferEvents, Follow: s.follow,
		RateRefusalDelay: max(cfg.RateRefusalDelay, 0),
		Policies:         s.policies,
		Plugins:          s.plugins,
		Workers:          s.workers,
		Cluster: func() httpapi.Cluster {
			if s.node == nil {
				return nil
			}
			return s.node
		}(),
	})
	api.Store(s.api)
	handler := s.api.Handler()
	if !cfg.DisableConsole {
		if s.console, handler, err = s.mountConsole(authn, quotas, reg, trusted, handler); err != nil {
			return fail(err)
		}
	}
	s.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		// "OPTIONS *" goes to the API (a path no route has: charged to its
		// source and answered 404) rather than net/http's own 200.
		DisableGeneralOptionsHandler: true,
	}
	s.http.ConnState = s.conns.connState
	s.http.ConnContext = s.conns.connContext
	if s.node == nil {
		// Every worker recorded as running continues from its cursor.
		s.workers.Resume()
		return s, nil
	}
	// A cluster node: what other nodes change reaches this one's
	// policies, plugins and workers; it runs the workers while it leads.
	// Changes applied before this point are in what Open loaded.
	s.effects = newEffects(s)
	fx.Store(s.effects)
	go s.effects.run()
	for _, t := range s.plane.Tenants() {
		s.effects.note(control.Change{Kind: "tenant.sync", Entity: "tenant:" + t.ID})
	}
	go s.blobs.run()
	s.leaderStop, s.leaderDone = make(chan struct{}), make(chan struct{})
	go s.leadership(s.leaderStop, s.leaderDone)
	return s, nil
}

// mountConsole makes the web console and serves it under /console/ beside
// api. Its pages get the API's middleware (request id, access log,
// metrics); its data requests are API requests and get it there.
func (s *Server) mountConsole(authn *auth.Authenticator, quotas *quota.Manager, reg *prometheus.Registry, trusted httpapi.TrustedProxies, api http.Handler) (*console.Console, http.Handler, error) {
	opts := console.Options{Auth: authn, API: api, Plane: s.plane, Tenants: s.tenants,
		Policies: s.policies, Plugins: s.plugins, Quotas: quotas, ChargeRequest: s.api.ChargeRequest, ChargeSource: s.api.ChargeSource, NoteCaller: s.api.NoteCaller, HTTPS: trusted.HTTPS, Metrics: reg,
		Secure: s.cfg.TLSCert != "", Cluster: s.node != nil, LeaderTLS: s.memberTLS(), MaxJSONDepth: s.cfg.MaxJSONDepth, WriteTimeout: s.cfg.WriteTimeout, Logger: s.cfg.Logger}
	if s.node != nil {
		opts.NodeID, opts.MemberURL = s.node.cfg.NodeID, s.node.memberURL
	}
	c, err := console.New(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("console: %w", err)
	}
	pages := s.api.Wrap("console", c)
	// Its data requests are the API's once the console passes them on;
	// those it answers itself (no session, a path the session does not
	// reach, a relay to the member holding the session) are logged here.
	data := s.api.WrapPassing("console api", c)
	// Not a ServeMux: the API sees every other path exactly as sent (a
	// mux would clean and redirect some first).
	return c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case strings.HasPrefix(p, console.Prefix+"/api/"):
			data.ServeHTTP(w, r)
		case p == console.Prefix || strings.HasPrefix(p, console.Prefix+"/"):
			pages.ServeHTTP(w, r)
		default:
			api.ServeHTTP(w, r)
		}
	}), nil
}

// storeConfig is a tenant store's configuration (see the package doc).
func (s *Server) storeConfig(id string, admission core.Admission) core.Config {
	durable := true
	if t, ok := s.plane.Tenant(id); ok && t.Settings.Sync == control.SyncBuffered {
		durable = false
	}
	c := tenancy.StoreConfig("", durable)
	c.Admission = admission
	c.ProjectionCache = s.states.Tenant(id)
	c.SingleAppendMaxBytes = int(min(s.cfg.MaxBodyBytes, 64<<20))
	c.MaxJSONDepth = s.cfg.MaxJSONDepth
	c.Logger = s.cfg.Logger
	return c
}

// restoreBudgets charges every tenant's daily and hourly budgets with
// what the control plane recorded it spent in the last day
// (quota.Manager.Restore): a restart, or a new cluster leader, does not
// hand a tenant a fresh budget.
//
// With every false only tenants with a record are restored (a new
// Manager's other buckets are full anyway); with every true all are, so
// that a node leading again drops what it charged in an earlier term
// (a tenant deleted and created again elsewhere meanwhile starts afresh).
func (s *Server) restoreBudgets(every bool) {
	since := time.Now().Add(-control.SpendWindow)
	for _, t := range s.plane.Tenants() {
		if spent := s.plane.Spending(t.ID, since); every || len(spent) > 0 {
			s.quotas.Restore(t.ID, s.plane.Effective(t.ID), spent)
		}
	}
}

// orphanedDir (under the root) holds tenant directories the control
// plane has no record of, moved there at start (see removeLeftovers).
const orphanedDir = "orphaned"

// removeLeftovers deletes the store directories of tenants the control
// plane does not hold: a deletion recorded in the control plane whose
// data removal a crash (or a failure) cut short. The deletion was
// acknowledged, so the data goes; no request could reach it meanwhile
// (a tenant the plane does not hold is refused before its store opens).
// A directory of a tenant with no record at all is moved to orphanedDir
// instead.
func (s *Server) removeLeftovers(ctx context.Context) error {
	dir := filepath.Join(s.cfg.Root, "tenants")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("tenants: %w", err)
	}
	for _, e := range ents {
		id := e.Name()
		if !e.IsDir() || tenancy.ValidID(id) != nil {
			continue // trash is the registry's; anything else is not ours
		}
		if _, ok := s.plane.Tenant(id); ok {
			continue
		}
		// A tenant the control plane never heard of (its records lost to
		// a damaged system store, say) is moved aside, not removed: only
		// a recorded deletion removes data.
		if hist, err := s.plane.History(control.TenantEntity(id)); err == nil && len(hist) == 0 {
			dst := filepath.Join(s.cfg.Root, orphanedDir, fmt.Sprintf("%s.%d", id, time.Now().UnixNano()))
			if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
				return fmt.Errorf("tenants: %w", err)
			}
			if err := os.Rename(filepath.Join(dir, id), dst); err != nil {
				return fmt.Errorf("tenants: moving aside the data of a tenant the control plane has no record of: %w", err)
			}
			s.cfg.Logger.Warn("moved aside the data of a tenant the control plane has no record of; look at it, then remove it or restore the tenant", "tenant", id, "to", dst)
			continue
		}
		s.cfg.Logger.Warn("removing the data of a deleted tenant that a crash left behind", "tenant", id)
		if err := s.tenants.Remove(ctx, id); err != nil {
			return fmt.Errorf("tenants: removing a deleted tenant's leftover data: %w", err)
		}
	}
	return nil
}

// bootstrapOperator makes sure an operator credential exists (see the
// package doc).
func (s *Server) bootstrapOperator(ctx context.Context) error {
	if s.cfg.OperatorToken != "" {
		return nil // auth compares the configured token's hash
	}
	if _, ok := s.plane.OperatorHash(); ok {
		return nil
	}
	token, h, err := auth.NewOperatorToken()
	if err != nil {
		return err
	}
	if err := s.plane.SetOperatorHash(ctx, h); err != nil {
		return err
	}
	s.Token, s.tokenUnshown = token, true
	return nil
}

// showToken prints the operator credential generated at this start, once;
// failed says the server could not listen (the credential is recorded, so
// the next start will not show one). Caller holds s.mu.
func (s *Server) showToken(failed bool) {
	if !s.tokenUnshown {
		return
	}
	s.tokenUnshown = false
	note := ""
	if failed {
		note = " (the server could not listen, see below, but the credential is recorded: keep it for the next start)"
	}
	fmt.Fprintf(s.cfg.Stderr, "batpak serve: generated the operator credential; it is shown only this once%s:\n\n    %s\n\n"+
		"Use it as \"Authorization: Bearer <token>\" on /v1/admin/… (set server.operator_token or BATPAK_OPERATOR_TOKEN to choose your own).\n", note, s.Token)
}

// API is the server's HTTP API (for tests and embedding).
func (s *Server) API() *httpapi.API { return s.api }

// Follow is the server's event-stream fan-out (its Stats count encodes
// and subscribers).
func (s *Server) Follow() *follow.Set { return s.follow }

// Plugins is the server's tenant plugin manager (for hosting a tenant's
// handler plugins: Plugins().Plugin).
func (s *Server) Plugins() *tenantplugin.Manager { return s.plugins }

// Workers is the server's hosted-worker supervisor.
func (s *Server) Workers() *hostedworker.Supervisor { return s.workers }

// Plane is the server's control plane.
func (s *Server) Plane() *control.Plane { return s.plane }

// PluginsLoaded waits until the tenants' plugins the server found when it
// started have been loaded (or their loads tried: until then a projection
// answers 503 BUSY, see tenantplugin.ErrLoading), or ctx ends (its error).
func (s *Server) PluginsLoaded(ctx context.Context) error {
	if s.plugins == nil {
		return nil
	}
	return s.plugins.WaitStarted(ctx)
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Listen binds the configured address; Serve calls it when it has not
// been called. Addr is known afterwards.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return nil
	}
	err := s.listen()
	s.showToken(err != nil)
	return err
}

// listen binds and wraps the listener as Listen describes; caller holds
// s.mu.
func (s *Server) listen() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	// The rule was checked on the configured address; check what was
	// bound too, so a name like "localhost" that resolves elsewhere
	// cannot open plain HTTP to the network.
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && s.cfg.TLSCert == "" && !s.cfg.AllowInsecureRemote && !tcp.IP.IsLoopback() {
		ln.Close()
		return fmt.Errorf("server.listen = %s bound %s, not a loopback address, and no TLS is configured: set server.tls_cert and server.tls_key, or server.allow_insecure_remote: true", s.cfg.Listen, tcp.IP)
	}
	if s.node != nil {
		// The node names this address to clients while it leads (unless
		// cluster.url says otherwise), so it starts once it is known.
		if tcp, ok := ln.Addr().(*net.TCPAddr); ok && s.node.url == "" && tcp.IP.IsUnspecified() {
			// http://[::]:7070 would send every client a follower
			// redirects, credential and all, to a port on its own
			// machine.
			ln.Close()
			return fmt.Errorf("server.listen = %s binds every interface, so it names no address clients can reach this cluster node at: set cluster.url (--cluster-url) to its API URL, e.g. https://node1.example:7070", s.cfg.Listen)
		}
		if s.node.url == "" {
			scheme := "http"
			if s.cfg.TLSCert != "" {
				scheme = "https"
			}
			s.node.url = scheme + "://" + ln.Addr().String()
		}
		s.node.running.Store(true)
		go s.node.run(func(msg string, args ...any) { s.cfg.Logger.Warn(msg, args...) })
		// Once the node's URL is known: it says whether to send the
		// credential to a plain-http member.
		s.replicas.start()
		s.health.start()
	}
	ln = s.conns.wrap(ln, s.cfg.TLSCert == "")
	if s.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("server.tls_cert/tls_key: %w", err)
		}
		// HTTP/1.1 only: one request at a time per connection, so
		// server.max_connections bounds the requests in flight (HTTP/2
		// would multiply it by its concurrent streams).
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	}
	s.ln = ln
	return nil
}

// Addr is the address the server listens on (after Listen).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve answers requests until ctx ends, then shuts down gracefully
// (within Config.ShutdownTimeout) and returns. It returns nil after a
// clean shutdown; on a cluster node started with cluster.join, the join's
// refusal of this node's operator credential (401, 403) when the member
// asked answers so, after shutting down.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		_ = s.closeStores(context.Background())
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()
	var refused chan error // a cluster join refused for good (nil: none can be)
	if s.node != nil {
		refused = s.node.joinRefused
	}
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return s.waitShutdown()
		}
		_ = s.Shutdown(context.Background())
		return err
	case err := <-refused:
		_ = s.Shutdown(context.Background())
		return err
	case <-ctx.Done():
		return s.Shutdown(context.Background())
	}
}

func (s *Server) waitShutdown() error {
	return s.Shutdown(context.Background())
}

// freshGrace is how long a shutdown lets a connection that has sent
// nothing yet start its request before closing it.
const freshGrace = 250 * time.Millisecond

// Shutdown stops the server gracefully: not ready, streams ended with
// their resumable position, no new connections, in-flight requests
// finished, stores and the control plane closed. It waits at most
// Config.ShutdownTimeout (or until ctx ends), then closes what is left.
// Safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
		defer cancel()
		drained := make(chan struct{})
		go func() {
			// Streams end with "event: shutdown" and their position.
			s.follow.Close()
			s.api.Drain()
			close(drained)
		}()
		select {
		case <-drained:
		case <-ctx.Done():
		}
		// The listener closes first (inside Shutdown); a connection that
		// has still sent nothing a moment later is a client's spare one.
		stopFresh := time.AfterFunc(freshGrace, s.conns.closeFresh)
		defer stopFresh.Stop()
		err := s.http.Shutdown(ctx)
		if err != nil {
			_ = s.http.Close()
		}
		s.shutErr = errors.Join(err, s.closeStores(ctx))
	})
	return s.shutErr
}

func (s *Server) closeStores(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.console != nil {
		s.console.Close() // its sampler holds leases now and then
	}
	if s.leaderStop != nil {
		close(s.leaderStop)
		<-s.leaderDone
	}
	if s.effects != nil {
		s.effects.close()
	}
	if s.blobs != nil {
		s.blobs.close()
	}
	if s.replicas != nil {
		s.replicas.close()
	}
	if s.health != nil {
		s.health.close()
	}
	if s.workers != nil {
		// Workers hold leases: they stop (after the batch in hand) before
		// the stores close.
		err = s.workers.Close(ctx)
	}
	if s.tenants != nil {
		err = errors.Join(err, s.tenants.Close(ctx))
	}
	if s.plugins != nil {
		err = errors.Join(err, s.plugins.Close(ctx))
	}
	if s.policies != nil {
		s.policies.Close()
	}
	err = errors.Join(err, s.plane.Close())
	if s.node != nil {
		err = errors.Join(err, s.node.close())
	}
	return err
}

// registerPolicyMetrics exposes the platform policy's decision counters.
func registerPolicyMetrics(reg *prometheus.Registry, g *opa.Gate) {
	counter := func(name, help string, v func(opa.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v(g.Stats())) })
	}
	reg.MustRegister(
		counter("batpak_policy_decisions_total", "Platform policy decisions (every write item judged).",
			func(s opa.Stats) uint64 { return s.Decisions }),
		counter("batpak_policy_cache_hits_total", "Platform policy decisions answered from the decision cache.",
			func(s opa.Stats) uint64 { return s.CacheHits }),
		counter("batpak_policy_decision_denials_total", "Platform policy decisions that refused (errors included).",
			func(s opa.Stats) uint64 { return s.Denials }),
		counter("batpak_policy_errors_total", "Platform policy decisions that failed to evaluate.",
			func(s opa.Stats) uint64 { return s.Errors }),
	)
}

// registerSandboxMetrics exposes the policy sandbox's counters (tenants'
// bundles checked and evaluated in child processes).
func registerSandboxMetrics(reg *prometheus.Registry, m *tenantpolicy.Manager) {
	counter := func(name, help string, v func(tenantpolicy.SandboxStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v(m.SandboxStats())) })
	}
	gauge := func(name, help string, v func() int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	reg.MustRegister(
		gauge("batpak_policy_evaluations_running", "Tenant policy evaluations running now, both layers (bounded by the policy evaluation slots, GOMAXPROCS).",
			func() int { running, _ := m.Evaluations(); return running }),
		gauge("batpak_policy_evaluations_waiting", "Tenant policy evaluations waiting for a slot.",
			func() int { _, waiting := m.Evaluations(); return waiting }),
		counter("batpak_policy_sandbox_started_total", "Policy sandbox child processes started (tenants' bundles are checked and evaluated in them).",
			func(s tenantpolicy.SandboxStats) uint64 { return s.Started }),
		counter("batpak_policy_sandbox_killed_total", "Policy sandbox children killed: past the evaluation or check timeout, past server.policy_memory, or failed.",
			func(s tenantpolicy.SandboxStats) uint64 { return s.Killed }),
		counter("batpak_policy_sandbox_requests_total", "Requests sent to policy sandbox children (checks, loads, decisions; up to 16 batch items in one).",
			func(s tenantpolicy.SandboxStats) uint64 { return s.Requests }),
	)
}

// decisionLogMetrics exports the tenant policy decision log's counts:
// by layer and result only (a server holds thousands of tenants; the
// per-tenant counts are in each tenant's stats).
type decisionLogMetrics struct{ m *tenantpolicy.Manager }

var (
	decisionsLoggedDesc = prometheus.NewDesc("batpak_policy_decisions_logged_total",
		"Policy decisions queued for the tenants' decision logs, by layer (platform, tenant) and result (denied, allowed: sampled).",
		[]string{"layer", "result"}, nil)
	decisionsDroppedDesc = prometheus.NewDesc("batpak_policy_decision_log_dropped_total",
		"Policy decisions not recorded because the decision log's queue was full (server.policy_decision_queue).", nil, nil)
	decisionWriteErrorsDesc = prometheus.NewDesc("batpak_policy_decision_log_write_errors_total",
		"Policy decisions queued but not written to their decision log (an I/O error, logged).", nil, nil)
)

// Describe implements prometheus.Collector.
func (decisionLogMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- decisionsLoggedDesc
	ch <- decisionsDroppedDesc
	ch <- decisionWriteErrorsDesc
}

// Collect implements prometheus.Collector.
func (d decisionLogMetrics) Collect(ch chan<- prometheus.Metric) {
	st := d.m.DecisionStats()
	for k, v := range st.Recorded {
		ch <- prometheus.MustNewConstMetric(decisionsLoggedDesc, prometheus.CounterValue, float64(v), k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(decisionsDroppedDesc, prometheus.CounterValue, float64(st.Dropped))
	ch <- prometheus.MustNewConstMetric(decisionWriteErrorsDesc, prometheus.CounterValue, float64(st.WriteErrors))
}

// clusterNodeID is this server's cluster node id, "" on a single server.
func clusterNodeID(cfg Config) string {
	if cfg.Cluster == nil {
		return ""
	}
	return cfg.Cluster.NodeID
}

// memberTLS is the client configuration for other members' https APIs
// (cluster.api_ca); nil outside a cluster or with the system's roots.
func (s *Server) memberTLS() *tls.Config {
	if s.node == nil {
		return nil
	}
	return s.node.memberTLS
}

// controlPlaneError is the error of a server whose control plane (the
// store in dir) would not open. A damaged one keeps the server down, as
// it must: serving from part of it could bring a revoked key or a deleted
// tenant back. The error then says how to recover.
func controlPlaneError(dir string, err error) error {
	if !errors.Is(err, core.ErrCorrupt) && !errors.Is(err, core.ErrLogTruncated) && !errors.Is(err, core.ErrChainBroken) {
		return fmt.Errorf("control plane: %w", err)
	}
	return fmt.Errorf("control plane: %w. "+
		"The server's own store (%s: tenants, keys, quotas, policy and plugin revisions) is damaged, and the server does not start without all of it: serving from part of it could bring back a revoked key or a deleted tenant. "+
		"Restore that directory from a backup (batpak snapshot), or rescue what is readable: "+
		"batpak export --salvage --data-dir %s --out system.ndjson; move %s aside; batpak --data-dir %s import system.ndjson. "+
		"Then check every tenant's keys (batpak key list) and revoke again any whose revocation the damage took", err, dir, dir, dir, dir)
}

// CompileCharge is what an upload's check that held its slot for held
// costs the tenant's upload_bytes_per_hour besides the upload's bytes —
// a plugin module's compile, and a policy bundle's tests and compilation
// (a push, or a rollback to a revision no longer compiled): 4 MiB a
// second past the first (a Go guest's 1.6 s: 2.4 MiB; a module refused
// at the 30 s compile timeout, or a bundle whose tests run to the 30 s
// policy_bundle_check_timeout: 116 MiB or more, so the default 256 MiB
// an hour pays for about two such refusals, not a hundred).
func CompileCharge(held time.Duration) int {
	over := held - time.Second
	if over <= 0 {
		return 0
	}
	return int(over.Seconds() * (4 << 20))
}

// chargeCheck charges the tenant's upload_bytes_per_hour for an upload's
// check that held a check slot for held (CompileCharge): the plugin and
// the policy managers' OnCheck.
func (s *Server) chargeCheck(tenant string, held time.Duration) {
	if q := s.uploadQuotas.Load(); q != nil {
		q.Tenant(tenant, s.plane.Effective(tenant)).ChargeUpload(CompileCharge(held))
	}
}
