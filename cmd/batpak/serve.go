package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/control"
)

// serverSetting is one server.* configuration key: config-file key, the
// serve command's flag ("" for config and environment only), kind and
// default (config.yaml's server: section documents each).
type serverSetting struct {
	key  string
	flag string
	kind valueKind
	def  any
	help string
	set  func(t *serverTarget, v settingValue) // puts the parsed value in place
}

// serverTarget is what the server settings fill.
type serverTarget struct {
	cfg       *server.Config
	jwt       *auth.JWTConfig
	q         *control.Quotas
	cl        *server.ClusterConfig
	clusterOn bool
	// operatorTokenFile: server.operator_token_file, read once every
	// setting is parsed (see serverConfig).
	operatorTokenFile string
}

// settingValue is one setting's parsed value, in the field its kind uses.
type settingValue struct {
	str  string
	n    int64
	d    time.Duration
	b    bool
	list []string
}

var serverSettings = []serverSetting{
	{"server.root", "root", kindPath, "batpak-server", "directory of the control plane, tenant stores and backups", func(t *serverTarget, v settingValue) { t.cfg.Root = v.str }},
	{"server.listen", "listen", kindText, "127.0.0.1:7070", "host:port to listen on (non-loopback needs TLS or --allow-insecure-remote)", func(t *serverTarget, v settingValue) { t.cfg.Listen = v.str }},
	{"server.tls_cert", "tls-cert", kindOptionalPath, "", "TLS certificate (PEM); with --tls-key", func(t *serverTarget, v settingValue) { t.cfg.TLSCert = v.str }},
	{"server.tls_key", "tls-key", kindOptionalPath, "", "TLS private key (PEM); with --tls-cert", func(t *serverTarget, v settingValue) { t.cfg.TLSKey = v.str }},
	{"server.allow_insecure_remote", "allow-insecure-remote", kindBool, false, "allow plain HTTP on a non-loopback address", func(t *serverTarget, v settingValue) { t.cfg.AllowInsecureRemote = v.b }},
	{"server.operator_token", "", kindText, "", "operator credential (also BATPAK_OPERATOR_TOKEN)", func(t *serverTarget, v settingValue) { t.cfg.OperatorToken = v.str }},
	{"server.operator_token_file", "", kindOptionalPath, "", "file holding the operator credential (its first line; at most 64 KiB); instead of server.operator_token", func(t *serverTarget, v settingValue) { t.operatorTokenFile = v.str }},
	{"server.max_connections", "max-connections", kindCount, 4096, "client connections served at once (streams included); 1..1000000", func(t *serverTarget, v settingValue) { t.cfg.MaxConnections = int(v.n) }},
	{"server.max_connections_per_source", "max-connections-per-source", kindCount, 256, "client connections open at once from one IPv4 address or IPv6 /64 (behind a proxy: raise or 0); 0..1000000, 0: no bound", func(t *serverTarget, v settingValue) {
		t.cfg.MaxConnectionsPerSource = int(v.n)
		if v.n == 0 {
			t.cfg.MaxConnectionsPerSource = -1 // 0 in the config: no bound (0 in server.Config is the default)
		}
	}},
	{"server.anonymous_requests_per_second", "anonymous-requests-per-second", kindCount, 1000, "requests a second from one IPv4 address or IPv6 /64 that no tenant is charged for (no valid credential, health, console pages, unknown paths); 0..1000000, 0: no bound", func(t *serverTarget, v settingValue) {
		t.cfg.AnonymousRequestsPerSecond = int(v.n)
		if v.n == 0 {
			t.cfg.AnonymousRequestsPerSecond = -1 // 0 in the config: no bound (0 in server.Config is the default)
		}
	}},
	{"server.anonymous_requests_burst", "anonymous-requests-burst", kindCount, 0, "bucket size of anonymous_requests_per_second; 0..1000000, 0: twice the rate", func(t *serverTarget, v settingValue) { t.cfg.AnonymousRequestsBurst = int(v.n) }},
	{"server.trusted_proxies", "trusted-proxies", kindList, "", "reverse proxies and load balancers in front of the server (IP addresses, CIDR networks; comma-separated): their X-Forwarded-For names the client for the per-source bounds and the access log, and their connections are not held to max_connections_per_source; empty: none", func(t *serverTarget, v settingValue) { t.cfg.TrustedProxies = v.list }},
	{"server.max_open_tenants", "max-open-tenants", kindCount, 10000, "tenant stores open at once (LRU beyond); 1..1000000", func(t *serverTarget, v settingValue) { t.cfg.MaxOpenTenants = int(v.n) }},
	{"server.tenant_idle_timeout", "tenant-idle-timeout", kindDuration, "5m", "close a tenant store idle this long; ≥ 1s", func(t *serverTarget, v settingValue) { t.cfg.TenantIdleTimeout = v.d }},
	{"server.max_body_bytes", "max-body-bytes", kindSize, "32MiB", "largest request body; 1KiB..1GiB", func(t *serverTarget, v settingValue) { t.cfg.MaxBodyBytes = v.n }},
	{"server.max_json_depth", "max-json-depth", kindCount, 512, "deepest JSON nesting of a payload; 1..4096", func(t *serverTarget, v settingValue) { t.cfg.MaxJSONDepth = int(v.n) }},
	{"server.read_header_timeout", "read-header-timeout", kindDuration, "5s", "time to read request headers", func(t *serverTarget, v settingValue) { t.cfg.ReadHeaderTimeout = v.d }},
	{"server.read_timeout", "read-timeout", kindDuration, "60s", "time to read a whole request", func(t *serverTarget, v settingValue) { t.cfg.ReadTimeout = v.d }},
	{"server.write_timeout", "write-timeout", kindDuration, "60s", "time to write a response (streams: each write)", func(t *serverTarget, v settingValue) { t.cfg.WriteTimeout = v.d }},
	{"server.idle_timeout", "idle-timeout", kindDuration, "120s", "keep-alive connection idle time", func(t *serverTarget, v settingValue) { t.cfg.IdleTimeout = v.d }},
	{"server.shutdown_timeout", "shutdown-timeout", kindDuration, "20s", "graceful shutdown bound", func(t *serverTarget, v settingValue) { t.cfg.ShutdownTimeout = v.d }},
	{"server.sse_heartbeat", "sse-heartbeat", kindDuration, "15s", "heartbeat comment interval on event streams", func(t *serverTarget, v settingValue) { t.cfg.SSEHeartbeat = v.d }},
	{"server.sse_buffer_events", "sse-buffer-events", kindCount, 4096, "a subscriber's unsent backlog bound (events) before cutoff", func(t *serverTarget, v settingValue) { t.cfg.SSEBufferEvents = int(v.n) }},
	{"server.rate_refusal_delay", "rate-refusal-delay", kindDuration, "100ms", "hold a write refused for a tenant's rate this long before the 429; 0..1s, 0: none", func(t *serverTarget, v settingValue) {
		t.cfg.RateRefusalDelay = v.d
		if v.d == 0 {
			t.cfg.RateRefusalDelay = -1 // 0 in the config: none (0 in server.Config is the default)
		}
	}},
	{"server.policy_bundle_max_bytes", "", kindSize, "4MiB", "largest tenant policy bundle upload (tar.gz); 1KiB..64MiB", func(t *serverTarget, v settingValue) { t.cfg.PolicyBundleMaxBytes = v.n }},
	{"server.policy_bundle_max_files", "", kindCount, 256, "most entries in a tenant policy bundle; 1..10000", func(t *serverTarget, v settingValue) { t.cfg.PolicyBundleMaxFiles = int(v.n) }},
	{"server.policy_bundle_max_file_bytes", "", kindSize, "1MiB", "largest file in a tenant policy bundle (uncompressed); 1KiB..16MiB", func(t *serverTarget, v settingValue) { t.cfg.PolicyBundleMaxFileBytes = v.n }},
	{"server.policy_bundle_max_total_bytes", "", kindSize, "16MiB", "largest total of the files in a tenant policy bundle (uncompressed); 1KiB..256MiB", func(t *serverTarget, v settingValue) { t.cfg.PolicyBundleMaxTotalBytes = v.n }},
	{"server.policy_max_revisions", "", kindCount, 32, "policy revisions each tenant keeps for rollback (the oldest are dropped); 2..1000", func(t *serverTarget, v settingValue) { t.cfg.PolicyMaxRevisions = int(v.n) }},
	{"server.policy_bundle_check_timeout", "", kindDuration, "30s", "longest a tenant policy bundle's tests and compilation may run at upload; 1s..10m", func(t *serverTarget, v settingValue) { t.cfg.PolicyBundleCheckTimeout = v.d }},
	{"server.policy_decision_max_bytes", "", kindSize, "4KiB", "most JSON a decision log entry keeps of each input field and reason; 256B..1MiB", func(t *serverTarget, v settingValue) { t.cfg.PolicyDecisionMaxBytes = int(v.n) }},
	{"server.policy_decision_log_bytes", "", kindSize, "4MiB", "bytes of policy decisions kept per tenant on disk; 64KiB..1GiB", func(t *serverTarget, v settingValue) { t.cfg.PolicyDecisionLogBytes = v.n }},
	{"server.policy_decision_principal_refill", "", kindDuration, "10m", "how long one principal's share of its tenant's decision log (an eighth) takes to refill; 0: no pacing", func(t *serverTarget, v settingValue) {
		t.cfg.PolicyDecisionPrincipalRefill = v.d
		if v.d == 0 {
			t.cfg.PolicyDecisionPrincipalRefill = -1 // 0 in the config: no pacing (0 in server.Config is the default)
		}
	}},
	{"server.policy_decision_queue", "", kindCount, 4096, "policy decisions waiting to be logged before one is dropped; 1..1048576", func(t *serverTarget, v settingValue) { t.cfg.PolicyDecisionQueue = int(v.n) }},
	{"server.policy_decision_log_size", "", kindCount, 1000, "policy decisions kept per tenant (on disk); 0..100000", func(t *serverTarget, v settingValue) {
		t.cfg.PolicyDecisionLogSize = int(v.n)
		if v.n == 0 {
			t.cfg.PolicyDecisionLogSize = -1 // 0 in the config: no log (0 in server.Config is the default)
		}
	}},
	{"server.plugins.memory_bytes", "", kindSize, "32MiB", "ceiling of a tenant plugin's linear memory; 64KiB..4GiB", func(t *serverTarget, v settingValue) { t.cfg.Plugins.MemoryBytes = v.n }},
	{"server.plugins.call_timeout", "", kindDuration, "1s", "ceiling of one tenant plugin call's time; 1ms..1m", func(t *serverTarget, v settingValue) { t.cfg.Plugins.CallTimeout = v.d }},
	{"server.plugins.output_bytes", "", kindSize, "16MiB", "ceiling of one tenant plugin call's output; 1KiB..64MiB", func(t *serverTarget, v settingValue) { t.cfg.Plugins.OutputBytes = v.n }},
	{"server.plugins.log_lines", "", kindCount, 256, "ceiling of the lines one tenant plugin call may log; 1..65536", func(t *serverTarget, v settingValue) { t.cfg.Plugins.LogLines = int(v.n) }},
	{"server.plugins.log_bytes", "", kindSize, "64KiB", "ceiling of the bytes one tenant plugin call may log; 1KiB..16MiB", func(t *serverTarget, v settingValue) { t.cfg.Plugins.LogBytes = v.n }},
	{"server.plugins.max_plugins", "", kindCount, 16, "ceiling of the plugins a tenant keeps; 1..10000", func(t *serverTarget, v settingValue) { t.cfg.Plugins.Plugins = int(v.n) }},
	{"server.plugins.max_versions", "", kindCount, 8, "ceiling of the versions one tenant plugin keeps; 1..1000", func(t *serverTarget, v settingValue) { t.cfg.Plugins.Versions = int(v.n) }},
	{"server.plugins.module_bytes", "", kindSize, "16MiB", "ceiling of one uploaded plugin module; 1KiB..256MiB", func(t *serverTarget, v settingValue) { t.cfg.Plugins.ModuleBytes = v.n }},
	{"server.plugins.allow_clock_random", "", kindBool, false, "let tenants' plugin manifests grant the real clock or randomness (on a cluster such a projection differs by node)", func(t *serverTarget, v settingValue) { t.cfg.Plugins.AllowClockRandom = v.b }},
	{"server.plugin_state_cache_bytes", "", kindSize, "64MiB", "projected states kept in memory for all tenants, a tenant at most half; 1MiB..16GiB", func(t *serverTarget, v settingValue) { t.cfg.PluginStateCacheBytes = v.n }},
	{"server.plugin_log_lines", "", kindCount, 100, "recent log lines and faults each tenant plugin's status keeps; 1..10000", func(t *serverTarget, v settingValue) { t.cfg.PluginLogLines = int(v.n) }},
	{"server.policy_checks", "", kindCount, 2, "tenant policy bundles checked at once (uploads, rollbacks, loads), all tenants together, a tenant at most half; 1..64", func(t *serverTarget, v settingValue) { t.cfg.PolicyChecks = int(v.n) }},
	{"server.plugin_checks", "", kindCount, 2, "plugin uploads and swaps checked and compiled at once, all tenants together; 1..64", func(t *serverTarget, v settingValue) { t.cfg.PluginChecks = int(v.n) }},
	{"server.plugin_calls_running", "", kindCount, 0, "plugin calls (projections, hosted workers' handlers) running at once, all tenants together, a tenant at most half; a call's timeout starts once it runs; 0: the machine's processors (at least 2); 1..1024", func(t *serverTarget, v settingValue) { t.cfg.PluginCallsRunning = int(v.n) }},
	{"server.policy_memory", "", kindSize, "1GiB", "memory each child process checking and evaluating tenants' policy bundles may take (killed past it); 64MiB..64GiB", func(t *serverTarget, v settingValue) { t.cfg.PolicyMemory = v.n }},
	{"server.plugin_cache_bytes", "", kindSize, "4GiB", "disk the compiled-module cache may take (the oldest compiled modules are removed past it); 64MiB..16TiB", func(t *serverTarget, v settingValue) { t.cfg.PluginCacheBytes = v.n }},
	{"server.plugin_code_bytes", "", kindSize, "2GiB", "memory the tenants' loaded plugin modules' compiled code may hold, all tenants together, a tenant at most half (a load past it is refused); 64MiB..1TiB", func(t *serverTarget, v settingValue) { t.cfg.PluginCodeBytes = v.n }},
	{"server.plugin_idle_bytes", "", kindSize, "1GiB", "memory of plugin instances kept idle between calls, all tenants together, a tenant at most half (past it an instance is closed after its call); 16MiB..1TiB", func(t *serverTarget, v settingValue) { t.cfg.PluginIdleBytes = v.n }},
	{"server.plugin_compile_timeout", "", kindDuration, "30s", "how long compiling one tenant plugin module may take (in a child process, killed past it); 1s..10m", func(t *serverTarget, v settingValue) { t.cfg.PluginCompile.Timeout = v.d }},
	{"server.plugin_compile_memory", "", kindSize, "1GiB", "memory compiling one tenant plugin module may take (in a child process, killed past it); 64MiB..64GiB", func(t *serverTarget, v settingValue) { t.cfg.PluginCompile.MemoryBytes = v.n }},
	{"server.workers_max_defined", "", kindCount, 256, "hosted workers each tenant may have defined, stopped ones included (never below its max_workers); 1..65536", func(t *serverTarget, v settingValue) { t.cfg.WorkersMaxDefined = int(v.n) }},
	{"server.workers_max_reaction_depth", "", kindCount, 16, "generations of hosted workers' reactions a chain may hold: a worker asked to react to an event that deep faults (kind loop) and writes nothing, so one reacting to its own reactions is quarantined; 1..1024", func(t *serverTarget, v settingValue) { t.cfg.WorkersMaxReactionDepth = int(v.n) }},
	{"server.workers_in_flight", "", kindCount, 8, "hosted workers reading a batch of events and calling their plugin at once, all tenants together, a tenant at most half, a freed turn going to the waiting tenant holding the fewest (the others wait their turn before reading); a tenant's workers hold at most 4 batches; 1..1024", func(t *serverTarget, v settingValue) { t.cfg.WorkersInFlight = int(v.n) }},
	{"server.metrics_public", "metrics-public", kindBool, false, "serve /metrics without the operator credential", func(t *serverTarget, v settingValue) { t.cfg.MetricsPublic = v.b }},
	{"server.console", "console", kindBool, true, "serve the web console under /console/ (sign in with a tenant key or the operator credential)", func(t *serverTarget, v settingValue) { t.cfg.DisableConsole = !v.b }},
	{"server.access_log", "access-log", kindText, "text", "access log: text, json or off", func(t *serverTarget, v settingValue) { t.cfg.AccessLog = v.str }},
	{"server.jwt.jwks_file", "", kindOptionalPath, "", "JWKS file: enables JWT bearer tokens", func(t *serverTarget, v settingValue) { t.jwt.JWKSFile = v.str }},
	{"server.jwt.issuer", "", kindText, "", "required JWT iss", func(t *serverTarget, v settingValue) { t.jwt.Issuer = v.str }},
	{"server.jwt.audience", "", kindText, "", "required JWT aud", func(t *serverTarget, v settingValue) { t.jwt.Audience = v.str }},
	{"server.jwt.tenant_claim", "", kindText, "tenant", "JWT claim naming the tenant", func(t *serverTarget, v settingValue) { t.jwt.TenantClaim = v.str }},
	{"server.jwt.roles_claim", "", kindText, "roles", "JWT claim listing roles", func(t *serverTarget, v settingValue) { t.jwt.RolesClaim = v.str }},
	{"server.quotas.storage_bytes", "", kindSize, "10GiB", "default storage quota per tenant", func(t *serverTarget, v settingValue) { t.q.StorageBytes = v.n }},
	{"server.quotas.index_bytes", "", kindSize, "1GiB", "default memory a tenant's index may hold", func(t *serverTarget, v settingValue) { t.q.IndexBytes = v.n }},
	{"server.quotas.events_per_second", "", kindCount, 20000, "default sustained append rate", func(t *serverTarget, v settingValue) { t.q.EventsPerSecond = float64(v.n) }},
	{"server.quotas.events_burst", "", kindCount, 40000, "default event bucket size", func(t *serverTarget, v settingValue) { t.q.EventsBurst = int(v.n) }},
	{"server.quotas.bytes_per_second", "", kindSize, "64MiB", "default sustained payload bytes per second", func(t *serverTarget, v settingValue) { t.q.BytesPerSecond = float64(v.n) }},
	{"server.quotas.bytes_burst", "", kindSize, "128MiB", "default byte bucket size", func(t *serverTarget, v settingValue) { t.q.BytesBurst = int(v.n) }},
	{"server.quotas.requests_per_second", "", kindCount, 20000, "default sustained requests per second of one tenant's credentials (all its routes; per node)", func(t *serverTarget, v settingValue) { t.q.RequestsPerSecond = float64(v.n) }},
	{"server.quotas.requests_burst", "", kindCount, 40000, "default request bucket size", func(t *serverTarget, v settingValue) { t.q.RequestsBurst = int(v.n) }},
	{"server.quotas.max_payload_bytes", "", kindSize, "1MiB", "default largest payload", func(t *serverTarget, v settingValue) { t.q.MaxPayloadBytes = int(v.n) }},
	{"server.quotas.max_batch_events", "", kindCount, 4096, "default most events in one batch; at most 4096", func(t *serverTarget, v settingValue) { t.q.MaxBatchEvents = int(v.n) }},
	{"server.quotas.max_subscriptions", "", kindCount, 1100, "default concurrent event streams", func(t *serverTarget, v settingValue) { t.q.MaxSubscriptions = int(v.n) }},
	{"server.quotas.max_cursors", "", kindCount, 100, "default named cursors", func(t *serverTarget, v settingValue) { t.q.MaxCursors = int(v.n) }},
	{"server.quotas.upload_bytes_per_hour", "", kindSize, "256MiB", "default bytes of policy bundles and plugin uploads per tenant per hour (each upload charged before it is checked)", func(t *serverTarget, v settingValue) { t.q.UploadBytesPerHour = v.n }},
	{"server.quotas.control_changes_per_day", "", kindCount, 5000, "default control-plane changes (keys, cursors, policies, plugins, workers) one tenant's credentials may make per day; beside a pace of 10/s after 100", func(t *serverTarget, v settingValue) { t.q.ControlChangesPerDay = int(v.n) }},
	{"server.quotas.max_workers", "", kindCount, 16, "default hosted workers running or quarantined", func(t *serverTarget, v settingValue) { t.q.MaxWorkers = int(v.n) }},
	{"server.cluster.enabled", "cluster", kindBool, false, "run as a node of a replicated cluster (needs --cluster-node-id and the operator credential: server.operator_token, BATPAK_OPERATOR_TOKEN or server.operator_token_file)", func(t *serverTarget, v settingValue) { t.clusterOn = v.b }},
	{"server.cluster.node_id", "cluster-node-id", kindText, "", "this node's id in the cluster, stable for its life", func(t *serverTarget, v settingValue) { t.cl.NodeID = v.str }},
	{"server.cluster.bind", "cluster-bind", kindText, "127.0.0.1:7071", "node-to-node (raft) TCP address", func(t *serverTarget, v settingValue) { t.cl.Bind = v.str }},
	{"server.cluster.advertise", "cluster-advertise", kindText, "", "raft address other nodes dial (default: cluster.bind)", func(t *serverTarget, v settingValue) { t.cl.Advertise = v.str }},
	{"server.cluster.url", "cluster-url", kindText, "", "this node's API URL as clients reach it (default: http(s)://<listen address>; required with a listen address of every interface)", func(t *serverTarget, v settingValue) { t.cl.URL = v.str }},
	{"server.cluster.bootstrap", "cluster-bootstrap", kindBool, false, "on first start, form a new cluster of this node", func(t *serverTarget, v settingValue) { t.cl.Bootstrap = v.b }},
	{"server.cluster.join", "cluster-join", kindText, "", "API URL of a member to join through on first start", func(t *serverTarget, v settingValue) { t.cl.Join = v.str }},
	{"server.cluster.tls_cert", "cluster-tls-cert", kindOptionalPath, "", "node certificate (PEM) for mutual TLS between nodes", func(t *serverTarget, v settingValue) { t.cl.TLSCert = v.str }},
	{"server.cluster.tls_key", "cluster-tls-key", kindOptionalPath, "", "node private key (PEM)", func(t *serverTarget, v settingValue) { t.cl.TLSKey = v.str }},
	{"server.cluster.tls_ca", "cluster-tls-ca", kindOptionalPath, "", "CA (PEM) that signed every node's certificate", func(t *serverTarget, v settingValue) { t.cl.TLSCA = v.str }},
	{"server.cluster.api_ca", "cluster-api-ca", kindOptionalPath, "", "CA (PEM) that members' https certificates (server.tls_cert) chain to, trusted with the system's roots when one member calls another (join, console forwarding, replica check); default cluster.tls_ca", func(t *serverTarget, v settingValue) { t.cl.APICA = v.str }},
	{"server.cluster.read_wait", "", kindDuration, "5s", "longest a read with min_seq waits for this node to catch up; ≤ 1m", func(t *serverTarget, v settingValue) { t.cl.ReadWait = v.d }},
	{"server.cluster.blob_grace", "", kindDuration, "10m", "an unreferenced policy bundle or plugin module is removed from this node once its last upload is older than this; ≥ 1s", func(t *serverTarget, v settingValue) { t.cl.BlobGrace = v.d }},
	{"server.cluster.blob_collect_every", "", kindDuration, "5m", "how often this node removes unreferenced bundles and modules (also right after a deletion); ≥ 100ms", func(t *serverTarget, v settingValue) { t.cl.BlobCollectEvery = v.d }},
	{"server.cluster.replica_check_every", "", kindDuration, "10m", "how often the leader compares every member's copy of each tenant's events with its own (an alarm in the cluster status and /metrics when one differs); ≥ 100ms, negative: off", func(t *serverTarget, v settingValue) { t.cl.ReplicaCheckEvery = v.d }},
	{"server.cluster.health_check_every", "", kindDuration, "10s", "how often the leader judges every member's health (logged when one turns unhealthy; batpak_cluster_member_healthy and batpak_cluster_failure_tolerance in /metrics); ≥ 100ms, negative: off", func(t *serverTarget, v settingValue) { t.cl.HealthCheckEvery = v.d }},
	{"server.cluster.log_max_bytes", "", kindSize, "1GiB", "about the most bytes of entries raft's log keeps on this node (snapshots come sooner, and keep fewer entries, when entries are large); ≥ 1MiB", func(t *serverTarget, v settingValue) { t.cl.LogMaxBytes = v.n }},
	{"server.cluster.plain_raft", "", kindBool, false, "for a rolling upgrade from a version without the raft peer-key handshake: speak plain raft, trusting whoever reaches the raft port (without TLS only)", func(t *serverTarget, v settingValue) { t.cl.PlainRaft = v.b }},
	{"server.cluster.single_write_entries", "", kindBool, false, "for a rolling upgrade from an older version: propose every write in a raft entry of its own (no write groups), and reset a plugin on the node asked only (no plugin.reset record)", func(t *serverTarget, v settingValue) { t.cl.SingleWriteEntries = v.b }},
	{"server.cluster.heartbeat_timeout", "", kindDuration, "1s", "raft: follower's wait for the leader before an election", func(t *serverTarget, v settingValue) { t.cl.HeartbeatTimeout = v.d }},
	{"server.cluster.election_timeout", "", kindDuration, "1s", "raft: candidate's election timeout", func(t *serverTarget, v settingValue) { t.cl.ElectionTimeout = v.d }},
	{"server.cluster.leader_lease_timeout", "", kindDuration, "500ms", "raft: how long a leader leads without hearing from a quorum", func(t *serverTarget, v settingValue) { t.cl.LeaderLeaseTimeout = v.d }},
}

// serverParentKeys are the config-file sections of the server settings.
var serverParentKeys = map[string]bool{"server": true, "server.jwt": true, "server.quotas": true, "server.plugins": true, "server.cluster": true}

func bindServerSettings(fs *pflag.FlagSet, v *viper.Viper) {
	for _, s := range serverSettings {
		v.SetDefault(s.key, s.def)
		bindEnv(v, s.key)
		if s.flag == "" {
			continue
		}
		switch s.kind {
		case kindBool:
			fs.Bool(s.flag, s.def.(bool), s.help)
		default:
			fs.String(s.flag, fmt.Sprint(s.def), s.help)
		}
		_ = v.BindPFlag(s.key, fs.Lookup(s.flag))
	}
}

// zeroMeansNone are the count settings whose 0 turns their feature off
// (a negative value in server.Config, where 0 is the default): a
// negative value in the configuration is refused rather than taken as 0.
var zeroMeansNone = map[string]bool{
	"server.max_connections_per_source":    true,
	"server.anonymous_requests_per_second": true,
	"server.policy_decision_log_size":      true,
}

// serverConfig reads the server.* settings into a server.Config.
func (a *app) serverConfig(policyDir string) (server.Config, error) {
	cfg := server.DefaultConfig()
	if _, err := a.log.logger(a.stderr); err != nil {
		return cfg, err
	}
	cfg.PolicyDir = policyDir
	jwt := auth.JWTConfig{}
	q := control.Quotas{}
	cl := server.ClusterConfig{}
	target := serverTarget{cfg: &cfg, jwt: &jwt, q: &q, cl: &cl}
	for _, s := range serverSettings {
		raw := a.v.Get(s.key)
		bad := func(err error) error { return fmt.Errorf("invalid config: %s: %v", s.key, err) }
		var (
			v   settingValue
			err error
		)
		switch s.kind {
		case kindPath, kindOptionalPath, kindText:
			if v.str, err = parseText(raw); err == nil {
				v.str, err = expandHome(v.str)
			}
		case kindSize:
			v.n, err = parseSize(raw)
		case kindCount:
			var c int
			c, err = parseCount(raw)
			v.n = int64(c)
		case kindDuration:
			v.d, err = parseDuration(raw)
		case kindBool:
			v.b, err = parseBool(raw)
		case kindList:
			v.list, err = parseList(raw)
		}
		if err == nil && zeroMeansNone[s.key] && v.n < 0 {
			err = fmt.Errorf("%d is negative: want 0 (none) or more", v.n)
		}
		if err != nil {
			return cfg, bad(err)
		}
		s.set(&target, v)
	}
	if target.operatorTokenFile != "" {
		// As everywhere, the environment beats the config file; given in
		// the same layer, the two are refused.
		tokSrc := a.sourceOf(setting{key: "server.operator_token"})
		fileSrc := a.sourceOf(setting{key: "server.operator_token_file"})
		switch {
		case cfg.OperatorToken != "" && layerRank(tokSrc) == layerRank(fileSrc):
			return cfg, fmt.Errorf("invalid config: both the operator credential (%s) and server.operator_token_file (%s) are set: give one", tokSrc, fileSrc)
		case cfg.OperatorToken == "" || layerRank(fileSrc) > layerRank(tokSrc):
			tok, err := readSecretFile(target.operatorTokenFile, a.stderr)
			if err != nil {
				return cfg, fmt.Errorf("invalid config: server.operator_token_file (%s): %v", fileSrc, err)
			}
			cfg.OperatorToken = tok
		}
	}
	if target.clusterOn {
		cfg.Cluster = &cl
	}
	if jwt.JWKSFile != "" {
		cfg.JWT = &jwt
	}
	cfg.Quotas = q
	cfg.Stderr = a.stderr
	cfg.Logger = a.logger()
	return cfg, nil
}

func newServeCmd(a *app) *cobra.Command {
	var demo bool
	cmd := &cobra.Command{
		Use:     "serve",
		GroupID: "server",
		Short:   "Host many tenants' event stores over HTTP",
		Long: `serve runs the batpak server: every tenant is its own store under
<server.root>/tenants/<id>, reached over a JSON HTTP API (/v1, OpenAPI
document at /v1/openapi.json) with per-tenant API keys, quotas and the
platform write policy (policy.dir). It listens on 127.0.0.1:7070 unless
server.listen says otherwise; a non-loopback address needs TLS.

Settings: the server: section of config.yaml (every key documented
there), BATPAK_SERVER_* environment variables and the flags below. The
operator credential (admin API) comes from server.operator_token,
BATPAK_OPERATOR_TOKEN or the file server.operator_token_file names; without one, the first start generates one and
prints it once. SIGTERM or SIGINT shuts down gracefully within
server.shutdown_timeout.`,
		Example: `  batpak serve --root ./srv
  batpak serve --demo`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := a.loadConfig()
			if err != nil {
				return err
			}
			cfg, err := a.serverConfig(res.policyDir)
			if err != nil {
				return err
			}
			cfg.PolicyTimeout = res.policyTimeout
			if c := cfg.Cluster; c != nil && c.Bootstrap && c.Join != "" {
				return &usageError{errors.New("--cluster-bootstrap and --cluster-join exclude each other (cluster.bootstrap, cluster.join): bootstrap the first node only, and let the others join it")}
			}
			srv, err := server.New(cmd.Context(), cfg)
			if err != nil {
				return serveStartError(cfg, err, false)
			}
			if err := srv.Listen(); err != nil {
				_ = srv.Shutdown(context.Background())
				return serveStartError(cfg, err, true)
			}
			fmt.Fprintf(a.stderr, "batpak serve: listening on %s (root %s)\n", srv.Addr(), cfg.Root)
			if demo {
				if err := printDemo(cmd.Context(), a, srv, cfg); err != nil {
					_ = srv.Shutdown(context.Background())
					return err
				}
			}
			if err := srv.Serve(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(a.stderr, "batpak serve: stopped: requests in flight answered, event streams ended with their resume positions, stores closed")
			return nil
		},
	}
	bindServerSettings(cmd.Flags(), a.v)
	cmd.Flags().BoolVar(&demo, "demo", false, "create tenant demo and a new admin key for it and print ready-to-paste curl lines (the root's operator credential is kept)")
	return cmd
}

// serveStartError says what to do about the ways a second server
// collides with a first: the root's stores are locked by it, or the
// listen address (listening) or the cluster's raft address is taken.
// Other errors pass as they are.
func serveStartError(cfg server.Config, err error, listening bool) error {
	var le *core.LockedError
	switch {
	case errors.As(err, &le):
		holder := "another process"
		if le.PID > 0 {
			holder = fmt.Sprintf("pid %d", le.PID)
		}
		return &detailError{msg: fmt.Sprintf("serve: root %s is in use by %s (another batpak serve?): stop it, or give this one another --root", cfg.Root, holder), err: err}
	case errors.Is(err, syscall.EADDRINUSE) && listening:
		return &detailError{msg: fmt.Sprintf("serve: listen on %s: address already in use (another batpak serve?): stop it, or give this one another --listen address", cfg.Listen), err: err}
	case errors.Is(err, syscall.EADDRINUSE) && cfg.Cluster != nil:
		return &detailError{msg: fmt.Sprintf("serve: cluster bind %s: address already in use (another node?): stop it, or give this one another --cluster-bind address", cfg.Cluster.Bind), err: err}
	}
	return err
}

// printDemo makes tenant "demo" (if missing) with an admin key and prints
// curl lines that use them.
func printDemo(ctx context.Context, a *app, srv *server.Server, cfg server.Config) error {
	p := srv.Plane()
	if _, ok := p.Tenant("demo"); !ok {
		if _, err := p.CreateTenant(ctx, "demo", control.Quotas{}, control.Settings{}); err != nil {
			return err
		}
	}
	token, id, hash, err := auth.NewKey()
	if err != nil {
		return err
	}
	if _, err := p.IssueKey(ctx, control.Key{ID: id, Tenant: "demo", Roles: []control.Role{control.RoleAdmin}, Name: "demo", Created: time.Now().UTC(), Hash: hash}); err != nil {
		return err
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	host := srv.Addr().String()
	if h, port, err := net.SplitHostPort(host); err == nil && (h == "::" || h == "0.0.0.0") {
		host = net.JoinHostPort("127.0.0.1", port)
	}
	base := scheme + "://" + host
	ev, _ := json.Marshal(map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{"total_cents": 998}})
	// The operator credential: the configured one, or the one generated
	// (and recorded) at this first start of the root. A root that already
	// has one keeps it: the demo never replaces it, and cannot print it
	// (only its hash is stored).
	op := cfg.OperatorToken
	if op == "" {
		op = srv.Token
	}
	opLine := " OP=" + op
	if op == "" {
		opLine = "\n  # and set OP to this root's operator credential (printed at its first start; or restart serve with BATPAK_OPERATOR_TOKEN set)"
	}
	fmt.Fprintf(a.stdout, `Demo tenant "demo" is ready. Paste these into another terminal:

  export B=%s KEY=%s%s
  curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
       -d '%s' $B/v1/tenants/demo/events
  curl -s -H "Authorization: Bearer $KEY" "$B/v1/tenants/demo/events?entity=order:"
  curl -sN -H "Authorization: Bearer $KEY" "$B/v1/tenants/demo/subscribe?entity=order:"
  curl -s -H "Authorization: Bearer $OP" $B/v1/admin/tenants

`, base, token, opLine, ev)
	if !cfg.DisableConsole {
		fmt.Fprintf(a.stdout, "The web console is at %s/console/: sign in with $KEY (the tenant) or $OP (the operator).\n\n", base)
	}
	return nil
}
