package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// A write that meets BUSY is sent again with the same idempotency key, so
// the server can answer the retry with the original receipt.
func TestRetryKeepsIdempotencyKey(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req client.AppendRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Errorf("decode: %v", err)
		}
		mu.Lock()
		keys = append(keys, req.IdempotencyKey)
		n := len(keys)
		mu.Unlock()
		if n < 3 {
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(503)
			fmt.Fprint(w, `{"code":"BUSY","title":"busy","status":503}`)
			return
		}
		w.WriteHeader(201)
		fmt.Fprint(w, `{"id":"x","global_sequence":7,"clock":0}`)
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "bpk_test")
	r, err := c.Tenant("acme").Append(context.Background(), client.AppendRequest{Entity: "e", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if r.GlobalSequence != 7 {
		t.Fatalf("receipt %+v", r)
	}
	if len(keys) != 3 || keys[0] == "" || keys[0] != keys[1] || keys[1] != keys[2] {
		t.Fatalf("idempotency keys over the attempts: %q", keys)
	}
}

// A 4xx other than a retryable quota is answered once, as a typed error
// carrying the problem's members.
func TestConflictNotRetried(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("X-Request-Id", "req-1")
		w.WriteHeader(409)
		fmt.Fprint(w, `{"type":"https://batpak.dev/problems/conflict","code":"CONFLICT","title":"conflict","status":409,"detail":"expected clock 3, entity is at 5","expected":3,"actual":5}`)
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "k")
	_, err := c.Tenant("acme").Append(context.Background(), client.AppendRequest{Entity: "e", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`1`), ExpectedClock: client.ExpectClock(3)})
	if !errors.Is(err, client.ErrConflict) || errors.Is(err, client.ErrBusy) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	var e *client.Error
	errors.As(err, &e)
	if calls != 1 || e.RequestID != "req-1" || string(e.Extensions["actual"]) != "5" {
		t.Fatalf("calls %d, error %+v", calls, e)
	}
}

// Query follows next_after from page to page.
func TestQueryPages(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		after := -1
		if a := r.URL.Query().Get("after"); a != "" {
			after, _ = strconv.Atoi(a)
		}
		var evs []map[string]any
		for s := after + 1; s < 10 && s <= after+3; s++ {
			evs = append(evs, map[string]any{"global_sequence": s})
		}
		page := map[string]any{"events": evs, "next_after": nil}
		if len(evs) > 0 {
			page["next_after"] = evs[len(evs)-1]["global_sequence"]
		}
		json.NewEncoder(w).Encode(page)
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "")
	var got []uint64
	for ev, err := range c.Tenant("acme").Query(context.Background(), client.Query{Entity: "o:", Limit: 3}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.GlobalSequence)
	}
	if len(got) != 10 || got[9] != 9 {
		t.Fatalf("sequences %v", got)
	}
}

// A subscription whose connection drops, or that is cut off as a slow
// consumer, reconnects with Last-Event-ID and yields every event once,
// even when the server repeats some.
func TestSubscriptionResumes(t *testing.T) {
	var mu sync.Mutex
	var lastIDs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		conn := len(lastIDs)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		send := func(seq int) {
			fmt.Fprintf(w, "id: %d\nevent: event\ndata: {\"global_sequence\":%d}\n\n", seq, seq)
		}
		switch conn {
		case 1:
			for s := 0; s < 5; s++ {
				send(s)
			}
			fmt.Fprint(w, ": heartbeat\n\n") // and the connection drops
		case 2:
			send(3) // repeats: never yielded twice
			send(4)
			for s := 5; s < 8; s++ {
				send(s)
			}
			fmt.Fprint(w, "event: cutoff\ndata: {\"resume_after\":7}\n\n")
		default:
			for s := 8; s < 10; s++ {
				send(s)
			}
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub := c.Tenant("acme").Subscribe(ctx, client.Query{}, client.FromStart())
	var got []uint64
	for ev, err := range sub.Events() {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.GlobalSequence)
		if len(got) == 10 {
			sub.Close()
		}
	}
	for i, s := range got {
		if s != uint64(i) {
			t.Fatalf("sequences %v", got)
		}
	}
	if len(got) != 10 {
		t.Fatalf("sequences %v", got)
	}
	if lastIDs[0] != "" || lastIDs[1] != "4" || lastIDs[2] != "7" {
		t.Fatalf("Last-Event-ID per connection: %q", lastIDs)
	}
}

// A 307 is followed with the credential only when it is a cluster
// follower's NOT_LEADER redirect: any other redirect (a proxy's, a
// login page's) is answered as it is, and the credential stays with the
// server it was given to.
func TestRedirectFollowedOnlyToLeader(t *testing.T) {
	var got sync.Map // path → Authorization seen by the redirect target
	var notLeader atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.URL.Path, r.Header.Get("Authorization"))
		w.WriteHeader(200)
		fmt.Fprint(w, `{"events":0}`)
	}))
	defer target.Close()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", target.URL+r.URL.Path)
		if !notLeader.Load() {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusTemporaryRedirect)
			fmt.Fprint(w, `<a href="elsewhere">moved</a>`)
			return
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusTemporaryRedirect)
		fmt.Fprint(w, `{"code":"NOT_LEADER","title":"not leader","status":307}`)
	}))
	defer front.Close()
	c, _ := client.New(front.URL, "bpk_secret")
	_, err := c.Tenant("acme").Stats(context.Background())
	var e *client.Error
	if !errors.As(err, &e) || e.Status != http.StatusTemporaryRedirect {
		t.Fatalf("a redirect that is not a NOT_LEADER: %v, want a *client.Error with status 307", err)
	}
	if v, ok := got.Load("/v1/tenants/acme/stats"); ok {
		t.Fatalf("followed a foreign redirect, sending Authorization %q", v)
	}
	notLeader.Store(true)
	if _, err := c.Tenant("acme").Stats(context.Background()); err != nil {
		t.Fatalf("a follower's NOT_LEADER redirect: %v, want followed", err)
	}
	if v, _ := got.Load("/v1/tenants/acme/stats"); v != "Bearer bpk_secret" {
		t.Fatalf("the leader saw Authorization %q, want the credential", v)
	}
}

// Consistency "linearizable" asks a cluster to serve every read (GET)
// from its leader: each GET carries consistency=linearizable, alongside
// its own parameters, and no write does; an unknown value is refused
// by New.
func TestConsistencyOnReads(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // method+path -> query
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Method+" "+r.URL.Path] = r.URL.RawQuery
		mu.Unlock()
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(map[string]any{"id": "01a23d47-189e-72aa-8000-000000000000", "global_sequence": 0})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"events": []any{}, "next_after": nil})
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, "", client.Options{Consistency: "linearizable"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, err := range c.Tenant("acme").Query(ctx, client.Query{Entity: "o:1", Limit: 3}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Tenant("acme").Append(ctx, client.AppendRequest{Entity: "o:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	q := seen["GET /v1/tenants/acme/events"]
	if !strings.Contains(q, "consistency=linearizable") || !strings.Contains(q, "entity=o%3A1") {
		t.Errorf("query's parameters %q: want consistency=linearizable and its own entity", q)
	}
	if q := seen["POST /v1/tenants/acme/events"]; strings.Contains(q, "consistency") {
		t.Errorf("a write carried %q", q)
	}
	if _, err := client.New(srv.URL, "", client.Options{Consistency: "strong"}); err == nil || !strings.Contains(err.Error(), "local, linearizable or session") {
		t.Errorf("New with consistency strong: %v, want a refusal naming the values", err)
	}
}
