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
//	worker:<tenant>/<name>   6:1   worker.started           tenant, worker {name, plugin, region, cursor, restart}
//	worker:<tenant>/<name>   6:2   worker.stopped           tenant, worker {name}
//	worker:<tenant>/<name>   6:3   worker.quarantined       tenant, worker {name}, reason (the last fault)
//	worker:<tenant>/<name>   6:4   worker.reset             tenant, worker {name}
//
// A deleted tenant's entity keeps its events; creating the id again
// continues the same entity with a new tenant.created. A key id is never
// reused, even after revocation. A tenant's policy revisions are the hex
// SHA-256 of the bundles as uploaded (the bundles themselves are kept
// outside the system store, by the server); a deleted tenant's policy
// state goes with it, and so do its hosted workers' definitions (the
// desired state of server/hostedworker's supervisor). Secrets are never recorded, only their
// SHA-256 hashes.
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
package control
