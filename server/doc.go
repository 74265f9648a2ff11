// Package server wires batpak's hosting server together: the control plane
// (server/control), authentication (server/auth), quotas (server/quota),
// lazily opened tenant stores (server/tenancy), the platform write policy
// (policy.dir), the tenants' own policy bundles (server/tenantpolicy),
// the tenants' own plugins (server/tenantplugin), the hosted workers that
// run the tenants' handler plugins (server/hostedworker), the HTTP API
// (server/httpapi) and the web console beside it under /console/
// (server/console; Config.DisableConsole turns it off). `batpak serve` is a
// thin command around New and Serve.
//
// Root directory layout:
//
//	<root>/system/                          the control plane's store
//	<root>/tenants/<id>/                    one core.Store per tenant
//	<root>/backups/<id>/<UTC timestamp>/    snapshots (admin API)
//	<root>/policies/<id>/<sha256>.tar.gz    tenants' policy bundles, by revision
//	<root>/plugins/<id>/<sha256>.wasm       tenants' plugin modules, by digest
//	<root>/plugin-cache/                    compiled plugin code, shared by all tenants
//	<root>/cluster/                         a cluster node's raft state, stores and
//	                                        blobs (server/cluster; policy bundles and
//	                                        plugin modules live in cluster/blobs/)
//
// A cluster node removes from cluster/blobs/ every bundle and module no
// live tenant's kept policy revision or plugin version names (a deleted
// tenant's, a deleted version's) once the last upload of those bytes
// there is older than ClusterConfig.BlobGrace; it collects every
// BlobCollectEvery and right after applying a tenant's policy, plugin or
// deletion change, never while its control plane is stopped or behind
// its system store, while it knows no leader or while its log holds
// entries it has not applied, logs what it removed and counts it in
// /metrics (batpak_cluster_blobs_collected_total and its siblings). A
// blob the control plane names that the node does not hold is logged as
// an error (once per change of that set) and counted in
// batpak_cluster_blobs_missing; uploading the same bundle or module again
// stores it again on every node.
//
// The leader checks the replicas by itself every
// ClusterConfig.ReplicaCheckEvery: for each tenant, and for the control
// plane's store (GET /v1/cluster/digest), it compares every member's copy
// with its own a range at a time (cluster.DigestChunk
// against the member's GET /v1/admin/tenants/{t}/digest), from where the
// copy was last found the same, in bounded chunks (a large tenant's pass
// goes on over several rounds); every sixth round, after a change of
// leader and after an alarm, from the first event again. A copy that
// differs or cannot be read (the leader's own included) is logged as an
// error, listed in the leader's cluster status (replica_check.diverged)
// and counted in batpak_cluster_replicas_diverged until a pass from the
// first event finds it the same; a member that does not answer, or that
// holds another incarnation of the tenant (cluster.StoreMark.Born), is
// not compared (no alarm). A tenant nothing was written to since its last
// round is not opened, and the check never creates a store or counts as
// a use of one (cluster.Node.Inspect). It sends the operator credential
// only to members' recorded API URLs, follows no redirect, and never
// sends it over plain http from an https node.
//
// The leader also judges every member's health every
// ClusterConfig.HealthCheckEvery (clusterHealthWatch, with cluster.Assess:
// GET /v1/cluster?nodes=all judges the same on request), logs the members
// that turn unhealthy or healthy again, and exports the judgement
// (batpak_cluster_member_healthy, batpak_cluster_failure_tolerance, …).
//
// A cluster node's own stores (cluster/tenants/, the state machine's) are
// bounded like the registry's: MaxOpenTenants and TenantIdleTimeout apply
// to them too (cluster.Config.MaxOpenStores, StoreIdleTimeout). The
// registry holds a node store from its open to its close (the tenancy
// Provider's Open and Release), so a store a request, an event stream, a
// worker or the console uses stays open; one nothing holds — a follower's
// store opened to apply writes, one the registry let go — is closed after
// TenantIdleTimeout, or sooner when the node needs room (least recently
// used first), and reopened on its next use. /metrics exports them beside
// batpak_open_tenants: batpak_cluster_open_stores,
// batpak_cluster_stores_in_use and the counters
// batpak_cluster_store_opens_total, batpak_cluster_store_idle_closes_total,
// batpak_cluster_store_evictions_total and
// batpak_cluster_store_opens_over_bound_total (opens past the bound while
// every open store was in use: raft's apply never waits for a holder).
// batpak_cluster_write_entries_total and
// batpak_cluster_writes_proposed_total count the raft entries of writes
// the node proposed while leading and the writes they carried (the leader
// gathers writes proposed together into one entry).
//
// Tenant stores: core.DefaultConfig with Sync durable (EveryNEvents 1: a
// 2xx means fsync'd; group commit shares fsyncs) unless the tenant's
// Settings.Sync is "buffered" (every 1000 events or 1 s), ChannelCapacity
// and BroadcastCapacity 1024, FDBudget 4, SegmentMaxBytes 64 MiB, the
// Admission of two layers: the platform policy (compiled once, shared),
// then the tenant's active policy bundle if it has one (looked up on every
// write, so an upload or rollback applies to the next write; a refusal
// names its layer, "platform" or "tenant"), at most one evaluation per
// CPU at once;
// SingleAppendMaxBytes min(MaxBodyBytes, 64 MiB) and MaxJSONDepth from the
// config, and a ProjectionCache that is the tenant's view of one cache of
// PluginStateCacheBytes for all tenants (the projection endpoint's). A settings change applies when the tenant's store next opens.
//
// Security defaults: Listen is loopback unless told otherwise; a
// non-loopback address needs TLS (TLSCert, TLSKey) or AllowInsecureRemote.
//
// Operator credential: Config.OperatorToken (config or BATPAK_OPERATOR_TOKEN)
// if set (only its hash is kept, in memory); else the hash the control
// plane holds; else one is generated at first start, its hash stored in the
// control plane, and the token printed once on Config.Stderr.
//
// Hosted workers run the tenants' uploaded handler plugins (the active
// version; Config.PluginSource may give another source): New starts every
// worker the control plane records as running, each resuming from its
// named cursor.
//
// Shutdown (Serve's context ends, or Shutdown): /readyz turns 503, event
// streams end with "event: shutdown" and their resumable position, the
// listener stops accepting, in-flight requests finish, hosted workers stop
// after the batch in hand, then every tenant store and the control plane
// close — all within ShutdownTimeout.
package server
