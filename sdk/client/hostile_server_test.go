package client_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
)

// A caller's own http.Client (a common one: &http.Client{Timeout: …})
// follows no redirect either: the credential goes to no other port of the
// same host on a 302.
func TestOwnHTTPClientFollowsNoRedirect(t *testing.T) {
	var seen atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Authorization"))
		fmt.Fprint(w, `{}`)
	}))
	defer other.Close()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/x", http.StatusFound)
	}))
	defer front.Close()
	own := &http.Client{Timeout: 10 * time.Second}
	c, err := client.New(front.URL, "bpk_SECRET", client.Options{HTTPClient: own})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Tenant("acme").Stats(context.Background()); err == nil {
		t.Error("a 302 answered Stats without an error")
	}
	if v := seen.Load(); v != nil {
		t.Fatalf("the redirect target was asked, with Authorization %q", v)
	}
	if own.CheckRedirect != nil {
		t.Error("New changed the caller's http.Client")
	}
}

// A small gzip body that inflates far past MaxResponseBytes costs the
// client nothing: the default client never asks for compression (a
// batpak server never compresses), so the body is not inflated and is
// refused as not JSON; a caller's own http.Client that asks for it gets
// the answer read up to MaxResponseBytes once decompressed, and refused
// past it with an error naming the limit. An answer within the limit is
// decoded.
func TestAnswersBoundedAfterDecompression(t *testing.T) {
	const limit = 1 << 20
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	_, _ = io.WriteString(zw, `{"pad":"`)
	_, _ = zw.Write(bytes.Repeat([]byte("a"), 8*limit))
	_, _ = io.WriteString(zw, `"}`)
	_ = zw.Close()
	var asked atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Store(r.Header.Get("Accept-Encoding"))
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/ok/stats") {
			fmt.Fprintf(w, `{"pad":"%s"}`, strings.Repeat("b", limit/2))
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(bomb.Bytes())
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, "tok", client.Options{MaxResponseBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Tenant("bomb").Stats(context.Background()); err == nil || strings.Contains(fmt.Sprint(asked.Load()), "gzip") {
		t.Fatalf("a gzip body unasked for: %v (Accept-Encoding %q)", err, asked.Load())
	}
	own, err := client.New(srv.URL, "tok", client.Options{MaxResponseBytes: limit, HTTPClient: &http.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := own.Tenant("bomb").Stats(context.Background()); err == nil || !strings.Contains(err.Error(), "MaxResponseBytes") {
		t.Fatalf("a %d KiB body inflating to %d MiB: %v", bomb.Len()>>10, 8*limit>>20, err)
	}
	st, err := c.Tenant("ok").Stats(context.Background())
	if err != nil || len(fmt.Sprint(st["pad"])) != limit/2 {
		t.Fatalf("an answer within the limit: %v", err)
	}
}

// One event-stream message is bounded at MaxResponseBytes: a server that
// never ends its message ends the subscription with an error naming the
// limit instead of growing the client.
func TestEventStreamMessageBounded(t *testing.T) {
	const limit = 1 << 20
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		line := "data:" + strings.Repeat(" ", 16<<10) + "\n"
		for sent := 0; sent < 4*limit; sent += len(line) {
			if _, err := io.WriteString(w, line); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "tok", client.Options{MaxResponseBytes: limit})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub := c.Tenant("acme").Subscribe(ctx, client.Query{}, client.FromStart())
	defer sub.Close()
	for _, err := range sub.Events() {
		if err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
			t.Fatalf("an endless message: %v", err)
		}
		return
	}
	t.Fatal("the subscription ended without an error")
}

// A message of exactly MaxResponseBytes of data (one line, or lines
// joined by line feeds) is delivered; the bound refuses only what passes
// it.
func TestEventStreamMessageOfExactlyTheBound(t *testing.T) {
	const limit = 64
	first := `{"global_sequence":7,`
	one := first + `"pad":"` + strings.Repeat("x", limit-len(first)-len(`"pad":""}`)) + `"}`
	two := first + "\ndata: " + `"pad":"` + strings.Repeat("x", limit-len(first)-1-len(`"pad":""}`)) + `"}`
	for _, data := range []string{one, two} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "id: 7\nevent: event\ndata: %s\n\n", data)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}))
		c, _ := client.New(srv.URL, "tok", client.Options{MaxResponseBytes: limit, MaxRetries: -1})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		sub := c.Tenant("acme").Subscribe(ctx, client.Query{}, client.FromStart())
		for ev, err := range sub.Events() {
			if err != nil || ev.GlobalSequence != 7 {
				t.Errorf("a message of exactly %d bytes (%q): %v", limit, data, err)
			}
			break
		}
		sub.Close()
		cancel()
		srv.Close()
	}
}
