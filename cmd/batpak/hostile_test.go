package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// terminalControls returns the first control character in s that a
// terminal would act on (C0 but tab and line feed, DEL, C1), or "".
func terminalControls(s string) string {
	for i, r := range s {
		if r == utf8.RuneError {
			continue
		}
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			return s[i : i+utf8.RuneLen(r)]
		}
	}
	return ""
}

// TestStoredTextCannotDriveTheTerminal: entity names and scopes are any
// text a writer chose; printed in table mode they must reach the terminal
// escaped, never as a control sequence (colours, a new window title, a
// carriage return that overwrites the line, an 8-bit CSI).
func TestStoredTextCannotDriveTheTerminal(t *testing.T) {
	isolate(t)
	entity := "order:\x1b[31mRED\x1b[0m\a\r\u009b2J"
	scope := "shop\x1b]0;owned\a"
	ok(t, "append", "--entity", entity, "--scope", scope, "--kind", "1:1", "--data", `{"x":"\u001b[2J"}`)
	for _, args := range [][]string{
		{"query", "--entity-prefix", "order:"},
		{"query", "--scope", scope, "-o", "yaml"},
		{"query", "--entity-prefix", "order:", "-o", "json"},
	} {
		r := batpak(t, args...)
		if c := terminalControls(r.stdout + r.stderr); c != "" {
			t.Errorf("batpak %q prints the control character %q: %q", args, c, r.stdout+r.stderr)
		}
	}
	out := ok(t, "query", "--entity-prefix", "order:")
	if !strings.Contains(out, `order:\x1b[31mRED\x1b[0m\a\r\u009b2J`) || !strings.Contains(out, `shop\x1b]0;owned\a`) {
		t.Errorf("query shows the entity and scope as %q, want them escaped and otherwise whole", out)
	}
	// JSON stays exact: it decodes to the stored entity.
	evs := parseLines(t, ok(t, "query", "--entity-prefix", "order:", "-o", "json"))
	if len(evs) != 1 || str(t, evs[0], "entity") != entity {
		t.Errorf("query -o json: %v, want the entity %q", evs, entity)
	}
}

// TestServerTextCannotDriveTheTerminal: a server (hostile, or relaying a
// tenant's text) answers with control sequences in tenant names and
// reasons; the table the CLI prints has them escaped.
func TestServerTextCannotDriveTheTerminal(t *testing.T) {
	isolate(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"tenants":[{"id":"acme\u001b]0;pwned\u0007\r","state":"suspended","suspend_reason":"\u001b[2J\u001b[Hbye\u009b","created":"2026-01-02T03:04:05Z"}]}`))
	}))
	defer srv.Close()
	r := batpak(t, "--server", srv.URL, "--token", "bpko_x", "tenant", "list")
	if r.code != 0 {
		t.Fatalf("tenant list: exit %d, stderr %q", r.code, r.stderr)
	}
	if c := terminalControls(r.stdout + r.stderr); c != "" {
		t.Errorf("tenant list prints the server's control character %q: %q", c, r.stdout)
	}
	if !strings.Contains(r.stdout, `acme\x1b]0;pwned\a\r`) {
		t.Errorf("tenant list: %q, want the tenant's id escaped", r.stdout)
	}
}

// TestTermSafeWriterSplitC1: an 8-bit control split across two writes (its
// UTF-8 lead byte ending one) is still escaped, and a lead byte of a
// printable character split the same way passes whole.
func TestTermSafeWriterSplitC1(t *testing.T) {
	var b bytes.Buffer
	w := newTermSafeWriter(&b)
	for _, p := range []string{"a\xc2", "\x9bb é\xc2", "\xa9", "\x1b\xc2"} {
		if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), `a\u009bb é©\x1b`+"\xc2"; got != want {
		t.Errorf("wrote %q, want %q", got, want)
	}
}

// TestServerAnswerBounded: a server whose JSON answer never ends (or
// passes the bound) is refused with an error naming the limit, instead of
// growing the CLI's memory without bound; an answer of exactly the bound
// is read.
func TestServerAnswerBounded(t *testing.T) {
	isolate(t)
	defer func(old int64) { maxServerMessageBytes = old }(maxServerMessageBytes)
	maxServerMessageBytes = 1 << 20
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"tenants":[`))
		row := []byte(`{"id":"` + strings.Repeat("a", 64<<10) + `","state":"active"},`)
		for {
			if _, err := w.Write(row); err != nil {
				return // the client hung up
			}
		}
	}))
	defer srv.Close()
	failsWith(t, exitError, []string{"--server", srv.URL, "--token", "bpko_x", "tenant", "list"},
		"batpak: server: ", "larger than 1048576 bytes")
	// Calling the endless answer a stream does not unbound it.
	for _, ctype := range []string{"application/x-ndjson", "text/event-stream"} {
		liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ctype)
			_, _ = w.Write([]byte(`{"tenants":[{"id":"`))
			chunk := []byte(strings.Repeat("a", 64<<10))
			for {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}))
		failsWith(t, exitError, []string{"--server", liar.URL, "--token", "bpko_x", "tenant", "list"},
			"batpak: server: ", "larger than 1048576 bytes")
		liar.Close()
	}

	// Exactly the bound is an answer; one byte more is not.
	body := func(size int) []byte {
		doc := `{"tenants":[{"id":"acme","state":"active","created":"2026-01-02T03:04:05Z"}]}`
		return []byte(doc + strings.Repeat(" ", size-len(doc)))
	}
	size := int(maxServerMessageBytes)
	exact := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body(size))
	}))
	defer exact.Close()
	if out := ok(t, "--server", exact.URL, "--token", "bpko_x", "tenant", "list"); !strings.Contains(out, "acme") {
		t.Errorf("an answer of exactly the bound: %q", out)
	}
	b := &boundBody{rc: io.NopCloser(bytes.NewReader(body(size + 1))), left: int64(size), max: int64(size), what: "GET /"}
	if _, err := io.ReadAll(b); err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Errorf("one byte over the bound: %v", err)
	}
	b = &boundBody{rc: io.NopCloser(bytes.NewReader(body(size))), left: int64(size), max: int64(size), what: "GET /"}
	if got, err := io.ReadAll(b); err != nil || len(got) != size {
		t.Errorf("exactly the bound: %d bytes, %v", len(got), err)
	}
}

// TestServerEventStreamBounded: query --follow against a server whose
// event stream sends one message without end stops with an error naming
// the limit; messages of any number, each within it, are read.
func TestServerEventStreamBounded(t *testing.T) {
	const max = 1 << 16
	msg := "id: 1\nevent: event\ndata: " + strings.Repeat("x", 100) + "\n\n"
	var stream strings.Builder
	for stream.Len() < 4*max {
		stream.WriteString(msg)
	}
	s := &sseBoundBody{rc: io.NopCloser(strings.NewReader(stream.String())), max: max, what: "GET /subscribe"}
	if got, err := io.ReadAll(s); err != nil || len(got) != stream.Len() {
		t.Errorf("a long stream of small messages: %d of %d bytes, %v", len(got), stream.Len(), err)
	}
	// A message of exactly max bytes (its closing blank line included)
	// passes; one byte more is refused.
	head := "data: "
	one := head + strings.Repeat("y", max-len(head)-2) + "\n\n"
	s = &sseBoundBody{rc: io.NopCloser(strings.NewReader(one + one)), max: max, what: "GET /subscribe"}
	if _, err := io.ReadAll(s); err != nil {
		t.Errorf("messages of exactly %d bytes: %v", max, err)
	}
	over := head + strings.Repeat("y", max-len(head)-1) + "\n\n"
	s = &sseBoundBody{rc: io.NopCloser(strings.NewReader(over)), max: max, what: "GET /subscribe"}
	if _, err := io.ReadAll(s); err == nil || !strings.Contains(err.Error(), "larger than 65536 bytes") {
		t.Errorf("a message of %d bytes: %v", max+1, err)
	}

	isolate(t)
	defer func(old int64) { maxServerMessageBytes = old }(maxServerMessageBytes)
	maxServerMessageBytes = max
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/subscribe") {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"events":[]}`))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte("id: 1\nevent: event\ndata: "))
		chunk := []byte(strings.Repeat("z", 4096))
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	r := batpak(t, "--server", srv.URL, "--token", "bpk_x", "--tenant", "acme", "query", "--follow")
	if r.code == 0 || !strings.Contains(r.stderr, "larger than 65536 bytes") {
		t.Errorf("query --follow on an endless message: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestExportOutWholeOrNothing: export --out replaces the named file only
// with a complete export. A server that breaks off mid-export, or cannot
// be reached, leaves the previous file as it was (and no temporary file
// behind); a symlink at the path is replaced, never written through.
func TestExportOutWholeOrNothing(t *testing.T) {
	dir := isolate(t)
	ok(t, "append", "--entity", "order:1", "--scope", "shop", "--kind", "1:1", "--data", `{"n":1}`)
	whole := ok(t, "export")
	dest := filepath.Join(dir, "backup.ndjson")
	if err := os.WriteFile(dest, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Locally: replaced by the whole export, permissions kept.
	if out := ok(t, "export", "--out", dest); !strings.Contains(out, "exported 1 event") {
		t.Errorf("export --out: %q", out)
	}
	if got, _ := os.ReadFile(dest); string(got) != whole {
		t.Errorf("export --out wrote %q, want %q", got, whole)
	}
	if st, err := os.Stat(dest); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("export --out over a 0600 file: %v %v", st.Mode(), err)
	}

	// A server that sends one line, then breaks the connection.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = w.Write([]byte(strings.SplitAfter(whole, "\n")[0]))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer srv.Close()
	if err := os.WriteFile(dest, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, server := range []string{srv.URL, "http://127.0.0.1:1"} {
		r := batpak(t, "--server", server, "--token", "bpk_x", "--tenant", "acme", "export", "--out", dest)
		if r.code == 0 {
			t.Errorf("export from %s: exit 0, stderr %q", server, r.stderr)
		}
		if got, _ := os.ReadFile(dest); string(got) != "precious\n" {
			t.Errorf("a failed export from %s left %q in the --out file, want it untouched", server, got)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".backup.ndjson.tmp-*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}

	// A symlink at the path: the file it points to is not written.
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.ndjson")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	ok(t, "export", "--out", link)
	if got, _ := os.ReadFile(victim); string(got) != "keep me\n" {
		t.Errorf("export --out through a symlink wrote its target: %q", got)
	}
	if got, _ := os.ReadFile(link); string(got) != whole {
		t.Errorf("export --out at a symlink: %q", got)
	}
	failsWith(t, exitError, []string{"export", "--out", dir}, "--out: ", "is a directory")
}

// TestCompletionOffersNoControlCharacters: an entity name holding a line
// break or a tab would reach the shell as two offers (the second one
// chosen by whoever wrote the event) or a false description; such names
// are not offered, and event-id descriptions show them escaped.
func TestCompletionOffersNoControlCharacters(t *testing.T) {
	isolate(t)
	for _, e := range []string{"order:1", "order:2\n--data-dir=/etc", "order:3\tfake", "order:4\x1b[2J"} {
		ok(t, "append", "--entity", e, "--scope", "shop", "--kind", "1:1", "--data", "{}")
	}
	out := ok(t, "__complete", "query", "--entity-prefix", "order:")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[0] != "order:1" || !strings.HasPrefix(lines[1], ":") {
		t.Errorf("entity names offered: %q, want order:1 alone", out)
	}
	out = ok(t, "__complete", "get", "")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || terminalControls(out) != "" {
		t.Errorf("event ids offered: %q, want 4 lines and the directive, names escaped", out)
	}
	for _, l := range lines[:len(lines)-1] {
		if id, desc, _ := strings.Cut(l, "\t"); !uuidRE.MatchString(id) || strings.Contains(desc, "\t") {
			t.Errorf("event id offer %q: want ID<tab>description", l)
		}
	}
}

// TestFollowStoreRemoved: query --follow on a directory that holds no
// store is "not found" like query; a store removed while it is followed
// ends the command with exit 5 and says so.
func TestFollowStoreRemoved(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	failsWith(t, exitNotFound, []string{"--data-dir", dir, "query", "--follow"}, "no store at ")
	ok(t, "--data-dir", dir, "append", "--entity", "a:1", "--scope", "s", "--kind", "1:1", "--data", "{}")
	done := make(chan result, 1)
	var out, errb bytes.Buffer
	go func() {
		code := run(context.Background(), []string{"--data-dir", dir, "query", "--follow", "--poll-interval", "10ms"}, strings.NewReader(""), &out, &errb)
		done <- result{code: code}
	}()
	time.Sleep(200 * time.Millisecond)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.code != exitNotFound || !strings.Contains(errb.String(), "was removed while following") || !strings.Contains(out.String(), "a:1") {
			t.Errorf("follow of a removed store: exit %d, stdout %q, stderr %q", r.code, out.String(), errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("query --follow goes on after its store was removed")
	}
}

// TestUnknownSubcommandIsUsage: a group of verbs given a verb it does not
// have is a usage error (exit 2, one line and the --help pointer), not
// its help and success; alone, it prints its help.
func TestUnknownSubcommandIsUsage(t *testing.T) {
	isolate(t)
	for _, group := range []string{"tenant", "key", "worker", "cursor", "completion", "policy", "plugin", "cluster"} {
		r := failsWith(t, exitUsage, []string{group, "bogus"}, `unknown command "bogus" for "batpak `+group+`"`, "Run 'batpak "+group+" --help' for usage.")
		if strings.Count(r.stderr, "\n") != 2 || r.stdout != "" {
			t.Errorf("batpak %s bogus: stdout %q, stderr %q, want two lines on stderr", group, r.stdout, r.stderr)
		}
		if out := ok(t, group); !strings.Contains(out, "Available Commands:") {
			t.Errorf("batpak %s: %q, want its help", group, out)
		}
	}
	if out := ok(t, "completion", "bash"); !strings.Contains(out, "bash completion") {
		t.Errorf("completion bash: %.80q", out)
	}
}

// TestUnknownConfigKeyNamesItsSection: a typo in a server or remote key
// is answered with the key it was likely meant as and the keys of that
// section, not the store's top-level keys alone (which would suggest the
// section is not configurable).
func TestUnknownConfigKeyNamesItsSection(t *testing.T) {
	isolate(t)
	if err := os.WriteFile("batpak.yaml", []byte("# batpak configuration\nserver:\n  jwt:\n    isuer: x\nremote:\n  tokn: y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := batpak(t, "config")
	if r.code != 0 || !strings.Contains(r.stderr, `unknown keys "remote.tokn", "server.jwt.isuer" (did you mean remote.token for remote.tokn, server.jwt.issuer for server.jwt.isuer? known in remote: remote.server, remote.token, remote.token_file, remote.tenant, remote.consistency, remote.timeout, remote.ca_file)`) {
		t.Errorf("config: exit %d, stderr %q", r.code, r.stderr)
	}
	if err := os.WriteFile("batpak.yaml", []byte("# batpak configuration\nserver:\n  jwt:\n    isuer: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := batpak(t, "config"); !strings.Contains(r.stderr, "(did you mean server.jwt.issuer? known in server.jwt: ") || !strings.Contains(r.stderr, "server.jwt.issuer") || strings.Contains(r.stderr, "data_dir") {
		t.Errorf("config: stderr %q, want the server.jwt keys", r.stderr)
	}
	if err := os.WriteFile("batpak.yaml", []byte("# batpak configuration\nfd_budjet: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := batpak(t, "config"); !strings.Contains(r.stderr, "(did you mean fd_budget? known: data_dir, ") || !strings.Contains(r.stderr, "server.* and remote.*") {
		t.Errorf("config: stderr %q, want the top-level keys", r.stderr)
	}
}

// TestCompletionBoundedInTime: a store that takes longer to open and
// scan than completionTimeout gets no offers, at once, instead of a Tab
// that hangs; within it, names are offered.
func TestCompletionBoundedInTime(t *testing.T) {
	isolate(t)
	ok(t, "append", "--entity", "order:1", "--scope", "shop", "--kind", "1:1", "--data", "{}")
	defer func(old time.Duration) { completionTimeout = old }(completionTimeout)
	completionTimeout = time.Nanosecond // shorter than any open
	start := time.Now()
	out := ok(t, "__complete", "query", "--entity-prefix", "order:")
	if strings.Contains(out, "order:1") || time.Since(start) > 5*time.Second {
		t.Errorf("completion past its time limit offered %q after %v, want nothing at once", out, time.Since(start))
	}
	if out := ok(t, "__complete", "get", ""); strings.Count(out, "\n") != 1 {
		t.Errorf("event id completion past its time limit offered %q", out)
	}
	completionTimeout = time.Minute
	if out := ok(t, "__complete", "query", "--entity-prefix", "order:"); !strings.HasPrefix(out, "order:1\n") {
		t.Errorf("completion within its time limit offered %q", out)
	}
}

// TestTermSafeWriterEscapesBidiControls: right-to-left overrides and
// isolates from a server or the store (a tenant named to look like
// another when shown) are written as escapes, also when split across
// writes; other characters of the same lead bytes pass whole, and the
// data writer (export) passes everything.
func TestTermSafeWriterEscapesBidiControls(t *testing.T) {
	var b bytes.Buffer
	w := newTermSafeWriter(&b)
	for _, p := range []string{"acme\u202egpj.exe", " x\xe2", "\x80\xaey\xe2\x81", "\xa6z \u2014 \u061c\u200f\u2069", "€\xe2"} {
		if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), `acme\u202egpj.exe x\u202ey\u2066z — \u061c\u200f\u2069€`+"\xe2"; got != want {
		t.Errorf("wrote %q, want %q", got, want)
	}
	b.Reset()
	d := dataWriter(newTermSafeWriter(&b))
	if _, err := d.Write([]byte("a\u202eb\u0085")); err != nil || b.String() != "a\u202eb\u0085" {
		t.Errorf("the data writer wrote %q, %v", b.String(), err)
	}
}

// TestTermSafeWriterFlushEscapes: bytes held back at the end of the last
// write (the start of what might be a bidirectional control) are escaped
// when flushed: a control character among them never reaches the
// terminal raw.
func TestTermSafeWriterFlushEscapes(t *testing.T) {
	for _, tail := range []string{"\xe2\x1b", "\xe2\r", "\xe2\a", "\xc2", "\xe2\x80"} {
		var b bytes.Buffer
		w := newTermSafeWriter(&b)
		if _, err := w.Write([]byte("name: evil" + tail)); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if c := terminalControls(b.String()); c != "" {
			t.Errorf("after %q: wrote %q, with control %q", tail, b.String(), c)
		}
	}
}
