// Package policy gates writes to a batpak store: native Go gates, ordered
// gate sets, a pipeline with audited bypasses, and an Open Policy Agent
// gate that evaluates Rego v1 write policies. It is the only package that
// imports OPA.
//
// # Wiring
//
// core asks one Admission about every write, on every path (Append,
// Submit, TrySubmit, reactions, batches item by item, outbox flushes,
// fence writes, imports, plugin writes, system records written by
// applications), before anything is queued, and about every destructive
// operation (Redact, EraseEntity, Compact) before anything is erased. An
// Admitter is that Admission, made of gates:
//
//	gate, err := policy.LoadOPA(ctx, "policies/", policy.OPAOptions{})
//	cfg := core.DefaultConfig(dir)
//	cfg.Admission = policy.NewAdmitter(gate)
//	store, err := core.Open(cfg)
//	ctx = policy.WithPrincipal(ctx, policy.Principal{ID: "u1", Tenant: "acme", Roles: []string{"clerk"}})
//	_, err = store.Append(ctx, coord, kind, payload) // a *policy.Denial if refused
//
// A refused write writes nothing and announces nothing; the error is a
// *Denial (errors.As) with every reason, and for a batch it is wrapped in a
// *core.BatchItemError naming the item: one denied item refuses the batch.
//
// # The input document
//
// Gates judge an *Input; an OPA policy sees the same thing as input:
//
//	{
//	  "action":    "append" | "batch" | "fence" | "import" | "reaction" | "plugin"
//	             | "system" | "redact" | "erase" | "compact",
//	  "principal": {"id": "u1", "tenant": "acme", "roles": ["clerk"]},
//	  "event": {
//	    "entity": "acme:order:1", "scope": "shop",
//	    "kind": "0x1:0x1", "category": 1, "type": 1,
//	    "payload": {...},                  // the event's JSON, parsed
//	    "correlation_id": "0190…",         // defaults to the event's own id
//	    "causation_id": null,              // or an id
//	    "idempotency_key": null,           // or the key
//	    "expected_clock": null             // or "no_events", or a number
//	  },
//	  "batch":  null | {"size": 3, "index": 0},
//	  "entity": {"exists": true, "clock": 41},  // the entity's visible state
//	  "plugin": null | {"name": "shipper", "version": "1.2.0", "digest": "9f86…"},
//	  "maintenance": null | {                   // redact, erase, compact
//	    "reason": "GDPR request 17",            // core.WithReason
//	    "ids": ["0190…"],                       // redact, erase: payloads erased
//	    "entity": "acme:customer:7",            // erase: the entity; redact: the event's
//	    "entities": {"acme:customer:7": 3},     // every entity erased or removed from → how many
//	    "compact": null | {"merge": false, "max_age_seconds": 0, "max_per_entity": 100,
//	                       "keep": false, "tombstone": false},
//	    "events_erased": 3, "events_removed": 0, "segments": 0
//	  }
//	}
//
// The principal comes from the context (WithPrincipal); the CLI and the
// server set it, embedded callers can. A write without one has an empty
// principal, which a tenant policy will refuse. A plugin's writes carry
// the principal it was loaded for (plugins.Host.LoadFor) and name the
// plugin in "plugin". For a destructive operation "event" has empty
// fields, "batch" is null and "entity" is {false, 0}; gates see these
// inputs too (check the action): a gate written for writes only should
// refuse actions it does not know. Admitter.AdmitMaintenance passes the
// principal on to the store's audit record of the operation.
//
// # OPA policies
//
// LoadOPA reads a bundle directory (Rego modules, data.json/data.yaml, an
// optional .manifest whose roots and revision are respected; *_test.rego
// files are left out) or a bundle tarball. The decision is
// data.batpak.write, an object with
//
//	allow  boolean: the write may go ahead
//	deny   a set of {"code": …, "message": …, …} objects or of strings
//
// A write is admitted when allow is true and deny is empty (a policy with
// deny rules only admits what it does not deny). Every deny entry becomes
// a Reason (extra object fields go to its Context). The gate fails closed:
// no decision, an undefined result, a malformed decision, an evaluation
// error (built-in errors included, such as a division by zero: evaluation
// is strict, so an erring deny rule is never silently skipped) or a
// timeout denies with POLICY_ERROR and the cause — never allows.
// Each decision carries the bundle's revision.
//
// Reload compiles the bundle again and swaps it in atomically; a bundle
// that does not compile is refused with its errors and the loaded policy
// stays in force. Watch reloads on file changes.
//
// # Speed
//
// Evaluation runs on the writing goroutine with a prepared query and the
// input built directly as an ast.Value. Of the payload, only what the
// policy reads is converted (the members on its input.event.payload.…
// paths; the payload whole if it reads input.event.payload or input as a
// whole), at most OPAOptions.MaxInputValues values, inside the evaluation
// timeout: a larger payload denies with POLICY_ERROR naming the limit. Decisions are cached, keyed on
// exactly the input fields the policy reads: at load, every reference to
// input in the compiled modules becomes a path (input.principal.tenant,
// input.event.payload.amount; a path stops at the first non-constant
// index), and the key is the values at those paths — so a field the policy
// never reads cannot change a cached decision, and one it reads always
// can. A reload starts an empty cache. Policies that read the input as a
// whole or call non-deterministic built-ins (time.now_ns, rand.intn,
// http.send, …) are not cached.
//
// # Native gates and the pipeline
//
// A Gate is anything with Name and Evaluate(ctx, *Input) *Denial; GateFunc
// adapts a function. A GateSet runs gates in order: Evaluate stops at the
// first denial and otherwise returns a Receipt (only evaluation makes
// one); EvaluateAll returns every denial. A gate that panics is turned
// into a GATE_DEFECT denial; the process lives. A Pipeline commits a
// receipt of its own gate set once (Commit runs the write); Bypass lets a
// proposal through without evaluation for a stated reason, and committing
// it first writes an audit event to the store (entity batpak:audit:bypass,
// scope policy, system kind 0x0:0x1; who, why, what) — a bypass is never
// silent. Only the bypassed write (same action, coordinate, kind and
// payload) passes, once, while Commit runs (a context kept from fn lets
// nothing through afterwards), and only the Admitter the pipeline was made from
// (Admitter.Pipeline) honours it: a receipt of any other pipeline (one
// from NewPipeline, over an empty gate set, or of another admitter) lets
// nothing through, and only the issuing pipeline commits it. Other writes
// in the same Commit are judged. No bypass applies to destructive
// operations.
package policy
