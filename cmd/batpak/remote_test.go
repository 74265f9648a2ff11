package main

import (
	"context"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/server"
)

// startServer runs a batpak server on a loopback port for the test and
// returns its URL and operator credential.
func startServer(t *testing.T) (url, operator string) {
	t.Helper()
	return startServerWith(t, nil)
}

// startServerWith is startServer with its configuration adjusted; the
// URL is https when adjust sets a certificate.
func startServerWith(t *testing.T, adjust func(*server.Config)) (url, operator string) {
	t.Helper()
	cfg := servertest.Config(t)
	if adjust != nil {
		adjust(&cfg)
	}
	srv := servertest.Start(t, cfg)
	return srv.URL, srv.Token
}

var (
	uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	tsRE   = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z`)
	hashRE = regexp.MustCompile(`(?m)^hash +[0-9a-f]{64}\n`)
)

// shape blanks what differs between two stores holding the same data:
// ids, timestamps, and the chain hash (not on the wire).
func shape(s string) string {
	s = hashRE.ReplaceAllString(s, "")
	s = uuidRE.ReplaceAllString(s, "<id>")
	return tsRE.ReplaceAllString(s, "<time>")
}

// keyIn returns the API key that key issue printed (its second line).
func keyIn(t *testing.T, out string) string {
	t.Helper()
	lines := strings.Split(out, "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "issued key ") || lines[1] == "" {
		t.Fatalf("key issue printed %q", out)
	}
	return lines[1]
}

// TestRemoteSameOutputAsLocal runs every data command against a local
// directory and, with the same data, against a server, and wants the same
// output (ids, timestamps and the local-only chain hash aside).
func TestRemoteSameOutputAsLocal(t *testing.T) {
	dir := isolate(t)
	url, op := startServer(t)
	admin := []string{"--server", url, "--token", op}
	if out := ok(t, append(admin, "tenant", "create", "acme")...); out != "created tenant acme (state active)\n" {
		t.Fatalf("tenant create: %q", out)
	}
	key := keyIn(t, ok(t, append(admin, "--tenant", "acme", "key", "issue", "app", "--role", "admin")...))
	local := []string{"--data-dir", filepath.Join(dir, "local")}
	remote := []string{"--server", url, "--token", key, "--tenant", "acme"}
	// A tenant's admin key manages its tenant's keys too.
	if out := ok(t, append(slices.Clone(remote), "key", "list")...); !strings.Contains(out, "app") || !strings.HasSuffix(out, "1 key\n") {
		t.Errorf("key list with the tenant's admin key: %q", out)
	}

	// both runs args in each mode and wants the same output shape; it
	// returns the two outputs.
	both := func(args ...string) (string, string) {
		t.Helper()
		l := ok(t, append(slices.Clone(local), args...)...)
		r := ok(t, append(slices.Clone(remote), args...)...)
		if shape(l) != shape(r) {
			t.Errorf("batpak %q:\nlocal:\n%s\nremote:\n%s", args, l, r)
		}
		return l, r
	}
	_, r1 := both("append", "--entity", "order:1", "--scope", "shop", "--kind", "1:1", "--data", `{"total_cents":998}`, "--expect-new", "--idempotency-key", "order-1")
	first := uuidRE.FindString(r1)
	lj, rj := both("append", "--entity", "payment:1", "--scope", "shop", "--kind", "2:1", "--data", `{"amount":998}`, "--json", "--idempotency-key", "pay-1")
	lcause, rcause := decode[receiptJSON](t, lj).ID.String(), decode[receiptJSON](t, rj).ID.String()
	// A reaction to the payment, each caused by its own store's event;
	// then the same idempotency key again: the first write's receipt.
	for range 2 {
		ship := []string{"append", "--entity", "order:1", "--scope", "shop", "--kind", "1:2", "--data", `"shipped"`, "--idempotency-key", "ship-1", "--causation"}
		l := ok(t, append(append(slices.Clone(local), ship...), lcause)...)
		r := ok(t, append(append(slices.Clone(remote), ship...), rcause)...)
		if shape(l) != shape(r) {
			t.Errorf("append --causation:\nlocal:  %s\nremote: %s", l, r)
		}
	}

	// get: same fields; the server's event carries no chain hash.
	lq := parseLines(t, ok(t, append(slices.Clone(local), "query", "--json")...))
	rq := parseLines(t, ok(t, append(slices.Clone(remote), "query", "--json")...))
	if len(lq) != 3 || len(rq) != 3 {
		t.Fatalf("query --json: %d local events, %d remote", len(lq), len(rq))
	}
	for i := range lq {
		if !slices.Equal(slices.Sorted(maps.Keys(lq[i])), slices.Sorted(maps.Keys(rq[i]))) {
			t.Errorf("query --json event %d: local fields %v, remote %v", i, slices.Sorted(maps.Keys(lq[i])), slices.Sorted(maps.Keys(rq[i])))
		}
		for _, k := range []string{"entity", "scope", "kind", "clock", "global_sequence", "payload", "idempotency_key"} {
			if string(lq[i][k]) != string(rq[i][k]) {
				t.Errorf("query --json event %d %s: local %s, remote %s", i, k, lq[i][k], rq[i][k])
			}
		}
	}
	lget := ok(t, append(slices.Clone(local), "get", str(t, lq[2], "id"))...)
	rget := ok(t, append(slices.Clone(remote), "get", str(t, rq[2], "id"))...)
	if shape(lget) != shape(rget) || !strings.Contains(rget, `"shipped"`) {
		t.Errorf("get:\nlocal:\n%s\nremote:\n%s", lget, rget)
	}
	lgj := ok(t, append(slices.Clone(local), "get", "--json", str(t, lq[0], "id"))...)
	rgj := ok(t, append(slices.Clone(remote), "get", "--json", first)...)
	if shape(lgj) != shape(rgj) {
		t.Errorf("get --json:\nlocal:  %s\nremote: %s", lgj, rgj)
	}

	both("query")
	both("query", "--entity-prefix", "order:", "--clock-min", "1")
	both("query", "--category", "2", "--json")
	both("query", "--limit", "1")
	both("query", "--scope", "nowhere")

	la := ok(t, append(slices.Clone(local), "ancestors", str(t, lq[2], "id"))...)
	ra := ok(t, append(slices.Clone(remote), "ancestors", str(t, rq[2], "id"))...)
	if shape(la) != shape(ra) || !strings.Contains(ra, "2 events, ending at a root cause") {
		t.Errorf("ancestors:\nlocal:\n%s\nremote:\n%s", la, ra)
	}
	laj := ok(t, append(slices.Clone(local), "ancestors", "--json", str(t, lq[2], "id"))...)
	raj := ok(t, append(slices.Clone(remote), "ancestors", "--json", str(t, rq[2], "id"))...)
	if shape(laj) != shape(raj) {
		t.Errorf("ancestors --json:\nlocal:\n%s\nremote:\n%s", laj, raj)
	}

	lv := ok(t, append(slices.Clone(local), "verify")...)
	rv := ok(t, append(slices.Clone(remote), "verify")...)
	if !strings.HasPrefix(lv, "ok: 3 events in 2 entities across ") || !strings.HasPrefix(rv, "ok: 3 events in 2 entities across ") {
		t.Errorf("verify: local %q, remote %q", lv, rv)
	}

	// stats: the server reports the counts and sizes, under the same
	// names and rows as the local command.
	ls := decode[map[string]any](t, ok(t, append(slices.Clone(local), "stats", "--json")...))
	rs := decode[map[string]any](t, ok(t, append(slices.Clone(remote), "stats", "--json")...))
	for _, k := range []string{"events", "global_sequence", "entities", "segments", "bytes", "index_bytes", "fsyncs"} {
		if _, ok := rs[k]; !ok {
			t.Errorf("remote stats --json lacks %s: %v", k, rs)
		}
		if _, ok := ls[k]; !ok {
			t.Errorf("local stats --json lacks %s: %v", k, ls)
		}
	}
	if rs["events"] != ls["events"] || rs["entities"] != ls["entities"] || rs["tenant"] != "acme" {
		t.Errorf("stats --json: local %v, remote %v", ls, rs)
	}
	lst := ok(t, append(slices.Clone(local), "stats")...)
	rst := ok(t, append(slices.Clone(remote), "stats")...)
	for _, row := range []*regexp.Regexp{regexp.MustCompile(`(?m)^events +3$`), regexp.MustCompile(`(?m)^entities +2$`), regexp.MustCompile(`(?m)^next sequence +3$`)} {
		if !row.MatchString(lst) || !row.MatchString(rst) {
			t.Errorf("stats lacks %q:\nlocal:\n%s\nremote:\n%s", row, lst, rst)
		}
	}

	// export to a file, import into another tenant (and another local
	// directory): the same messages.
	lf, rf := filepath.Join(dir, "local.ndjson"), filepath.Join(dir, "remote.ndjson")
	if l, r := ok(t, append(slices.Clone(local), "export", "--out", lf)...), ok(t, append(slices.Clone(remote), "export", "--out", rf)...); l != strings.Replace(r, rf, lf, 1) || !strings.HasPrefix(l, "exported 3 events to ") {
		t.Errorf("export --out: local %q, remote %q", l, r)
	}
	rexp := ok(t, append(slices.Clone(remote), "export")...)
	b, _ := os.ReadFile(rf)
	if rexp != string(b) || len(parseLines(t, rexp)) != 3 {
		t.Errorf("export to stdout and to a file differ:\n%s\n%s", rexp, b)
	}
	ok(t, append(admin, "tenant", "create", "copy")...)
	copyKey := keyIn(t, ok(t, append(admin, "--tenant", "copy", "key", "issue", "importer", "--role", "admin")...))
	li := ok(t, "--data-dir", filepath.Join(dir, "copy"), "import", rf)
	ri := ok(t, "--server", url, "--token", copyKey, "--tenant", "copy", "import", rf)
	if li != "imported 3 events, skipped 0 already present\n" || ri != li {
		t.Errorf("import: local %q, remote %q", li, ri)
	}
	if again := ok(t, "--server", url, "--token", copyKey, "--tenant", "copy", "import", rf); again != "imported 0 events, skipped 3 already present\n" {
		t.Errorf("import again: %q", again)
	}
}

// TestRemoteEnvironment: BATPAK_SERVER, BATPAK_TOKEN and BATPAK_TENANT
// stand for the flags, and the remote.* config keys for both.
func TestRemoteEnvironment(t *testing.T) {
	dir := isolate(t)
	url, op := startServer(t)
	t.Setenv("BATPAK_SERVER", url)
	t.Setenv("BATPAK_TOKEN", op)
	// BATPAK_SERVER is named like the server section of the config file,
	// and leaves it alone: a server started from the same shell reads its
	// settings.
	srvCfg := filepath.Join(dir, "serve.yaml")
	writeFile(t, srvCfg, "server:\n  listen: 127.0.0.1:7999\n  allow_insecure_remote: false\n")
	if conf := ok(t, "--config", srvCfg, "config"); !regexp.MustCompile(`(?m)^server\.listen +127\.0\.0\.1:7999 +config `).MatchString(conf) ||
		!regexp.MustCompile(`(?m)^server\.root +batpak-server +default `).MatchString(conf) || strings.Contains(conf, "<nil>") {
		t.Fatalf("server settings with BATPAK_SERVER set:\n%s", conf)
	}
	ok(t, "tenant", "create", "acme")
	// The names every other key's variable follows work too.
	t.Setenv("BATPAK_SERVER", "")
	t.Setenv("BATPAK_REMOTE_SERVER", url)
	t.Setenv("BATPAK_REMOTE_CONSISTENCY", "linearizable")
	if conf := ok(t, "config"); !regexp.MustCompile(`(?m)^remote\.server +`+regexp.QuoteMeta(url)+` +env BATPAK_REMOTE_SERVER`).MatchString(conf) ||
		!regexp.MustCompile(`(?m)^remote\.consistency +linearizable +env BATPAK_REMOTE_CONSISTENCY`).MatchString(conf) {
		t.Fatalf("config with BATPAK_REMOTE_*:\n%s", conf)
	}
	t.Setenv("BATPAK_REMOTE_SERVER", "")
	t.Setenv("BATPAK_REMOTE_CONSISTENCY", "")
	t.Setenv("BATPAK_SERVER", url)
	t.Setenv("BATPAK_TENANT", "acme")
	key := keyIn(t, ok(t, "key", "issue", "app", "--role", "writer"))
	t.Setenv("BATPAK_TOKEN", key)
	if out := ok(t, "append", "--entity", "e:1", "--scope", "s", "--kind", "1:1", "--data", "{}"); !strings.HasPrefix(out, "appended ") {
		t.Fatalf("append: %q", out)
	}
	// The same through a config file.
	t.Setenv("BATPAK_SERVER", "")
	t.Setenv("BATPAK_TOKEN", "")
	t.Setenv("BATPAK_TENANT", "")
	cfg := filepath.Join(dir, "remote.yaml")
	writeFile(t, cfg, "remote:\n  server: "+url+"\n  token: "+key+"\n  tenant: acme\n")
	if out := ok(t, "--config", cfg, "query"); !strings.Contains(out, "1 event; region:") {
		t.Fatalf("query through config keys: %q", out)
	}
	// batpak config shows where the server comes from, never the token.
	conf := ok(t, "--config", cfg, "config")
	if !regexp.MustCompile(`(?m)^remote\.server +`+regexp.QuoteMeta(url)+` +config `).MatchString(conf) ||
		!regexp.MustCompile(`(?m)^remote\.token +\(set, not shown\) +config `).MatchString(conf) || strings.Contains(conf, key) {
		t.Errorf("config:\n%s", conf)
	}
	// A command with no remote form refuses rather than work on the
	// local directory.
	fails(t, []string{"--config", cfg, "demo"}, "works on a local store only, and a server is set")
	if _, err := os.Stat(filepath.Join(dir, "batpak-data")); err == nil {
		t.Error("demo wrote a local store although a server was set")
	}
	// Without a tenant, a tenant command names what is missing.
	r := batpak(t, "--server", url, "--token", key, "query")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--tenant (BATPAK_TENANT, remote.tenant)") {
		t.Fatalf("query without tenant: exit %d, %q", r.code, r.stderr)
	}
}

// TestRemoteErrors: the server's refusals print their code and detail on
// one line and exit 1, never showing the token.
func TestRemoteErrors(t *testing.T) {
	isolate(t)
	url, op := startServer(t)
	admin := []string{"--server", url, "--token", op}
	ok(t, append(admin, "tenant", "create", "acme")...)
	writer := keyIn(t, ok(t, append(admin, "--tenant", "acme", "key", "issue", "w", "--role", "writer")...))
	reader := keyIn(t, ok(t, append(admin, "--tenant", "acme", "key", "issue", "r", "--role", "reader")...))
	as := func(token string, args ...string) []string {
		return append([]string{"--server", url, "--token", token, "--tenant", "acme"}, args...)
	}
	appendArgs := []string{"append", "--entity", "e:1", "--scope", "s", "--kind", "1:1", "--data", "{}"}
	ok(t, as(writer, appendArgs...)...)

	oneLineErr := func(r result, secret string) {
		t.Helper()
		if strings.Count(r.stderr, "\n") != 1 || strings.Contains(r.stderr, secret) || r.stdout != "" {
			t.Errorf("stderr %q (want one line without the token), stdout %q", r.stderr, r.stdout)
		}
	}
	bad := "bpk_not_a_key_0123456789"
	r := failsWith(t, exitDenied, as(bad, "query"), "batpak: server: UNAUTHENTICATED: ", "(HTTP 401)")
	oneLineErr(r, bad)
	r = failsWith(t, exitDenied, as(reader, appendArgs...), "batpak: server: FORBIDDEN: ", "(HTTP 403)")
	oneLineErr(r, reader)
	if out := ok(t, as(reader, "query")...); !strings.Contains(out, "1 event;") {
		t.Errorf("reader query: %q", out)
	}
	failsWith(t, exitConflict, as(writer, "append", "--entity", "e:1", "--scope", "s", "--kind", "1:1", "--data", "{}", "--expect-new"), "batpak: server: CONFLICT: ", "(HTTP 409)")
	failsWith(t, exitNotFound, as(writer, "get", "0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e"), "batpak: server: NOT_FOUND: ", "(HTTP 404)")

	// A revoked key is refused like an unknown one.
	keys := parseLines(t, ok(t, append(admin, "--tenant", "acme", "key", "list", "--json")...))
	if len(keys) != 2 {
		t.Fatalf("key list --json: %v", keys)
	}
	listed := ok(t, append(admin, "--tenant", "acme", "key", "list")...)
	if strings.Contains(listed, writer) || strings.Contains(listed, reader) || !strings.Contains(listed, "2 keys") {
		t.Errorf("key list shows a key, or not both: %q", listed)
	}
	for _, k := range keys {
		if str(t, k, "name") == "w" {
			out := ok(t, append(admin, "--tenant", "acme", "key", "revoke", str(t, k, "id"))...)
			if !strings.HasPrefix(out, "revoked key ") {
				t.Errorf("key revoke: %q", out)
			}
		}
	}
	r = failsWith(t, exitDenied, as(writer, "query"), "batpak: server: UNAUTHENTICATED: ", "(HTTP 401)")
	oneLineErr(r, writer)

	// A tenant key cannot administer tenants; the operator cannot read
	// tenant data.
	failsWith(t, exitDenied, as(reader, "tenant", "list"), "batpak: server: ", "(HTTP 40")
	failsWith(t, exitDenied, as(op, "query"), "batpak: server: FORBIDDEN: ", "(HTTP 403)")
}

// TestRemoteTenantLifecycle: create, list, suspend, resume, and delete,
// which refuses without --yes.
func TestRemoteTenantLifecycle(t *testing.T) {
	isolate(t)
	url, op := startServer(t)
	admin := func(args ...string) []string { return append([]string{"--server", url, "--token", op}, args...) }
	ok(t, admin("tenant", "create", "acme")...)
	ok(t, admin("tenant", "create", "globex")...)
	list := ok(t, admin("tenant", "list")...)
	if !strings.HasPrefix(list, "ID ") || !strings.Contains(list, "acme") || !strings.Contains(list, "globex") || !strings.HasSuffix(list, "2 tenants\n") {
		t.Fatalf("tenant list: %q", list)
	}
	if out := ok(t, admin("tenant", "suspend", "acme", "--reason", "unpaid")...); out != "suspended tenant acme (state suspended)\n" {
		t.Errorf("suspend: %q", out)
	}
	key := keyIn(t, ok(t, admin("--tenant", "acme", "key", "issue", "app", "--role", "reader")...))
	failsWith(t, exitDenied, []string{"--server", url, "--token", key, "--tenant", "acme", "query"}, "batpak: server: TENANT_SUSPENDED: ")
	ts := parseLines(t, ok(t, admin("tenant", "list", "--json")...))
	if len(ts) != 2 || str(t, ts[0], "state") == str(t, ts[1], "state") {
		t.Errorf("tenant list --json after suspending one: %v", ts)
	}
	if out := ok(t, admin("tenant", "resume", "acme")...); out != "resumed tenant acme (state active)\n" {
		t.Errorf("resume: %q", out)
	}
	ok(t, "--server", url, "--token", key, "--tenant", "acme", "query")

	r := failsWith(t, exitUsage, admin("tenant", "delete", "globex"), "--yes")
	if !strings.Contains(ok(t, admin("tenant", "list")...), "globex") {
		t.Fatalf("tenant delete without --yes deleted: %q", r.stderr)
	}
	if out := ok(t, admin("tenant", "delete", "globex", "--yes")...); out != "deleted tenant globex\n" {
		t.Errorf("delete: %q", out)
	}
	if list := ok(t, admin("tenant", "list")...); strings.Contains(list, "globex") {
		t.Errorf("globex still listed: %q", list)
	}
	// Without a server, the administration commands say what they need.
	failsWith(t, exitUsage, []string{"tenant", "list"}, "tenant list works against a server: give --server URL")
}

// TestRemoteURLSecrets: a server URL holding credentials (user:password@)
// is refused without echoing the password, and batpak config does not show
// it; a token sent over plain http to a host that is not loopback is
// warned about on stderr (never with the token), while loopback is not.
func TestRemoteURLSecrets(t *testing.T) {
	isolate(t)
	url, op := startServer(t)
	withCreds := strings.Replace(url, "http://", "http://user:s3cretpw@", 1)
	r := batpak(t, "--server", withCreds, "--token", op, "tenant", "list")
	if r.code == 0 || strings.Contains(r.stderr+r.stdout, "s3cretpw") || !strings.Contains(r.stderr, "credentials") {
		t.Errorf("a server URL with credentials: exit %d, stderr %q, want refused without the password", r.code, r.stderr)
	}
	r = batpak(t, "--server", "http://user:s3cretpw@127.0.0.1:%zz", "--token", op, "tenant", "list")
	if r.code == 0 || strings.Contains(r.stderr+r.stdout, "s3cretpw") {
		t.Errorf("an unparsable server URL with credentials: exit %d, stderr %q, want refused without the password", r.code, r.stderr)
	}
	t.Setenv("BATPAK_SERVER", withCreds)
	r = batpak(t, "config")
	if strings.Contains(r.stdout+r.stderr, "s3cretpw") {
		t.Errorf("batpak config prints the server URL's password: %q", r.stdout)
	}
	t.Setenv("BATPAK_SERVER", "")

	r = batpak(t, "--server", url, "--token", op, "tenant", "list")
	if r.code != 0 || strings.Contains(r.stderr, "warning") {
		t.Errorf("plain http to loopback: exit %d, stderr %q, want no warning", r.code, r.stderr)
	}
	// A host that is not loopback (the request itself is cancelled at
	// once: only the warning matters).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb strings.Builder
	run(ctx, []string{"--server", "http://batpak.example:8080", "--token", op, "tenant", "list"}, strings.NewReader(""), &out, &errb)
	if !strings.Contains(errb.String(), "warning") || !strings.Contains(errb.String(), "https") || strings.Contains(errb.String()+out.String(), op) {
		t.Errorf("plain http to batpak.example: stderr %q, want a warning to use https, without the token", errb.String())
	}
}

// TestRemotePolicyDenialListsEveryReason: a write a tenant's policy
// denies for several reasons prints every reason, one a line, as a local
// denial does, with the layer and revision, and exits 3.
func TestRemotePolicyDenialListsEveryReason(t *testing.T) {
	bundle, err := filepath.Abs(filepath.Join("..", "..", "examples", "policies"))
	if err != nil {
		t.Fatal(err)
	}
	isolate(t)
	url, op := startServer(t)
	ok(t, "--server", url, "--token", op, "tenant", "create", "acme")
	key := keyIn(t, ok(t, "--server", url, "--token", op, "--tenant", "acme", "key", "issue", "ops", "--role", "admin"))
	remote := []string{"--server", url, "--token", key, "--tenant", "acme"}
	ok(t, append(slices.Clone(remote), "policy", "push", bundle)...)
	r := failsWith(t, exitDenied, append(slices.Clone(remote), "append", "--entity", "order:1", "--scope", "shop", "--kind", "1:1", "--data", `{"total_cents":-5}`))
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if !regexp.MustCompile(`^batpak: server: POLICY_DENIED: denied by the tenant policy \(revision [0-9a-f]{64}\) \(HTTP 403\); nothing was written; 5 reasons:$`).MatchString(lines[0]) {
		t.Fatalf("first line %q", lines[0])
	}
	var codes []string
	for _, l := range lines[1:] {
		code, msg, found := strings.Cut(strings.TrimPrefix(l, "  "), ": ")
		if !strings.HasPrefix(l, "  ") || !found || msg == "" {
			t.Fatalf("reason line %q of\n%s", l, r.stderr)
		}
		codes = append(codes, code)
	}
	if want := []string{"CURRENCY_NOT_ALLOWED", "INVALID_TOTAL", "KIND_NOT_ALLOWED", "NO_ITEMS", "TENANT_MISMATCH"}; !slices.Equal(codes, want) {
		t.Fatalf("reasons %v, want %v:\n%s", codes, want, r.stderr)
	}
}

// TestRemoteNothingListens: a --server where nothing listens is exit 8
// with a line that names the address and says what to do.
func TestRemoteNothingListens(t *testing.T) {
	isolate(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := failsWith(t, exitUnavailable, []string{"--server", "http://" + addr, "--token", "bpk_x", "--tenant", "acme", "query"})
	want := "batpak: server: nothing listens at http://" + addr + " (connection refused): start batpak serve there, or point --server (BATPAK_SERVER) at a running one\n"
	if r.stderr != want {
		t.Fatalf("stderr %q, want %q", r.stderr, want)
	}
}

// TestRemoteServerURLMistakes: https:// to a plain-HTTP server says to
// use http:// (exit 1: a setting to change, not an outage), and a
// --server ending in /v1 is refused (exit 1) before anything is sent, naming the
// base URL to give instead.
func TestRemoteServerURLMistakes(t *testing.T) {
	isolate(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the server got %s %s", r.Method, r.URL)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	failsWith(t, exitError, []string{"--server", "https://" + addr, "--token", "bpk_x", "--tenant", "acme", "query"},
		"server: "+addr+" answers plain HTTP, not HTTPS: use http:// in --server")
	failsWith(t, exitError, []string{"--server", srv.URL + "/v1/", "--token", "bpk_x", "--tenant", "acme", "query"},
		"--server", "ends in /v1", "name the server's base URL ("+srv.URL+")")
}

// TestWorkerStartPassesGivenLimits: worker start sends --category and
// --max-restarts whenever they are given (a number out of range is the
// server's to refuse, not silently "every category"; what is no number
// is refused here), and leaves them out otherwise.
func TestWorkerStartPassesGivenLimits(t *testing.T) {
	isolate(t)
	url, op := startServer(t)
	ok(t, "--server", url, "--token", op, "tenant", "create", "acme")
	key := keyIn(t, ok(t, "--server", url, "--token", op, "--tenant", "acme", "key", "issue", "ops", "--role", "admin"))
	start := func(extra ...string) []string {
		return append([]string{"--server", url, "--token", key, "--tenant", "acme", "worker", "start", "w", "--plugin", "nosuch"}, extra...)
	}
	failsWith(t, exitUsage, start("--category", "-1"), `--category "-1": want a kind category`)
	failsWith(t, exitError, start("--category", "16"), "region.category: 16 is not a category")
	failsWith(t, exitError, start("--max-restarts", "-3"), "max_restarts -3")
	// Accepted as given (0 is a category): the missing plugin is next.
	failsWith(t, exitNotFound, start("--category", "0", "--max-restarts", "0"), `plugin "nosuch"`)
	failsWith(t, exitNotFound, start(), `plugin "nosuch"`)
}

// TestRemoteQuotaRefusalSaysWhenToRetry: a tenant admin past the
// tenant's control_changes_per_day is refused with exit 8 (try again
// later), and the line says how much later, from the server's
// Retry-After: hours for a daily budget, so nobody retries in a loop.
func TestRemoteQuotaRefusalSaysWhenToRetry(t *testing.T) {
	isolate(t)
	url, op := startServer(t)
	req, err := http.NewRequest("POST", url+"/v1/admin/tenants", strings.NewReader(`{"id":"small","quotas":{"control_changes_per_day":2}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+op)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create tenant small: HTTP %d", resp.StatusCode)
	}
	admin := keyIn(t, ok(t, "--server", url, "--token", op, "--tenant", "small", "key", "issue", "ops", "--role", "admin"))
	as := []string{"--server", url, "--token", admin, "--tenant", "small"}
	ok(t, append(as, "key", "issue", "k1", "--role", "reader")...)
	ok(t, append(as, "key", "issue", "k2", "--role", "reader")...)
	r := failsWith(t, exitUnavailable, append(as, "key", "issue", "k3", "--role", "reader"),
		"batpak: server: QUOTA_EXCEEDED: ", "control_changes_per_day", "(HTTP 429); the server asks to retry in ")
	// A day's budget of 2 refills one change every 12 hours.
	m := regexp.MustCompile(`retry in (\S+)\n`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no retry time in %q", r.stderr)
	}
	if d, err := time.ParseDuration(m[1]); err != nil || d < 11*time.Hour || d > 12*time.Hour {
		t.Errorf("retry in %q (%v), want about 12h", m[1], err)
	}
	if strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr %q: want one line", r.stderr)
	}
}
