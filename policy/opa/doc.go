// Package opa is the Open Policy Agent gate for batpak stores: a
// policy.Gate that evaluates Rego v1 write policies, with a decision cache
// keyed on exactly the input it reads, hot reload, and the Rego test
// runner behind `batpak policy test`. It is the only package that imports
// OPA; package policy (the gate types, the pipeline and the admitter)
// links none of it, nor do core and plugins.
//
//	gate, err := opa.Load(ctx, "policies/", opa.Options{})
//	cfg := core.DefaultConfig(dir)
//	cfg.Admission = policy.NewAdmitter(gate)
//	store, err := core.Open(cfg)
//
// The policy sees the input document package policy describes (the
// fields of policy.Input, as JSON).
//
// # Bundles and decisions
//
// Load reads a bundle directory (Rego modules, data.json/data.yaml, an
// optional .manifest whose roots and revision are respected) or a bundle
// tarball of the same; its *_test.rego files, at any depth, are left out
// of either. The decision is
// data.batpak.write, an object with
//
//	allow  boolean: the write may go ahead
//	deny   a set of {"code": …, "message": …, …} objects or of strings
//
// A write is admitted when allow is true and deny is empty (a policy with
// deny rules only admits what it does not deny). Every deny entry becomes
// a policy.Reason (extra object fields go to its Context). The gate fails
// closed: no decision, an undefined result, a malformed decision, an
// evaluation error (built-in errors included, such as a division by zero:
// evaluation is strict, so an erring deny rule is never silently skipped)
// or a timeout denies with POLICY_ERROR and the cause — never allows.
// Each decision carries the bundle's revision. The gate asks for the
// decision's allow and deny only (so rules of the package neither depends
// on are not evaluated), or for data.batpak.write whole when the bundle
// defines it as a whole.
//
// Reload compiles the bundle again and swaps it in atomically; a bundle
// that does not compile is refused with its errors and the loaded policy
// stays in force. Watch reloads on file changes (directories created
// under a bundle directory included, and a bundle directory replaced by
// rename; see Watch for what is not watched).
//
// # Speed
//
// Evaluation runs on the writing goroutine with a prepared query and the
// input built directly as an ast.Value. Of the payload, only what the
// policy reads is converted (the members on its input.event.payload.…
// paths; the payload whole if it reads input.event.payload or input as a
// whole), at most Options.MaxInputValues values, inside the evaluation
// timeout: a larger payload denies with POLICY_ERROR naming the limit.
// Decisions are cached, keyed on exactly the input fields the policy
// reads: at load, every reference to input in the compiled modules
// becomes a path (input.principal.tenant, input.event.payload.amount; a
// path stops at the first non-constant index), and the key is the values
// at those paths — so a field the policy never reads cannot change a
// cached decision, and one it reads always can. A reload starts an empty
// cache. Policies that read the input as a whole or call non-deterministic
// built-ins (time.now_ns, rand.intn, http.send, …) are not cached.
//
// # Rego unit tests
//
// RunTests runs a bundle's Rego unit tests as "opa test --bundle DIR"
// does: every rule named test_* (by convention in a *_test.rego file) is
// a test, passing when it is true. Its errors tell a bundle that does not
// load (ErrBundleLoad) from one that does not compile (ErrBundleCompile)
// and a bad filter (ErrTestFilter); ErrorLines flattens OPA's error lists
// into one "file:line: code: message" line each. A bundle written in Rego
// v0, the syntax before OPA 1.0, is also ErrRegoV0 (with every file's v1
// parse errors); TestOptions.V0Compatible runs its tests as "opa test
// --v0-compatible" does. The write gate (Load) parses Rego v1 only.
// RunTestsWithCoverage also reports which lines the tests evaluated
// (Coverage, in "opa test --coverage"'s JSON shape), and a TestResult
// marshals as one element of "opa test --format json".
package opa
