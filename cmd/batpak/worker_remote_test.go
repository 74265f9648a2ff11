package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/hostedworker"
)

// fixturePlugins serves plugins/testdata modules as a tenant's handler
// plugins: "echo" (handler-flaky: one trap per load, then an echo per
// event) and "trapper" (always traps), each loaded once.
type fixturePlugins struct {
	mu     sync.Mutex
	host   *plugins.Host
	loaded map[string]*plugins.Plugin
}

func (f *fixturePlugins) Handler(ctx context.Context, tenant, name string) (*plugins.Plugin, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.loaded[name]; p != nil {
		return p, nil
	}
	file := map[string]string{"echo": "handler-flaky", "trapper": "trap"}[name]
	if file == "" {
		return nil, fmt.Errorf("%w: %s", hostedworker.ErrPluginNotFound, name)
	}
	_, here, _, _ := runtime.Caller(0) // tests run in a directory of their own
	wasm, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", "plugins", "testdata", file+".wasm"))
	if err != nil {
		return nil, err
	}
	p, err := f.host.Load(ctx, wasm, plugins.Manifest{Name: name, Version: "1.0.0", Kind: plugins.KindHandler})
	if err != nil {
		return nil, err
	}
	f.loaded[name] = p
	return p, nil
}

// startWorkerServer runs a server with the fixture plugins as its plugin
// source and returns its URL and operator credential.
func startWorkerServer(t *testing.T) (url, operator string) {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := plugins.NewHost(plugins.HostOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	cfg := server.DefaultConfig()
	cfg.Root, cfg.Listen, cfg.AccessLog, cfg.Stderr, cfg.Logger = t.TempDir(), "127.0.0.1:0", "off", io.Discard, quiet
	cfg.PluginSource = &fixturePlugins{host: h, loaded: map[string]*plugins.Plugin{}}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + srv.Addr().String(), srv.Token
}

// spaces collapses the padding of aligned columns.
var spaces = regexp.MustCompile(` {2,}`)

// TestRemoteWorkerVerbs: worker start, status (list and one), stop and
// reset against a server, with their refusals as one-line errors.
func TestRemoteWorkerVerbs(t *testing.T) {
	isolate(t)
	url, op := startWorkerServer(t)
	admin := []string{"--server", url, "--token", op}
	ok(t, append(admin, "tenant", "create", "acme")...)
	key := keyIn(t, ok(t, append(admin, "--tenant", "acme", "key", "issue", "app", "--role", "admin")...))
	as := func(args ...string) []string {
		return append([]string{"--server", url, "--token", key, "--tenant", "acme"}, args...)
	}
	for i := 0; i < 5; i++ {
		ok(t, as("append", "--entity", "order:1", "--scope", "shop", "--kind", "1:1", "--data", "{}")...)
	}

	if out := ok(t, as("worker", "start", "echoer", "--plugin", "echo", "--category", "1", "--backoff-min", "5ms")...); out != "started worker echoer (plugin echo, state running)\n" &&
		out != "started worker echoer (plugin echo, state starting)\n" && out != "started worker echoer (plugin echo, state backoff)\n" {
		t.Fatalf("worker start: %q", out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := spaces.ReplaceAllString(ok(t, as("worker", "status", "echoer")...), " ")
		if strings.Contains(out, "state running") && strings.Contains(out, "position 5\n") || time.Now().After(deadline) {
			for _, want := range []string{"worker echoer\n", "plugin echo (echo 1.0.0, ", "cursor echoer\n", "lag 5\n",
				"restarts 1 (1 faults within 10m0s; max_restarts 5)", "last fault ", " trap: ", "log:\n", "running plugin echo 1.0.0"} {
				if !strings.Contains(out, want) {
					t.Fatalf("worker status echoer lacks %q:\n%s", want, out)
				}
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	list := ok(t, as("worker", "status")...)
	if !strings.HasPrefix(list, "NAME    STATE    PLUGIN  POSITION  LAG  RESTARTS  LAST FAULT\nechoer  running  echo    ") || !strings.HasSuffix(list, "1 worker\n") {
		t.Fatalf("worker status:\n%s", list)
	}
	if js := parseLines(t, ok(t, as("worker", "status", "--json")...)); len(js) != 1 || str(t, js[0], "name") != "echoer" {
		t.Fatalf("worker status --json: %v", js)
	}
	if out := ok(t, as("worker", "stop", "echoer")...); out != "stopped worker echoer (plugin echo, state stopped)\n" {
		t.Fatalf("worker stop: %q", out)
	}

	ok(t, as("worker", "start", "trap", "--plugin", "trapper", "--max-restarts", "0")...)
	deadline = time.Now().Add(20 * time.Second)
	for !strings.Contains(spaces.ReplaceAllString(ok(t, as("worker", "status", "trap")...), " "), "state quarantined") {
		if time.Now().After(deadline) {
			t.Fatal("the trapping worker was not quarantined")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out := spaces.ReplaceAllString(ok(t, as("worker", "status", "trap")...), " "); !strings.Contains(out, "\nquarantined 20") || !strings.Contains(out, "max_restarts 0") {
		t.Fatalf("quarantined status:\n%s", out)
	}
	if out := ok(t, as("worker", "reset", "trap")...); !strings.HasPrefix(out, "reset worker trap (plugin trapper, state ") {
		t.Fatalf("worker reset: %q", out)
	}

	failsWith(t, exitUsage, as("worker", "start", "x"), "--plugin")
	failsWith(t, exitNotFound, as("worker", "start", "x", "--plugin", "nosuch"), "batpak: server: NOT_FOUND: ", "nosuch", "(HTTP 404)")
	failsWith(t, exitNotFound, as("worker", "status", "nosuch"), "batpak: server: NOT_FOUND: ", "(HTTP 404)")
	fails(t, as("worker", "start", "x", "--plugin", "echo", "--max-restarts", "1001"), "INVALID_REQUEST", "restart.max_restarts 1001: want 0..1000", "(HTTP 400)")
}
