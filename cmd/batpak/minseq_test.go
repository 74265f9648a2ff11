package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestMinSeqFlag: --min-seq on the remote read commands sends min_seq
// with their reads of the tenant (so a cluster node serves them once it
// holds that write); without it none is sent; a value that is not a
// whole number 0 or more, or an empty one, is a usage error (exit 2)
// naming the flag, as is --consistency session, which a one-shot CLI
// cannot honour (the message points at --min-seq).
func TestMinSeqFlag(t *testing.T) {
	isolate(t)
	var mu sync.Mutex
	seen := map[string]string{} // path -> raw query of its last GET
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.URL.RawQuery
		mu.Unlock()
		if r.URL.Path == "/v1/tenants/acme/events" {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"events":[],"next_after":null}`))
			return
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(404)
		w.Write([]byte(`{"code":"NOT_FOUND","status":404,"title":"Not found"}`))
	}))
	defer srv.Close()
	query := func(path string) string {
		mu.Lock()
		defer mu.Unlock()
		q, ok := seen[path]
		if !ok {
			t.Fatalf("the server saw no GET %s (saw %v)", path, seen)
		}
		delete(seen, path)
		return q
	}
	remote := []string{"--server", srv.URL, "--token", "bpk_x", "--tenant", "acme"}
	const id = "0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e"
	for _, tc := range []struct {
		args []string
		path string
	}{
		{[]string{"query", "--entity-prefix", "order:"}, "/v1/tenants/acme/events"},
		{[]string{"get", id}, "/v1/tenants/acme/events/" + id},
		{[]string{"ancestors", id}, "/v1/tenants/acme/events/" + id + "/ancestors"},
		{[]string{"descendants", id}, "/v1/tenants/acme/events/" + id + "/descendants"},
		{[]string{"correlation", id}, "/v1/tenants/acme/events/" + id + "/correlation"},
		{[]string{"stats"}, "/v1/tenants/acme/stats"},
	} {
		batpak(t, append(append(remote, tc.args...), "--min-seq", "7")...)
		if q := query(tc.path); !strings.Contains(q, "min_seq=7") {
			t.Errorf("%s --min-seq 7: the server saw %q", tc.args[0], q)
		}
		batpak(t, append(remote, tc.args...)...)
		if q := query(tc.path); strings.Contains(q, "min_seq") {
			t.Errorf("%s without --min-seq: the server saw %q", tc.args[0], q)
		}
	}
	ok(t, append(remote, "--consistency", "linearizable", "query", "--min-seq", "0")...)
	if q := query("/v1/tenants/acme/events"); !strings.Contains(q, "min_seq=0") || !strings.Contains(q, "consistency=linearizable") {
		t.Errorf("--consistency linearizable --min-seq 0: the server saw %q", q)
	}
	for _, bad := range []string{"-1", "seven", "1.5", "18446744073709551616"} {
		r := batpak(t, append(remote, "query", "--min-seq", bad)...)
		if r.code != 2 || !strings.Contains(r.stderr, "--min-seq") || !strings.Contains(r.stderr, "global sequence") {
			t.Errorf("--min-seq %s: exit %d, want 2 naming the flag\n%s", bad, r.code, r.stderr)
		}
	}
	// --min-seq "$SEQ" with SEQ unset (the append that should have set it
	// failed) is refused, not read as no --min-seq: that would skip the
	// wait for the write the caller means to see.
	for _, args := range [][]string{append(remote, "query", "--min-seq", ""), append(remote, "get", id, "--min-seq= "), {"query", "--min-seq", ""}} {
		r := batpak(t, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "--min-seq is empty") || !strings.Contains(r.stderr, "global sequence") {
			t.Errorf("%q: exit %d, want 2 saying --min-seq is empty\n%s", args, r.code, r.stderr)
		}
	}
	mu.Lock()
	if len(seen) != 0 {
		t.Errorf("an empty --min-seq still reached the server: %v", seen)
	}
	mu.Unlock()
	if r := batpak(t, "query", "--min-seq", "x"); r.code != 2 || !strings.Contains(r.stderr, "--min-seq") {
		t.Errorf("--min-seq x without a server: exit %d, want 2\n%s", r.code, r.stderr)
	}
	r := batpak(t, append(remote, "--consistency", "session", "query")...)
	if r.code != 2 || !strings.Contains(r.stderr, "--consistency") || !strings.Contains(r.stderr, "--min-seq") {
		t.Errorf("--consistency session: exit %d, want 2 naming the flag and pointing at --min-seq\n%s", r.code, r.stderr)
	}
}
