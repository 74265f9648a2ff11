package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
)

// A delete whose answer was lost (the connection dropped after the server
// did it) and whose retry finds nothing to delete succeeded: the caller
// is told so, not ErrNotFound. A delete of something that never was is
// still ErrNotFound.
func TestDeleteRetriedAfterALostAnswer(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			conn, _, err := w.(http.Hijacker).Hijack() // done, then the answer is lost
			if err == nil {
				conn.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"code":"NOT_FOUND","status":404,"title":"Not Found"}`)
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "bpk_x")
	if err := c.Tenant("acme").DeleteCursor(context.Background(), "orders"); err != nil {
		t.Fatalf("a delete whose retry found it done: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	if err := c.Tenant("acme").DeleteCursor(context.Background(), "never"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("a delete of nothing: %v, want ErrNotFound", err)
	}
}

// A server asking for a wait longer than a retry takes (a daily quota's
// hours) is answered at once, with its RetryAfter, and asked once.
func TestLongRetryAfterNotWaitedOut(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "3600")
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"code":"QUOTA_EXCEEDED","status":429,"title":"Too Many Requests"}`)
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "bpk_x")
	start := time.Now()
	_, err := c.Tenant("acme").Stats(context.Background())
	var e *client.Error
	if !errors.As(err, &e) || e.RetryAfter != time.Hour || calls.Load() != 1 || time.Since(start) > 2*time.Second {
		t.Fatalf("%v after %v and %d requests, want QUOTA_EXCEEDED with RetryAfter 1h at once", err, time.Since(start), calls.Load())
	}
}

// An event without a payload is refused before anything is sent (a nil
// json.RawMessage would be stored as null), and an idempotency key a
// header cannot carry goes in the body only, for the server to judge,
// instead of failing in net/http and being retried.
func TestAppendChecksBeforeSending(t *testing.T) {
	var calls atomic.Int64
	var gotKey, gotHeader atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var body struct {
			Key string `json:"idempotency_key"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		gotKey.Store(body.Key)
		gotHeader.Store(r.Header.Get("Idempotency-Key"))
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":"x","global_sequence":0}`)
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "bpk_x")
	tc := c.Tenant("acme")
	if _, err := tc.Append(context.Background(), client.AppendRequest{Entity: "e", Kind: "1:1"}); err == nil || !strings.Contains(err.Error(), "Payload") {
		t.Fatalf("an append without a payload: %v", err)
	}
	if _, err := tc.AppendBatch(context.Background(), []client.AppendRequest{{Entity: "e", Kind: "1:1", Payload: json.RawMessage(`1`)}, {Entity: "e", Kind: "1:1"}}); err == nil || !strings.Contains(err.Error(), "events[1].Payload") {
		t.Fatalf("a batch with an event without a payload: %v", err)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d requests sent for events without payloads", n)
	}
	if _, err := tc.Append(context.Background(), client.AppendRequest{Entity: "e", Kind: "1:1", Payload: json.RawMessage(`1`), IdempotencyKey: "a\nb"}); err != nil {
		t.Fatalf("an append with a key a header cannot carry: %v", err)
	}
	if calls.Load() != 1 || gotKey.Load() != "a\nb" || gotHeader.Load() != "" {
		t.Fatalf("%d requests, body key %q, header %q", calls.Load(), gotKey.Load(), gotHeader.Load())
	}
}
