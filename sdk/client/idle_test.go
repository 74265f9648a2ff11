package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/sdk/client"
)

// A server that takes the request and then sends nothing — no headers,
// or headers and then silence — or trickles an answer a byte at a time
// fails the call after Options.IdleTimeout with an *IdleError, once (it
// is not sent again), instead of holding the caller for ever.
func TestIdleTimeoutEndsASilentServer(t *testing.T) {
	var asked atomic.Int64
	raw, stalled, trickle := testenv.SilentServers(t, 100*time.Millisecond, &asked)
	for _, c := range []struct {
		url   string
		whole bool
	}{{raw, false}, {stalled, false}, {trickle, true}} {
		asked.Store(0)
		cl, err := client.New(c.url, "bpk_x", client.Options{IdleTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = cl.Tenant("acme").Stats(context.Background())
		took := time.Since(start)
		var idle *client.IdleError
		if !errors.As(err, &idle) || took > 5*time.Second {
			t.Fatalf("%s: %v after %v, want an *IdleError after about 500ms", c.url, err, took)
		}
		if idle.Idle != 500*time.Millisecond || !strings.Contains(idle.Request, "/v1/tenants/acme/stats") {
			t.Fatalf("%s: %+v", c.url, idle)
		}
		if c.whole && !idle.Whole {
			t.Fatalf("%s: a trickled answer reported as %v", c.url, err)
		}
		if n := asked.Load(); n != 1 {
			t.Fatalf("%s: asked %d times, want once (a silent server is not waited on again)", c.url, n)
		}
	}
}

// A caller slow to read an answer (an export written to a slow sink) is
// not a silent server: the timeout counts only the time the caller waits
// in a read.
func TestIdleTimeoutCountsOnlyWaitsForTheServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		for i := 0; i < 20; i++ {
			if _, err := fmt.Fprintf(w, "{\"n\":%d}\n", i); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(20 * time.Millisecond)
		}
	}))
	defer srv.Close()
	cl, _ := client.New(srv.URL, "bpk_x", client.Options{IdleTimeout: 200 * time.Millisecond})
	n, err := cl.Tenant("acme").Export(context.Background(), slowWriter{400 * time.Millisecond})
	if err != nil || n == 0 {
		t.Fatalf("an export written slowly: %d bytes, %v", n, err)
	}
}

// slowWriter takes its time over each write.
type slowWriter struct{ d time.Duration }

func (w slowWriter) Write(p []byte) (int, error) {
	time.Sleep(w.d)
	return len(p), nil
}

// A subscription whose stream goes silent (no event, no heartbeat)
// reconnects from its position, skipping and repeating nothing.
func TestSubscriptionReconnectsASilentStream(t *testing.T) {
	var mu sync.Mutex
	var lastIDs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		conn := len(lastIDs)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		from := 0
		if conn > 1 {
			from = 3
		}
		for s := from; s < from+3; s++ {
			fmt.Fprintf(w, "id: %d\nevent: event\ndata: {\"global_sequence\":%d}\n\n", s, s)
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done() // then silence: no heartbeat
	}))
	defer srv.Close()
	defer client.SetStreamIdle(300 * time.Millisecond)()
	c, _ := client.New(srv.URL, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub := c.Tenant("acme").Subscribe(ctx, client.Query{}, client.FromStart())
	var got []uint64
	for ev, err := range sub.Events() {
		if err != nil {
			t.Fatal(err)
		}
		if got = append(got, ev.GlobalSequence); len(got) == 6 {
			sub.Close()
		}
	}
	if fmt.Sprint(got) != "[0 1 2 3 4 5]" {
		t.Fatalf("sequences %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lastIDs) != 2 || lastIDs[1] != "2" {
		t.Fatalf("Last-Event-ID per connection: %q, want a second connection after 2", lastIDs)
	}
}

// A server restarting many times in a row (each stream ending with its
// shutdown message, with no event in between) does not make an idle
// subscription give up: each connection made starts its budget afresh.
func TestSubscriptionOutlivesRestarts(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := conns.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		if n <= 10 {
			fmt.Fprint(w, ": subscribed\n\nevent: shutdown\ndata: {}\n\n")
			return
		}
		fmt.Fprint(w, "id: 0\nevent: event\ndata: {\"global_sequence\":0}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	sub := c.Tenant("acme").Subscribe(ctx, client.Query{}, client.FromStart())
	for ev, err := range sub.Events() {
		if err != nil {
			t.Fatalf("after %d connections: %v", conns.Load(), err)
		}
		if ev.GlobalSequence == 0 {
			sub.Close()
		}
	}
	if n := conns.Load(); n != 11 {
		t.Fatalf("%d connections, want 11", n)
	}
	// Ten at once: not a tight loop (about 50+100+200+400×7 ms).
	if took := time.Since(start); took < 2*time.Second {
		t.Fatalf("ten connections going away at once were made again within %v", took)
	}
}

// freeAddr is a loopback address nothing listens on (connections to it
// are refused until startAt starts a server there).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startAt starts srv (unstarted) listening on addr after d, stopping it
// with the test.
func startAt(t *testing.T, srv *httptest.Server, addr string, d time.Duration) {
	t.Cleanup(srv.Close)
	go func() {
		time.Sleep(d)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		srv.Listener = l
		srv.Start()
	}()
}

// notFound answers every request 404 NOT_FOUND.
func notFound() *httptest.Server {
	return httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"code":"NOT_FOUND","status":404,"title":"Not Found"}`)
	}))
}

// A subscription to a server that cannot be reached keeps trying for
// Options.ReconnectFor, then ends with an error saying so; one whose
// server comes back within it goes on.
func TestSubscriptionReconnectFor(t *testing.T) {
	addr := freeAddr(t)

	c, _ := client.New("http://"+addr, "", client.Options{ReconnectFor: 700 * time.Millisecond})
	start := time.Now()
	var last error
	for _, err := range c.Tenant("acme").Subscribe(context.Background(), client.Query{}, client.FromStart()).Events() {
		last = err
	}
	took := time.Since(start)
	if last == nil || !strings.Contains(last.Error(), "ReconnectFor") || took < 700*time.Millisecond || took > 8*time.Second {
		t.Fatalf("after %v: %v, want giving up after about 700ms naming Options.ReconnectFor", took, last)
	}

	// The server comes back after six seconds (eight refused attempts in
	// a row made a subscription give up after five): the subscription,
	// with the default of two minutes, goes on.
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: 0\nevent: event\ndata: {\"global_sequence\":0}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	c, _ = client.New("http://"+addr, "")
	startAt(t, srv, addr, 6*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub := c.Tenant("acme").Subscribe(ctx, client.Query{}, client.FromStart())
	for _, err := range sub.Events() {
		if err != nil {
			t.Fatal(err)
		}
		sub.Close()
	}
}

// A JSON answer that keeps coming is read whole however long it takes
// past IdleTimeout (here 6 MiB in about a second against 500 ms); a call
// the server works on before answering (Verify) waits for its headers
// past IdleTimeout; and a subscription's heartbeats keep it alive
// whatever IdleTimeout is.
func TestIdleTimeoutSparesLegitimateWaits(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/stats"):
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"pad":"`)
			chunk := strings.Repeat("x", 64<<10)
			for i := 0; i < 96; i++ {
				io.WriteString(w, chunk)
				w.(http.Flusher).Flush()
				time.Sleep(10 * time.Millisecond)
			}
			io.WriteString(w, `"}`)
		case strings.HasSuffix(r.URL.Path, "/verify"):
			time.Sleep(1500 * time.Millisecond)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"ok":true}`)
		case strings.HasSuffix(r.URL.Path, "/subscribe"):
			w.Header().Set("Content-Type", "text/event-stream")
			for i := 0; i < 4; i++ {
				io.WriteString(w, ": heartbeat\n\n")
				w.(http.Flusher).Flush()
				time.Sleep(300 * time.Millisecond)
			}
			io.WriteString(w, "id: 0\nevent: event\ndata: {\"global_sequence\":0}\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "bpk_x", client.Options{IdleTimeout: 500 * time.Millisecond})
	tc := c.Tenant("acme")
	if _, err := tc.Stats(context.Background()); err != nil {
		t.Fatalf("an answer coming at 6 MiB/s: %v", err)
	}
	if _, err := tc.Verify(context.Background()); err != nil {
		t.Fatalf("a verify answered after 1.5 s: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub := tc.Subscribe(ctx, client.Query{}, client.FromStart())
	for _, err := range sub.Events() {
		if err != nil {
			t.Fatalf("a subscription kept alive by heartbeats: %v", err)
		}
		sub.Close()
	}
}

// A DELETE whose first attempt never left (the connection was refused)
// and whose retry finds nothing is ErrNotFound: only an attempt that was
// sent may have done the work.
func TestDeleteNotSentThenNotFound(t *testing.T) {
	addr := freeAddr(t)
	c, _ := client.New("http://"+addr, "bpk_x")
	startAt(t, notFound(), addr, 30*time.Millisecond) // after the first attempt, before the retry
	if err := c.Tenant("acme").RevokeKey(context.Background(), "key-typo"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("revoking a key that never was, first attempt refused: %v, want ErrNotFound", err)
	}
}

// A call the server works on before it answers (Verify) is still
// watched until it is sent: a server whose TLS handshake never ends
// fails it after IdleTimeout.
func TestSlowCallWatchedUntilSent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c) }() // never answers the handshake
		}
	}()
	c, _ := client.New("https://"+ln.Addr().String(), "bpk_x", client.Options{IdleTimeout: 300 * time.Millisecond})
	start := time.Now()
	_, err = c.Tenant("acme").Verify(context.Background())
	var idle *client.IdleError
	if !errors.As(err, &idle) || time.Since(start) > 5*time.Second {
		t.Fatalf("a verify against a handshake that never ends: %v after %v, want an *IdleError", err, time.Since(start))
	}
}

// Close ends an iteration waiting between connections (here out a
// server's Retry-After of a minute) at once, without an error.
func TestCloseEndsAWaitingSubscription(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "60")
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"code":"BUSY","status":503,"title":"Service Unavailable"}`)
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "", client.Options{ReconnectFor: -1})
	sub := c.Tenant("acme").Subscribe(context.Background(), client.Query{}, client.FromStart())
	done := make(chan error, 1)
	go func() {
		var last error
		for _, err := range sub.Events() {
			last = err
		}
		done <- last
	}()
	time.Sleep(200 * time.Millisecond)
	sub.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the iteration ended with %v, want none after Close", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end an iteration waiting out a Retry-After")
	}
}

// A DELETE sent to a cluster follower, redirected to a leader that
// refused the connection, then answered 404 on the retry, is ErrNotFound:
// the follower's hop having been sent says nothing of the leader's.
func TestDeleteThroughFollowerNotSentToLeader(t *testing.T) {
	leaderAddr := freeAddr(t)
	var hops atomic.Int64
	follower := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hops.Add(1) == 1 {
			startAt(t, notFound(), leaderAddr, 20*time.Millisecond) // up before the retry
		}
		w.Header().Set("Location", "http://"+leaderAddr+r.URL.RequestURI())
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusTemporaryRedirect)
		io.WriteString(w, `{"code":"NOT_LEADER","status":307,"title":"Temporary Redirect"}`)
	}))
	defer follower.Close()
	c, _ := client.New(follower.URL, "bpk_x")
	if err := c.Tenant("acme").RevokeKey(context.Background(), "typo"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("revoking a key that never was through a follower: %v, want ErrNotFound", err)
	}
}
