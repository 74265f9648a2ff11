package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
)

// failConn fails its next Write, writing nothing, once armed: a kept-alive
// connection the server had reset, found so when the request is flushed.
type failConn struct {
	net.Conn
	armed *atomic.Bool
}

func (c *failConn) Write(b []byte) (int, error) {
	if c.armed.CompareAndSwap(true, false) {
		c.Conn.Close()
		return 0, syscall.EPIPE
	}
	return c.Conn.Write(b)
}

// net/http sends a request again on a new connection when the write on a
// reused one failed with nothing written: the request went out once. Its
// refusal (400) is the answer, not an unknown outcome, though the client
// saw its headers buffered for the first connection.
func TestWriteSentAgainBeforeItLeftIsRefusedPlainly(t *testing.T) {
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Method == "GET" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"events":[],"next_after":null}`)
			return
		}
		posts.Add(1)
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"code":"INVALID_ARGUMENT","detail":"no","status":400}`)
	}))
	defer srv.Close()
	var mu sync.Mutex
	var conns []*failConn
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		fc := &failConn{Conn: c, armed: new(atomic.Bool)}
		mu.Lock()
		conns = append(conns, fc)
		mu.Unlock()
		return fc, nil
	}}
	c, err := client.New(srv.URL, "bpk_x", client.Options{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Tenant("acme").QueryPage(ctx, client.Query{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(conns) != 1 {
		t.Fatalf("%d connections", len(conns))
	}
	conns[0].armed.Store(true)
	mu.Unlock()
	_, err = c.Tenant("acme").Append(ctx, client.AppendRequest{Entity: "a:1", Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)})
	mu.Lock()
	n := len(conns)
	mu.Unlock()
	t.Logf("connections %d, POSTs the server read %d, error %v (%T)", n, posts.Load(), err, err)
	var oe *client.OutcomeUnknownError
	if errors.As(err, &oe) {
		t.Fatalf("the write went out once (the server read %d POSTs; the first write failed with nothing written), was refused 400, and the client says its outcome is unknown: %v", posts.Load(), err)
	}
}
