// Package tenantpolicy is the hosted server's second policy layer: each
// tenant's own OPA/Rego bundle, uploaded by a tenant admin, judging the
// tenant's writes after the platform policy (server configuration) has
// admitted them. A write is admitted only when both layers allow; a
// refusal is a *policy.Denial whose Layer says "platform" or "tenant"
// and whose Revision is the deciding bundle's revision.
//
// # Uploads
//
// Push takes a bundle as a gzip-compressed tar: at most
// Limits.MaxBundleBytes as uploaded, at most Limits.MaxFiles entries,
// each file at most Limits.MaxFileBytes and all of them together at most
// Limits.MaxTotalBytes (uncompressed); only regular files named *.rego,
// *.json or .manifest and directories; no absolute path, no "..", no
// link or device, no entry twice. A bundle breaking a rule is refused
// with a *BundleError naming the entry and the rule. An acceptable
// archive is extracted to a temporary directory; a bundle calling a
// built-in that reaches outside the policy (opa.SandboxRefusedBuiltins:
// http.send, net.lookup_ip_addr, opa.runtime, json.match_schema,
// json.verify_schema) or whose one call has no bound in time and memory
// (opa.SandboxUnboundedBuiltins: strings.render_template,
// graph.reachable_paths), in Rego v1 or v0, is refused (*RejectedError,
// stage "compile") before anything of it runs, and the bundle and its
// tests are compiled without those built-ins (opa.Options.Sandboxed); the
// built-ins that can produce far more than their inputs (concat, sprintf,
// bits.lsh, json.marshal_with_options, net.cidr_contains_matches) fail a
// call past opa.MaxBuiltinResultBytes or opa.MaxBuiltinPairs. Its Rego tests
// (*_test.rego, as opa.RunTests runs them) are run and the policy is
// compiled (opa.Load, tests left out): a bundle that does not compile or
// whose tests fail, or whose tests and compilation together run past
// Options.CheckTimeout, is refused with a *RejectedError listing the errors,
// and the active revision stays. Options.OnCheck is told how long each
// check a tenant asked for (a push, a rollback that compiles) held its
// check slot, refused or not: the server charges it to the tenant's
// upload budget.
//
// # Isolation
//
// With Options.Isolate (what the server sets when its binary calls
// RunChild), nothing of a tenant's bundle runs in the manager's process:
// OPA bounds an evaluation by checking its timeout between steps, but its
// type checker, its comparisons and its unification walk a value built by
// doubling (x1 := [x0, x0] … x40) in full without a check, and turning a
// decision into Go values copies it; a bundle of a few hundred bytes can
// hold a core for hours or ask for more memory than the machine has.
// Instead, child processes — this binary again — do the work: a pool of
// checkers, as many as Options.Checks, runs the checks of uploads and of
// stored revisions (a tenant's take at most half of them, and its own
// uploads run one at a time), and a pool of evaluation children, as many as
// Options.MaxConcurrent, judges the writes. The manager sends a child its
// requests over a pipe (a length and JSON) and reads the answers from
// another (the child's descriptor 3, so that nothing a library prints
// can be taken for one). An evaluation child compiles a revision the
// first time it judges by it, from the bytes the manager holds (into a
// directory the manager makes and removes, killed child or not), and
// keeps the 32 most recently used; before compiling one more it drops
// them all when its live heap is past a quarter of its memory limit. A
// child is killed one second past Options.Timeout (an evaluation) or
// Options.CheckTimeout (a check or a load), or when its Go runtime
// holds more than Options.MemoryBytes (less the heap returned to the
// OS), and the next request starts another; a request whose child was
// killed for memory is tried once more in a fresh child (where only its
// own revision counts), so that the revisions and leftovers of other
// tenants in a shared child cannot get a tenant's write refused. The
// write is denied with POLICY_ERROR ("ran past 1s", "took more than
// 1024 MiB of memory"), the upload refused with a *RejectedError naming
// policy_bundle_check_timeout or policy_memory. Once a request is sent
// the write waits for its answer even if its context ends (at most the
// timeouts above): ending the child for a client that went away would
// cost every tenant whose revisions it holds a compile. A child dies
// with the server (Linux) and ends when its standard input closes.
//
// The manager caches a revision's decisions itself, keyed on the input
// fields the bundle reads (as an in-process gate does; at most 16,384 per
// revision, each an allow or a denial whose reasons take at most
// opa.MaxCachedReasonBytes, keyed on at most 65 bytes: a longer key is
// kept as its SHA-256),
// so a decision made before takes no round trip; and a batch's items go
// to the child together (core.ItemsAdmission; 16 to a request, the
// batch's context checked between requests), judged in order up to the
// first refused — the first item either layer refuses is the one
// reported, as when each is admitted in turn. Every item of a batch is
// judged by one revision, the one active when its judging began (also
// when its items go one at a time: to an in-process gate, or after a
// failed round trip), so a push during a batch never splits it. A round trip costs about
// 30 µs on a 2-core VM. The evaluation children start, in the
// background, when the manager first holds a tenant's bundle (about
// 40 ms and 25 MB each).
//
// # Revisions and storage
//
// An accepted bundle's revision is the hex SHA-256 of its bytes as
// uploaded. The bytes are kept, content-addressed, at
// <Options.Dir>/<tenant>/<revision>.tar.gz (written to a temporary file,
// synced and renamed into place before anything refers to them); the
// revision, its size, who uploaded it and when are recorded in the
// control plane (control.Plane.ActivatePolicy), which is the source of
// truth of which revision is active: the bundles are kept outside the
// system store so that its events stay small. Rollback makes an earlier
// revision active again (control.Plane.RollbackPolicy). A tenant keeps
// at most Limits.MaxRevisions revisions: a new one past it drops the
// oldest (never the one it replaces; the drop is recorded with the
// activation, so a replay drops the same ones) and their files. At Open the
// active revision of every tenant is loaded from its file again; one
// that cannot be loaded (a missing or damaged file) makes the tenant's
// writes fail closed with POLICY_ERROR, never admits them (pushing the
// same bundle again repairs it). A deleted tenant's bundles are removed
// (Remove); what a crash left behind is removed at Open.
//
// With Options.Blobs (a cluster node's replicated blob store) the bytes are
// kept there instead, under the same revision; a node that did not take
// the upload learns of the activation from the control plane and loads the
// revision from the blobs (Refresh, or the first write that finds it not
// loaded), so every node judges a tenant's writes by the same revision.
// The decision log stays per node: the node that judges a write records
// its decision, and on a cluster that is the leader, which also serves the
// log.
//
// The decision of a tenant bundle carries the content revision, not the
// revision of the bundle's own .manifest.
//
// # Decision log
//
// Every denial of a tenant's write, by either layer, is recorded in the
// tenant's decision log with a decision id (also the denial's
// DecisionID), the result, the layer, the revision, the principal, the
// action, the reasons and the input fields the deciding policy reads;
// so is a share of the allowed writes a policy judged, when the tenant's
// settings.decision_allow_sample (control.Settings.DecisionAllowSample)
// is above 0. Each input field and reason is kept up to
// Options.DecisionMaxBytes of JSON, at most 16 reasons, and an entry
// whose input and reasons pass 8 × DecisionMaxBytes keeps a note in
// place of its input and only its first reason.
//
// The log is kept on disk, per tenant, under Options.DecisionDir and
// survives a restart (the file format and its retention are described in
// decisionlog.go): QueryDecisions sees exactly the newest
// Options.DecisionLogSize decisions within Options.DecisionLogBytes of
// JSON, filtered by time, id, result and revision, a page at a time. The
// write path never waits for it: a decision is queued (at most
// Options.DecisionQueue of them, one tenant at most a quarter of that,
// and DecisionQueueMaxBytes) for one writer goroutine, so one tenant's
// flood of denials cannot crowd out the others'; past the bound it is
// dropped and counted
// (DecisionCounts, DecisionStats). A query first waits for the decisions
// queued before it to be written. A deleted tenant's log is removed with
// its bundles, and its decisions still queued are never written (not
// even into a new tenant of the same id).
package tenantpolicy
