package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testenv"
)

// A server's redirect is not followed with the token: only a cluster
// follower's NOT_LEADER redirect is (sdk/client follows that one itself),
// so a 302 or a bare 307 to another port of the same host — where Go's
// client would keep the Authorization header — gets nothing.
func TestCLIFollowsNoRedirectWithTheToken(t *testing.T) {
	isolate(t)
	var mu sync.Mutex
	var seen []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"events":0}`))
	}))
	defer other.Close()
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", other.URL+r.URL.Path)
			w.WriteHeader(status)
		}))
		r := batpak(t, "--server", front.URL, "--token", "bpk_SECRET", "--tenant", "acme", "stats")
		w := batpak(t, "--server", front.URL, "--token", "bpk_SECRET", "--tenant", "acme", "append", "--entity", "order:1", "--scope", "s", "--kind", "1:1", "--data", `{"a":1}`)
		front.Close()
		if r.code == 0 || w.code == 0 {
			t.Errorf("%d redirect: stats exit %d (%q), append exit %d (%q); want failures", status, r.code, r.stdout, w.code, w.stdout)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) > 0 {
		t.Fatalf("the redirect target got requests: %q", seen)
	}
}

// A server that takes the request and then sends nothing — no headers, or
// headers and then silence — or trickles an answer a byte at a time fails
// the command after --timeout instead of holding it for ever.
func TestCLITimesOutOnASilentServer(t *testing.T) {
	isolate(t)
	raw, stalled, trickle := testenv.SilentServers(t, 200*time.Millisecond, nil)
	for _, c := range []struct{ url, says string }{
		{raw, "sent nothing for 1s"},
		{stalled, "1s"}, // nothing sent, or not arrived whole: both at 1s
		{trickle, "came slower than 1 MiB in 1s"},
	} {
		start := time.Now()
		r := batpak(t, "--server", c.url, "--token", "bpk_x", "--tenant", "acme", "--timeout", "1s", "stats")
		if took := time.Since(start); r.code == 0 || !strings.Contains(r.stderr, c.says) || !strings.Contains(r.stderr, "(--timeout, BATPAK_TIMEOUT)") || took > 20*time.Second {
			t.Errorf("%s: exit %d after %s, stderr %q", c.url, r.code, took.Round(time.Millisecond), r.stderr)
		}
	}
	if r := batpak(t, "--server", stalled, "--token", "bpk_x", "--timeout", "soon", "stats"); r.code != 2 || !strings.Contains(r.stderr, "--timeout") {
		t.Errorf("--timeout soon: exit %d, stderr %q", r.code, r.stderr)
	}
}

// An event stream's message is bounded whatever line ends the server
// uses: lines ended by a bare carriage return are lines (as sdk/client
// reads them), and a message made of them still ends only at a blank
// line (TestServerEventStreamBounded runs the bound through the CLI).
func TestCLIEventStreamBoundCountsCarriageReturns(t *testing.T) {
	const max = 1 << 16
	line := "data: " + strings.Repeat(" ", 4000)
	var stream strings.Builder
	stream.WriteString("id: 1\nevent: event\n")
	for stream.Len() < 4*max {
		stream.WriteString(line + "\r")
	}
	s := &sseBoundBody{rc: io.NopCloser(strings.NewReader(stream.String())), max: max, what: "GET /subscribe"}
	if _, err := io.ReadAll(s); err == nil || !strings.Contains(err.Error(), "larger than 65536 bytes") {
		t.Errorf("one message of lines ended by carriage returns: %v", err)
	}
	// CR LF, CR CR and LF CR end a message as LF LF does.
	for _, blank := range []string{"\r\n\r\n", "\r\r", "\n\r", "\r\n\n"} {
		var ok strings.Builder
		for ok.Len() < 4*max {
			ok.WriteString("data: " + strings.Repeat("y", 100) + blank)
		}
		s := &sseBoundBody{rc: io.NopCloser(strings.NewReader(ok.String())), max: max, what: "GET /subscribe"}
		if _, err := io.ReadAll(s); err != nil {
			t.Errorf("small messages ended by %q: %v", blank, err)
		}
	}

}

// Paging ends when the server stops moving: empty decision pages that
// hand out a cursor, or query pages that repeat the last position, are
// not asked for again and again.
func TestCLIPagingStopsWhenTheServerDoesNotMoveOn(t *testing.T) {
	isolate(t)
	var decisions, pages atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/policy/decisions"):
			decisions.Add(1)
			_, _ = w.Write([]byte(`{"decisions":[],"next":"more"}`))
		case strings.HasSuffix(r.URL.Path, "/events"):
			pages.Add(1)
			_, _ = fmt.Fprint(w, `{"events":[{"id":"0192b7a4-1c2d-7e3f-8a4b-5c6d7e8f9a0b","correlation_id":"0192b7a4-1c2d-7e3f-8a4b-5c6d7e8f9a0b","global_sequence":0,"entity":"e:1","scope":"s","kind":"1:1","clock":1,"payload":{}}],"next_after":0}`)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	done := make(chan result, 1)
	go func() {
		done <- batpak(t, "--server", srv.URL, "--token", "bpk_x", "--tenant", "acme", "policy", "decisions", "--limit", "1000000")
	}()
	select {
	case r := <-done:
		if n := decisions.Load(); n > 2 {
			t.Errorf("policy decisions asked %d times for empty pages (exit %d)", n, r.code)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("policy decisions still running after %d empty pages", decisions.Load())
	}
	r := batpak(t, "--server", srv.URL, "--token", "bpk_x", "--tenant", "acme", "query")
	if n := pages.Load(); r.code == 0 || n > 3 || !strings.Contains(r.stderr, "next page") {
		t.Errorf("query of a repeating page: exit %d after %d pages, stderr %q", r.code, n, r.stderr)
	}
}

// A change taking access away that the cluster's leader answers with
// members that had not confirmed it is reported made, with a warning on
// stderr naming them; without the header, no warning.
func TestCLIWarnsOfUnconfirmedMembers(t *testing.T) {
	isolate(t)
	var unconfirmed atomic.Value
	unconfirmed.Store("n2, n3")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := unconfirmed.Load().(string); v != "" {
			w.Header().Set("Batpak-Unconfirmed-Members", v)
		}
		switch {
		case r.Method == "DELETE":
			w.WriteHeader(http.StatusNoContent)
		case r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/suspend"):
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"id":"acme","state":"suspended"}`))
		default:
			http.Error(w, "unexpected", http.StatusTeapot)
		}
	}))
	defer srv.Close()
	base := []string{"--server", srv.URL, "--token", "op"}
	for _, c := range []struct {
		args []string
		what string
	}{
		{[]string{"--tenant", "acme", "key", "revoke", "k1"}, "the revocation of key k1 is made"},
		{[]string{"tenant", "suspend", "acme"}, "the suspension of tenant acme is made"},
		{[]string{"tenant", "delete", "acme", "--yes"}, "the deletion of tenant acme is made"},
	} {
		unconfirmed.Store("n2, n3")
		r := batpak(t, append(base, c.args...)...)
		if r.code != 0 || !strings.Contains(r.stderr, c.what) || !strings.Contains(r.stderr, "members n2, n3 had not confirmed") {
			t.Errorf("%q: exit %d, stderr %q, stdout %q", c.args, r.code, r.stderr, r.stdout)
		}
		unconfirmed.Store("")
		if r := batpak(t, append(base, c.args...)...); r.code != 0 || r.stderr != "" {
			t.Errorf("%q, all confirmed: exit %d, stderr %q", c.args, r.code, r.stderr)
		}
	}
}
