// Package policy gates writes to a batpak store: the gate types, ordered
// gate sets, the admitter the store asks, a pipeline with audited
// bypasses, and the input document every gate judges. It links no Open
// Policy Agent code: the OPA gate, which evaluates Rego v1 write policies,
// is in package policy/opa, the only package that imports OPA.
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
//	gate, err := opa.Load(ctx, "policies/", opa.Options{}) // package policy/opa
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
// Gates judge an *Input; an OPA policy (policy/opa) sees the same thing
// as input:
//
//	{
//	  "action":    "append" | "batch" | "fence" | "import" | "reaction" | "plugin"
//	             | "system" | "redact" | "erase" | "compact",
//	  "principal": {"id": "u1", "tenant": "acme", "roles": ["clerk"], "key_id": ""},
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
