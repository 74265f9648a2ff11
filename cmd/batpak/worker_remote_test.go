package main

import (
	"context"
	"encoding/json"
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

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/sdk/client"
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
	cfg := servertest.Config(t)
	cfg.Logger = quiet
	cfg.PluginSource = &fixturePlugins{host: h, loaded: map[string]*plugins.Plugin{}}
	srv := servertest.Start(t, cfg)
	return srv.URL, srv.Token
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
			for _, want := range []string{"worker echoer\n", "plugin echo (echo 1.0.0, ", "cursor echoer\n",
				// caught up: the 5 events after its position are its own
				// reactions, outside its region (category 1)
				"lag ≤ 5 (events past its position, in its region or not)\n",
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
	if !strings.HasPrefix(list, "NAME    STATE    PLUGIN  POSITION  LAG  RESTARTS  LAST FAULT\nechoer  running  echo    5         ≤ 5  ") || !strings.HasSuffix(list, "1 worker\n") {
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

// TestRemoteWorkerStartKeepsSettings: worker start on an existing worker
// changes only the flags given — a new plugin keeps the region filter,
// cursor and restart policy — an empty filter flag clears that filter, --replace makes the flags the whole configuration,
// and "worker start NAME" alone starts a stopped worker as it was. The
// help says so. worker delete (with --yes) forgets the worker.
func TestRemoteWorkerStartKeepsSettings(t *testing.T) {
	isolate(t)
	url, op := startWorkerServer(t)
	admin := []string{"--server", url, "--token", op}
	ok(t, append(admin, "tenant", "create", "acme")...)
	key := keyIn(t, ok(t, append(admin, "--tenant", "acme", "key", "issue", "app", "--role", "admin")...))
	as := func(args ...string) []string {
		return append([]string{"--server", url, "--token", key, "--tenant", "acme"}, args...)
	}
	get := func() client.Worker {
		t.Helper()
		var w client.Worker
		if err := json.Unmarshal([]byte(ok(t, as("worker", "status", "w", "-o", "json")...)), &w); err != nil {
			t.Fatal(err)
		}
		return w
	}
	region := func(w client.Worker) string {
		c := "-"
		if w.Region.Category != nil {
			c = fmt.Sprint(*w.Region.Category)
		}
		return fmt.Sprintf("entity=%q scope=%q kind=%q category=%s", w.Region.Entity, w.Region.Scope, w.Region.Kind, c)
	}

	ok(t, as("worker", "start", "w", "--plugin", "echo", "--entity", "order:", "--scope", "shop", "--kind", "1:1", "--category", "1",
		"--cursor", "wc", "--max-restarts", "3", "--backoff-min", "5ms")...)
	w := get()
	const all = `entity="order:" scope="shop" kind="1:1" category=1`
	if region(w) != all || w.Cursor != "wc" || derefInt(w.Restart.MaxRestarts) != 3 || w.Restart.BackoffMinMs != 5 {
		t.Fatalf("as started: %s %+v", region(w), w)
	}

	ok(t, as("worker", "start", "w", "--plugin", "trapper")...)
	if w = get(); w.Plugin != "trapper" || region(w) != all || w.Cursor != "wc" || derefInt(w.Restart.MaxRestarts) != 3 || w.Restart.BackoffMinMs != 5 {
		t.Fatalf("a new plugin changed other settings: %s %+v", region(w), w)
	}
	ok(t, as("worker", "start", "w", "--scope", "", "--max-restarts", "2")...)
	if w = get(); w.Plugin != "trapper" || region(w) != `entity="order:" scope="" kind="1:1" category=1` || derefInt(w.Restart.MaxRestarts) != 2 || w.Restart.BackoffMinMs != 5 {
		t.Fatalf("--scope \"\": %s %+v", region(w), w)
	}
	ok(t, as("worker", "start", "w", "--category", "", "--kind", "")...)
	if w = get(); region(w) != `entity="order:" scope="" kind="" category=-` {
		t.Fatalf("--category \"\" --kind \"\": %s", region(w))
	}
	ok(t, as("worker", "stop", "w")...)
	if out := ok(t, as("worker", "start", "w")...); !strings.HasPrefix(out, "started worker w (plugin trapper, state ") {
		t.Fatalf("worker start of a stopped worker: %q", out)
	}
	if w = get(); w.Desired != "running" || region(w) != `entity="order:" scope="" kind="" category=-` || w.Cursor != "wc" || derefInt(w.Restart.MaxRestarts) != 2 {
		t.Fatalf("started again as it was: %s %+v", region(w), w)
	}
	ok(t, as("worker", "start", "w", "--plugin", "echo", "--kind", "1:2", "--replace")...)
	if w = get(); w.Plugin != "echo" || region(w) != `entity="" scope="" kind="1:2" category=-` || w.Cursor != "w" ||
		derefInt(w.Restart.MaxRestarts) != 5 || w.Restart.BackoffMinMs != 200 {
		t.Fatalf("--replace: %s %+v", region(w), w)
	}

	failsWith(t, exitUsage, as("worker", "start", "new"), "missing required flag --plugin", "worker new does not exist yet")
	failsWith(t, exitUsage, as("worker", "start", "w", "--plugin", ""), "--plugin is empty")
	failsWith(t, exitUsage, as("worker", "start", "w", "--category", "one"), `--category "one"`)
	ok(t, as("worker", "start", "w", "--category", "0x2")...)
	if w = get(); region(w) != `entity="" scope="" kind="1:2" category=2` {
		t.Fatalf("--category 0x2: %s", region(w))
	}
	help := spaces.ReplaceAllString(strings.ReplaceAll(ok(t, "worker", "start", "--help"), "\n", " "), " ")
	for _, want := range []string{"An existing worker keeps its stored configuration", "changes only the flags given",
		`give it empty (--entity "", --scope "", --kind "", --category "")`, "With --replace the flags given are the whole configuration"} {
		if !strings.Contains(help, want) {
			t.Fatalf("worker start --help lacks %q:\n%s", want, help)
		}
	}

	failsWith(t, exitUsage, as("worker", "delete", "w"), "--yes")
	if out := ok(t, as("worker", "delete", "w", "--yes")...); out != "deleted worker w\n" {
		t.Fatalf("worker delete: %q", out)
	}
	failsWith(t, exitNotFound, as("worker", "status", "w"), "NOT_FOUND", "(HTTP 404)")
	failsWith(t, exitNotFound, as("worker", "delete", "w", "--yes"), "NOT_FOUND", "(HTTP 404)")
	if out := ok(t, as("worker", "start", "w", "--plugin", "echo")...); !strings.HasPrefix(out, "started worker w (plugin echo, ") {
		t.Fatalf("the name again after delete: %q", out)
	}
	if w = get(); region(w) != `entity="" scope="" kind="" category=-` || w.Cursor != "w" {
		t.Fatalf("a worker of a deleted one's name carries its settings: %s %+v", region(w), w)
	}
}

// TestWorkerLagSaysWhenItIsABound: the server's lag counts the log's
// events past a worker's position, in its region or not; status prints it
// as a bound when a region filter leaves events out.
func TestWorkerLagSaysWhenItIsABound(t *testing.T) {
	one := 1
	for _, c := range []struct {
		region client.CursorRegion
		lag    uint64
		want   string
	}{
		{client.CursorRegion{}, 9, "9"}, // every event: exact
		{client.CursorRegion{Category: &one}, 9, "≤ 9"},
		{client.CursorRegion{Entity: "order:"}, 9, "≤ 9"},
		{client.CursorRegion{Scope: "shop"}, 9, "≤ 9"},
		{client.CursorRegion{Kind: "1:1"}, 9, "≤ 9"},
		{client.CursorRegion{Scope: "shop"}, 0, "0"}, // nothing past the position
	} {
		if got := workerLag(client.Worker{Region: c.region, Lag: c.lag}); got != c.want {
			t.Errorf("region %+v, lag %d: %q, want %q", c.region, c.lag, got, c.want)
		}
	}
}
