package testenv

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// SilentServers starts three servers that never answer a client well,
// for tests of a client's idle bounds, and stops them with the test:
// raw accepts connections and reads them without ever answering; stalled
// answers a JSON request's headers and the first bytes of its body, then
// nothing; trickle answers a JSON body one byte every every. Each is a
// base URL (http://host:port). asked, when not nil, counts the
// connections raw accepts and the requests the others get.
func SilentServers(t testing.TB, every time.Duration, asked *atomic.Int64) (raw, stalled, trickle string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			count(asked)
			go func() { _, _ = io.Copy(io.Discard, c) }() // reads, never answers
		}
	}()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count(asked)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"events":`))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(s.Close)
	tr := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count(asked)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"pad":"`))
		for {
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(every):
			}
			if _, err := w.Write([]byte(" ")); err != nil {
				return
			}
		}
	}))
	t.Cleanup(tr.Close)
	return "http://" + ln.Addr().String(), s.URL, tr.URL
}

// count adds one to n when it is not nil.
func count(n *atomic.Int64) {
	if n != nil {
		n.Add(1)
	}
}
