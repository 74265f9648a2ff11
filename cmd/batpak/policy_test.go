package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// examplePolicies is the repository's example bundle, as an absolute path
// (isolate changes the working directory).
func examplePolicies(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "examples", "policies"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// wantExit runs the CLI and fails the test unless it exits with code.
func wantExit(t *testing.T, code int, stdin string, args ...string) result {
	t.Helper()
	r := batpakIn(t, stdin, args...)
	if r.code != code {
		t.Fatalf("batpak %q: exit %d, want %d\nstdout: %s\nstderr: %s", args, r.code, code, r.stdout, r.stderr)
	}
	return r
}

func contains(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, s)
		}
	}
}

func TestPolicyTestExamples(t *testing.T) {
	bundle := examplePolicies(t)
	isolate(t)
	out := ok(t, "policy", "test", bundle)
	m := regexp.MustCompile(`(?m)^(\d+) passed, 0 failed\n\z`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no passing summary at the end:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if fmt.Sprint(len(lines)-1) != m[1] {
		t.Errorf("%d test lines for %s tests", len(lines)-1, m[1])
	}
	passLine := regexp.MustCompile(`^PASS  batpak\.write_test\.test_\w+ \([0-9.]+[µnm]?s\)$`)
	for _, l := range lines[:len(lines)-1] {
		if !passLine.MatchString(l) {
			t.Errorf("test line %q", l)
		}
	}
	contains(t, "policy test", out, "PASS  batpak.write_test.test_clerk_places_order (", "PASS  batpak.write_test.test_deny_other_tenants_entity (")

	// --run selects tests by name.
	out = ok(t, "policy", "test", bundle, "--run", "test_deny_.*_total$")
	if !strings.HasSuffix(out, "5 passed, 0 failed\n") {
		t.Errorf("--run: %s", out)
	}
	fails(t, []string{"policy", "test", bundle, "--run", "nothing_matches_this"}, "no tests in "+bundle+" match --run")
}

const smallPolicy = `package batpak.write

default allow := false

allow if input.principal.tenant == "acme"
`

func TestPolicyTestFailures(t *testing.T) {
	dir := isolate(t)

	// One test passes, one fails, one errs at run time.
	failing := filepath.Join(dir, "failing")
	writeFile(t, filepath.Join(failing, "write.rego"), smallPolicy)
	writeFile(t, filepath.Join(failing, "write_test.rego"), `package batpak.write_test

import data.batpak.write

test_acme_allowed if write.allow with input as {"principal": {"tenant": "acme"}}

test_globex_allowed if {
	print("globex is", "denied")
	write.allow with input as {"principal": {"tenant": "globex"}}
}
`)
	r := batpak(t, "policy", "test", failing)
	if r.code != exitError {
		t.Fatalf("exit %d, want %d\n%s%s", r.code, exitError, r.stdout, r.stderr)
	}
	contains(t, "stdout", r.stdout,
		"PASS  batpak.write_test.test_acme_allowed (",
		"FAIL  batpak.write_test.test_globex_allowed (",
		filepath.Join(failing, "write_test.rego")+":7: the test is false or undefined",
		"      | globex is denied",
		"1 passed, 1 failed\n",
	)
	if r.stderr != "batpak: 1 of 2 policy tests in "+failing+" failed\n" {
		t.Errorf("stderr = %q", r.stderr)
	}

	// A test whose evaluation errs is an ERROR and counts as failed.
	writeFile(t, filepath.Join(failing, "more_test.rego"), `package batpak.write_test

answer := 1 if input.x == 1

answer := 2 if input.x == 1

test_conflict if answer == 1 with input.x as 1
`)
	r = batpak(t, "policy", "test", failing)
	contains(t, "stdout", r.stdout, "ERROR batpak.write_test.test_conflict (", "1 passed, 2 failed (1 error)\n")
	if r.code != exitError {
		t.Errorf("exit %d with an erring test", r.code)
	}

	// No tests.
	empty := filepath.Join(dir, "empty")
	writeFile(t, filepath.Join(empty, "write.rego"), smallPolicy)
	fails(t, []string{"policy", "test", empty}, "no tests in "+empty, "test_*")

	// Parse and compile errors name file and line.
	broken := filepath.Join(dir, "broken")
	writeFile(t, filepath.Join(broken, "write.rego"), "package batpak.write\n\nallow if {\n\tinput.x ==\n}\n")
	fails(t, []string{"policy", "test", broken}, "does not load", filepath.Join(broken, "write.rego")+":5", "rego_parse_error")
	// OPA's excerpt under the error is on lines of its own, not a literal
	// "\n"; other control characters in it stay escaped.
	writeFile(t, filepath.Join(broken, "write.rego"), "package batpak.write\n\nallow if { input.x == \"\x1b[2J\"\n")
	r = fails(t, []string{"policy", "test", broken}, "does not load", "rego_parse_error: unexpected eof token\n  allow if { input.x == \"\\x1b[2J\"\n  ")
	if strings.Contains(r.stderr, `\n`) || strings.Contains(r.stderr, "\x1b") || !strings.HasSuffix(r.stderr, "^\n") {
		t.Errorf("policy test of a broken bundle:\n%s", r.stderr)
	}
	writeFile(t, filepath.Join(broken, "write.rego"), "package batpak.write\n\nallow if {\n\tundefined_function(input.x)\n}\n")
	fails(t, []string{"policy", "test", broken}, "does not compile", filepath.Join(broken, "write.rego")+":4", "undefined function undefined_function")

	// Rego v1 only: a v0-style rule is a parse error, and the message
	// points to --v0-compatible; a bundle broken in both is not told to.
	writeFile(t, filepath.Join(broken, "write.rego"), "package batpak.write\n\nallow { input.x }\n")
	fails(t, []string{"policy", "test", broken}, "does not parse as Rego v1 (1 error):\n  "+filepath.Join(broken, "write.rego")+":3: rego_parse_error",
		"\nit parses as Rego v0, the syntax before OPA 1.0: run its tests with --v0-compatible\n")
	writeFile(t, filepath.Join(broken, "write.rego"), "package batpak.write\n\nallow { input.x ==\n")
	if r := fails(t, []string{"policy", "test", broken}, "does not load", "rego_parse_error"); strings.Contains(r.stderr, "v0") {
		t.Errorf("a bundle that parses in no Rego version points to --v0-compatible:\n%s", r.stderr)
	}

	fails(t, []string{"policy", "test", filepath.Join(dir, "missing")}, "DIR: ", "no such file or directory")
	r = failsWith(t, exitUsage, []string{"policy", "test"}, "batpak policy test needs DIR")
	contains(t, "stderr", r.stderr, "Run 'batpak policy test --help' for usage.")
	r = failsWith(t, exitUsage, []string{"policy", "tset"}, `unknown command "tset" for "batpak policy"`)
	contains(t, "stderr", r.stderr, "Run 'batpak policy --help' for usage.")
	if out := ok(t, "policy"); !strings.Contains(out, "policy test DIR") || !strings.Contains(out, "Available Commands:") {
		t.Errorf("batpak policy:\n%s", out)
	}
}

func TestPolicyEval(t *testing.T) {
	bundle := examplePolicies(t)
	allowedInput, deniedInput := filepath.Join(bundle, "input-allowed.json"), filepath.Join(bundle, "input-denied.json")
	dir := isolate(t)

	r := wantExit(t, exitOK, "", "policy", "eval", "--bundle", bundle, "--input", allowedInput)
	contains(t, "allowed eval", r.stdout, "allowed\n", "bundle:   "+bundle, "revision: shop-tenancy-2025.07.1",
		"reads:    ", "principal.tenant", "event.entity", "event.payload.total_cents")
	if strings.Contains(r.stdout, "reasons") || r.stderr != "" {
		t.Errorf("allowed eval:\n%s%s", r.stdout, r.stderr)
	}

	r = wantExit(t, exitDenied, "", "policy", "eval", "--bundle", bundle, "--input", deniedInput)
	contains(t, "denied eval", r.stdout, "denied\n", "reasons:  3\n",
		`  TENANT_MISMATCH: tenant "globex" may write only entities prefixed "globex:", not "acme:order:1002"`,
		`      entity: "acme:order:1002"`,
		`  ORDER_OVER_LIMIT: total_cents 24485 is over tenant "globex"'s limit of 20000`,
		`      limit: 20000`,
		`  CURRENCY_NOT_ALLOWED: tenant "globex" trades in ["EUR", "USD"], not "GBP"`,
	)
	if r.stderr != "" {
		t.Errorf("a denial is not an error: stderr %q", r.stderr)
	}

	// --json, input from stdin.
	doc, err := os.ReadFile(deniedInput)
	if err != nil {
		t.Fatal(err)
	}
	r = wantExit(t, exitDenied, string(doc), "policy", "eval", "--bundle", bundle, "--input", "-", "--json")
	d := decode[decisionJSON](t, r.stdout)
	if d.Decision != "denied" || d.Allowed || d.Revision != "shop-tenancy-2025.07.1" || d.Bundle != bundle || len(d.Reasons) != 3 {
		t.Errorf("eval --json = %+v", d)
	}
	var codes []string
	for _, reason := range d.Reasons {
		codes = append(codes, reason.Code)
	}
	if fmt.Sprint(codes) != "[CURRENCY_NOT_ALLOWED ORDER_OVER_LIMIT TENANT_MISMATCH]" {
		t.Errorf("codes %v", codes)
	}
	if d.Reasons[2].Context["tenant"] != "globex" || d.Reasons[2].Context["entity"] != "acme:order:1002" {
		t.Errorf("TENANT_MISMATCH context %v", d.Reasons[2].Context)
	}
	if !strings.Contains(strings.Join(d.InputPaths, ","), "principal.roles") {
		t.Errorf("input_paths %v", d.InputPaths)
	}
	d = decode[decisionJSON](t, wantExit(t, exitOK, "", "policy", "eval", "--bundle", bundle, "--input", allowedInput, "--json").stdout)
	if d.Decision != "allowed" || !d.Allowed || d.Reasons == nil || len(d.Reasons) != 0 {
		t.Errorf("allowed eval --json = %+v", d)
	}

	// The bundle defaults to policy.dir; the kind may be spelled 1:1.
	short := `{"action": "append", "principal": {"id": "u", "tenant": "acme", "roles": ["cashier"]},
		"event": {"entity": "acme:payment:1", "scope": "shop", "kind": "2:1", "payload": {"amount_cents": 5, "currency": "EUR"}}}`
	wantExit(t, exitOK, short, "policy", "eval", "--policy-dir", bundle, "--input", "-")
	t.Setenv("BATPAK_POLICY_DIR", bundle)
	r = wantExit(t, exitDenied, strings.Replace(short, `"2:1"`, `"1:1"`, 1), "policy", "eval", "--input", "-")
	contains(t, "eval via BATPAK_POLICY_DIR", r.stdout, "KIND_NOT_ALLOWED: no role of [\"cashier\"] may write kind 0x1:0x1")
	t.Setenv("BATPAK_POLICY_DIR", "")

	// Mistakes.
	writeFile(t, "typo.json", `{"action": "append", "princpal": {}}`)
	writeFile(t, "clock.json", `{"action": "append", "event": {"kind": "1:1", "expected_clock": -1}}`)
	writeFile(t, "action.json", `{"action": "delete", "event": {"kind": "1:1"}}`)
	writeFile(t, "kind.json", `{"action": "append", "event": {"kind": "1:1", "category": 2}}`)
	writeFile(t, "two.json", `{"action": "append"} {}`)
	for _, c := range []struct {
		args  []string
		wants []string
	}{
		{[]string{"--bundle", bundle}, []string{"missing required flag --input"}},
		{[]string{"--input", "typo.json"}, []string{"no policy: give --bundle DIR or set policy.dir"}},
		{[]string{"--bundle", bundle, "--input", "missing.json"}, []string{"--input: open missing.json"}},
		{[]string{"--bundle", bundle, "--input", "typo.json"}, []string{"--input: typo.json", `unknown field "princpal"`}},
		{[]string{"--bundle", bundle, "--input", "clock.json"}, []string{"event.expected_clock", "-1 is not a clock"}},
		{[]string{"--bundle", bundle, "--input", "action.json"}, []string{`action: "delete" is not a write path`, "append, batch, fence, import, reaction, plugin"}},
		{[]string{"--bundle", bundle, "--input", "kind.json"}, []string{`event.kind: "1:1" disagrees with category 2`}},
		{[]string{"--bundle", bundle, "--input", "two.json"}, []string{"more than one JSON value"}},
		{[]string{"--bundle", filepath.Join(dir, "nowhere"), "--input", allowedInput}, []string{"--bundle " + filepath.Join(dir, "nowhere"), "no such file"}},
	} {
		code := exitError
		if strings.Contains(c.wants[0], "missing required flag") || strings.HasPrefix(c.wants[0], "no policy:") {
			code = exitUsage // how the command was called
		}
		failsWith(t, code, append([]string{"policy", "eval"}, c.args...), c.wants...)
	}

	// A policy that cannot decide: its decision is printed (the store would
	// deny) and the exit code is 1.
	odd := filepath.Join(dir, "odd")
	writeFile(t, filepath.Join(odd, "write.rego"), "package batpak.write\n\nallow := \"yes\"\n")
	r = fails(t, []string{"policy", "eval", "--bundle", odd, "--input", allowedInput}, "the policy could not decide", "allow is string, want a boolean")
	contains(t, "eval of an undecided policy", r.stdout, "denied\n", "POLICY_ERROR")

	// A bundle that does not compile names the file and line.
	writeFile(t, filepath.Join(odd, "write.rego"), "package batpak.write\n\nallow if {\n\tno_such_function(1)\n}\n")
	fails(t, []string{"policy", "eval", "--bundle", odd, "--input", allowedInput}, "--bundle "+odd, "write.rego:4", "undefined function no_such_function")
}

// storeEvents returns the store's event count from stats --json.
func storeEvents(t *testing.T, dd string) uint64 {
	t.Helper()
	return decode[statsJSON](t, ok(t, "stats", dd, "--json")).Events
}

func TestAppendWithPolicy(t *testing.T) {
	bundle := examplePolicies(t)
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	as := func(tenant, roles string) []string {
		return []string{dd, "--policy-dir", bundle, "--principal-id", "u-test", "--tenant", tenant, "--roles", roles}
	}
	appendArgs := func(who []string, entity, kind, data string) []string {
		return append(append([]string{"append"}, who...), "--entity", entity, "--scope", "shop", "--kind", kind, "--data", data)
	}
	order := `{"items":[{"sku":"BAT-AA-4","qty":2,"price_cents":499}],"total_cents":998,"currency":"EUR"}`

	// Allowed: acme's clerk places an acme order.
	out := ok(t, appendArgs(as("acme", "clerk"), "acme:order:1", "1:1", order)...)
	if !strings.HasPrefix(out, "appended ") {
		t.Errorf("allowed append: %q", out)
	}
	if n := storeEvents(t, dd); n != 1 {
		t.Fatalf("%d events after one allowed append", n)
	}

	// Denied: another tenant's entity. The message names gate, revision,
	// every reason and its context; nothing is written.
	r := failsWith(t, exitDenied, appendArgs(as("acme", "clerk"), "globex:order:1", "1:1", order),
		`write denied by gate "opa" (policy revision shop-tenancy-2025.07.1); nothing was written:`,
		`  TENANT_MISMATCH: tenant "acme" may write only entities prefixed "acme:", not "globex:order:1" {"entity":"globex:order:1","tenant":"acme"}`)
	if strings.Contains(r.stderr, "Usage:") {
		t.Errorf("usage after a denial:\n%s", r.stderr)
	}
	// Several reasons at once, one a line.
	r = failsWith(t, exitDenied, appendArgs(as("acme", "cashier"), "acme:order:2", "1:1", `{"items":[],"total_cents":-5,"currency":"EUR"}`),
		"\n  INVALID_TOTAL: total_cents must be a positive whole number of cents, not -5",
		"\n  KIND_NOT_ALLOWED: no role of [\"cashier\"] may write kind 0x1:0x1",
		"\n  NO_ITEMS: an order needs a non-empty items list")
	// No principal at all.
	failsWith(t, exitDenied, []string{"append", dd, "--policy-dir", bundle, "--entity", "acme:order:3", "--scope", "shop", "--kind", "1:2", "--data", "{}"},
		"NO_PRINCIPAL: the write carries no principal")
	if n := storeEvents(t, dd); n != 1 {
		t.Errorf("%d events after denied appends, want 1: a denied write was written", n)
	}

	// demo writes order:<n> entities, which no tenant may write.
	failsWith(t, exitDenied, []string{"demo", dd, "--policy-dir", bundle, "--principal-id", "u", "--tenant", "acme", "--roles", "manager"},
		"order:1: write denied by gate \"opa\"", "TENANT_MISMATCH")
	if n := storeEvents(t, dd); n != 1 {
		t.Errorf("%d events after a denied demo, want 1", n)
	}

	// Without a policy the same writes go through (the principal is then
	// only carried along).
	ok(t, appendArgs([]string{dd, "--tenant", "acme"}, "globex:order:1", "1:1", order)...)
	if n := storeEvents(t, dd); n != 2 {
		t.Errorf("%d events, want 2", n)
	}

	// A reason that quotes payload text cannot forge lines of its own:
	// a newline or escape sequence in the payload is printed escaped.
	quoting := filepath.Join(filepath.Dir(dir), "quoting")
	writeFile(t, filepath.Join(quoting, "write.rego"), "package batpak.write\n\nallow := true\n\n"+
		"deny contains {\"code\": \"BAD_NOTE\", \"message\": sprintf(\"note %s\", [input.event.payload.note])} if input.event.payload.note\n")
	r = failsWith(t, exitDenied, []string{"append", "--data-dir", filepath.Join(filepath.Dir(dir), "quoting-store"), "--policy-dir", quoting,
		"--entity", "e", "--scope", "s", "--kind", "1:1", "--data", `{"note":"x\n  ALLOWED: forged\u001b[2J"}`},
		`BAD_NOTE: note x\n  ALLOWED: forged\x1b[2J`)
	if got := strings.Count(r.stderr, "\n"); got != 2 {
		t.Errorf("a denial with one reason printed %d lines, want 2:\n%s", got, r.stderr)
	}

	// A broken policy refuses to write before opening the store.
	broken := filepath.Join(filepath.Dir(dir), "broken")
	writeFile(t, filepath.Join(broken, "write.rego"), "package batpak.write\n\nallow if {\n\tinput.x ==\n}\n")
	other := filepath.Join(filepath.Dir(dir), "other-store")
	if r := fails(t, []string{"append", "--data-dir", other, "--policy-dir", broken, "--entity", "e", "--scope", "s", "--kind", "1:1", "--data", "{}"},
		"policy.dir "+broken+" (from flag --policy-dir)", "write.rego:5", "rego_parse_error"); strings.Contains(r.stderr, `\n`) || strings.Contains(r.stderr, `\t`) {
		t.Errorf("the error under a broken policy.dir holds escaped line breaks or tabs:\n%s", r.stderr)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Errorf("a broken policy created the store directory (stat: %v)", err)
	}

	// policy.timeout bounds one decision: a policy that counts to a
	// million (about a second here) is denied past 20ms, and nothing is
	// written; given a minute, it admits. Out of range, the setting is
	// refused naming the key and the range.
	slow := filepath.Join(filepath.Dir(dir), "slow")
	writeFile(t, filepath.Join(slow, "write.rego"), "package batpak.write\n\nallow if count([x | some x in numbers.range(1, 1000000)]) > 0\n")
	slowStore := filepath.Join(filepath.Dir(dir), "slow-store")
	slowArgs := []string{"append", "--data-dir", slowStore, "--policy-dir", slow, "--entity", "e", "--scope", "s", "--kind", "1:1", "--data", "{}"}
	failsWith(t, exitDenied, append(slowArgs, "--policy-timeout", "20ms"), "POLICY_ERROR: policy evaluation failed: eval_cancel_error")
	if n := storeEvents(t, "--data-dir="+slowStore); n != 0 {
		t.Errorf("%d events after a decision past policy.timeout, want 0", n)
	}
	ok(t, append(slowArgs, "--policy-timeout", "1m")...)
	fails(t, append(slowArgs, "--policy-timeout", "2m"), "invalid config: policy.timeout (from flag --policy-timeout)", "want 1ms..1m")
	if v, src := configEntry(t, "policy.timeout"); v != "1s" || src != "default" {
		t.Errorf("policy.timeout = %q from %q, want 1s from default", v, src)
	}
}

func TestPolicyConfigPrecedence(t *testing.T) {
	bundle := examplePolicies(t)
	home := isolate(t)
	cfgFile := filepath.Join(home, "settings.yaml") // not a name the search finds
	writeFile(t, cfgFile, fmt.Sprintf(`data_dir: %s
policy:
  dir: %s
principal:
  id: u-file
  tenant: acme
  roles: [clerk, auditor]
`, filepath.Join(home, "store"), bundle))

	// settings returns key → [value, source] for the policy and principal keys.
	settings := func(args ...string) map[string][2]string {
		t.Helper()
		out := ok(t, append([]string{"config"}, args...)...)
		m := map[string][2]string{}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 4 && (strings.HasPrefix(f[0], "policy.") || strings.HasPrefix(f[0], "principal.")) {
				m[f[0]] = [2]string{f[1], strings.Join(f[2:len(f)-1], " ")}
			}
		}
		return m
	}
	want := func(m map[string][2]string, key, value, source string) {
		t.Helper()
		if got := m[key]; got != [2]string{value, source} {
			t.Errorf("%s = %q from %q, want %q from %q", key, got[0], got[1], value, source)
		}
	}

	m := settings()
	want(m, "policy.dir", "(none)", "default")
	want(m, "principal.id", "(none)", "default")
	want(m, "principal.tenant", "(none)", "default")
	want(m, "principal.roles", "(none)", "default")

	m = settings("--config", cfgFile)
	want(m, "policy.dir", bundle, "config "+cfgFile)
	want(m, "principal.id", "u-file", "config "+cfgFile)
	want(m, "principal.tenant", "acme", "config "+cfgFile)
	want(m, "principal.roles", "clerk,auditor", "config "+cfgFile)
	order := `{"items":[{"sku":"S","qty":1,"price_cents":100}],"total_cents":100,"currency":"EUR"}`
	write := func(entity string, args ...string) result {
		t.Helper()
		return batpak(t, append([]string{"append", "--config", cfgFile, "--entity", entity, "--scope", "shop", "--kind", "1:1", "--data", order}, args...)...)
	}
	if r := write("acme:order:1"); r.code != 0 {
		t.Errorf("acme clerk from the config file: %s", r.stderr)
	}

	// Env beats the file.
	t.Setenv("BATPAK_PRINCIPAL_TENANT", "globex")
	t.Setenv("BATPAK_PRINCIPAL_ROLES", "cashier, manager")
	m = settings("--config", cfgFile)
	want(m, "principal.tenant", "globex", "env BATPAK_PRINCIPAL_TENANT")
	want(m, "principal.roles", "cashier,manager", "env BATPAK_PRINCIPAL_ROLES")
	want(m, "principal.id", "u-file", "config "+cfgFile)
	if r := write("acme:order:2"); r.code != exitDenied || !strings.Contains(r.stderr, `tenant "globex" may write only`) {
		t.Errorf("env tenant globex writing acme: exit %d, %s", r.code, r.stderr)
	}
	if r := write("globex:order:2"); r.code != 0 {
		t.Errorf("env tenant globex writing globex: %s", r.stderr)
	}

	// Flags beat env; an empty --policy-dir turns the policy off.
	m = settings("--config", cfgFile, "--tenant", "initech", "--roles", "clerk", "--principal-id", "u-flag", "--policy-dir", "")
	want(m, "principal.tenant", "initech", "flag --tenant")
	want(m, "principal.roles", "clerk", "flag --roles")
	want(m, "principal.id", "u-flag", "flag --principal-id")
	want(m, "policy.dir", "(none)", "flag --policy-dir")
	if r := write("initech:order:3", "--tenant", "initech", "--roles", "clerk"); r.code != exitDenied || !strings.Contains(r.stderr, `UNKNOWN_TENANT: tenant "initech" is not configured`) {
		t.Errorf("flag tenant initech: exit %d, %s", r.code, r.stderr)
	}
	if r := write("anything", "--policy-dir", ""); r.code != 0 {
		t.Errorf("--policy-dir '' still gates: %s", r.stderr)
	}

	// A principal key that is not a list or a value is refused.
	bad := filepath.Join(home, "bad.yaml")
	writeFile(t, bad, "principal:\n  tenant: [a, b]\n")
	t.Setenv("BATPAK_PRINCIPAL_TENANT", "")
	fails(t, []string{"config", "--config", bad}, "principal.tenant (from config "+bad+")", "not a single value")
}

// With --policy-dir, redact and compact are judged by the policy: another
// tenant's clerk cannot erase a tenant's event; that tenant's admin can,
// and the erasure leaves an audit event (who, why, what, how many).
func TestMaintenanceWithPolicy(t *testing.T) {
	bundle := examplePolicies(t)
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	seg := "--segment-max-bytes=64KiB"
	// Orders of both tenants, over several segments, written without a policy.
	cfg := core.DefaultConfig(dir)
	cfg.SegmentMaxBytes = 64 << 10
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]core.EventID{}
	for i := 0; i < 200; i++ {
		for _, tenant := range []string{"acme", "globex"} {
			// Few entities (the policy input lists every entity a
			// compaction touches), 25 events each.
			c, err := core.NewCoordinate(fmt.Sprintf("%s:order:%d", tenant, i%8), "shop")
			if err != nil {
				t.Fatal(err)
			}
			r, err := s.Append(context.Background(), c, core.MustKind(1, 1), []byte(orderPayload(i)))
			if err != nil {
				t.Fatal(err)
			}
			if _, seen := ids[c.Entity]; !seen {
				ids[c.Entity] = r.ID // the entity's first event, in a sealed segment
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	as := func(tenant, roles string, args ...string) []string {
		return append(append([]string{}, args...), dd, seg, "--policy-dir", bundle, "--principal-id", "u-test", "--tenant", tenant, "--roles", roles)
	}
	victim := ids["globex:order:7"].String()
	intact := func() {
		t.Helper()
		if out := ok(t, "get", dd, victim); strings.Contains(out, "(redacted") || !strings.Contains(out, "total_cents") {
			t.Fatalf("globex's event lost its payload:\n%s", out)
		}
	}
	audits := func() []map[string]json.RawMessage {
		t.Helper()
		return parseLines(t, ok(t, "query", dd, "--entity-prefix", core.MaintenanceAuditEntity, "--json"))
	}

	// Another tenant's clerk: denied, payload intact, nothing recorded.
	failsWith(t, exitDenied, as("acme", "clerk", "redact", victim, "--reason", "cleanup"),
		`redact denied by gate "opa"`, "nothing was changed",
		`MAINTENANCE_NOT_ALLOWED`, `TENANT_MISMATCH: tenant "acme" may redact only entities prefixed "acme:", not "globex:order:7"`)
	intact()
	// Another tenant's admin, and globex's own clerk: denied too.
	failsWith(t, exitDenied, as("acme", "admin", "redact", victim, "--reason", "cleanup"), "TENANT_MISMATCH")
	failsWith(t, exitDenied, as("globex", "clerk", "redact", victim, "--reason", "cleanup"), "MAINTENANCE_NOT_ALLOWED")
	failsWith(t, exitDenied, as("acme", "admin", "redact", "--entity", "globex:order:8", "--reason", "cleanup"), "TENANT_MISMATCH")
	intact()
	if a := audits(); len(a) != 0 {
		t.Fatalf("%d audit records after denied redactions", len(a))
	}

	// globex's admin: erased, and recorded.
	if out := ok(t, as("globex", "admin", "redact", victim, "--reason", "GDPR request 17")...); !strings.Contains(out, "redacted "+victim) {
		t.Fatalf("redact: %q", out)
	}
	if out := ok(t, "get", dd, victim); !strings.Contains(out, "(redacted") {
		t.Fatalf("not redacted:\n%s", out)
	}
	a := audits()
	if len(a) != 1 {
		t.Fatalf("%d audit records, want 1", len(a))
	}
	var rec struct {
		Action   string           `json:"action"`
		Who      policy.Principal `json:"who"`
		Why      string           `json:"why"`
		IDs      []string         `json:"ids"`
		Entities map[string]int   `json:"entities"`
		Erased   int              `json:"events_erased"`
		Removed  int              `json:"events_removed"`
	}
	if err := json.Unmarshal(a[0]["payload"], &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Action != "redact" || rec.Who.Tenant != "globex" || rec.Who.ID != "u-test" || rec.Why != "GDPR request 17" ||
		len(rec.IDs) != 1 || rec.IDs[0] != victim || rec.Entities["globex:order:7"] != 1 || rec.Erased != 1 {
		t.Fatalf("audit record %s", a[0]["payload"])
	}

	// compact: a clerk may not; acme's admin may not remove globex's
	// events; globex's admin may tombstone its own.
	before := storeEvents(t, dd)
	failsWith(t, exitDenied, as("acme", "clerk", "compact", "--merge"), `compact denied by gate "opa"`, "MAINTENANCE_NOT_ALLOWED")
	failsWith(t, exitDenied, as("acme", "admin", "compact", "--max-per-entity", "0", "--tombstone-entity", "globex:order:3"), "TENANT_MISMATCH", `not "globex:order:3"`)
	failsWith(t, exitDenied, as("acme", "admin", "compact", "--max-age", "1ns"), "TENANT_MISMATCH")
	if n := storeEvents(t, dd); n != before {
		t.Fatalf("%d events after denied compactions, want %d", n, before)
	}
	if out := ok(t, "get", dd, ids["globex:order:3"].String()); strings.Contains(out, "(redacted") {
		t.Fatalf("a denied compaction tombstoned:\n%s", out)
	}
	out := ok(t, as("globex", "admin", "compact", "--tombstone-entity", "globex:order:3", "--reason", "retention")...)
	m := regexp.MustCompile(`, ([0-9]+) events? tombstoned`).FindStringSubmatch(out)
	if m == nil || m[1] == "0" {
		t.Fatalf("compact: %q", out)
	}
	if out := ok(t, "get", dd, ids["globex:order:3"].String()); !strings.Contains(out, "(redacted") {
		t.Fatalf("not tombstoned:\n%s", out)
	}
	if a := audits(); len(a) != 2 || !strings.Contains(string(a[1]["payload"]), `"action":"compact"`) || !strings.Contains(string(a[1]["payload"]), `"entities":{"globex:order:3":`+m[1]+`}`) {
		t.Fatalf("audit records %v", a)
	}
	// A merge removes nothing: an admin may run it, and nothing is recorded.
	ok(t, as("acme", "admin", "compact", "--merge")...)
	if a := audits(); len(a) != 2 {
		t.Fatalf("%d audit records after a merge, want 2", len(a))
	}
	ok(t, "verify", dd)
}

// opaLibrary is a copy of open-policy-agent/library's docker, aws and
// terraform policies with their tests: Rego v0, written before OPA 1.0.
func opaLibrary(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "opa-library"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// The public Rego libraries written before OPA 1.0 do not parse as Rego
// v1; --v0-compatible runs their tests as opa test --v0-compatible does.
// The write gate stays Rego v1.
func TestPolicyTestV0Compatible(t *testing.T) {
	library, examples := opaLibrary(t), examplePolicies(t)
	dir := isolate(t)

	r := fails(t, []string{"policy", "test", library}, "policy bundle "+library+" does not parse as Rego v1 (",
		"rego_parse_error: `if` keyword is required before",
		"\nit parses as Rego v0, the syntax before OPA 1.0: run its tests with --v0-compatible\n")
	if !regexp.MustCompile(`\n  ` + regexp.QuoteMeta(library) + `/(aws|docker|terraform)/\w+\.rego:\d+: rego_parse_error`).MatchString(r.stderr) {
		t.Errorf("the parse errors do not name file and line:\n%s", r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout of a bundle that does not parse: %q", r.stdout)
	}

	out := ok(t, "policy", "test", library, "--v0-compatible")
	for _, name := range []string{
		"aws.test.example.test_simple_sg",
		"docker.test_host_mounts",
		"terraform.test.example.test_small_create", "terraform.test.example.test_large_create", "terraform.test.example.test_mix",
		"terraform.test.library.test_small_create", "terraform.test.library.test_resource_types",
		"terraform.test.library.test_small_create_of_type", "terraform.test.library.test_mix",
		"terraform.test.library.test_mix_of_type", "terraform.test.library.test_large_create",
		"terraform.test.library.test_large_create_of_type",
	} {
		contains(t, "policy test --v0-compatible", out, "PASS  "+name+" (")
	}
	if !strings.HasSuffix(out, "\n12 passed, 0 failed\n") {
		t.Errorf("policy test --v0-compatible:\n%s", out)
	}

	// v0 semantics, not only syntax: a v0 test that fails still fails.
	v0 := filepath.Join(dir, "v0")
	writeFile(t, filepath.Join(v0, "write.rego"), `package batpak.write

import data.lib.tenancy

deny[msg] {
	not tenancy.same_tenant(input)
	msg := sprintf("tenant %s may not write %s", [input.principal.tenant, input.event.entity])
}
`)
	writeFile(t, filepath.Join(v0, "lib", "tenancy.rego"), `package lib.tenancy

same_tenant(doc) {
	startswith(doc.event.entity, concat("", [doc.principal.tenant, ":"]))
}
`)
	writeFile(t, filepath.Join(v0, "write_test.rego"), `package batpak.write

test_own_tenant {
	count(deny) == 0 with input as {"principal": {"tenant": "acme"}, "event": {"entity": "acme:1"}}
}

test_other_tenant {
	deny["tenant acme may not write globex:1"] with input as {"principal": {"tenant": "acme"}, "event": {"entity": "globex:1"}}
}

test_wrong_expectation {
	count(deny) == 0 with input as {"principal": {"tenant": "acme"}, "event": {"entity": "globex:1"}}
}
`)
	// Every file's errors, in order, the first five of them.
	fails(t, []string{"policy", "test", v0}, "does not parse as Rego v1 (6 errors):\n"+
		"  "+filepath.Join(v0, "lib", "tenancy.rego")+":3: rego_parse_error: `if` keyword is required before function body\n"+
		"  "+filepath.Join(v0, "write.rego")+":5: rego_parse_error: `contains` keyword is required for partial set rules\n"+
		"  "+filepath.Join(v0, "write.rego")+":5: rego_parse_error: `if` keyword is required before rule body\n"+
		"  "+filepath.Join(v0, "write_test.rego")+":3: rego_parse_error: `if` keyword is required before rule body\n"+
		"  "+filepath.Join(v0, "write_test.rego")+":7: rego_parse_error: `if` keyword is required before rule body\n"+
		"  … and 1 more\nit parses as Rego v0, the syntax before OPA 1.0: run its tests with --v0-compatible\n")
	r = batpak(t, "policy", "test", v0, "--v0-compatible")
	if r.code != exitError {
		t.Fatalf("exit %d, want %d\n%s%s", r.code, exitError, r.stdout, r.stderr)
	}
	contains(t, "stdout", r.stdout, "PASS  batpak.write.test_own_tenant (", "PASS  batpak.write.test_other_tenant (",
		"FAIL  batpak.write.test_wrong_expectation (", filepath.Join(v0, "write_test.rego")+":11: ", "2 passed, 1 failed\n")

	contains(t, "policy test --help", ok(t, "policy", "test", "--help"), "--json", "--coverage", "--threshold", "--v0-compatible",
		`"opa test --format json"`, "Rego v0")

	// The gate loads Rego v1 only.
	fails(t, []string{"policy", "eval", "--bundle", v0, "--input", filepath.Join(examples, "input-allowed.json")},
		"--bundle "+v0, ".rego:", "rego_parse_error: `if` keyword is required before")
}

// testJSON is one test in policy test --json's output (opa test --format
// json's shape).
type testJSON struct {
	Location *struct {
		File string `json:"file"`
		Row  int    `json:"row"`
		Col  int    `json:"col"`
	} `json:"location"`
	Package string `json:"package"`
	Name    string `json:"name"`
	Fail    bool   `json:"fail"`
	Error   *struct {
		Code     string `json:"code"`
		Message  string `json:"message"`
		Location *struct {
			File string `json:"file"`
			Row  int    `json:"row"`
			Col  int    `json:"col"`
		} `json:"location"`
	} `json:"error"`
	Skip     bool   `json:"skip"`
	Duration int64  `json:"duration"`
	Output   []byte `json:"output"`
}

func decodeAll[T any](t *testing.T, out string) T {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	var v T
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("not the JSON expected: %v\n%s", err, out)
	}
	if dec.More() {
		t.Fatalf("more than one JSON value:\n%s", out)
	}
	return v
}

func TestPolicyTestJSON(t *testing.T) {
	bundle := examplePolicies(t)
	dir := isolate(t)

	// Every test the text output lists, each with its location.
	text := ok(t, "policy", "test", bundle)
	tests := decodeAll[[]testJSON](t, ok(t, "policy", "test", bundle, "--json"))
	if want := strings.Count(text, "PASS  "); len(tests) != want || want == 0 {
		t.Fatalf("--json lists %d tests, the text output %d", len(tests), want)
	}
	for _, tc := range tests {
		if tc.Fail || tc.Error != nil || tc.Skip || tc.Duration <= 0 || tc.Package != "data.batpak.write_test" ||
			tc.Location == nil || tc.Location.File != filepath.Join(bundle, "write_test.rego") || tc.Location.Row <= 0 {
			t.Errorf("test %+v", tc)
		}
		if !strings.Contains(text, "PASS  batpak.write_test."+tc.Name+" (") {
			t.Errorf("%s is not in the text output", tc.Name)
		}
	}

	// Failures and errors: the JSON is still printed, the exit code is 1.
	failing := filepath.Join(dir, "failing")
	writeFile(t, filepath.Join(failing, "write.rego"), smallPolicy)
	writeFile(t, filepath.Join(failing, "write_test.rego"), `package batpak.write_test

import data.batpak.write

test_acme_allowed if write.allow with input as {"principal": {"tenant": "acme"}}

test_globex_allowed if {
	print("globex is", "denied")
	write.allow with input as {"principal": {"tenant": "globex"}}
}

answer := 1 if input.x == 1

answer := 2 if input.x == 1

test_conflict if answer == 1 with input.x as 1

todo_test_later if false
`)
	r := batpak(t, "policy", "test", failing, "--json")
	if r.code != exitError || r.stderr != "batpak: 2 of 3 policy tests in "+failing+" failed\n" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	tests = decodeAll[[]testJSON](t, r.stdout)
	got := map[string]testJSON{}
	for _, tc := range tests {
		got[tc.Name] = tc
	}
	if len(got) != 4 {
		t.Fatalf("%d tests in %s", len(got), r.stdout)
	}
	if tc := got["test_acme_allowed"]; tc.Fail || tc.Error != nil || tc.Skip {
		t.Errorf("passing test %+v", tc)
	}
	if tc := got["test_globex_allowed"]; !tc.Fail || tc.Location == nil || tc.Location.Row != 7 || string(tc.Output) != "globex is denied\n" {
		t.Errorf("failing test %+v (output %q)", tc, tc.Output)
	}
	if tc := got["test_conflict"]; tc.Fail || tc.Error == nil || tc.Error.Code != "eval_conflict_error" ||
		!strings.Contains(tc.Error.Message, "conflicting values") || tc.Error.Location == nil || tc.Error.Location.Row != 14 {
		t.Errorf("erring test %+v", tc)
	}
	if tc := got["todo_test_later"]; !tc.Skip || tc.Fail || tc.Error != nil {
		t.Errorf("skipped test %+v", tc)
	}
}

// coverageOut is policy test --coverage --json's output.
type coverageOut struct {
	Files map[string]struct {
		Covered         []lineRange `json:"covered"`
		NotCovered      []lineRange `json:"not_covered"`
		CoveredLines    int         `json:"covered_lines"`
		NotCoveredLines int         `json:"not_covered_lines"`
		Coverage        float64     `json:"coverage"`
	} `json:"files"`
	CoveredLines    int        `json:"covered_lines"`
	NotCoveredLines int        `json:"not_covered_lines"`
	Coverage        float64    `json:"coverage"`
	Tests           []testJSON `json:"tests"`
}

type lineRange struct {
	Start struct {
		Row int `json:"row"`
		Col int `json:"col"`
	} `json:"start"`
	End struct {
		Row int `json:"row"`
		Col int `json:"col"`
	} `json:"end"`
	Kinds []string `json:"kinds"`
}

const coveredPolicy = `package batpak.write

default allow := false

allow if input.principal.tenant == "acme"

deny contains "NO_PRINCIPAL" if {
	not input.principal
}
`

const coveredPolicyTest = `package batpak.write_test

import data.batpak.write

test_acme_allowed if write.allow with input as {"principal": {"tenant": "acme"}}

test_globex_not_allowed if not write.allow with input as {"principal": {"tenant": "globex"}}
`

const coveredPolicyDenyTest = `package batpak.write_test

import data.batpak.write

test_no_principal_denied if "NO_PRINCIPAL" in write.deny with input as {}
`

func TestPolicyTestCoverage(t *testing.T) {
	dir := filepath.Join(isolate(t), "bundle")
	policyFile := filepath.Join(dir, "write.rego")
	writeFile(t, policyFile, coveredPolicy)
	writeFile(t, filepath.Join(dir, "write_test.rego"), coveredPolicyTest)
	writeFile(t, filepath.Join(dir, "deny_test.rego"), coveredPolicyDenyTest)

	full := decodeAll[coverageOut](t, ok(t, "policy", "test", dir, "--coverage", "--json"))
	if len(full.Tests) != 3 || full.Files[policyFile].Coverage != 100 || len(full.Files[policyFile].NotCovered) != 0 ||
		full.Coverage != 100 || full.NotCoveredLines != 0 || full.CoveredLines == 0 {
		t.Fatalf("coverage with every rule tested: %+v", full)
	}
	text := ok(t, "policy", "test", dir, "--coverage")
	contains(t, "policy test --coverage", text, "3 passed, 0 failed\ncoverage: 100.00% (",
		"\n  write.rego      100.00%\n", "\n  deny_test.rego  100.00%\n")
	// Exactly the threshold passes.
	ok(t, "policy", "test", dir, "--threshold", "100")

	// Without the deny test, the deny rule's body (line 8) is not covered.
	if err := os.Remove(filepath.Join(dir, "deny_test.rego")); err != nil {
		t.Fatal(err)
	}
	part := decodeAll[coverageOut](t, ok(t, "policy", "test", dir, "--coverage", "--json"))
	pf := part.Files[policyFile]
	if len(part.Tests) != 2 || part.Coverage >= full.Coverage || pf.Coverage >= 100 || pf.NotCoveredLines == 0 {
		t.Fatalf("coverage without the deny test: %.2f%% (policy %.2f%%), with it %.2f%%", part.Coverage, pf.Coverage, full.Coverage)
	}
	uncovered := map[int]bool{}
	for _, r := range pf.NotCovered {
		for row := r.Start.Row; row <= r.End.Row; row++ {
			uncovered[row] = true
		}
	}
	if !uncovered[8] || uncovered[5] {
		t.Errorf("lines not covered %v: want 8 (the deny body), not 5 (allow, tested)", pf.NotCovered)
	}
	text = ok(t, "policy", "test", dir, "--coverage")
	m := regexp.MustCompile(`(?m)^coverage: (\d+\.\d\d)% \((\d+) of (\d+) lines\)$`).FindStringSubmatch(text)
	if m == nil || m[1] != fmt.Sprintf("%.2f", part.Coverage) || m[2] != fmt.Sprint(part.CoveredLines) ||
		m[3] != fmt.Sprint(part.CoveredLines+part.NotCoveredLines) {
		t.Errorf("coverage line (JSON says %.2f%%, %d+%d lines):\n%s", part.Coverage, part.CoveredLines, part.NotCoveredLines, text)
	}
	// The deny rule (head and body, lines 7-8) is not covered.
	if want := fmt.Sprintf("\n  write.rego      %6.2f%%  not covered: 7-8\n", pf.Coverage); !strings.Contains(text, want) {
		t.Errorf("no line %q:\n%s", want, text)
	}

	// --threshold: below fails (and implies --coverage), at passes;
	// outside 0..100 is refused.
	threshold := fmt.Sprintf("%.2f", part.Coverage+0.01)
	r := fails(t, []string{"policy", "test", dir, "--threshold", threshold},
		fmt.Sprintf("coverage %.2f%% of %s is below --threshold %s%%", part.Coverage, dir, threshold))
	contains(t, "stdout", r.stdout, "2 passed, 0 failed\ncoverage: ")
	ok(t, "policy", "test", dir, "--threshold", fmt.Sprint(part.Coverage))
	fails(t, []string{"policy", "test", dir, "--threshold", "100.5"}, "--threshold: 100.5 is not a percentage: want 0 to 100")
	fails(t, []string{"policy", "test", dir, "--threshold", "-1"}, "--threshold: -1 is not a percentage")

	// A failing test still reports coverage, and fails.
	writeFile(t, filepath.Join(dir, "deny_test.rego"), strings.Replace(coveredPolicyDenyTest, `with input as {}`, `with input as {"principal": {}}`, 1))
	r = batpak(t, "policy", "test", dir, "--coverage", "--json")
	if r.code != exitError || !strings.Contains(r.stderr, "1 of 3 policy tests") {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if failed := decodeAll[coverageOut](t, r.stdout); len(failed.Tests) != 3 || failed.Coverage == 0 {
		t.Errorf("coverage with a failing test: %+v", failed)
	}
}

// TestPolicyEvalEscapesReasons: policy eval prints what a policy wrote in
// a reason (code, message, context) escaped, one line each, as remote
// denials are: a message holding newlines cannot forge "allowed" or
// another reason.
func TestPolicyEvalEscapesReasons(t *testing.T) {
	dir := isolate(t)
	b := filepath.Join(dir, "forge")
	writeFile(t, filepath.Join(b, "policy.rego"), `package batpak.write

deny contains {"code": "X\nallowed", "message": "first\nallowed\nreasons:  0\u001b[2J", "context": {"k\ny": "v\u0085w"}} if {
	input.event.entity == "a:1"
}
`)
	in := filepath.Join(dir, "in.json")
	writeFile(t, in, `{"action":"append","principal":{"id":"p"},"event":{"entity":"a:1","scope":"s","kind":"1:1"}}`)
	r := batpak(t, "policy", "eval", "--bundle", b, "--input", in)
	if r.code != exitDenied {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 7 || lines[0] != "denied" || strings.ContainsAny(r.stdout, "\x1b\u0085") {
		t.Fatalf("policy eval printed %d lines:\n%s", len(lines), r.stdout)
	}
	for _, l := range lines[1:] {
		if l == "allowed" || strings.HasPrefix(l, "reasons:  0") {
			t.Fatalf("a reason forged a line: %q in\n%s", l, r.stdout)
		}
	}
	if !strings.Contains(lines[4], `first\nallowed`) {
		t.Errorf("the message is not escaped on its line: %q", lines[4])
	}
}
