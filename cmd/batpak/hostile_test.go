package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
