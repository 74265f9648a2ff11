// Package hostedworker runs tenants' handler plugins as hosted workers of
// a batpak server: each worker feeds the events of a region of its
// tenant's store, from a named cursor, to a handler plugin and writes the
// reactions the plugin asks for back into the tenant's store.
//
// # Where plugins come from
//
// A Supervisor gets its plugins from a PluginSource (the server's tenant
// plugin registry): Handler(ctx, tenant, name) returns the tenant's
// handler plugin called name, compiled and ready. The supervisor asks
// again at every (re)start of a worker. The server's registry returns
// the same *plugins.Plugin across swaps, so there a swapped-in version
// serves the worker's next batch.
//
// # Desired state
//
// What should run is recorded in the control plane (control.WorkerDef:
// worker.started, worker.stopped, worker.quarantined, worker.reset
// events in the system store). Resume starts every worker recorded as
// running when the server starts, so after a restart — a crash or a
// SIGKILL included — each worker continues from its named cursor's last
// committed position.
//
// # Exactly one reaction per event
//
// Delivery is at least once: a batch whose reactions were written but
// whose cursor commit was not (a fault, a crash) is delivered again. Each
// reaction carries an idempotency key derived from the worker's cursor,
// the source event's id and the reaction's number within that source
// ("worker:<cursor>:<event id>:<n>"), and the reactions to one source
// event are written as one atomic batch, so a redelivery writes nothing
// twice: the store holds exactly one set of reactions per input event,
// each with the input event as causation and its correlation.
//
// # Identity and policy
//
// Reactions are written through the tenant store's ordinary write path,
// so the platform policy and the tenant's own policy judge each one, with
// action "plugin", principal {id "worker:<name>", tenant <tenant>, roles
// ["plugin"]} and input.plugin the plugin's name, version and module
// digest (plugins.Plugin.Ref). A denied reaction is a fault of the
// worker, like a plugin trap; one refused for now (the tenant's policy
// evaluations all busy: 503 BUSY to an API writer) is written again after
// the wait, and is no fault.
//
// # States
//
//	        PUT …/workers/{name}                  fault, restarts left
//	(none) ─────────────────────▶ running ───────────────────────────▶ backoff
//	                              │  ▲  ▲ ◀──── backoff elapsed ────────┘ │
//	   POST …/stop, or the plugin │  │  │ POST …/reset                    │
//	              answers "stop"  ▼  │  │                                 │
//	                        stopped  │  quarantined ◀── fault, no restart ┘
//	                           └─────┘                  left in the window
//	                             PUT
//
// "suspended" is shown while the worker's tenant is suspended (it runs
// again on resume). What each recorded state means across a restart of
// the server (a crash or SIGKILL included):
//
//	recorded (desired)   after a restart
//	-------------------  --------------------------------------------------------
//	running              started again, from its cursor's committed position;
//	                     reactions already written for uncommitted events are
//	                     not written again (idempotency keys)
//	stopped              not started; definition and cursor position kept
//	quarantined          not started; quarantine and reason shown until reset
//	(worker deleted)     gone, its cursor rewound
//	(tenant deleted)     gone with the tenant
//
// Restart counts, the fault history and the log are the running server's:
// a restarted server starts them afresh.
//
// # Restart policy and quarantine
//
// A fault — a plugin fault (trap, timeout, memory, malformed answer…), a
// refused or failed reaction write, a plugin the source cannot provide —
// ends the worker's run; it restarts from its last committed position
// after a backoff (control.WorkerRestart: first BackoffMinMs, default
// 200ms, doubling per fault up to BackoffMaxMs, default 30s). Once it has
// restarted MaxRestarts times (default 5) within WindowMs (default 10
// minutes), the next fault quarantines it: it stops, the quarantine and
// its reason are recorded in the control plane (so it stays quarantined
// across restarts) and shown in its status until Reset.
//
// # Limits and isolation
//
// With Options.Quotas (the server passes the API's), reactions count
// against the tenant's quotas like its API writes: a reaction over
// max_payload_bytes or past storage_bytes, or more reactions to one event
// than max_batch_events (they are written as one batch), is a fault (kind
// "quota"), and events_per_second and bytes_per_second pace the worker
// (sharing the tenant's buckets with its API writes).
//
// A tenant may have at most its max_workers quota (control.Quotas,
// default 16 in server.DefaultQuotas) workers running or quarantined at
// once; starting one more is refused with a *quota.Exceeded naming
// max_workers. A stopped worker keeps its definition and cursor, so the
// workers a tenant has defined in any state are bounded too
// (Options.MaxDefined, server.workers_max_defined, default 256, never
// below max_workers): a new name past it is refused with a
// *DefinedLimitError (the API's 409 CONFLICT naming the setting: it
// lasts until workers are deleted, so retrying is no use); a stopped
// worker's name starts again with any configuration, keeping its
// restarts and recent faults (stopping and starting again is not a
// reset: it would otherwise dodge the restart policy's quarantine;
// ResetWorker clears them). A worker's status, faults and log are kept
// per tenant and only answered for that tenant. A worker two of whose own
// reactions to one cause (itself the worker's own) both fan out — the
// log multiplying at every generation — faults with ErrReactionLoop
// (kind "loop") and writes nothing for the second, and chains of
// workers' reactions hold at most Options.MaxReactionDepth generations
// (server.workers_max_reaction_depth, default 16), so a worker whose
// region takes in what its plugin writes is quarantined instead of
// filling its tenant's storage.
//
// # Deleting a worker
//
// DeleteWorker (DELETE …/workers/{name}) stops a running worker after
// the batch in hand and forgets it: its definition (a worker.deleted
// event), its status and log, and its cursor's position. A worker's
// cursor is its own — no other worker, nor a cursor defined through the
// API, may use it — so, as deleting an API cursor does, deleting the
// worker rewinds its cursor to the log's beginning: a worker (or API
// cursor) defined later under that cursor name starts from the
// beginning, never from where the deleted worker stopped. Its reactions
// stay in the store; a new worker over the same cursor name derives the
// same idempotency keys, so it does not write again, while the store
// remembers those keys, reactions to events the deleted worker handled.
// A tenant's plugin is not deleted (409) while a worker running or
// quarantined runs it.
//
// What the workers hold in memory is bounded: a worker reads its batch
// (at most MaxBatchBytes, and a quarter of its plugin's memory) and
// calls its plugin only in its turn (core.WorkerConfig.Turn):
// Options.InFlight workers of all tenants at once, a tenant at most
// half, a turn that frees going to the waiting tenant holding the fewest
// (then the one whose workers held turns least lately, then the one
// served longest ago: shares.NewFair), the others waiting, holding no
// events. It then writes the plugin's reactions in
// its tenant's turn alone: a tenant's workers hold at most
// TenantInFlight batches and answers, and what makes their writes wait
// (the tenant's rates, its policy, a gate asking to retry) holds no
// other tenant's worker back.
//
// # On a cluster
//
// Only the leader runs workers: a cluster node's supervisor starts in
// standby (Options.Standby), Resume starts the recorded workers when the
// node becomes the leader — each from its named cursor's committed
// position, which the cluster replicates — and Standby stops them
// (recording nothing) when it stops leading. A batch whose reactions were
// written but whose cursor commit was not is delivered again on the new
// leader; the idempotency keys make that write nothing twice.
//
// # Leases
//
// A running worker holds a lease on its tenant's store (tenancy.Lease),
// so the store stays open while it runs; TenantChanged stops a deleted or
// suspended tenant's workers (releasing their leases) and starts them
// again when the tenant is resumed. Close stops every worker without
// recording anything: they resume at the next start.
package hostedworker
