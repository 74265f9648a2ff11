package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
)

// sequenceServer answers appends and batches with receipts numbered per
// tenant (0, 1, …) and every read with an event whose global_sequence is
// the min_seq the read carried (-1 as 2^64-1 when none), recording each
// request's query.
type sequenceServer struct {
	*httptest.Server
	mu   sync.Mutex
	next map[string]uint64
	last map[string]string // method+path -> raw query
}

func newSequenceServer(t *testing.T) *sequenceServer {
	s := &sequenceServer{next: map[string]uint64{}, last: map[string]string{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.last[r.Method+" "+r.URL.Path] = r.URL.RawQuery
		tenant := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/tenants/"), "/")[0]
		receipt := func() map[string]any {
			seq := s.next[tenant]
			s.next[tenant]++
			return map[string]any{"id": "01a23d47-189e-72aa-8000-000000000000", "global_sequence": seq}
		}
		var out any
		switch {
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/events"):
			out = receipt()
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/batches"):
			var in struct{ Events []json.RawMessage }
			_ = json.NewDecoder(r.Body).Decode(&in)
			var rs []any
			for range in.Events {
				rs = append(rs, receipt())
			}
			out = map[string]any{"receipts": rs}
		default:
			seq := uint64(1<<64 - 1)
			if v := r.URL.Query().Get("min_seq"); v != "" {
				seq, _ = strconv.ParseUint(v, 10, 64)
			}
			out = map[string]any{"id": "01a23d47-189e-72aa-8000-000000000000", "global_sequence": seq, "events": []any{}}
		}
		s.mu.Unlock()
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
		}
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *sequenceServer) query(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[key]
}

var anEvent = client.AppendRequest{Entity: "o:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)}

// Consistency "session" (read-your-writes): a tenant's reads carry
// min_seq, the highest global_sequence of the receipts this Client got
// for that tenant (appends and batches); reads of another tenant, of
// admin routes, and reads before any write carry none; no consistency
// parameter is sent.
func TestSessionConsistency(t *testing.T) {
	srv := newSequenceServer(t)
	c, err := client.New(srv.URL, "", client.Options{Consistency: "session"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	acme, beta := c.Tenant("acme"), c.Tenant("beta")
	if _, err := acme.Get(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if q := srv.query("GET /v1/tenants/acme/events/x"); q != "" {
		t.Fatalf("a read before any write carried %q", q)
	}
	for range 3 {
		if _, err := acme.Append(ctx, anEvent); err != nil {
			t.Fatal(err)
		}
	}
	if ev, err := acme.Get(ctx, "x"); err != nil || ev.GlobalSequence != 2 {
		t.Fatalf("a read after appends 0..2: min_seq %d (%v), want 2", ev.GlobalSequence, err)
	}
	rs, err := acme.AppendBatch(ctx, []client.AppendRequest{anEvent, anEvent, anEvent})
	if err != nil || len(rs) != 3 || rs[2].GlobalSequence != 5 {
		t.Fatalf("batch: %v %v", rs, err)
	}
	for _, err := range acme.Query(ctx, client.Query{Entity: "o:"}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if q := srv.query("GET /v1/tenants/acme/events"); q != "entity=o%3A&min_seq=5" {
		t.Fatalf("a query after a batch 3..5 carried %q, want entity=o%%3A&min_seq=5", q)
	}
	if _, err := beta.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	if q := srv.query("GET /v1/tenants/beta/stats"); q != "" {
		t.Fatalf("a read of another tenant carried %q", q)
	}
	if _, err := c.Admin().Tenants(ctx); err != nil {
		t.Fatal(err)
	}
	if q := srv.query("GET /v1/admin/tenants"); q != "" {
		t.Fatalf("an admin read carried %q", q)
	}
	if q := srv.query("POST /v1/tenants/acme/events"); q != "" {
		t.Fatalf("a write carried %q", q)
	}
	// An explicit minimum below the session's does not lower it; above,
	// it wins; the session goes on recording through the copy.
	if ev, _ := acme.WithMinSequence(1).Get(ctx, "x"); ev.GlobalSequence != 5 {
		t.Fatalf("WithMinSequence(1) beside the session's 5: min_seq %d", ev.GlobalSequence)
	}
	if ev, _ := acme.WithMinSequence(9).Get(ctx, "x"); ev.GlobalSequence != 9 {
		t.Fatalf("WithMinSequence(9) beside the session's 5: min_seq %d", ev.GlobalSequence)
	}
	if _, err := c.WithMinSequence(0).Tenant("acme").Append(ctx, anEvent); err != nil {
		t.Fatal(err)
	}
	if ev, _ := acme.Get(ctx, "x"); ev.GlobalSequence != 6 {
		t.Fatalf("after an append through a copy: min_seq %d, want 6", ev.GlobalSequence)
	}
}

// WithMinSequence on a Client of any consistency: its tenant reads carry
// min_seq (0 included), the original Client's do not, and linearizable
// reads carry both parameters.
func TestWithMinSequence(t *testing.T) {
	srv := newSequenceServer(t)
	ctx := context.Background()
	c, err := client.New(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	if ev, _ := c.WithMinSequence(0).Tenant("acme").Get(ctx, "x"); ev.GlobalSequence != 0 {
		t.Fatalf("WithMinSequence(0): min_seq %d", ev.GlobalSequence)
	}
	if ev, _ := c.Tenant("acme").Get(ctx, "x"); ev.GlobalSequence != 1<<64-1 {
		t.Fatalf("the original Client sent min_seq %d", ev.GlobalSequence)
	}
	if _, err := c.Tenant("acme").Append(ctx, anEvent); err != nil {
		t.Fatal(err)
	}
	if ev, _ := c.Tenant("acme").Get(ctx, "x"); ev.GlobalSequence != 1<<64-1 {
		t.Fatalf("a local Client remembered its write: min_seq %d", ev.GlobalSequence)
	}
	lin, err := client.New(srv.URL, "", client.Options{Consistency: "linearizable"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lin.Tenant("acme").WithMinSequence(7).Stats(ctx); err != nil {
		t.Fatal(err)
	}
	if q := srv.query("GET /v1/tenants/acme/stats"); q != "consistency=linearizable&min_seq=7" {
		t.Fatalf("a linearizable read with a minimum carried %q", q)
	}
}

// A session Client used from many goroutines at once: every read that
// follows a goroutine's append carries at least that append's sequence,
// and the session ends at the highest. Run with -race.
func TestSessionConcurrent(t *testing.T) {
	srv := newSequenceServer(t)
	c, err := client.New(srv.URL, "", client.Options{Consistency: "session"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const workers, each = 8, 25
	var wg sync.WaitGroup
	var bad atomic.Int32
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tn := c.Tenant("acme")
			for range each {
				r, err := tn.Append(ctx, anEvent)
				if err != nil {
					t.Error(err)
					return
				}
				ev, err := tn.Get(ctx, "x")
				if err != nil || ev.GlobalSequence < r.GlobalSequence {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d reads did not carry their own write's sequence", n)
	}
	if ev, _ := c.Tenant("acme").Get(ctx, "x"); ev.GlobalSequence != workers*each-1 {
		t.Fatalf("after %d appends: min_seq %d", workers*each, ev.GlobalSequence)
	}
}

// A connection refused for its address (429 TOO_MANY_CONNECTIONS, sent
// before the server read the request) is retried after Retry-After even
// for a request that is not otherwise safe to send again, since nothing
// was done.
func TestTooManyConnectionsRetried(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"code":"TOO_MANY_CONNECTIONS","status":429,"title":"Too many connections from this address"}`))
			return
		}
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"id":"k1","key":"bpk_new"}`))
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.Tenant("acme").IssueKey(context.Background(), "app", "writer")
	if err != nil || calls.Load() != 2 {
		t.Fatalf("IssueKey after one refused connection: %+v, %v (%d requests)", k, err, calls.Load())
	}
}

// A Retry-After too large for a time.Duration is read as the longest
// one, never wrapped around to a short or negative wait; the retry
// itself still waits at most 5 s.
func TestRetryAfterOverflow(t *testing.T) {
	for _, ra := range []string{"18446744074", "9223372037", "18446744073709551615"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", ra)
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"code":"QUOTA_EXCEEDED","status":429,"title":"Quota exceeded"}`))
		}))
		c, err := client.New(srv.URL, "", client.Options{MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Tenant("acme").Get(context.Background(), "x")
		srv.Close()
		var e *client.Error
		if !errors.As(err, &e) || e.RetryAfter < 100*365*24*time.Hour {
			t.Fatalf("Retry-After %s: %v (RetryAfter %v)", ra, err, e.RetryAfter)
		}
	}
}

// Consistency "session" remembers each named cursor's definition and
// position: its id and 0 once it defined the cursor, what it committed,
// or a poll's committed position when that is further — or, when a poll
// names another definition, that definition's; it sends them as
// min_position and cursor_id with the cursor's polls, forgets them with
// the cursor, and a commit may move the position back (after a reset). A
// Client without a session sends neither.
func TestSessionSendsItsCursorPositions(t *testing.T) {
	var mu sync.Mutex
	var polls []string
	committed, id := "0", "A"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodGet:
			q := r.URL.Query()
			polls = append(polls, q.Get("min_position")+"/"+q.Get("cursor_id"))
			_, _ = w.Write([]byte(`{"events":[],"committed":` + committed + `,"cursor_id":"` + id + `"}`))
		case r.Method == http.MethodPut:
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"name":"c","id":"` + id + `"}`))
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		default:
			_, _ = w.Write([]byte(`{}`))
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	for _, consistency := range []string{"session", ""} {
		mu.Lock()
		polls = nil
		mu.Unlock()
		c, err := client.New(srv.URL, "k", client.Options{Consistency: consistency})
		if err != nil {
			t.Fatal(err)
		}
		acme := c.Tenant("acme")
		step := func(f func() error, answer, answerID string) {
			t.Helper()
			mu.Lock()
			committed, id = answer, answerID
			mu.Unlock()
			if err := f(); err != nil {
				t.Fatal(err)
			}
		}
		poll := func() error { _, err := acme.PollCursor(ctx, "c", 5); return err }
		commit := func(p uint64) func() error { return func() error { return acme.CommitCursor(ctx, "c", p) } }
		step(poll, "0", "A") // unknown: none
		step(func() error { return acme.DefineCursor(ctx, "c", client.CursorRegion{}) }, "0", "A")
		step(poll, "0", "A") // 0/A
		step(commit(40), "0", "A")
		step(poll, "30", "A") // 40/A (a lagging answer does not lower it)
		step(poll, "55", "A") // 40/A, then 55 from the answer
		step(poll, "3", "B")  // 55/A; the answer names another definition: 3/B
		step(poll, "3", "B")  // 3/B
		step(commit(1), "0", "B")
		step(poll, "1", "B") // 1/B: a commit may move it back
		step(func() error { return acme.DeleteCursor(ctx, "c") }, "0", "B")
		step(poll, "0", "B") // none
		mu.Lock()
		got := strings.Join(polls, ",")
		mu.Unlock()
		want := "/,0/A,40/A,40/A,55/A,3/B,1/B,/"
		if consistency == "" {
			want = "/,/,/,/,/,/,/,/"
		}
		if got != want {
			t.Fatalf("consistency %q: polls sent %q, want %q", consistency, got, want)
		}
	}
}
