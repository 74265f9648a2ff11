package servertest

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// stopWait bounds how long a test waits for a server to stop before it
// fails saying so.
const stopWait = 20 * time.Second

// Config is the server's default configuration for a test: a fresh
// temporary root (removed when the test ends), a port on 127.0.0.1 the
// system picks, no access log and nothing written to stderr.
func Config(t testing.TB) server.Config {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Root, cfg.Listen, cfg.AccessLog, cfg.Stderr = t.TempDir(), "127.0.0.1:0", "off", io.Discard
	return cfg
}

// Server is a server a test started: the server itself, and the base URL
// clients reach it at.
type Server struct {
	*server.Server
	// URL is http://127.0.0.1:port, https:// when the configuration
	// names a certificate.
	URL string

	t      testing.TB
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// Start builds a server from cfg, listens and serves in the background;
// a failure to build or listen fails the test at once. The server stops
// when the test ends (Stop), after the cleanups registered later and
// before those registered earlier — the temporary root Config made
// outlives it.
func Start(t testing.TB, cfg server.Config) *Server {
	t.Helper()
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		_ = srv.Shutdown(context.Background())
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Server: srv, t: t, cancel: cancel, done: make(chan error, 1)}
	scheme := "http://"
	if cfg.TLSCert != "" {
		scheme = "https://"
	}
	s.URL = scheme + srv.Addr().String()
	go func() { s.done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("servertest: the server stopped with %v", err)
		}
	})
	return s
}

// Stop stops the server and waits for it (at most 20 s: past that the
// test fails saying the server did not stop), returning what its Serve
// returned. Calling it again returns the same.
func (s *Server) Stop() error {
	s.once.Do(func() {
		s.cancel()
		select {
		case s.err = <-s.done:
		case <-time.After(stopWait):
			s.t.Errorf("servertest: the server did not stop within %v", stopWait)
		}
	})
	return s.err
}
