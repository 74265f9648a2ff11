package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
)

// cutAnswer answers a write 201 and breaks the connection after part of
// its body.
func cutAnswer(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, body[:len(body)/2])
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

// keyOf is the idempotency key a write's body carries.
func keyOf(t *testing.T, r *http.Request) string {
	var b struct {
		IdempotencyKey string `json:"idempotency_key"`
	}
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		t.Errorf("write's body: %v", err)
	}
	return b.IdempotencyKey
}

// TestAnswerCutShortIsSentAgain: a 201 whose receipt breaks off is a lost
// answer: the write goes again with the same key and its receipt is the
// next answer's.
func TestAnswerCutShortIsSentAgain(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, keyOf(t, r))
		n := len(keys)
		mu.Unlock()
		receipt := `{"id":"0190a0a0-0000-7000-8000-000000000001","global_sequence":7,"clock":0}`
		if n == 1 {
			cutAnswer(w, receipt)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, receipt)
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "tok")
	r, err := c.Tenant("acme").Append(context.Background(), client.AppendRequest{Entity: "order:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)})
	if err != nil || r.GlobalSequence != 7 {
		t.Fatalf("Append: %+v, %v; want the second answer's receipt", r, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] {
		t.Fatalf("keys sent: %q; want the same key twice", keys)
	}
}

// TestLostWriteNamesItsKey: a write whose answer is lost on every
// attempt fails with an *OutcomeUnknownError naming the key it was sent
// with (one the client made, when the caller gave none), matching
// ErrOutcomeUnknown; sent again with that key by the caller it is the
// same write.
func TestLostWriteNamesItsKey(t *testing.T) {
	var sent []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent = append(sent, keyOf(t, r))
		mu.Unlock()
		panic(http.ErrAbortHandler)
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "tok", client.Options{RetryFor: 300 * time.Millisecond})
	_, err := c.Tenant("acme").Append(context.Background(), client.AppendRequest{Entity: "order:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)})
	mu.Lock()
	sent = append([]string(nil), sent...)
	mu.Unlock()
	var ou *client.OutcomeUnknownError
	if !errors.As(err, &ou) || !errors.Is(err, client.ErrOutcomeUnknown) {
		t.Fatalf("Append with every answer lost: %v; want an *OutcomeUnknownError", err)
	}
	if len(ou.IdempotencyKeys) != 1 || ou.IdempotencyKeys[0] != sent[0] || !strings.Contains(err.Error(), sent[0]) {
		t.Fatalf("error names keys %q (%v); the write was sent with %q", ou.IdempotencyKeys, err, sent[0])
	}
	for _, k := range sent {
		if k != sent[0] {
			t.Fatalf("retries sent keys %q; want one key", sent)
		}
	}

	// A batch's error names every item's key.
	_, err = c.Tenant("acme").AppendBatch(context.Background(), []client.AppendRequest{
		{Entity: "order:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`), IdempotencyKey: "mine"},
		{Entity: "order:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)},
	})
	if !errors.As(err, &ou) || len(ou.IdempotencyKeys) != 2 || ou.IdempotencyKeys[0] != "mine" || !strings.HasSuffix(ou.IdempotencyKeys[1], "/1") {
		t.Fatalf("AppendBatch with every answer lost: %v (keys %q); want both items' keys", err, ou.IdempotencyKeys)
	}
}

// TestWriteWaitsOutAnElection: answers lost, then NOT_LEADER with no
// leader for longer than MaxRetries' quick retries take, then a
// receipt: the write rides it out within RetryFor, one key throughout.
func TestWriteWaitsOutAnElection(t *testing.T) {
	start := time.Now()
	var keys sync.Map
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys.Store(keyOf(t, r), true)
		n.Add(1)
		switch since := time.Since(start); {
		case since < 300*time.Millisecond:
			panic(http.ErrAbortHandler) // the old leader, dying
		case since < 1200*time.Millisecond:
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"code":"NOT_LEADER","detail":"no leader yet"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":"0190a0a0-0000-7000-8000-000000000002","global_sequence":3}`)
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "tok")
	r, err := c.Tenant("acme").Append(context.Background(), client.AppendRequest{Entity: "order:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)})
	if err != nil || r.GlobalSequence != 3 {
		t.Fatalf("Append across 1.2 s without a leader: %+v, %v (%d attempts)", r, err, n.Load())
	}
	k := 0
	keys.Range(func(any, any) bool { k++; return true })
	if k != 1 {
		t.Fatalf("%d keys sent over %d attempts; want one", k, n.Load())
	}
}

// TestSuccessWithoutReceiptIsNoAcknowledgement: a 2xx whose receipt has
// no event id, or a batch answered with fewer receipts than events, is
// an *OutcomeUnknownError naming the keys, not a write acknowledged.
func TestSuccessWithoutReceiptIsNoAcknowledgement(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"empty object", `{}`}, {"null", `null`},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			if strings.HasSuffix(r.URL.Path, "/batches") {
				_, _ = io.WriteString(w, `{"receipts":[{"id":"0190a0a0-0000-7000-8000-000000000003"}]}`)
				return
			}
			_, _ = io.WriteString(w, tc.body)
		}))
		c, _ := client.New(srv.URL, "tok")
		_, err := c.Tenant("acme").Append(context.Background(), client.AppendRequest{Entity: "order:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`), IdempotencyKey: "k1"})
		var ou *client.OutcomeUnknownError
		if !errors.As(err, &ou) || len(ou.IdempotencyKeys) != 1 || ou.IdempotencyKeys[0] != "k1" {
			t.Errorf("%s: Append answered 201 %s: %v; want an *OutcomeUnknownError naming k1", tc.name, tc.body, err)
		}
		rs, err := c.Tenant("acme").AppendBatch(context.Background(), []client.AppendRequest{
			{Entity: "order:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)},
			{Entity: "order:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)},
		})
		if !errors.As(err, &ou) || len(ou.IdempotencyKeys) != 2 || rs != nil {
			t.Errorf("%s: AppendBatch of 2 answered 1 receipt: %d receipts, %v; want an *OutcomeUnknownError naming both keys", tc.name, len(rs), err)
		}
		srv.Close()
	}
}

// TestNotModifiedOnlyAnswersAConditionalRead: a 304 to a request that
// asked for no condition is a refusal: nothing was revoked or deleted.
func TestNotModifiedOnlyAnswersAConditionalRead(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotModified)
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "tok")
	if err := c.Admin().RevokeKey(context.Background(), "acme", "k-1"); err == nil {
		t.Error("RevokeKey answered 304: no error")
	}
	if err := c.Admin().DeleteTenant(context.Background(), "acme"); err == nil {
		t.Error("DeleteTenant answered 304: no error")
	}
}

// TestGivingUpOnASentWriteIsAnUnknownOutcome: a write whose caller's
// deadline passes while the server holds its answer, or that a gateway
// answered 504, may be written: it fails with an *OutcomeUnknownError
// naming its key (still matching the deadline); a read-only POST (a
// verify) whose answer is lost is not called a write.
func TestGivingUpOnASentWriteIsAnUnknownOutcome(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	c, _ := client.New(slow.URL, "tok")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Tenant("acme").Append(ctx, client.AppendRequest{Entity: "order:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)})
	var ou *client.OutcomeUnknownError
	if !errors.As(err, &ou) || len(ou.IdempotencyKeys) != 1 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append whose deadline passed while the server held it: %v; want an *OutcomeUnknownError naming its key, matching the deadline", err)
	}

	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusGatewayTimeout)
	}))
	defer gateway.Close()
	c, _ = client.New(gateway.URL, "tok", client.Options{RetryFor: -1})
	_, err = c.Tenant("acme").Append(context.Background(), client.AppendRequest{Entity: "order:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`), IdempotencyKey: "k9"})
	if !errors.As(err, &ou) || len(ou.IdempotencyKeys) != 1 || ou.IdempotencyKeys[0] != "k9" {
		t.Fatalf("Append answered 504 by a gateway: %v; want an *OutcomeUnknownError naming k9", err)
	}

	reset := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	defer reset.Close()
	c, _ = client.New(reset.URL, "tok", client.Options{RetryFor: -1})
	if _, err := c.Tenant("acme").Verify(context.Background()); err == nil || errors.As(err, &ou) {
		t.Fatalf("Verify with its answers lost: %v; want an error that does not call it a write", err)
	}
}

// TestUnkeyedWriteNotSentAgainAfterALostAnswer: a write that may not go
// twice (a tenant's creation carries no key) is sent again after a
// NOT_LEADER (which did nothing) and after refusals before any work
// (BUSY, TOO_MANY_REQUESTS), but not after an answer that may mean it
// was done — a cut connection, OUTCOME_UNKNOWN, a gateway's 504: that is
// an *OutcomeUnknownError, the request sent twice in all.
func TestUnkeyedWriteNotSentAgainAfterALostAnswer(t *testing.T) {
	for name, second := range map[string]func(w http.ResponseWriter){
		"connection cut": func(http.ResponseWriter) { panic(http.ErrAbortHandler) },
		"OUTCOME_UNKNOWN": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"status":503,"code":"OUTCOME_UNKNOWN"}`)
		},
		"gateway 504": func(w http.ResponseWriter) { w.WriteHeader(http.StatusGatewayTimeout) },
		// Refused before any work: sent again, and the third answer's
		// success is the call's.
		"BUSY": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"status":503,"code":"BUSY"}`)
		},
		"TOO_MANY_REQUESTS": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"status":429,"code":"TOO_MANY_REQUESTS"}`)
		},
	} {
		nothingDone := name == "BUSY" || name == "TOO_MANY_REQUESTS"
		t.Run(name, func(t *testing.T) {
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				switch n.Add(1) {
				case 1:
					w.Header().Set("Content-Type", "application/problem+json")
					w.WriteHeader(http.StatusServiceUnavailable)
					_, _ = io.WriteString(w, `{"status":503,"code":"NOT_LEADER","detail":"no leader yet"}`)
				case 2:
					second(w)
				default:
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusCreated)
					_, _ = io.WriteString(w, `{"id":"t2","state":"active"}`)
				}
			}))
			defer srv.Close()
			c, _ := client.New(srv.URL, "bpko_x")
			_, err := c.Admin().CreateTenant(context.Background(), "t2", nil, nil)
			if nothingDone {
				if n.Load() != 3 || err != nil {
					t.Fatalf("CreateTenant sent %d times, %v; want three times and the success", n.Load(), err)
				}
				return
			}
			if n.Load() != 2 || !errors.Is(err, client.ErrOutcomeUnknown) {
				t.Fatalf("CreateTenant sent %d times, %v; want twice and an unknown outcome", n.Load(), err)
			}
		})
	}
}

// A keyed write that net/http sent again on a new connection, after the
// first connection broke with the request written and no answer, may
// have arrived the first time: a refusal of the later sends (BUSY: did
// nothing) does not make it a write that did nothing. It fails with an
// *OutcomeUnknownError naming its key, as any lost answer does.
func TestWriteResentByTheTransportIsAnUnknownOutcome(t *testing.T) {
	var n atomic.Int32
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		if n.Add(1) == 2 {
			// Read, perhaps written, and the connection dropped.
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
			return
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"code":"BUSY","detail":"busy","status":503}`)
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, "bpk_x", client.Options{MaxRetries: 3})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Tenant("acme").Append(context.Background(), client.AppendRequest{Entity: "a:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)})
	var oe *client.OutcomeUnknownError
	if !errors.As(err, &oe) {
		t.Fatalf("after a send that broke off: %v (%T), want an *OutcomeUnknownError", err, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) < 3 || !strings.Contains(err.Error(), keys[0]) {
		t.Errorf("error %q, sends %q: want several sends of one key, named", err, keys)
	}
	for _, k := range keys {
		if k != keys[0] {
			t.Errorf("keys %q: want one key for every send", keys)
			break
		}
	}
}
