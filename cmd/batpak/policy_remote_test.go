package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var revisionRE = regexp.MustCompile(`policy revision ([0-9a-f]{64}) is active for tenant acme`)

// activeIn returns the revision policy push or rollback printed.
func activeIn(t *testing.T, out string) string {
	t.Helper()
	m := revisionRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("want %q, got %q", revisionRE, out)
	}
	return m[1]
}

func denyRule(code, prefix string) string {
	return `package batpak.write

deny contains {"code": "` + code + `", "message": "entities under ` + prefix + ` are off limits"} if {
	startswith(input.event.entity, "` + prefix + `")
}
`
}

// TestRemotePolicyVerbs: policy push (a directory, packed the same way
// every time, and a .tar.gz), list, rollback (to the previous revision
// and to a named one) and decisions (filtered, as a table and as JSON)
// against a real server on loopback; a bundle that does not compile or
// fails its tests is refused with its errors and the active revision
// stays; the verbs need --server.
func TestRemotePolicyVerbs(t *testing.T) {
	dir := isolate(t)
	url, op := startServer(t)
	ok(t, "--server", url, "--token", op, "tenant", "create", "acme")
	key := keyIn(t, ok(t, "--server", url, "--token", op, "--tenant", "acme", "key", "issue", "app", "--role", "admin,writer"))
	as := func(args ...string) []string {
		return append([]string{"--server", url, "--token", key, "--tenant", "acme"}, args...)
	}

	failsWith(t, exitUsage, []string{"policy", "list"}, "policy list works against a server", "--server")

	first := filepath.Join(dir, "first")
	writeFile(t, filepath.Join(first, "policy.rego"), denyRule("NO_SECRETS", "secret:"))
	writeFile(t, filepath.Join(first, "policy_test.rego"), "package batpak.write_test\n\ntest_secret if {\n\tcount(data.batpak.write.deny) == 1 with input as {\"event\": {\"entity\": \"secret:1\"}}\n}\n")
	writeFile(t, filepath.Join(first, "README.md"), "notes")
	writeFile(t, filepath.Join(first, ".git", "config"), "x")
	r := batpak(t, as("policy", "push", first)...)
	if r.code != 0 || !strings.Contains(r.stderr, "left out of the bundle") || !strings.Contains(r.stderr, "README.md") || strings.Contains(r.stderr, ".git") {
		t.Fatalf("policy push DIR: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	rev1 := activeIn(t, r.stdout)
	if again := activeIn(t, ok(t, as("policy", "push", first)...)); again != rev1 {
		t.Errorf("the same directory pushed again is revision %s, want %s", again, rev1)
	}

	// Refused bundles: the errors, one a line; the active one stays.
	broken := filepath.Join(dir, "broken")
	writeFile(t, filepath.Join(broken, "policy.rego"), "package batpak.write\n\ndeny contains x if {\n")
	fails(t, as("policy", "push", broken), "does not compile", "policy.rego:", "the active revision stays")
	failing := filepath.Join(dir, "failing")
	writeFile(t, filepath.Join(failing, "policy.rego"), denyRule("NO_SECRETS", "secret:"))
	writeFile(t, filepath.Join(failing, "policy_test.rego"), "package batpak.write_test\n\ntest_wrong if {\n\tcount(data.batpak.write.deny) == 0 with input as {\"event\": {\"entity\": \"secret:1\"}}\n}\n")
	fails(t, as("policy", "push", failing), "fails its tests", "test_wrong")

	// A .tar.gz as it is.
	second := filepath.Join(dir, "second")
	writeFile(t, filepath.Join(second, "policy.rego"), denyRule("NO_ORDERS", "order:"))
	tgz, _, err := packBundle(second)
	if err != nil {
		t.Fatal(err)
	}
	tgzPath := filepath.Join(dir, "second.tar.gz")
	if err := os.WriteFile(tgzPath, tgz, 0o644); err != nil {
		t.Fatal(err)
	}
	rev2 := activeIn(t, ok(t, as("policy", "push", tgzPath)...))
	list := ok(t, as("policy", "list")...)
	if !strings.Contains(list, "*       "+rev2) || !strings.Contains(list, rev1) || !strings.HasSuffix(list, "2 revisions\n") {
		t.Errorf("policy list:\n%s", list)
	}
	var tp struct {
		Active    string `json:"active"`
		Revisions []struct {
			Revision string `json:"revision"`
		} `json:"revisions"`
	}
	if err := json.Unmarshal([]byte(ok(t, as("policy", "list", "--json")...)), &tp); err != nil || tp.Active != rev2 || len(tp.Revisions) != 2 {
		t.Errorf("policy list --json: %+v, %v", tp, err)
	}

	// Decisions of both revisions.
	deny := func(entity string) {
		t.Helper()
		if r := batpak(t, as("append", "--entity", entity, "--scope", "s", "--kind", "1:1", "--data", "{}")...); r.code == 0 {
			t.Fatalf("append %s was admitted", entity)
		}
	}
	deny("order:1")
	if out := activeIn(t, ok(t, as("policy", "rollback")...)); out != rev1 {
		t.Errorf("policy rollback made %s active, want the previous revision %s", out, rev1)
	}
	deny("secret:1")
	fails(t, as("policy", "rollback", "zzzz"), "REVISION", "no policy revision zzzz")
	fails(t, as("policy", "rollback", "ab"), "REVISION", "at least 4")
	if out := activeIn(t, ok(t, as("policy", "rollback", rev2[:8])...)); out != rev2 {
		t.Errorf("policy rollback %s made %s active", rev2[:8], out)
	}

	table := ok(t, as("policy", "decisions", "--denied")...)
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "TIME") || lines[3] != "2 decisions" ||
		!strings.Contains(lines[1], "NO_SECRETS") || !strings.Contains(lines[1], "secret:1") || !strings.Contains(lines[1], rev1[:12]) ||
		!strings.Contains(lines[2], "NO_ORDERS") || !strings.Contains(lines[2], rev2[:12]) {
		t.Errorf("policy decisions --denied:\n%s", table)
	}
	js := parseLines(t, ok(t, as("policy", "decisions", "--json", "--limit", "1")...))
	if len(js) != 1 || str(t, js[0], "revision") != rev1 || str(t, js[0], "result") != "denied" {
		t.Fatalf("policy decisions --json --limit 1: %v", js)
	}
	id := str(t, js[0], "decision_id")
	if got := parseLines(t, ok(t, as("policy", "decisions", "--json", "--id", id)...)); len(got) != 1 || str(t, got[0], "decision_id") != id {
		t.Errorf("policy decisions --id: %v", got)
	}
	if got := parseLines(t, ok(t, as("policy", "decisions", "--json", "--revision", rev2[:6])...)); len(got) != 1 || str(t, got[0], "revision") != rev2 {
		t.Errorf("policy decisions --revision: %v", got)
	}
	if out := ok(t, as("policy", "decisions", "--since", "1h")...); !strings.HasSuffix(out, "2 decisions\n") {
		t.Errorf("policy decisions --since 1h: %q", out)
	}
	if out := ok(t, as("policy", "decisions", "--allowed")...); !strings.HasSuffix(out, "0 decisions\n") {
		t.Errorf("policy decisions --allowed (no sampling): %q", out)
	}
	fails(t, as("policy", "decisions", "--since", "yesterday"), "--since", "RFC 3339")
	fails(t, as("policy", "decisions", "--limit", "0"), "--limit")
	failsWith(t, exitUsage, as("policy", "decisions", "--denied", "--allowed"), "exclude each other")
}

// dataRule denies entities under the prefixes its data lists: data.yaml
// at the bundle's root (data.blocked.prefixes) and data.yml in more/
// (data.more.prefixes).
const dataRule = `package batpak.write

deny contains {"code": "BLOCKED", "message": "entities under this prefix are off limits"} if {
	some p in array.concat(data.blocked.prefixes, data.more.prefixes)
	startswith(input.event.entity, p)
}
`

// TestPolicyPushYAMLData: a directory's data.yaml and data.yml (nested
// too) are pushed as the data.json of their directories, so the deployed
// policy denies what policy eval denies locally; a directory holding data
// twice, YAML that is not JSON data, and files the local loader reads but
// a server's bundle cannot hold are refused before anything is sent.
func TestPolicyPushYAMLData(t *testing.T) {
	dir := isolate(t)
	url, op := startServer(t)
	ok(t, "--server", url, "--token", op, "tenant", "create", "acme")
	key := keyIn(t, ok(t, "--server", url, "--token", op, "--tenant", "acme", "key", "issue", "app", "--role", "admin,writer"))
	as := func(args ...string) []string {
		return append([]string{"--server", url, "--token", key, "--tenant", "acme"}, args...)
	}

	b := filepath.Join(dir, "yaml")
	writeFile(t, filepath.Join(b, "policy.rego"), dataRule)
	writeFile(t, filepath.Join(b, "data.yaml"), "blocked:\n  prefixes:\n    - \"secret:\"\n")
	writeFile(t, filepath.Join(b, "more", "data.yml"), "prefixes: [\"order:\"]\n")
	writeFile(t, filepath.Join(b, ".git", "notes.yaml"), "x: 1\n") // not read by the loader: left out unnamed

	// Locally: denied.
	in := filepath.Join(dir, "in.json")
	for _, entity := range []string{"secret:1", "order:1"} {
		writeFile(t, in, `{"action":"append","principal":{"id":"app","tenant":"acme","roles":["writer"]},"event":{"entity":"`+entity+`","scope":"s","kind":"1:1"}}`)
		if r := batpak(t, "policy", "eval", "--bundle", b, "--input", in); r.code != exitDenied || !strings.Contains(r.stdout, "BLOCKED") {
			t.Fatalf("policy eval %s: exit %d, stdout %q, stderr %q", entity, r.code, r.stdout, r.stderr)
		}
	}

	r := batpak(t, as("policy", "push", b)...)
	if r.code != 0 || strings.Contains(r.stderr, "data.yaml") || strings.Contains(r.stderr, "data.yml") || strings.Contains(r.stderr, ".git") {
		t.Fatalf("policy push: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	rev := activeIn(t, r.stdout)
	if again := activeIn(t, ok(t, as("policy", "push", b)...)); again != rev {
		t.Errorf("the same directory pushed again is revision %s, want %s", again, rev)
	}
	// On the server: denied as well, by the data the YAML files hold.
	for _, entity := range []string{"secret:1", "order:1"} {
		failsWith(t, exitDenied, as("append", "--entity", entity, "--scope", "s", "--kind", "1:1", "--data", "{}"), "POLICY_DENIED", "off limits")
	}
	ok(t, as("append", "--entity", "public:1", "--scope", "s", "--kind", "1:1", "--data", "{}")...)

	// Refused, nothing sent: the active revision stays.
	refused := func(code int, files map[string]string, wants ...string) {
		t.Helper()
		d := t.TempDir()
		writeFile(t, filepath.Join(d, "policy.rego"), dataRule)
		for name, content := range files {
			writeFile(t, filepath.Join(d, name), content)
		}
		for i, w := range wants {
			wants[i] = strings.ReplaceAll(w, "DIR", d)
		}
		failsWith(t, code, as("policy", "push", d), wants...)
	}
	refused(exitUsage, map[string]string{"data.json": `{"blocked":{"prefixes":[]}}`, "data.yaml": "blocked: {prefixes: []}\n"},
		filepath.Join("DIR", "data.json"), filepath.Join("DIR", "data.yaml"), "keep one")
	refused(exitUsage, map[string]string{"sub/data.yaml": "a: 1\n", "sub/data.yml": "a: 2\n"},
		filepath.Join("DIR", "sub", "data.yaml"), filepath.Join("DIR", "sub", "data.yml"))
	refused(exitError, map[string]string{"data.yaml": "a: [1\n"}, filepath.Join("DIR", "data.yaml"), "does not convert to JSON")
	refused(exitUsage, map[string]string{".hidden/extra.rego": "package x\n"}, filepath.Join("DIR", ".hidden", "extra.rego"), `starts with "."`)
	refused(exitUsage, map[string]string{".cfg/data.yaml": "a: 1\n"}, filepath.Join("DIR", ".cfg", "data.yaml"))
	refused(exitUsage, map[string]string{"policy.wasm": "\x00asm"}, filepath.Join("DIR", "policy.wasm"), ".rego, .json and .manifest")
	refused(exitUsage, map[string]string{"sub/roots.manifest": `{"roots":["x"]}`}, filepath.Join("DIR", "sub", "roots.manifest"))
	list := ok(t, as("policy", "list")...)
	if !strings.Contains(list, "*       "+rev) || !strings.HasSuffix(list, "1 revision\n") {
		t.Errorf("policy list after the refusals:\n%s", list)
	}
}
