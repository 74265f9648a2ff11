package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/sdk/client"
)

// runBinary runs the CLI as its own process (the test binary re-executed
// as batpak, see TestMain), so main's os.Exit code is what a shell sees.
func runBinary(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join(args, "\x1f"), "GORACE=atexit_sleep_ms=0") // no 1 s sleep at exit under -race
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %q: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// TestExitCodesOfBinary: every failure kind ends the process with its own
// documented exit code, local and remote.
func TestExitCodesOfBinary(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	appendArgs := []string{"append", dd, "--entity", "acme:order:1", "--scope", "shop", "--kind", "1:1", "--data", `{"n":1}`}
	ok(t, appendArgs...)
	id := decode[receiptJSON](t, ok(t, append(slices.Clone(appendArgs), "--json")...)).ID

	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"title":"Service Unavailable","status":503,"code":"BUSY","detail":"draining"}`)
	}))
	defer busy.Close()
	unauth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"title":"Unauthenticated","status":401,"code":"UNAUTHENTICATED","detail":"a valid bearer credential is required"}`)
	}))
	defer unauth.Close()
	lost := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		panic(http.ErrAbortHandler) // read, then the connection breaks unanswered
	}))
	defer lost.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close() // nothing listens there any more

	cases := []struct {
		name string
		code int
		args []string
		want string
	}{
		{"ok", exitOK, []string{"get", dd, id.String()}, ""},
		{"usage: unknown flag", exitUsage, []string{"query", dd, "--frobnicate"}, "Run 'batpak query --help' for usage."},
		{"usage: unknown verb", exitUsage, []string{"qurey"}, `did you mean query?`},
		{"usage: a flag's prefix", exitUsage, []string{"query", dd, "--entity", "order:1"}, `unknown flag: --entity (did you mean --entity-prefix?)`},
		{"usage: a mistyped flag", exitUsage, []string{"query", dd, "--scpoe", "shop"}, `(did you mean --scope?)`},
		{"usage: a mistyped start of a flag", exitUsage, []string{"query", dd, "--entty", "order:"}, `(did you mean --entity-prefix?)`},
		{"usage: bad -o", exitUsage, []string{"stats", dd, "-o", "xml"}, `"xml" is not an output format`},
		{"usage: flags that exclude each other", exitUsage, []string{"serve", "--root", dir + "-srv", "--cluster", "--cluster-node-id", "n1", "--cluster-bootstrap", "--cluster-join", "http://127.0.0.1:1"}, "exclude each other"},
		{"error: bad value", exitError, []string{"query", dd, "--kind", "1"}, "--kind"},
		{"denied", exitDenied, append(slices.Clone(appendArgs), "--policy-dir", examplesPolicies(t), "--principal-id", "u", "--tenant", "globex", "--roles", "clerk"), "TENANT_MISMATCH"},
		{"conflict", exitConflict, append(slices.Clone(appendArgs), "--expect-new"), "expected no events"},
		{"not found: event", exitNotFound, []string{"get", dd, "01a217cd-3b81-7849-af31-4360cec5ac35"}, "no event"},
		{"not found: store", exitNotFound, []string{"stats", "--data-dir", dir + "-missing"}, "no store at"},
		{"not found: cursor", exitNotFound, []string{"cursor", "info", "nobody", dd}, `no named cursor "nobody"`},
		{"unavailable: refused", exitUnavailable, []string{"--server", closedURL, "--tenant", "acme", "stats"}, "server:"},
		{"denied: no token", exitDenied, []string{"--server", unauth.URL, "--tenant", "acme", "stats"}, "no token was given"},
		{"unavailable: the answer lost", exitUnavailable, []string{"--server", lost.URL, "--tenant", "acme", "--token", "bpk_x", "append", "--entity", "order:1", "--scope", "s", "--kind", "1:1", "--data", "{}", "--idempotency-key", "order-1-placed"},
			"the write may have been written: send it again with --idempotency-key order-1-placed to write it once"},
		{"unavailable: 503", exitUnavailable, []string{"--server", busy.URL, "--tenant", "acme", "get", id.String()}, "BUSY"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runBinary(t, c.args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("batpak %q: exit %d, want %d; stderr %q", c.args, r.code, c.code, r.stderr)
			}
			if c.code != exitOK && c.code != exitDenied && strings.Count(r.stderr, "\n") > 2 {
				t.Errorf("more than the message and the --help pointer:\n%s", r.stderr)
			}
		})
	}

	// Locked: a writer holds the store (this process); the child cannot.
	s, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	r := runBinary(t, appendArgs...)
	if cerr := s.Close(); cerr != nil {
		t.Fatal(cerr)
	}
	if r.code != exitLocked || !strings.Contains(r.stderr, "locked") {
		t.Fatalf("append beside a writer: exit %d, want %d; %q", r.code, exitLocked, r.stderr)
	}

	// Corrupt: a damaged frame in the middle of the log.
	seg := onlySegment(t, dir)
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(data, []byte(`{"n":1}`))
	data[at+5] = '2'
	writeFile(t, seg, string(data))
	for _, args := range [][]string{{"verify", dd}, {"stats", dd}} {
		if r := runBinary(t, args...); r.code != exitCorrupt {
			t.Errorf("%q on a damaged store: exit %d, want %d; %q", args, r.code, exitCorrupt, r.stderr)
		}
	}
}

func examplesPolicies(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join(repoRoot, "examples", "policies"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func onlySegment(t *testing.T, dir string) string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v (%v), want one", segs, err)
	}
	return segs[0]
}

// TestExitCodeOfErrors: the classification looks through wrappers at
// core's and sdk/client's errors.
func TestExitCodeOfErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("x: %w", core.ErrConflict), exitConflict},
		{&core.IdempotencyError{Key: "k"}, exitConflict},
		{fmt.Errorf("x: %w", core.ErrNotFound), exitNotFound},
		{&core.LockedError{Dir: "d"}, exitLocked},
		{&core.CorruptionError{File: "f"}, exitCorrupt},
		{&core.ChainError{}, exitCorrupt},
		{&core.LogTruncatedError{}, exitCorrupt},
		{remoteError(&client.Error{Status: 409, Code: client.CodeIdempotencyMismatch}), exitConflict},
		{remoteError(&client.Error{Status: 404, Code: client.CodeNotFound}), exitNotFound},
		{remoteError(&client.Error{Status: 403, Code: client.CodePolicyDenied}), exitDenied},
		{remoteError(&client.Error{Status: 503}), exitUnavailable},
		{remoteError(&client.Error{Status: 429, Code: client.CodeQuotaExceeded, RetryAfter: time.Second}), exitUnavailable},
		{remoteError(&client.Error{Status: 400, Code: client.CodeInvalidKind}), exitError},
		{usagef("bad"), exitUsage},
		{withExitCode(exitNotFound, errors.New("x")), exitNotFound},
		{errors.New("anything else"), exitError},
	} {
		if got := exitCodeOf(c.err); got != c.code {
			t.Errorf("exitCodeOf(%T %v) = %d, want %d", c.err, c.err, got, c.code)
		}
	}
}

func TestVersion(t *testing.T) {
	isolate(t)
	v := decode[versionInfo](t, ok(t, "version", "-o", "json"))
	if v.Version == "" || v.GoVersion != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("version -o json = %+v", v)
	}
	if out := ok(t, "--version"); out != "batpak "+v.String()+"\n" {
		t.Errorf("--version = %q, want the one-line form of %+v", out, v)
	}
	if out := ok(t, "version"); !strings.HasPrefix(out, "version ") || !strings.Contains(out, "platform ") {
		t.Errorf("version = %q", out)
	}

	// What go build and go install record.
	devel := versionFrom(&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"},
	}}, true)
	if devel.Version != "(devel)" || devel.Commit != "0123456789abcdef0123456789abcdef01234567" || !devel.Modified ||
		!strings.HasPrefix(devel.String(), "(devel) (commit 0123456789ab+modified, go") {
		t.Errorf("a checkout build: %+v, %q", devel, devel.String())
	}
	released := versionFrom(&debug.BuildInfo{Main: debug.Module{Version: "v0.5.0"}}, true)
	if released.Version != "v0.5.0" || released.Commit != "" || !strings.HasPrefix(released.String(), "v0.5.0 (go") {
		t.Errorf("go install …@v0.5.0: %+v, %q", released, released.String())
	}
	if none := versionFrom(nil, false); none.Version != "(devel)" {
		t.Errorf("no build info: %+v", none)
	}
}

// TestOutputFormats: -o json is --json; -o yaml holds the same fields and
// values as -o json; table stays the default.
func TestOutputFormats(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	first := decode[receiptJSON](t, ok(t, "append", dd, "--entity", "order:1", "--scope", "shop", "--kind", "1:1", "--data", `{"total_cents":998,"note":"a: b\nc"}`, "-o", "json"))
	ok(t, "append", dd, "--entity", "order:1", "--scope", "shop", "--kind", "1:2", "--data", `{"n":1}`, "--causation", first.ID.String(), "--correlation", first.ID.String())
	id := first.ID.String()

	sameAsJSON := func(args ...string) {
		t.Helper()
		js := ok(t, append(slices.Clone(args), "-o", "json")...)
		if alias := ok(t, append(slices.Clone(args), "--json")...); alias != js && !strings.Contains(args[0], "stats") {
			t.Errorf("%q: --json differs from -o json:\n%s\n%s", args, alias, js)
		}
		ys := ok(t, append(slices.Clone(args), "-o", "yaml")...)
		var fromJSON []any
		for _, l := range strings.Split(strings.TrimSpace(js), "\n") {
			var v any
			if err := json.Unmarshal([]byte(l), &v); err != nil {
				t.Fatalf("%q -o json: %v", args, err)
			}
			fromJSON = append(fromJSON, normalize(v))
		}
		var fromYAML []any
		dec := yaml.NewDecoder(strings.NewReader(ys))
		for {
			var v any
			if err := dec.Decode(&v); err != nil {
				break
			}
			fromYAML = append(fromYAML, normalize(v))
		}
		if fmt.Sprint(fromJSON) != fmt.Sprint(fromYAML) {
			t.Errorf("%q: yaml and json differ:\n%s\n--- yaml:\n%s", args, js, ys)
		}
	}
	sameAsJSON("get", dd, id)
	sameAsJSON("query", dd)
	sameAsJSON("ancestors", dd, decode[eventJSON](t, strings.Split(ok(t, "query", dd, "--kind", "1:2", "-o", "json"), "\n")[0]).ID.String())
	sameAsJSON("verify", dd)
	sameAsJSON("version")
	sameAsJSON("config", dd)

	// Big numbers keep their text in yaml (1e400 is no float64).
	ok(t, "append", dd, "--entity", "order:2", "--scope", "shop", "--kind", "1:2", "--data", `{"n":1e400}`)
	if ys := ok(t, "query", dd, "--kind", "1:2", "-o", "yaml"); !strings.Contains(ys, "n: 1e400") {
		t.Errorf("query -o yaml lost the payload's number:\n%s", ys)
	}
	if out := ok(t, "stats", dd); !strings.HasPrefix(out, "store ") {
		t.Errorf("stats default output is not the table: %q", out)
	}
	failsWith(t, exitUsage, []string{"get", dd, id, "-o", "xml"}, `-o "xml" is not an output format: want table, json or yaml`)
	failsWith(t, exitUsage, []string{"get", dd, id, "--json", "-o", "yaml"}, "--json and -o yaml exclude each other")

	// export: --out names the file; -o FILE still works, with a notice.
	out := filepath.Join(filepath.Dir(dir), "events.ndjson")
	r := batpak(t, "export", dd, "-o", out)
	if r.code != 0 || !strings.Contains(r.stderr, "export -o FILE is deprecated: use --out "+out) {
		t.Fatalf("export -o FILE: exit %d, %q", r.code, r.stderr)
	}
	viaOld, _ := os.ReadFile(out)
	ok(t, "export", dd, "--out", out)
	viaNew, _ := os.ReadFile(out)
	if !bytes.Equal(viaOld, viaNew) || bytes.Count(viaNew, []byte("\n")) != 3 {
		t.Errorf("export -o and --out wrote different files:\n%s\n%s", viaOld, viaNew)
	}
	if stdout := ok(t, "export", dd, "-o", "json"); stdout != string(viaNew) {
		t.Errorf("export -o json differs from the file:\n%s", stdout)
	}
	failsWith(t, exitUsage, []string{"export", dd, "-o", "yaml"}, "export writes NDJSON only")
}

// normalize makes decoded JSON and YAML comparable (YAML decodes whole
// numbers as int).
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := map[string]any{}
		for k, e := range x {
			m[k] = normalize(e)
		}
		return m
	case []any:
		for i := range x {
			x[i] = normalize(x[i])
		}
		return x
	case int:
		return float64(x)
	case uint64:
		return float64(x)
	}
	return v
}

// TestProgressOnlyOnTerminal: no bar into a pipe or file, whatever the
// size; --progress forces one, with the file's size in bytes as the
// total for import and the segment count for verify.
func TestProgressOnlyOnTerminal(t *testing.T) {
	home := isolate(t)
	src := filepath.Join(home, "src")
	ok(t, "demo", "--data-dir", src, "--orders", "40")
	file := filepath.Join(home, "all.ndjson")
	ok(t, "export", "--data-dir", src, "--out", file)
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}

	r := batpak(t, "import", "--data-dir", filepath.Join(home, "a"), file)
	if r.code != 0 || r.stderr != "" {
		t.Errorf("import into a buffer drew something on stderr: %q", r.stderr)
	}
	r = batpak(t, "import", "--data-dir", filepath.Join(home, "b"), file, "--progress")
	total := humanizeLikeBar(fi.Size())
	if r.code != 0 || !strings.Contains(r.stderr, "import") || !strings.Contains(r.stderr, "/"+total) {
		t.Errorf("import --progress: want a bar over %s (%d bytes), got %q", total, fi.Size(), r.stderr)
	}
	if r = batpak(t, "verify", "--data-dir", src, "--progress"); r.code != 0 || !strings.Contains(r.stderr, "verify") || !strings.Contains(r.stderr, "1/1") {
		t.Errorf("verify --progress: %q", r.stderr)
	}
	if r = batpak(t, "verify", "--data-dir", src); r.stderr != "" {
		t.Errorf("verify drew on a non-terminal: %q", r.stderr)
	}
	if r = batpak(t, "verify", "--data-dir", src, "--progress", "--no-progress"); r.stderr != "" {
		t.Errorf("--no-progress still drew: %q", r.stderr)
	}
	// seal: the segments to pack and give footers, then none.
	big := filepath.Join(home, "big")
	fillStore(t, big, 300, 3)
	if r = batpak(t, "seal", "--data-dir", big, "--compression", "zstd", "--progress"); r.code != 0 || !strings.Contains(r.stderr, "seal 100%") {
		t.Errorf("seal --progress: exit %d, %q", r.code, r.stderr)
	}
	if r = batpak(t, "seal", "--data-dir", big, "--compression", "zstd", "--progress"); r.code != 0 || r.stderr != "" {
		t.Errorf("seal --progress with nothing left to do drew a bar: %q", r.stderr)
	}
	if sj := decode[sealJSON](t, ok(t, "seal", "--data-dir", big, "--compression", "zstd", "-o", "json")); sj.Compression != "zstd" ||
		sj.Before != sj.After || sj.After.PackedSegments != sj.After.Segments-1 || sj.After.Footers < sj.After.Segments-1 {
		t.Errorf("seal -o json of a sealed store: %+v", sj)
	}
	// compact: a bar over the sealed segments it reads, ending full.
	sealed := decode[sealJSON](t, ok(t, "seal", "--data-dir", big, "--compression", "zstd", "-o", "json")).After.Segments - 1
	if r = batpak(t, "compact", "--data-dir", big, "--merge", "--progress"); r.code != 0 ||
		!strings.Contains(r.stderr, "compact 100%") || !strings.Contains(r.stderr, fmt.Sprintf("%d/%d", sealed, sealed)) {
		t.Errorf("compact --progress over %d sealed segments: exit %d, %q", sealed, r.code, r.stderr)
	}
}

// TestCompactMinSegments: compact --min-segments does nothing, and says
// so, while fewer segments are sealed; at the minimum it compacts.
func TestCompactMinSegments(t *testing.T) {
	big := filepath.Join(isolate(t), "big")
	fillStore(t, big, 300, 3)
	d := decode[sealJSON](t, ok(t, "seal", "--data-dir", big, "-o", "json"))
	sealed := d.After.Segments - 1
	if sealed < 2 {
		t.Fatalf("%d sealed segments; the test needs 2 or more", sealed)
	}
	over := fmt.Sprint(sealed + 1)
	if out := ok(t, "compact", "--data-dir", big, "--merge", "--min-segments", over); !strings.Contains(out, "nothing: fewer segments are sealed than --min-segments "+over) {
		t.Errorf("compact below the minimum: %q", out)
	}
	if rep := decode[compactReportJSON](t, ok(t, "compact", "--data-dir", big, "--merge", "--min-segments", over, "-o", "json")); !rep.Skipped || rep.SegmentsRewritten != 0 {
		t.Errorf("compact -o json below the minimum: %+v", rep)
	}
	if rep := decode[compactReportJSON](t, ok(t, "compact", "--data-dir", big, "--merge", "--min-segments", fmt.Sprint(sealed), "-o", "json")); rep.Skipped || rep.SegmentsRewritten != sealed {
		t.Errorf("compact -o json at the minimum (%d sealed): %+v", sealed, rep)
	}
	failsWith(t, exitUsage, []string{"compact", "--data-dir", big, "--min-segments", "-1"}, "--min-segments")
}

// humanizeLikeBar renders n as the progress bar's byte counts do.
func humanizeLikeBar(n int64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case n < 1000*1000:
		return fmt.Sprintf("%.0f kB", float64(n)/1000)
	}
	return fmt.Sprintf("%.0f MB", float64(n)/1000/1000)
}

// TestLogFlags: --log-format json writes core's log records as JSON
// objects; --log-level hides the less severe.
func TestLogFlags(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	for i := 0; i < 3; i++ {
		ok(t, "append", dd, "--entity", "e", "--scope", "s", "--kind", "1:1", "--data", "{}")
	}
	// A damaged checkpoint is reported as a warning and the log scanned.
	if err := os.WriteFile(filepath.Join(dir, "index.ckpt"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := batpak(t, "stats", dd)
	if r.code != 0 || !strings.HasPrefix(r.stderr, "batpak: warning: ") {
		t.Fatalf("stats with a damaged checkpoint: exit %d, %q", r.code, r.stderr)
	}
	r = batpak(t, "stats", dd, "--log-format", "json")
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec["level"] != "WARN" || rec["msg"] == nil {
		t.Errorf("--log-format json: %q (%v)", r.stderr, err)
	}
	if r = batpak(t, "stats", dd, "--log-level", "error"); r.code != 0 || r.stderr != "" {
		t.Errorf("--log-level error still shows warnings: %q", r.stderr)
	}
	failsWith(t, exitUsage, []string{"stats", dd, "--log-level", "loud"}, `--log-level "loud": want debug, info, warn or error`)
	failsWith(t, exitUsage, []string{"stats", dd, "--log-format", "xml"}, `--log-format "xml": want text or json`)
}

// TestCompletion: flag values and entity names complete, from the local
// store, through cobra's __complete protocol (what the shell scripts
// call).
func TestCompletion(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	ok(t, "demo", dd, "--orders", "2")
	complete := func(args ...string) []string {
		t.Helper()
		out := ok(t, append([]string{"__complete"}, args...)...)
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.HasPrefix(l, ":") { // the directive line
				got = append(got, strings.SplitN(l, "\t", 2)[0])
			}
		}
		return got
	}
	if got := complete("query", dd, "-o", ""); !slices.Equal(got, []string{"table", "json", "yaml"}) {
		t.Errorf("-o values: %q", got)
	}
	if got := complete("query", dd, "--entity-prefix", "order:"); !slices.Equal(got, []string{"order:1", "order:2"}) {
		t.Errorf("entity names: %q", got)
	}
	if got := complete("redact", dd, "--entity", "pay"); !slices.Equal(got, []string{"payment:1", "payment:2"}) {
		t.Errorf("redact --entity names: %q", got)
	}
	if got := complete("query", dd, "--category", ""); len(got) != 16 || got[1] != "1" {
		t.Errorf("--category values: %q", got)
	}
	if got := complete("query", dd, "--kind", ""); len(got) == 0 || !slices.Contains(got, "0x1:0x1") {
		t.Errorf("--kind values: %q", got)
	}
	if got := complete("--log-level", ""); !slices.Equal(got, logLevels) {
		t.Errorf("--log-level values: %q", got)
	}
	if got := complete("get", dd, ""); len(got) != 6 {
		t.Errorf("event ids: %q", got)
	}
	// At most completionMax names, however many entities match.
	many := filepath.Join(filepath.Dir(dir), "many")
	fillStore(t, many, completionMax+50, completionMax+50)
	if got := complete("query", "--data-dir", many, "--entity-prefix", "order:"); len(got) != completionMax {
		t.Errorf("%d entity names offered from %d, want at most %d", len(got), completionMax+50, completionMax)
	}
	if got := complete("query", "--data-dir", many, "--entity-prefix", "order:24"); !slices.Equal(got, []string{"order:24", "order:240", "order:241", "order:242", "order:243", "order:244", "order:245", "order:246", "order:247", "order:248", "order:249"}) {
		t.Errorf("names starting order:24: %q", got)
	}
	// No store: nothing offered, no error.
	if got := complete("query", "--data-dir", dir+"-none", "--entity-prefix", ""); len(got) != 0 {
		t.Errorf("entities of a missing store: %q", got)
	}
}

// storeDigest names every file of a store directory with its content's
// digest and its modification time: the same digest means not a byte
// changed.
func storeDigest(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %x %d\n", path, sha256.Sum256(data), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// fillStore writes n events of 400-odd bytes to a new store at dir with
// 64 KiB segments (several sealed ones), on entities order:0..order:<k-1>
// in turn, and returns their ids.
func fillStore(t *testing.T, dir string, n, k int) []string {
	t.Helper()
	cfg := core.DefaultConfig(dir)
	cfg.SegmentMaxBytes = 64 << 10
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i := range n {
		coord, _ := core.NewCoordinate(fmt.Sprintf("order:%d", i%k), "shop")
		r, err := s.Append(context.Background(), coord, core.MustKind(1, 1), fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", 400)))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = r.ID.String()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestDryRun: redact and compact --dry-run say what would be done and
// leave the store byte-identical; without it, they do that.
func TestDryRun(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	seg := "--segment-max-bytes=64KiB"
	ids := fillStore(t, dir, 300, 3)
	before := storeDigest(t, dir)

	out := ok(t, "redact", dd, ids[0], "--dry-run")
	if !strings.HasPrefix(out, "dry run: would redact 1 event (") || !strings.Contains(out, "nothing changed") {
		t.Errorf("redact --dry-run: %q", out)
	}
	out = ok(t, "redact", dd, "--entity", "order:1", "--dry-run")
	if !strings.HasPrefix(out, "dry run: would redact 100 events (") {
		t.Errorf("redact --entity --dry-run: %q", out)
	}
	failsWith(t, exitNotFound, []string{"redact", dd, "01a217cd-3b81-7849-af31-4360cec5ac35", "--dry-run"}, "no event")
	dryJSON := decode[compactReportJSON](t, ok(t, "compact", dd, seg, "--max-per-entity", "10", "--merge", "--dry-run", "-o", "json"))
	dry := ok(t, "compact", dd, seg, "--max-per-entity", "10", "--merge", "--dry-run")
	if !strings.HasPrefix(dry, "dry run (on a copy; the store is unchanged): would compact ") {
		t.Errorf("compact --dry-run: %q", dry)
	}
	if after := storeDigest(t, dir); after != before {
		t.Fatalf("a dry run changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// The real compaction does what the dry run said (timings aside).
	real := ok(t, "compact", dd, seg, "--max-per-entity", "10", "--merge")
	cut := func(s string) string {
		s, _, _ = strings.Cut(s, ", in ")
		_, s, _ = strings.Cut(s, " segments: ")
		return s
	}
	var removed int
	if cut(real) != cut(dry) || !strings.Contains(real, "removed") {
		t.Errorf("compact said %q, its dry run %q", real, dry)
	} else if _, err := fmt.Sscanf(cut(real), "%d events removed", &removed); err != nil || removed == 0 || removed != dryJSON.EventsRemoved || !dryJSON.DryRun {
		t.Fatalf("compact removed %d events (%v): %q; dry run -o json: %+v", removed, err, real, dryJSON)
	}
	// verify after compaction counts what reads show, the stubs apart
	// (the audit record of the compaction is one more event).
	stats := decode[statsJSON](t, ok(t, "stats", dd, "-o", "json"))
	v := decode[verifyJSON](t, ok(t, "verify", dd, "-o", "json"))
	if uint64(v.Events) != stats.Events || v.Removed != removed || v.Events+v.Removed != 300+1 {
		t.Errorf("verify after compaction: %+v; stats counts %d events, compact removed %d", v, stats.Events, removed)
	}
	if out := ok(t, "verify", dd); !strings.HasPrefix(out, fmt.Sprintf("ok: %d events in 4 entities", stats.Events)) ||
		!strings.Contains(out, fmt.Sprintf("(and %d compaction stubs of removed events, checked)", removed)) {
		t.Errorf("verify after compaction: %q", out)
	}
}

// follow runs args (a query --follow) until stop is called; it returns
// the output so far and, after stop, the exit code.
func follow(t *testing.T, args ...string) (out *testenv.Buffer, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &testenv.Buffer{}
	var errb testenv.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, strings.NewReader(""), out, &errb) }()
	return out, func() int {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("query --follow: exit %d, %s", code, errb.String())
			}
			return code
		case <-time.After(10 * time.Second):
			t.Fatal("query --follow did not end after the interrupt")
			return -1
		}
	}
}

// waitFor polls cond for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestQueryFollowLocal: --follow prints the matching events, then those a
// writer (another open of the store) appends, until interrupted; --after
// and --since filter.
func TestQueryFollowLocal(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	add := func(entity string, n int) receiptJSON {
		return decode[receiptJSON](t, ok(t, "append", dd, "--entity", entity, "--scope", "s", "--kind", "1:1", "--data", fmt.Sprintf(`{"n":%d}`, n), "--json"))
	}
	first := add("order:1", 0)
	add("other:1", 1)

	out, stop := follow(t, "query", dd, "--entity-prefix", "order:", "--follow", "-o", "json", "--poll-interval", "10ms")
	waitFor(t, "the existing event", func() bool { return strings.Count(out.String(), "\n") == 1 })
	add("order:2", 2)
	add("other:2", 3)
	add("order:3", 4)
	waitFor(t, "the new events", func() bool { return strings.Count(out.String(), "\n") == 3 })
	stop()
	lines := parseLines(t, out.String())
	for i, want := range []string{"order:1", "order:2", "order:3"} {
		if got := str(t, lines[i], "entity"); got != want {
			t.Errorf("event %d: %s, want %s", i, got, want)
		}
	}

	// --after: by id or by sequence.
	if got := parseLines(t, ok(t, "query", dd, "--after", first.ID.String(), "-o", "json")); len(got) != 4 || num(t, got[0], "global_sequence") != 1 {
		t.Errorf("--after ID: %v", got)
	}
	if got := parseLines(t, ok(t, "query", dd, "--after", "3", "-o", "json")); len(got) != 1 || num(t, got[0], "global_sequence") != 4 {
		t.Errorf("--after 3: %v", got)
	}
	failsWith(t, exitError, []string{"query", dd, "--after", "yesterday"}, "--after", "neither an event id nor a global sequence")
	// --since: a duration back from now, or a time.
	if got := parseLines(t, ok(t, "query", dd, "--since", "1h", "-o", "json")); len(got) != 5 {
		t.Errorf("--since 1h: %d events", len(got))
	}
	if out := ok(t, "query", dd, "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); !strings.HasPrefix(out, "no events") {
		t.Errorf("--since an hour ahead: %q", out)
	}
	failsWith(t, exitError, []string{"query", dd, "--since", "last week"}, "--since", "neither a duration")
	failsWith(t, exitUsage, []string{"query", dd, "--follow", "--limit", "1"}, "--follow and --limit exclude each other")
	// --poll-interval: 1ms..1m.
	ok(t, "query", dd, "--poll-interval", "1m")
	ok(t, "query", dd, "--poll-interval", "1ms")
	failsWith(t, exitError, []string{"query", dd, "--poll-interval", "1m0.001s"}, "--poll-interval", "want 1ms..1m")
	failsWith(t, exitError, []string{"query", dd, "--poll-interval", "0"}, "--poll-interval", "want 1ms..1m")
}

// TestQueryFollowRemote: --follow against a server streams through its
// Server-Sent Events route.
func TestQueryFollowRemote(t *testing.T) {
	isolate(t)
	url, op := startServer(t)
	admin := []string{"--server", url, "--token", op}
	ok(t, append(slices.Clone(admin), "tenant", "create", "acme")...)
	key := keyIn(t, ok(t, append(slices.Clone(admin), "--tenant", "acme", "key", "issue", "app", "--role", "admin")...))
	as := []string{"--server", url, "--token", key, "--tenant", "acme"}
	add := func(entity string) {
		ok(t, append(slices.Clone(as), "append", "--entity", entity, "--scope", "s", "--kind", "1:1", "--data", "{}")...)
	}
	add("order:1")
	add("other:1")
	out, stop := follow(t, append(slices.Clone(as), "query", "--entity-prefix", "order:", "--follow", "--after", "0", "-o", "json")...)
	add("order:2")
	waitFor(t, "the new event", func() bool { return strings.Contains(out.String(), "order:2") })
	stop()
	lines := parseLines(t, out.String())
	if len(lines) != 1 || str(t, lines[0], "entity") != "order:2" {
		t.Errorf("remote --follow --after 0: %v", lines)
	}

	// A table's columns line up over the stored events, as they do
	// locally, however wide their entities are.
	add("order:1234567890123")
	out, stop = follow(t, append(slices.Clone(as), "query", "--entity-prefix", "order:", "--follow")...)
	waitFor(t, "the stored events", func() bool { return strings.Count(out.String(), "\n") == 4 })
	stop()
	rows := strings.Split(strings.TrimSpace(out.String()), "\n")
	col := strings.Index(rows[0], "KIND")
	for _, r := range rows[1:] {
		if col < 0 || !strings.HasPrefix(r[min(col, len(r)):], "0x1:0x1") {
			t.Fatalf("remote --follow table: columns do not line up:\n%s", out.String())
		}
	}
}

// TestCursorCommands: cursor ls/info/reset on a local store and on a
// server show the same positions and lag.
func TestCursorCommands(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	ok(t, "demo", dd, "--orders", "2") // 6 events
	s, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := s.NamedCursor("billing", core.All())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cur.Poll(4); err != nil {
		t.Fatal(err)
	}
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	if out := ok(t, "cursor", "ls", dd); !regexpMatch(`(?m)^billing\s+4\s+2\s+-$`, out) || !strings.HasSuffix(out, "1 cursor\n") {
		t.Errorf("cursor ls: %q", out)
	}
	c := decode[cursorJSON](t, ok(t, "cursor", "info", "billing", dd, "-o", "json"))
	if c != (cursorJSON{Name: "billing", Committed: 4, Lag: 2, LogEnd: 6}) {
		t.Errorf("cursor info: %+v", c)
	}
	if out := ok(t, "cursor", "reset", "billing", dd, "--to", "1"); out != "cursor billing reset from 4 to 1\n" {
		t.Errorf("cursor reset: %q", out)
	}
	if c := decode[cursorJSON](t, ok(t, "cursor", "info", "billing", dd, "-o", "json")); c.Committed != 1 || c.Lag != 5 {
		t.Errorf("after reset --to 1: %+v", c)
	}
	ok(t, "cursor", "reset", "billing", dd, "--to-end")
	if c := decode[cursorJSON](t, ok(t, "cursor", "info", "billing", dd, "-o", "json")); c.Committed != 6 || c.Lag != 0 {
		t.Errorf("after reset --to-end: %+v", c)
	}
	failsWith(t, exitError, []string{"cursor", "reset", "billing", dd, "--to", "7"}, "--to", "past the end of the log (6)")
	failsWith(t, exitNotFound, []string{"cursor", "reset", "payroll", dd}, `no named cursor "payroll"`, "named cursors: billing")
	if _, err := os.Stat(filepath.Join(dir, "cursors", "payroll.pos")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("reset of an unknown cursor created it (%v)", err)
	}

	// Against a server: its cursor routes.
	url, op := startServer(t)
	admin := []string{"--server", url, "--token", op}
	ok(t, append(slices.Clone(admin), "tenant", "create", "acme")...)
	key := keyIn(t, ok(t, append(slices.Clone(admin), "--tenant", "acme", "key", "issue", "app", "--role", "admin")...))
	as := []string{"--server", url, "--token", key, "--tenant", "acme"}
	for i := 0; i < 5; i++ {
		ok(t, append(slices.Clone(as), "append", "--entity", "order:1", "--scope", "s", "--kind", "1:1", "--data", "{}")...)
	}
	cl, _ := client.New(url, key)
	ten := cl.Tenant("acme")
	ctx := context.Background()
	if err := ten.DefineCursor(ctx, "billing", client.CursorRegion{Entity: "order:"}); err != nil {
		t.Fatal(err)
	}
	if err := ten.CommitCursor(ctx, "billing", 3); err != nil {
		t.Fatal(err)
	}
	if out := ok(t, append(slices.Clone(as), "cursor", "ls")...); !regexpMatch(`(?m)^billing\s+3\s+2\s+entity "order:"\*$`, out) {
		t.Errorf("remote cursor ls: %q", out)
	}
	ok(t, append(slices.Clone(as), "cursor", "reset", "billing")...)
	if c := decode[cursorJSON](t, ok(t, append(slices.Clone(as), "cursor", "info", "billing", "-o", "json")...)); c.Committed != 0 || c.Lag != 5 {
		t.Errorf("remote cursor after reset: %+v", c)
	}
	failsWith(t, exitNotFound, append(slices.Clone(as), "cursor", "info", "payroll"), `no named cursor "payroll"`)
}

// TestExportSalvage: a store with a damaged segment that verify fails
// and nothing else opens still gives up every readable event; the
// skipped range is reported; the result imports into a store that
// verifies.
func TestExportSalvage(t *testing.T) {
	home := isolate(t)
	dir := filepath.Join(home, "store")
	dd := "--data-dir=" + dir
	const n = 400
	fillStore(t, dir, n, 7)
	// An intact store: --salvage exports what export does.
	whole := ok(t, "export", dd)
	if salv := batpak(t, "export", dd, "--salvage"); salv.code != 0 || salv.stdout != whole || !strings.Contains(salv.stderr, fmt.Sprintf("salvaged %d events", n)) {
		t.Fatalf("--salvage on an intact store: exit %d, same %v, %q", salv.code, salv.stdout == whole, salv.stderr)
	}

	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil || len(segs) < 3 {
		t.Fatalf("segments %v (%v), want several", segs, err)
	}
	victim := segs[1] // a sealed segment in the middle of the log
	data, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(data, []byte(`{"n":`))
	at = bytes.Index(data[at+1:], []byte(`{"n":`)) + at + 1 // the second event's payload
	copy(data[at:], "GARBAGE!")
	writeFile(t, victim, string(data))
	failsWith(t, exitCorrupt, []string{"verify", dd}, "corrupt")
	failsWith(t, exitCorrupt, []string{"export", dd}, "corrupt")

	out := filepath.Join(home, "rescued.ndjson")
	before := storeDigest(t, dir)
	r := batpak(t, "export", dd, "--salvage", "--out", out)
	if r.code != exitCorrupt || !strings.Contains(r.stderr, "batpak: skipped "+victim+" at offset ") || !strings.Contains(r.stderr, "1 damaged range skipped") {
		t.Fatalf("export --salvage: exit %d, %q", r.code, r.stderr)
	}
	if storeDigest(t, dir) != before {
		t.Error("export --salvage changed the store")
	}
	rescued, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := bytes.Count(rescued, []byte("\n"))
	if got != n-1 {
		t.Errorf("salvaged %d events, want %d (all but the damaged one)", got, n-1)
	}
	// Every salvaged line is the intact export's line for that event.
	wholeLines := map[string]bool{}
	for _, l := range strings.Split(whole, "\n") {
		wholeLines[l] = true
	}
	for _, l := range strings.Split(strings.TrimSpace(string(rescued)), "\n") {
		if !wholeLines[l] {
			t.Fatalf("salvaged a line the intact store did not export: %s", l)
		}
	}
	// The rescued events import into a new store that verifies (the
	// damaged entity's chain continues with the next clocks).
	fresh := "--data-dir=" + filepath.Join(home, "fresh")
	if out := ok(t, "import", fresh, out); !strings.HasPrefix(out, fmt.Sprintf("imported %d events", n-1)) {
		t.Errorf("import of the salvage: %q", out)
	}
	ok(t, "verify", fresh)
	failsWith(t, exitUsage, []string{"export", dd, "--salvage", "--scope", "shop"}, "--salvage exports every readable event")

	// A segment deleted outright: nothing is damaged, but its events are
	// missing, and the salvage says so and exits 7.
	if err := os.Remove(segs[len(segs)-2]); err != nil {
		t.Fatal(err)
	}
	r = batpak(t, "export", dd, "--salvage", "--out", filepath.Join(home, "rescued2.ndjson"))
	if r.code != exitCorrupt || !strings.Contains(r.stderr, "batpak: missing ") || !strings.Contains(r.stderr, "acknowledged events missing") {
		t.Fatalf("export --salvage with a segment deleted: exit %d, %q", r.code, r.stderr)
	}
}

// TestExportSalvagePartialBatch: one damaged frame inside an atomic
// batch (an import writes batches of 256). With seven entities taking
// turns, the batch's events after the damage chain on those before it,
// which are confirmed: the damaged event alone is lost. With one entity,
// nothing after the damage chains on the events before it (the damaged
// one sat between): those are left out as unconfirmed, counted as the
// batch's events not exported, and reported missing. Either way no
// readable frame is reported as damage, the summary says so, and the
// result imports into a store that verifies.
func TestExportSalvagePartialBatch(t *testing.T) {
	for _, entities := range []int{7, 1} {
		t.Run(fmt.Sprintf("%d entities", entities), func(t *testing.T) {
			home := isolate(t)
			const n = 600
			fillStore(t, filepath.Join(home, "s1"), n, entities)
			src := filepath.Join(home, "s1.ndjson")
			ok(t, "export", "--data-dir="+filepath.Join(home, "s1"), "--out", src)
			dir := filepath.Join(home, "batched")
			dd := "--data-dir=" + dir
			ok(t, "import", dd, "--segment-max-bytes=64KiB", src)
			segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
			if err != nil || len(segs) < 2 {
				t.Fatalf("segments %v (%v), want several", segs, err)
			}
			data, err := os.ReadFile(segs[0])
			if err != nil {
				t.Fatal(err)
			}
			at := bytes.Index(data[len(data)/3:], []byte(`{"n":`)) + len(data)/3 // an event inside the first batch
			var victim int                                                       // its place in the batch
			if _, err := fmt.Sscanf(string(data[at:]), `{"n":%d`, &victim); err != nil || victim < 10 || victim > 200 {
				t.Fatalf("damaged event %d (%v), want one inside the first batch", victim, err)
			}
			copy(data[at:], "GARBAGE!")
			writeFile(t, segs[0], string(data))

			lost, unconfirmed := 1, ""
			if entities == 1 {
				lost = victim + 1
				unconfirmed = fmt.Sprintf("; %d events left out as unconfirmed", victim)
			}
			out := filepath.Join(home, "rescued.ndjson")
			r := batpak(t, "export", dd, "--salvage", "--out", out)
			if r.code != exitCorrupt || !strings.Contains(r.stderr, fmt.Sprintf("salvaged %d events", n-lost)) || !strings.Contains(r.stderr, "1 damaged range skipped") ||
				!strings.Contains(r.stderr, fmt.Sprintf("1 batch committed but cut by damage (%s of it not exported", plural(lost, "event", "events"))) ||
				(unconfirmed != "") != strings.Contains(r.stderr, "unconfirmed") || !strings.Contains(r.stderr, unconfirmed) ||
				!strings.Contains(r.stderr, fmt.Sprintf("; %s missing", plural(lost, "acknowledged event", "acknowledged events"))) ||
				strings.Contains(r.stderr, "without a batch-begin") {
				t.Fatalf("export --salvage: exit %d, %q", r.code, r.stderr)
			}
			fresh := "--data-dir=" + filepath.Join(home, "fresh")
			if got := ok(t, "import", fresh, out); !strings.HasPrefix(got, fmt.Sprintf("imported %d events", n-lost)) {
				t.Errorf("import of the salvage: %q", got)
			}
			ok(t, "verify", fresh)
		})
	}
}

func regexpMatch(re, s string) bool {
	return regexp.MustCompile(re).MatchString(s)
}

// TestDemoHintNamesRunnableCommand: the demo's closing hint names a
// command that runs: batpak only when that is this program on $PATH.
func TestDemoHintNamesRunnableCommand(t *testing.T) {
	dir := isolate(t)
	t.Setenv("PATH", dir) // no batpak on it
	for arg0, want := range map[string]string{
		"/tmp/go-build1234/b001/exe/batpak": "go run ./cmd/batpak",
		"./batpak":                          "./batpak",
		"/opt/my tools/batpak":              "'/opt/my tools/batpak'",
	} {
		if got := selfCommand(arg0); got != want {
			t.Errorf("selfCommand(%q) = %q, want %q", arg0, got, want)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(dir, "batpak")); err != nil {
		t.Fatal(err)
	}
	if got := selfCommand("batpak"); got != "batpak" {
		t.Errorf("with this program on PATH as batpak: %q", got)
	}
}

// TestReadBesideUnfinishedBatch: a read-only command that finds a batch
// without its commit record at the end of the log (a writer in the
// middle of an import) says nothing that sounds like data loss; only
// --log-level debug mentions it. A writer's open, which does discard it,
// still warns.
func TestReadBesideUnfinishedBatch(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	s, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	coord, _ := core.NewCoordinate("order:1", "shop")
	ctx := context.Background()
	if _, err := s.Append(ctx, coord, core.MustKind(1, 1), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	items := make([]core.BatchItem, 3)
	for i := range items {
		items[i] = core.BatchItem{Coordinate: coord, Kind: core.MustKind(1, 2), Payload: []byte(fmt.Sprintf(`{"i":%d}`, i))}
	}
	if _, err := s.AppendBatch(ctx, items); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Take the batch's commit record (the last frame) away, and the
	// checkpoint and footer that remember the batch: as the log looks
	// while the writer is between the items and the commit.
	seg := onlySegment(t, dir)
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	off, last := 32, -1
	for off+8 <= len(data) {
		n := int(binary.LittleEndian.Uint32(data[off:]))
		if n == 0 {
			break
		}
		last, off = off, off+8+n
	}
	clear(data[last:off])
	writeFile(t, seg, string(data))
	for _, f := range []string{"index.ckpt", "00000000000000000001.idx"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}

	r := batpak(t, "stats", dd, "-o", "json")
	if r.code != 0 || r.stderr != "" || decode[statsJSON](t, r.stdout).Events != 1 {
		t.Errorf("stats beside an unfinished batch: exit %d, stderr %q, %s", r.code, r.stderr, r.stdout)
	}
	if r = batpak(t, "stats", dd, "--log-level", "debug"); !strings.Contains(r.stderr, "not showing batches without a commit record (a writer may still be writing one)") ||
		strings.Contains(r.stderr, "warning") {
		t.Errorf("stats --log-level debug: %q", r.stderr)
	}
	if r = batpak(t, "append", dd, "--entity", "order:2", "--scope", "shop", "--kind", "1:1", "--data", "{}"); r.code != 0 ||
		!strings.Contains(r.stderr, "warning: discarded batches that lack a commit record") {
		t.Errorf("a writer's open of the same log: exit %d, %q", r.code, r.stderr)
	}
}

// TestOutputFlagsOwnFormats: a verb that renders a format of its own
// (a causal graph as Graphviz dot) adds it; the others stay refused.
func TestOutputFlagsOwnFormats(t *testing.T) {
	var out outputFlags
	out.allow("dot")
	cmd := &cobra.Command{Use: "graph"}
	out.register(cmd)
	for arg, want := range map[string]string{"dot": "dot", "DOT": "dot", "yaml": formatYAML, "table": formatTable} {
		if err := cmd.Flags().Set("output", arg); err != nil {
			t.Fatal(err)
		}
		if got, err := out.format(); got != want || err != nil {
			t.Errorf("-o %s: %q, %v", arg, got, err)
		}
	}
	_ = cmd.Flags().Set("output", "svg")
	if _, err := out.format(); err == nil || exitCodeOf(err) != exitUsage || !strings.Contains(err.Error(), "want table, json, yaml or dot") {
		t.Errorf("-o svg: %v", err)
	}
}

// TestServerOnlyHelpLeavesOutStoreFlags: the help of a verb that works
// only against a server shows the flags that matter there (--server,
// --token, --tenant), not the local store's; a local verb keeps them.
func TestServerOnlyHelpLeavesOutStoreFlags(t *testing.T) {
	isolate(t)
	for _, args := range [][]string{
		{"key", "issue", "--help"}, {"tenant", "create", "--help"}, {"cluster", "status", "--help"},
		{"worker", "start", "--help"}, {"policy", "push", "--help"}, {"plugin", "push", "--help"}, {"key", "--help"},
	} {
		out := ok(t, args...)
		for _, want := range []string{"--server", "--token", "--tenant", "--config"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v lacks %s:\n%s", args, want, out)
			}
		}
		for _, unwanted := range []string{"--data-dir", "--sync-every-n-events", "--principal-id", "--salvage"} {
			if strings.Contains(out, unwanted) {
				t.Errorf("%v shows the store flag %s:\n%s", args, unwanted, out)
			}
		}
	}
	for _, args := range [][]string{{"query", "--help"}, {"policy", "eval", "--help"}, {"plugin", "project", "--help"}} {
		if out := ok(t, args...); !strings.Contains(out, "--data-dir") {
			t.Errorf("%v lacks --data-dir:\n%s", args, out)
		}
	}
}
