package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/sdk/client"
)

// generatedTokenRE finds the operator credential a first start of batpak
// serve prints when none is configured (the line after the notice).
var generatedTokenRE = regexp.MustCompile(`(?s)generated the operator credential[^\n]*\n\s*\n\s*(\S+)\s*\n`)

// serveGenerated starts `batpak serve` in a child process on loopback with
// no operator credential configured (every BATPAK_* variable of the test
// left out), so it generates one and prints it once; it returns the child,
// the server's URL and that credential.
func serveGenerated(t *testing.T, root string, extra ...string) (child *exec.Cmd, url, operator string) {
	t.Helper()
	args := append([]string{"serve", "--root", root, "--listen", "127.0.0.1:0", "--access-log", "off"}, extra...)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix+"_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, childEnv+"="+strings.Join(args, "\x1f"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		logs strings.Builder
	)
	ready := make(chan [2]string, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			text := logs.String()
			mu.Unlock()
			tok := generatedTokenRE.FindStringSubmatch(text)
			addr := listeningRE.FindStringSubmatch(text)
			if !sent && tok != nil && addr != nil {
				ready <- [2]string{"http://" + addr[1], tok[1]}
				sent = true
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	select {
	case r := <-ready:
		return cmd, r[0], r[1]
	case <-exited:
	case <-time.After(30 * time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	t.Fatalf("batpak serve printed no address and generated credential:\n%s", logs.String())
	return nil, "", ""
}

// TestRemoteVerbsAgainstServeChild runs every remote verb through the CLI
// binary against a real `batpak serve` child process on loopback, each
// with -o json read back as JSON, and wants each failure kind's exit code
// from the real server: usage 2, denied 3 (the platform policy, the
// tenant's own policy, a revoked key), conflict 4, not found 5, and
// unavailable 8 once the server is killed.
func TestRemoteVerbsAgainstServeChild(t *testing.T) {
	dir := isolate(t)
	// Under -race, a child would sleep a second at exit (atexit_sleep_ms):
	// that would dominate the time of the seventy runs below.
	t.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	testdata, err := filepath.Abs(filepath.Join(repoRoot, "plugins", "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	// The platform policy: kind 7:7 is refused to every tenant.
	platform := filepath.Join(dir, "platform")
	writeFile(t, filepath.Join(platform, "platform.rego"), `package batpak.write

deny contains {"code": "NO_SEVENS", "message": "kind 0x7:0x7 is not written here"} if {
	input.event.kind == "0x7:0x7"
}
`)
	child, url, op := serveGenerated(t, filepath.Join(dir, "srv"), "--policy-dir", platform)

	// run runs the CLI binary and wants exit code want.
	run := func(want int, args ...string) result {
		t.Helper()
		r := runBinary(t, args...)
		if r.code != want {
			t.Fatalf("batpak %q: exit %d, want %d\nstdout: %s\nstderr: %s", args, r.code, want, r.stdout, r.stderr)
		}
		return r
	}
	// js runs a verb with -o json and returns its objects, one a line.
	js := func(args ...string) []map[string]json.RawMessage {
		t.Helper()
		r := run(exitOK, append(slices.Clone(args), "-o", "json")...)
		lines := parseLines(t, r.stdout)
		if len(lines) == 0 {
			t.Fatalf("batpak %q -o json printed nothing (stderr %q)", args, r.stderr)
		}
		return lines
	}
	one := func(args ...string) map[string]json.RawMessage {
		t.Helper()
		lines := js(args...)
		if len(lines) != 1 {
			t.Fatalf("batpak %q -o json: %d objects, want 1:\n%v", args, len(lines), lines)
		}
		return lines[0]
	}
	want := func(what string, got, want any) {
		t.Helper()
		if got != want {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
	admin := func(args ...string) []string { return append([]string{"--server", url, "--token", op}, args...) }

	// tenant create/list/suspend/resume/delete with the printed credential.
	want("tenant create", str(t, one(admin("tenant", "create", "acme")...), "state"), "active")
	one(admin("tenant", "create", "spare")...)
	ids := []string{}
	for _, l := range js(admin("tenant", "list")...) {
		ids = append(ids, str(t, l, "id"))
	}
	slices.Sort(ids)
	want("tenant list", strings.Join(ids, ","), "acme,spare")
	want("tenant suspend", str(t, one(admin("tenant", "suspend", "spare", "--reason", "unpaid")...), "state"), "suspended")
	want("tenant resume", str(t, one(admin("tenant", "resume", "spare")...), "state"), "active")
	want("tenant delete", string(one(admin("tenant", "delete", "spare", "--yes")...)["deleted"]), "true")
	want("tenant list after delete", len(js(admin("tenant", "list")...)), 1)

	// tenant quotas: the effective quotas and those set for the tenant;
	// --set and --unset change one each and keep the others.
	quotas := func(args ...string) (own, eff map[string]any) {
		t.Helper()
		var v struct {
			Quotas    map[string]any `json:"quotas"`
			Effective map[string]any `json:"effective_quotas"`
		}
		if err := json.Unmarshal([]byte(run(exitOK, admin(append([]string{"tenant", "quotas", "acme", "-o", "json"}, args...)...)...).stdout), &v); err != nil {
			t.Fatal(err)
		}
		return v.Quotas, v.Effective
	}
	own, eff := quotas()
	if len(own) != 0 || eff["requests_per_second"] != 20000.0 || eff["storage_bytes"] != float64(10<<30) {
		t.Fatalf("tenant quotas of a new tenant: set %v, effective %v", own, eff)
	}
	own, eff = quotas("--set", "requests_per_second=500", "--set", "storage_bytes=2GiB", "--set", "max_cursors=unlimited")
	if len(own) != 3 || eff["requests_per_second"] != 500.0 || eff["storage_bytes"] != float64(2<<30) || eff["max_cursors"] != -1.0 || eff["events_per_second"] != 20000.0 {
		t.Fatalf("after --set: set %v, effective %v", own, eff)
	}
	own, eff = quotas("--unset", "storage_bytes")
	if len(own) != 2 || own["requests_per_second"] != 500.0 || eff["storage_bytes"] != float64(10<<30) {
		t.Fatalf("after --unset storage_bytes: set %v, effective %v", own, eff)
	}
	table := run(exitOK, admin("tenant", "quotas", "acme")...).stdout
	wantIn(t, "tenant quotas table", table, "requests_per_second", "500", "10GiB", "unlimited", "tenant acme: 2 quotas set for it")
	for _, bad := range []struct{ flag, want string }{
		{"--set=request_per_second=5", "--set request_per_second: no such quota (did you mean requests_per_second? known: "},
		{"--set=max_cursors=2.5", "--set max_cursors=2.5: max_cursors takes a whole number"},
		{"--set=requests_per_second=fast", "want a number"},
		{"--unset=nope", "--unset nope: no such quota"},
		{"--set=requests_per_second=NaN", "want a finite number"},
		{"--set=requests_burst=1KiB", `want a number, or "unlimited"`},
		{"--set=requests_burst=unlimited", "a bucket cannot be unlimited: lift its rate instead (requests_per_second=unlimited)"},
	} {
		r := run(exitError, admin("tenant", "quotas", "acme", bad.flag)...)
		if !strings.Contains(r.stderr, bad.want) {
			t.Fatalf("tenant quotas %s: %s, want %q", bad.flag, r.stderr, bad.want)
		}
	}
	if r := run(exitError, admin("tenant", "quotas", "acme", "--set", "requests_burst=-1")...); !strings.Contains(r.stderr, "requests_burst") {
		t.Fatalf("a negative burst: %s", r.stderr)
	}
	if own, _ := quotas(); len(own) != 2 {
		t.Fatalf("refused changes changed the quotas: %v", own)
	}
	// A change keeps the others exactly, however large.
	run(exitOK, admin("tenant", "quotas", "acme", "--set", "storage_bytes=9007199254740993")...)
	if out := run(exitOK, admin("tenant", "quotas", "acme", "--set", "requests_burst=1000", "-o", "json")...).stdout; !strings.Contains(out, `"storage_bytes":9007199254740993`) {
		t.Fatalf("a change rounded another quota: %s", out)
	}
	run(exitOK, admin("tenant", "quotas", "acme", "--unset", "storage_bytes", "--unset", "requests_burst")...)

	// key issue/list/revoke.
	issued := one(admin("--tenant", "acme", "key", "issue", "app", "--role", "admin,writer")...)
	key := str(t, issued, "key")
	reader := one(admin("--tenant", "acme", "key", "issue", "ro", "--role", "reader")...)
	want("key list", len(js(admin("--tenant", "acme", "key", "list")...)), 2)
	revoked := one(admin("--tenant", "acme", "key", "revoke", str(t, reader, "id"))...)
	want("key revoke", string(revoked["revoked"]), "true")
	want("key list after revoke", len(js(admin("--tenant", "acme", "key", "list")...)), 1)

	as := func(args ...string) []string {
		return append([]string{"--server", url, "--token", key, "--tenant", "acme"}, args...)
	}
	// append, get, query, ancestors, stats, verify.
	ev := func(entity string, extra ...string) map[string]json.RawMessage {
		t.Helper()
		return one(as(append([]string{"append", "--entity", entity, "--scope", "shop", "--kind", "1:1", "--data", `{"n":1}`}, extra...)...)...)
	}
	root := ev("order:1")
	rootID := str(t, root, "id")
	second := ev("order:1", "--causation", rootID, "--correlation", rootID, "--expect-clock", "0")
	ev("order:2")
	want("append clock", num(t, second, "clock"), uint64(1))
	want("get", str(t, one(as("get", str(t, second, "id"))...), "entity"), "order:1")
	want("query", len(js(as("query", "--entity-prefix", "order:")...)), 3)
	anc := js(as("ancestors", str(t, second, "id"))...)
	if len(anc) != 2 || !strings.Contains(string(anc[0]["id"])+string(anc[1]["id"]), rootID) {
		t.Fatalf("ancestors: %v", anc)
	}
	want("stats events", num(t, one(as("stats")...), "events"), uint64(3))
	one(as("verify")...)

	// export, and import into a second tenant.
	exported := run(exitOK, as("export", "-o", "json")...).stdout
	want("export", len(parseLines(t, exported)), 3)
	exportFile := filepath.Join(dir, "acme.ndjson")
	writeFile(t, exportFile, exported)
	one(admin("tenant", "create", "copy")...)
	copyKey := str(t, one(admin("--tenant", "copy", "key", "issue", "app", "--role", "admin,writer")...), "key")
	imported := one("--server", url, "--token", copyKey, "--tenant", "copy", "import", exportFile)
	want("import", num(t, imported, "imported"), uint64(3))

	// policy push/list/rollback/decisions: the tenant's own bundle.
	bundle := func(name, code, prefix string) string {
		d := filepath.Join(dir, name)
		writeFile(t, filepath.Join(d, "policy.rego"), denyRule(code, prefix))
		return d
	}
	rev1 := str(t, one(as("policy", "push", bundle("p1", "NO_SECRETS", "secret:"))...), "active")
	rev2 := str(t, one(as("policy", "push", bundle("p2", "NO_HIDDEN", "hidden:"))...), "active")
	if rev1 == rev2 {
		t.Fatal("two bundles, one revision")
	}
	var listed struct {
		Active    string `json:"active"`
		Revisions []struct {
			Revision string `json:"revision"`
		} `json:"revisions"`
	}
	if err := json.Unmarshal([]byte(run(exitOK, as("policy", "list", "-o", "json")...).stdout), &listed); err != nil || listed.Active != rev2 || len(listed.Revisions) != 2 {
		t.Fatalf("policy list: %+v, %v", listed, err)
	}
	// -o yaml is the JSON form as YAML.
	var inYAML struct {
		Active    string           `yaml:"active"`
		Revisions []map[string]any `yaml:"revisions"`
	}
	if err := yaml.Unmarshal([]byte(run(exitOK, as("policy", "list", "-o", "yaml")...).stdout), &inYAML); err != nil || inYAML.Active != rev2 || len(inYAML.Revisions) != 2 {
		t.Fatalf("policy list -o yaml: %+v, %v", inYAML, err)
	}
	want("policy rollback", str(t, one(as("policy", "rollback")...), "active"), rev1)
	// Denied (3) by the tenant's policy, then found in its decision log.
	r := run(exitDenied, as("append", "--entity", "secret:1", "--scope", "shop", "--kind", "1:1", "--data", "{}")...)
	if !strings.Contains(r.stderr, "POLICY_DENIED: entities under secret: are off limits") {
		t.Fatalf("tenant policy denial: %q", r.stderr)
	}
	dec := one(as("policy", "decisions", "--denied")...)
	want("decision result", str(t, dec, "result"), "denied")
	want("decision revision", str(t, dec, "revision"), rev1)

	// plugin push/list/status/swap/reset/delete.
	manifest := func(name, version, kind string) string {
		p := filepath.Join(dir, name+"-"+version+".json")
		writeFile(t, p, `{"name":"`+name+`","version":"`+version+`","kind":"`+kind+`"}`)
		return p
	}
	counter := filepath.Join(testdata, "counter.wasm")
	pushed := one(as("plugin", "push", counter, "--manifest", manifest("count", "1", "projection"))...)
	want("plugin push", str(t, pushed, "active"), "1")
	one(as("plugin", "push", filepath.Join(testdata, "counter2.wasm"), "--manifest", manifest("count", "2", "projection"))...)
	want("plugin list", str(t, one(as("plugin", "list")...), "name"), "count")
	status := one(as("plugin", "status", "count")...)
	want("plugin status", str(t, status, "active"), "2")
	want("plugin swap", str(t, one(as("plugin", "swap", "count", "1")...), "active"), "1")
	want("plugin reset", str(t, one(as("plugin", "reset", "count")...), "name"), "count")
	gone := one(as("plugin", "delete", "count", "--version", "2", "--yes")...)
	want("plugin delete --version", str(t, gone, "version"), "2")
	want("plugin delete", string(one(as("plugin", "delete", "count", "--yes")...)["deleted"]), "true")
	run(exitNotFound, as("plugin", "status", "count")...)

	// worker start/status/stop on a handler plugin pushed to the tenant.
	digest := plugins.Digest(mustRead(t, filepath.Join(testdata, "handler-flaky.wasm")))
	want("handler push", str(t, one(as("plugin", "push", filepath.Join(testdata, "handler-flaky.wasm"), "--manifest", manifest("echo", "1", "handler"))...), "name"), "echo")
	want("worker start", str(t, one(as("worker", "start", "echoer", "--plugin", "echo", "--entity", "order:", "--backoff-min", "5ms")...), "name"), "echoer")
	deadline := time.Now().Add(10 * time.Second)
	for {
		w := one(as("worker", "status", "echoer")...)
		if num(t, w, "position") >= 3 {
			if !strings.Contains(string(w["running"]), digest) {
				t.Fatalf("worker status: running %s, want the pushed module %s", w["running"], digest)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not reach position 3: %v", w)
		}
		time.Sleep(50 * time.Millisecond)
	}
	want("worker status (list)", str(t, one(as("worker", "status")...), "name"), "echoer")
	want("worker reset", str(t, one(as("worker", "reset", "echoer")...), "name"), "echoer")
	want("worker stop", str(t, one(as("worker", "stop", "echoer")...), "state"), "stopped")

	// cursor ls/info/reset on a cursor defined through the server's
	// cursor routes (the CLI has no verb that defines one).
	ten := must(client.New(url, key)).Tenant("acme")
	if err := ten.DefineCursor(context.Background(), "billing", client.CursorRegion{Entity: "order:"}); err != nil {
		t.Fatal(err)
	}
	if err := ten.CommitCursor(context.Background(), "billing", 2); err != nil {
		t.Fatal(err)
	}
	want("cursor ls", str(t, one(as("cursor", "ls")...), "name"), "billing")
	want("cursor info", num(t, one(as("cursor", "info", "billing")...), "committed"), uint64(2))
	reset := one(as("cursor", "reset", "billing")...)
	want("cursor reset", num(t, reset, "committed"), uint64(0))
	run(exitNotFound, as("cursor", "info", "payroll")...)

	// The exit code of each failure kind, from the real server.
	run(exitUsage, as("tenant", "delete", "acme")...) // no --yes
	r = run(exitDenied, as("append", "--entity", "order:9", "--scope", "shop", "--kind", "7:7", "--data", "{}")...)
	if !strings.Contains(r.stderr, "POLICY_DENIED: kind 0x7:0x7 is not written here") {
		t.Fatalf("platform policy denial: %q", r.stderr)
	}
	run(exitDenied, "--server", url, "--token", str(t, reader, "key"), "--tenant", "acme", "query")
	run(exitConflict, as("append", "--entity", "order:1", "--scope", "shop", "--kind", "1:1", "--data", "{}", "--expect-clock", "5")...)
	run(exitNotFound, as("get", "01a217cd-3b81-7849-af31-4360cec5ac35")...)
	run(exitNotFound, admin("tenant", "resume", "nosuch")...)

	// Unavailable: the server killed, nothing listens there.
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if r := runBinary(t, as("stats")...); r.code == exitUnavailable {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("stats against a killed server: exit %d, want %d; %q", r.code, exitUnavailable, r.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestServeBusyPortKeepsGeneratedCredential: a first start that cannot
// listen (the port is taken) still shows the credential it generated and
// recorded — after the attempt to listen, saying so — so the operator is
// not locked out of the next start, which shows none.
func TestServeBusyPortKeepsGeneratedCredential(t *testing.T) {
	root := filepath.Join(isolate(t), "srv")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix+"_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, childEnv+"="+strings.Join([]string{"serve", "--root", root, "--listen", busy.Addr().String(), "--access-log", "off"}, "\x1f"))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUnavailable {
		t.Fatalf("serve on a busy port: %v, want exit %d\n%s", err, exitUnavailable, out)
	}
	tok := generatedTokenRE.FindSubmatch(out)
	if tok == nil || !strings.Contains(string(out), "could not listen") || !strings.Contains(string(out), "address already in use") {
		t.Fatalf("serve on a busy port printed:\n%s\nwant the generated credential, noted as recorded, and the listen error", out)
	}
	if bytes.Index(out, tok[1]) > bytes.Index(out, []byte("address already in use")) {
		t.Fatalf("the credential comes after the error:\n%s", out)
	}
	url, logs := serveAgain(t, root)
	if generatedTokenRE.MatchString(logs) {
		t.Fatalf("the next start generated another credential:\n%s", logs)
	}
	c, err := client.New(url, string(tok[1]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin().Tenants(context.Background()); err != nil {
		t.Fatalf("the credential shown by the start that could not listen: %v", err)
	}
}

// serveAgain starts `batpak serve` over root in a child process (no
// BATPAK_* variable of the test) and returns its URL once it listens, and
// what it printed until then.
func serveAgain(t *testing.T, root string) (url, logs string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix+"_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, childEnv+"="+strings.Join([]string{"serve", "--root", root, "--listen", "127.0.0.1:0", "--access-log", "off"}, "\x1f"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var b strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
		if m := listeningRE.FindStringSubmatch(b.String()); m != nil {
			go func() { // keep the pipe drained
				for sc.Scan() {
				}
			}()
			return "http://" + m[1], b.String()
		}
	}
	t.Fatalf("batpak serve exited before listening:\n%s", b.String())
	return "", ""
}
