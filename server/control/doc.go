// Package control is the hosted server's control plane: tenants, API keys,
// quota overrides, settings, named-cursor definitions and the operator
// credential's hash, kept as events in a core.Store of their own (the
// system store, <root>/system) and replayed into memory when the plane
// opens. Every admin action is therefore an audited, hash-chained event:
// History reads one entity's trail, Verify checks the chains.
//
// # Events
//
// Every change is one event in scope "control", written with
// compare-and-set on its entity's clock (ExpectNoEvents for a new entity,
// ExpectClock(last) otherwise), its payload recording who made it ("by":
// the policy.Principal of the request's context) and what:
//
//	entity                   kind  name                     payload fields
//	-----------------------  ----  -----------------------  ------------------------------------------
//	tenant:<id>              1:1   tenant.created           tenant, quotas, settings
//	tenant:<id>              1:2   tenant.suspended         tenant, reason
//	tenant:<id>              1:3   tenant.resumed           tenant
//	tenant:<id>              1:4   tenant.deleted           tenant, revoked_keys, deleted_cursors
//	tenant:<id>              1:5   tenant.quotas_set        tenant, quotas (the new overrides)
//	tenant:<id>              1:6   tenant.settings_set      tenant, settings
//	operator                 1:7   operator.credential_set  operator_hash (hex SHA-256)
//	key:<id>                 2:1   key.issued               tenant, key {id, roles, name, hash}
//	key:<id>                 2:2   key.revoked              tenant, key {id}
//	cursor:<tenant>/<name>   3:1   cursor.defined           tenant, cursor {name, region}
//	cursor:<tenant>/<name>   3:2   cursor.deleted           tenant, cursor {name}
//	policy:<tenant>          4:1   policy.activated         tenant, policy {revision, bytes}
//	policy:<tenant>          4:2   policy.rolled_back       tenant, policy {revision}
//	plugin:<tenant>          5:1   plugin.added             tenant, plugin {name, version, digest, kind, bytes, manifest}
//	plugin:<tenant>          5:2   plugin.swapped           tenant, plugin {name, version}
//	plugin:<tenant>          5:3   plugin.deleted           tenant, plugin {name, version ("": the plugin)}
//	plugin:<tenant>          5:4   plugin.kept              tenant, plugin {name, version, digest, kind, bytes, manifest}
//	plugin:<tenant>          5:5   plugin.reset             tenant, plugin {name}
//	worker:<tenant>/<name>   6:1   worker.started           tenant, worker {name, plugin, region, cursor, restart}
//	worker:<tenant>/<name>   6:2   worker.stopped           tenant, worker {name}
//	worker:<tenant>/<name>   6:3   worker.quarantined       tenant, worker {name}, reason (the last fault)
//	worker:<tenant>/<name>   6:4   worker.reset             tenant, worker {name}
//	worker:<tenant>/<name>   6:5   worker.deleted           tenant, worker {name}
//
// A deleted tenant's entity keeps its events; creating the id again
// continues the same entity with a new tenant.created. So does a deleted
// worker's: starting the name again records a new worker.started. A key
// id is never reused, even after revocation. A tenant's policy revisions
// are the hex SHA-256 of the bundles as uploaded (the bundles themselves
// are kept outside the system store, by the server); a deleted tenant's
// policy state goes with it, and so do its hosted workers' definitions
// (the desired state of server/hostedworker's supervisor). Secrets are
// never recorded, only their SHA-256 hashes.
//
// # Guarantees
//
//   - Durability: the system store syncs every event (EveryNEvents 1), so
//     a method that returned nil has its change on stable storage; a crash
//     (even SIGKILL mid-change) loses no acknowledged change.
//   - Order: changes are made one at a time (validate, append, apply), so
//     the memory state changes in log order and a replay rebuilds it
//     exactly; of two concurrent CreateTenant calls for one id exactly
//     one succeeds, the other gets ErrExists.
//   - Reads (Tenant, Key, Keys, Effective, …) take a read lock only; a
//     revoked key is gone for the very next Key call.
//   - Errors: ErrInvalid (with the field named), ErrNotFound, ErrExists,
//     ErrLimit, all wrapped with the subject; anything else is the system
//     store's error (after an I/O error the plane must be reopened, as the
//     store must).
//
// # Following a replicated store
//
// In a cluster every node's system store is replicated by raft: each
// receives the same events in the same order, most of them written by
// another node. A plane opened with Options.Store follows such a store
// instead of owning one:
//
//   - Open replays what the store holds, then a tail goroutine keeps
//     reading it with a core.Cursor (which never skips or repeats an
//     event) and applies every new event, in global-sequence order,
//     exactly once. A lossy subscription only wakes the tail; the cursor
//     is what it applies, so a slow plane falls behind but loses nothing.
//   - A change method validates against the state applied so far (it
//     first waits until the plane has applied what the store held when
//     the change began), appends with compare-and-set on the entity's
//     clock through the store's ordinary AppendWithOptions (the
//     replicated store proposes it and returns once it is committed and
//     applied locally), then waits until the tail has applied it. So the
//     caller reads its own change on return, and the tail is the only
//     place the state changes. What the method returns is read after the
//     change, and may reflect changes other nodes made just after it.
//     Invariants that span entities (a key's tenant exists, the cursor
//     limit) are checked against this node's applied state: exact when one
//     node, the leader, makes every change after it has applied the whole
//     log.
//   - An event this version cannot apply (an unknown kind, written by a
//     newer server, or a damaged record) is never skipped: the tail stops
//     there, Err reports it, reads keep answering from the last change
//     applied, and every change method fails with that error. Upgrade the
//     node and reopen the plane to resume. The same holds if the store
//     fails or is closed under the plane.
//   - Applied and WaitApplied give read-your-writes across nodes: a
//     client's receipt sequence, waited for on another node, makes its
//     reads reflect the change.
//   - Close stops the tail and waits for it; the store stays open (its
//     owner closes it).
//
// A follower learns of changes it did not make, and the server must react
// to them as it does to its own: Options.OnChange receives every change
// applied after Open's replay (Change.Kind, Change.TenantID), once, in log
// order — on the node that made it, before the change method returns. The
// effects the server wires to it, which its admin handlers perform today
// after their own change:
//
//	change                          effect
//	------------------------------  -----------------------------------------------
//	key.revoked                     end the key's SSE streams (httpapi accessChanged)
//	tenant.suspended                end the tenant's streams; stop its hosted
//	                                workers (accessChanged, Workers.TenantChanged)
//	tenant.resumed                  start its hosted workers (Workers.TenantChanged)
//	tenant.deleted                  end its streams, stop its workers, close and
//	                                remove its store (Tenants.Remove), forget its
//	                                quota buckets (Quotas.Forget), drop its policy
//	                                and plugins (Policies.Remove, Plugins.Remove)
//	tenant.quotas_set               none (quotas are read per request)
//	policy.*, plugin.*              load the revision's bundle or module (kept
//	                                outside the system store: a cluster
//	                                replicates them as blobs, see
//	                                Policies.Refresh, Plugins.Sync)
//	worker.*                        Workers.TenantChanged (on the leader)
//
// The effects must be idempotent: on the node that made a change, the
// hook and the handler's own reaction both run. The hook runs on the
// tail, which every change method of the plane waits for, so an effect
// that takes a lock some caller holds across a change method — httpapi's
// tenantMu (held around DeleteTenant), the worker supervisor's opMu (held
// around StartWorker, taken by TenantChanged) — or that waits for such a
// caller (Registry.Remove waits for the tenant's leases) deadlocks if run
// in the hook. Run only cheap, lock-free effects there (waking access
// watchers); queue the rest to a goroutine of the server's.
package control
