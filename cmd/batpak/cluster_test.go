package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
)

// freeAddr returns a loopback address with a port free just now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestClusterVerbs: `batpak cluster status|join|leave` against two
// `batpak serve --cluster` processes: a node added by hand becomes a
// voter, any node answers status, and leave removes it.
func TestClusterVerbs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	for k, v := range map[string]string{"BATPAK_SERVER_CLUSTER_HEARTBEAT_TIMEOUT": "300ms", "BATPAK_SERVER_CLUSTER_ELECTION_TIMEOUT": "300ms", "BATPAK_SERVER_CLUSTER_LEADER_LEASE_TIMEOUT": "300ms"} {
		t.Setenv(k, v)
	}
	op := "bpko_" + strings.Repeat("abcdefghijklmnopqrstuvwxyz", 2)
	r1, r2 := freeAddr(t), freeAddr(t)
	n1 := startServe(t, t.TempDir(), op, "--cluster", "--cluster-node-id", "n1", "--cluster-bind", r1, "--cluster-bootstrap")
	n2 := startServe(t, t.TempDir(), op, "--cluster", "--cluster-node-id", "n2", "--cluster-bind", r2)
	type status struct {
		ID      string `json:"id"`
		State   string `json:"state"`
		Members []struct {
			ID     string `json:"id"`
			Leader bool   `json:"leader"`
			URL    string `json:"url"`
		} `json:"members"`
	}
	statusOf := func(base string) (status, result) {
		r := batpak(t, "--server", base, "--token", op, "cluster", "status", "-o", "json")
		var st status
		if r.code == 0 {
			if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
				t.Fatalf("status output %q: %v", r.stdout, err)
			}
		}
		return st, r
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, r := statusOf(n1.base)
		if r.code == 0 && st.State == "leader" && len(st.Members) == 1 && st.Members[0].URL == n1.base {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n1 does not lead alone: %+v, %+v", st, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := batpak(t, "--server", n1.base, "--token", op, "cluster", "join", "n2", r2, "--url", n2.base); r.code != 0 || !strings.Contains(r.stdout, "n2") {
		t.Fatalf("join: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		st, r := statusOf(n2.base)
		if r.code == 0 && st.State == "follower" && len(st.Members) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n2 is not a follower of two: %+v, %+v", st, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A join that would move a live member is refused unless --replace.
	if r := batpak(t, "--server", n1.base, "--token", op, "cluster", "join", "n2", freeAddr(t)); r.code != 4 || !strings.Contains(r.stderr, "replace") {
		t.Fatalf("join moving n2: exit %d, want 4 (conflict)\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Reads through the follower: --consistency linearizable has the
	// leader serve them, so a write acknowledged a moment ago is there;
	// an unknown consistency is a usage error naming the flag.
	ok(t, "--server", n1.base, "--token", op, "tenant", "create", "acme")
	key := keyIn(t, ok(t, "--server", n1.base, "--token", op, "--tenant", "acme", "key", "issue", "app", "--role", "writer", "--role", "reader"))
	for i := range 3 {
		ok(t, "--server", n1.base, "--token", key, "--tenant", "acme", "append", "--entity", "order:1", "--scope", "shop", "--kind", "1:1", "--data", fmt.Sprintf(`{"n":%d}`, i))
		out := ok(t, "--server", n2.base, "--token", key, "--tenant", "acme", "--consistency", "linearizable", "query", "--entity-prefix", "order:")
		if !strings.Contains(out, fmt.Sprintf(`{"n":%d}`, i)) {
			t.Fatalf("a linearizable query through the follower right after write %d:\n%s", i, out)
		}
	}
	// Read-your-writes through the follower: --min-seq with the seq the
	// append printed has the follower serve the read once it holds it.
	for i := range 3 {
		var rec struct {
			ID             string `json:"id"`
			GlobalSequence uint64 `json:"global_sequence"`
		}
		out := ok(t, "--server", n1.base, "--token", key, "--tenant", "acme", "append", "-o", "json", "--entity", "order:2", "--scope", "shop", "--kind", "1:1", "--data", fmt.Sprintf(`{"m":%d}`, i))
		if err := json.Unmarshal([]byte(out), &rec); err != nil {
			t.Fatalf("append -o json: %q: %v", out, err)
		}
		got := ok(t, "--server", n2.base, "--token", key, "--tenant", "acme", "get", rec.ID, "--min-seq", fmt.Sprint(rec.GlobalSequence))
		if !strings.Contains(got, rec.ID) || !strings.Contains(got, fmt.Sprintf(`"m": %d`, i)) {
			t.Fatalf("get --min-seq %d through the follower right after write %d:\n%s", rec.GlobalSequence, i, got)
		}
	}
	if r := batpak(t, "--server", n2.base, "--token", key, "--tenant", "acme", "--consistency", "strong", "query"); r.code != 2 || !strings.Contains(r.stderr, "--consistency") || !strings.Contains(r.stderr, "want local or linearizable") {
		t.Fatalf("--consistency strong: exit %d, want 2 naming the flag\n%s%s", r.code, r.stdout, r.stderr)
	}
	// check through the follower: both copies of acme match the leader's.
	var rep struct {
		Nodes []struct {
			Tenant, Node, Result string
			Events               uint64
		}
		Differ, Unasked int
	}
	out := ok(t, "--server", n2.base, "--token", op, "cluster", "check", "-o", "json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("cluster check -o json: %q: %v", out, err)
	}
	results, control := map[string]string{}, map[string]string{}
	for _, n := range rep.Nodes {
		switch n.Tenant {
		case "acme":
			results[n.Node] = n.Result
			if n.Events != 6 {
				t.Fatalf("check: %s holds %d events of acme, want 6: %s", n.Node, n.Events, out)
			}
		case "(control plane)":
			control[n.Node] = n.Result
		}
	}
	if results["n1"] != "leader" || results["n2"] != "same" || rep.Differ != 0 || rep.Unasked != 0 {
		t.Fatalf("cluster check: %s", out)
	}
	if control["n1"] != "leader" || control["n2"] != "same" {
		t.Fatalf("cluster check did not compare the control plane first: %s", out)
	}
	if r := batpak(t, "--server", n1.base, "--token", op, "cluster", "check", "nobody"); r.code != 5 {
		t.Fatalf("check of an unknown tenant: exit %d, want 5\n%s%s", r.code, r.stdout, r.stderr)
	}
	// leave through the follower: redirected to the leader.
	if r := batpak(t, "--server", n2.base, "--token", op, "cluster", "leave", "n2"); r.code != 0 || !strings.Contains(r.stdout, "removed node n2") {
		t.Fatalf("leave: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if st, r := statusOf(n1.base); r.code != 0 || len(st.Members) != 1 {
		t.Fatalf("after leave: %+v %+v", st, r)
	}
	// A tenant key is not the operator credential.
	if r := batpak(t, "--server", n1.base, "--token", "bpk_nope", "cluster", "status"); r.code == 0 {
		t.Fatalf("status with a bad token succeeded: %s", r.stdout)
	}
}

// fakeDigests is a node's digest answers by tenant: a JSON object with
// "%s" for upto, or "" for 404; asked records the upto parameter of each
// request ("-" when absent).
type fakeDigests struct {
	op      string
	answers map[string]string
	mu      sync.Mutex
	asked   []string
}

func (f *fakeDigests) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tenant := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/admin/tenants/"), "/digest")
	a, ok := f.answers[tenant]
	if r.Header.Get("Authorization") != "Bearer "+f.op || !ok || a == "" {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(404)
		fmt.Fprint(w, `{"code":"NOT_FOUND","status":404,"detail":"no such tenant"}`)
		return
	}
	upto := r.URL.Query().Get("upto")
	f.mu.Lock()
	if r.URL.Query().Has("upto") {
		f.asked = append(f.asked, upto)
	} else {
		f.asked = append(f.asked, "-")
		upto = "7"
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, a, upto)
}

// TestClusterCheckOutcomes: batpak cluster check against stand-in nodes:
// a copy with another digest is DIFFERENT and one its node cannot read
// DAMAGED (exit 7); a copy of another incarnation of the tenant (another
// birth index) is not compared (exit 8); an empty tenant's followers are asked for the events
// before 0, not for all they hold; a tenant named that the leader does
// not hold is reported and the others compared (exit 5).
func TestClusterCheckOutcomes(t *testing.T) {
	op := "bpko_" + strings.Repeat("abcdefghijklmnopqrstuvwxyz", 2)
	const same = `{"tenant":"t","upto":%s,"events":7,"digest":"` + "aaaa" + `"}`
	cases := []struct {
		name           string
		leader, follow map[string]string
		args           []string
		code           int
		want           string
		followerAsked  string
	}{
		{"different", map[string]string{"acme": same}, map[string]string{"acme": `{"upto":%s,"events":7,"digest":"bbbb"}`}, []string{"acme"}, 7, "DIFFERENT", "7"},
		{"damaged", map[string]string{"acme": same}, map[string]string{"acme": `{"upto":%s,"events":3,"digest":"","damaged":"corrupt segment"}`}, []string{"acme"}, 7, "DAMAGED: corrupt segment", "7"},
		{"empty tenant", map[string]string{"new": `{"upto":0,"events":0,"digest":"e3b0"}%.0s`}, map[string]string{"new": `{"upto":%s,"events":0,"digest":"e3b0"}`}, []string{"new"}, 0, "same", "0"},
		{"missing tenant", map[string]string{"acme": same}, map[string]string{"acme": same}, []string{"nosuch", "acme"}, 5, "no such tenant", "7"},
		{"a follower without the tenant", map[string]string{"acme": same}, map[string]string{}, []string{"acme"}, 8, "not compared: it does not hold the tenant", ""},
		{"another incarnation", map[string]string{"acme": `{"tenant":"t","upto":%s,"events":7,"digest":"aaaa","born":40}`}, map[string]string{"acme": `{"upto":%s,"events":7,"digest":"bbbb","born":12}`}, []string{"acme"}, 8, "not compared: it holds another incarnation", "7"},
		{"--tenant names it", map[string]string{"acme": same}, map[string]string{"acme": same}, []string{"--tenant", "acme"}, 0, "same", "7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			follower := &fakeDigests{op: op, answers: c.follow}
			fs := httptest.NewServer(follower)
			defer fs.Close()
			leader := &fakeDigests{op: op, answers: c.leader}
			var leaderURL string
			ls := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v1/cluster" {
					w.Header().Set("Content-Type", "application/json")
					fmt.Fprintf(w, `{"id":"n1","state":"leader","members":[{"id":"n1","leader":true,"url":%q},{"id":"n2","url":%q}]}`, leaderURL, fs.URL)
					return
				}
				leader.ServeHTTP(w, r)
			}))
			defer ls.Close()
			leaderURL = ls.URL
			r := batpak(t, append([]string{"--server", ls.URL, "--token", op, "cluster", "check"}, c.args...)...)
			if r.code != c.code || !strings.Contains(r.stdout, c.want) {
				t.Fatalf("exit %d, want %d with %q\n%s%s", r.code, c.code, c.want, r.stdout, r.stderr)
			}
			if got := strings.Join(follower.asked, ","); got != c.followerAsked {
				t.Fatalf("the follower was asked upto %q, want %q", got, c.followerAsked)
			}
		})
	}
}

// TestIsHTTPS: the scheme that keeps the operator credential off plain
// http is recognised in any case, as the client itself accepts it.
func TestIsHTTPS(t *testing.T) {
	for u, want := range map[string]bool{"https://a:1": true, "HTTPS://a:1": true, "Https://a": true, "http://a:1": false, "HTTP://a": false, "a:1": false, "": false} {
		if got := isHTTPS(u); got != want {
			t.Errorf("isHTTPS(%q) = %v, want %v", u, got, want)
		}
	}
}

// TestShowReplicaCheck: cluster status shows the leader's replica check —
// its pace, its last round, why pairs were not compared, and a DIVERGED
// line naming the tenant, node, result and range of every alarm — and
// nothing for a node without one.
func TestShowReplicaCheck(t *testing.T) {
	var b strings.Builder
	showReplicaCheck(&b, nil)
	if b.Len() != 0 {
		t.Fatalf("no replica check: %q", b.String())
	}
	now := time.Now()
	showReplicaCheck(&b, &client.ReplicaCheck{Every: "10m0s", LastRound: &now, Copies: 6, Agreeing: 4, Compared: 4, NotCompared: 1,
		NotComparedWhy: []string{"acme on n3: unreachable: connection refused"},
		Diverged:       []client.ReplicaAlarm{{Tenant: "acme", Node: "n2", Result: "DAMAGED", From: 0, Upto: 20, Detail: "event frame fails its checksum\non read", Since: now}}})
	out := b.String()
	for _, want := range []string{"replica check: every 10m0s, last round", "4 of 6 copies agree with the leader's (4 compared that round, 1 not compared), 1 diverged", "not compared: acme on n3: unreachable", "DIVERGED: tenant acme on node n2: DAMAGED in events [0, 20) since", "fails its checksum"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "\n") != 3 {
		t.Fatalf("want 3 lines (a detail's newline folded):\n%s", out)
	}
	b.Reset()
	showReplicaCheck(&b, &client.ReplicaCheck{Every: "off"})
	if !strings.Contains(b.String(), "replica check: off") {
		t.Fatalf("off: %q", b.String())
	}
}

// TestOneLineEscapes: text from a server or a user reaches the terminal
// on one line and without control sequences (escapes, bells, bidi
// overrides are written as Go escapes).
func TestOneLineEscapes(t *testing.T) {
	if got, want := oneLine("a\x1b]0;owned\a\x1b[2J\u202eb\nc"), `a\x1b]0;owned\a\x1b[2J\u202eb\nc`; got != want {
		t.Fatalf("oneLine = %q, want %q", got, want)
	}
}

// TestClusterCheckAgainstOlderVersion: a leader of a version without the
// control plane's digest (a rolling upgrade) has its control plane row
// say so, and the check of the tenants decides the exit (0 when they
// agree), not a "missing tenant".
func TestClusterCheckAgainstOlderVersion(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/cluster":
			fmt.Fprintf(w, `{"id":"n1","state":"leader","url":%q,"members":[{"id":"n1","leader":true,"url":%q}]}`, srv.URL, srv.URL)
		case "/v1/admin/tenants":
			fmt.Fprint(w, `{"tenants":[{"id":"acme"}]}`)
		case "/v1/admin/tenants/acme/digest":
			fmt.Fprint(w, `{"tenant":"acme","from":0,"upto":3,"events":3,"digest":"abcd"}`)
		default: // what an older server answers for /v1/cluster/digest
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(404)
			fmt.Fprint(w, `{"status":404,"detail":"no such route","code":"NOT_FOUND"}`)
		}
	}))
	defer srv.Close()
	r := batpak(t, "--server", srv.URL, "--token", "op", "cluster", "check")
	if r.code != 0 || !strings.Contains(r.stdout, "this version of the leader has no digest of the control plane") {
		t.Fatalf("every tenant agrees, yet exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestShowReplicaCheckControlPlane: an alarm for the control plane's
// store is named so, not as a tenant.
func TestShowReplicaCheckControlPlane(t *testing.T) {
	var b strings.Builder
	now := time.Now()
	showReplicaCheck(&b, &client.ReplicaCheck{Every: "10m0s", LastRound: &now, Copies: 2, Agreeing: 1,
		Diverged: []client.ReplicaAlarm{{Tenant: client.ControlPlane, Node: "n3", Result: "DIFFERENT", Upto: 9, Since: now}}})
	if !strings.Contains(b.String(), "DIVERGED: the control plane on node n3: DIFFERENT in events [0, 9)") {
		t.Fatalf("output:\n%s", b.String())
	}
}
