package hostedworker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/hostedworker"
)

const operatorToken = "bpko_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// fixtureSource is a PluginSource over plugins/testdata: each plugin name
// maps to a fixture module and a kind. Each tenant gets a host of its own
// and each plugin is loaded once per tenant (the same *plugins.Plugin is
// returned at every restart, as a registry would).
type fixtureSource struct {
	files map[string]string       // plugin name → fixture (testdata/<name>.wasm)
	kinds map[string]plugins.Kind // default handler

	mu      sync.Mutex
	hosts   map[string]*plugins.Host
	loaded  map[string]*plugins.Plugin // tenant/name
	refused error                      // when set, every Handler call fails with it
}

func newSource(t testing.TB, files map[string]string) *fixtureSource {
	s := &fixtureSource{files: files, kinds: map[string]plugins.Kind{}, hosts: map[string]*plugins.Host{}, loaded: map[string]*plugins.Plugin{}}
	t.Cleanup(func() {
		for _, h := range s.hosts {
			_ = h.Close(context.Background())
		}
	})
	return s
}

func (s *fixtureSource) Handler(ctx context.Context, tenant, name string) (*plugins.Plugin, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refused != nil {
		return nil, s.refused
	}
	if p := s.loaded[tenant+"/"+name]; p != nil {
		return p, nil
	}
	file, ok := s.files[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", hostedworker.ErrPluginNotFound, name)
	}
	wasm, err := os.ReadFile(filepath.Join("..", "..", "plugins", "testdata", file+".wasm"))
	if err != nil {
		return nil, err
	}
	h := s.hosts[tenant]
	if h == nil {
		if h, err = plugins.NewHost(plugins.HostOptions{Logger: quiet()}); err != nil {
			return nil, err
		}
		s.hosts[tenant] = h
	}
	kind := s.kinds[name]
	if kind == "" {
		kind = plugins.KindHandler
	}
	p, err := h.Load(ctx, wasm, plugins.Manifest{Name: name, Version: "1.0.0", Kind: kind})
	if err != nil {
		return nil, err
	}
	s.loaded[tenant+"/"+name] = p
	return p, nil
}

// standardFixtures: echo and echo-ok echo each event once (after one
// trap per load), trapper always traps.
func standardFixtures() map[string]string {
	return map[string]string{"echo": "handler-flaky", "echo-ok": "handler-flaky", "echo-b": "handler-flaky",
		"trapper": "trap", "malformed": "handler-malformed", "counter": "counter", "double": "handler-double"}
}

type testServer struct {
	srv  *server.Server
	base string
	op   *client.Client
	stop func()
}

// startServer runs a server over root on loopback with src as its plugin
// source (nil: none); tune adjusts the configuration.
func startServer(t *testing.T, root string, src hostedworker.PluginSource, tune func(*server.Config)) *testServer {
	t.Helper()
	cfg := servertest.Config(t)
	cfg.Root = root
	cfg.OperatorToken = operatorToken
	cfg.Logger = quiet()
	if src != nil {
		cfg.PluginSource = src
	}
	if tune != nil {
		tune(&cfg)
	}
	srv := servertest.Start(t, cfg)
	op, err := client.New(srv.URL, operatorToken)
	if err != nil {
		t.Fatal(err)
	}
	return &testServer{srv: srv.Server, base: srv.URL, op: op, stop: func() { _ = srv.Stop() }}
}

// tenant creates tenant id and returns a client of an admin key of it.
func (ts *testServer) tenant(t *testing.T, id string) *client.Tenant {
	t.Helper()
	ctx := context.Background()
	if _, err := ts.op.Admin().CreateTenant(ctx, id, nil, nil); err != nil {
		t.Fatal(err)
	}
	return ts.key(t, id, "admin")
}

// key issues a key of tenant id with roles and returns its tenant client.
func (ts *testServer) key(t *testing.T, id string, roles ...string) *client.Tenant {
	t.Helper()
	k, err := ts.op.Admin().IssueKey(context.Background(), id, "k", roles...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(ts.base, k.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c.Tenant(id)
}

// appendOrders writes n events of kind 1:1 (category 1) under entity.
func appendOrders(t *testing.T, tc *client.Tenant, entity string, n int) []client.Receipt {
	t.Helper()
	var out []client.Receipt
	for n > 0 {
		m := min(n, 500)
		evs := make([]client.AppendRequest, m)
		for i := range evs {
			evs[i] = client.AppendRequest{Entity: entity, Scope: "shop", Kind: "1:1", Payload: json.RawMessage(`{"n":1}`)}
		}
		rs, err := tc.AppendBatch(context.Background(), evs)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rs...)
		n -= m
	}
	return out
}

// echoes returns the tenant's echo events (the fixtures' reactions).
func echoes(t testing.TB, tc *client.Tenant) []client.Event {
	t.Helper()
	var out []client.Event
	for ev, err := range tc.Query(context.Background(), client.Query{Entity: "echo"}) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// checkOnce checks that every source has exactly one echo, caused by it
// and in its correlation, and that nothing else was echoed.
func checkOnce(t testing.TB, sources []client.Receipt, echoes []client.Event) {
	t.Helper()
	byID := map[string]client.Receipt{}
	for _, r := range sources {
		byID[r.ID] = r
	}
	seen := map[string]int{}
	for _, e := range echoes {
		if e.CausationID == nil {
			t.Fatalf("echo %s has no causation", e.ID)
		}
		src, ok := byID[*e.CausationID]
		if !ok {
			t.Fatalf("echo %s is caused by %s, not a source event", e.ID, *e.CausationID)
		}
		if e.CorrelationID != src.CorrelationID {
			t.Fatalf("echo %s correlation %s, its source's %s", e.ID, e.CorrelationID, src.CorrelationID)
		}
		seen[src.ID]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("source %s has %d echoes, want exactly 1", id, n)
		}
	}
	if len(seen) != len(sources) {
		t.Fatalf("%d of %d sources echoed", len(seen), len(sources))
	}
}

// waitFor polls cond until it holds or 20s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// worker returns a worker's status or fails the test.
func worker(t testing.TB, tc *client.Tenant, name string) client.Worker {
	t.Helper()
	w, err := tc.Worker(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// problem returns err's problem, failing the test if it is none.
func problem(t testing.TB, err error) *client.Error {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v (%T), want a problem", err, err)
	}
	return ce
}

func category(n int) *int { return &n }

func intp(n int) *int { return &n }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
