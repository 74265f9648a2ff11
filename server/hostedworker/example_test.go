package hostedworker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
)

// registry is the smallest PluginSource: one handler plugin, the same for
// every tenant.
type registry struct{ echo *plugins.Plugin }

func (r registry) Handler(ctx context.Context, tenant, name string) (*plugins.Plugin, error) {
	if name != "echo" {
		return nil, fmt.Errorf("no plugin %q", name)
	}
	return r.echo, nil
}

// A server with a plugin source runs a tenant's handler plugin as a
// hosted worker: every input event gets one reaction, caused by it.
func Example() {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	host, _ := plugins.NewHost(plugins.HostOptions{Logger: quiet})
	defer host.Close(ctx)
	wasm, _ := os.ReadFile(filepath.Join("..", "..", "plugins", "testdata", "handler-flaky.wasm"))
	echo, err := host.Load(ctx, wasm, plugins.Manifest{Name: "echo", Version: "1.0.0", Kind: plugins.KindHandler})
	if err != nil {
		fmt.Println(err)
		return
	}

	root, _ := os.MkdirTemp("", "batpak-example-")
	defer os.RemoveAll(root)
	cfg := server.DefaultConfig()
	cfg.Root, cfg.Listen, cfg.AccessLog, cfg.Stderr, cfg.Logger = root, "127.0.0.1:0", "off", io.Discard, quiet
	cfg.OperatorToken = operatorToken
	cfg.PluginSource = registry{echo}
	sctx, stop := context.WithCancel(ctx)
	srv, _ := server.New(sctx, cfg)
	_ = srv.Listen()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	defer func() { stop(); <-done }()

	op, _ := client.New("http://"+srv.Addr().String(), operatorToken)
	_, _ = op.Admin().CreateTenant(ctx, "acme", nil, nil)
	k, _ := op.Admin().IssueKey(ctx, "acme", "app", "admin")
	c, _ := client.New("http://"+srv.Addr().String(), k.Key)
	acme := c.Tenant("acme")

	in, _ := acme.Append(ctx, client.AppendRequest{Entity: "order:1", Scope: "shop", Kind: "1:1", Payload: json.RawMessage(`{}`)})
	one := 1
	w, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: client.CursorRegion{Category: &one},
		Restart: client.WorkerRestart{BackoffMinMs: 10}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("worker", w.Name, "runs", w.Plugin, "from cursor", w.Cursor)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		evs, _ := acme.Stream(ctx, "echo", nil, 10)
		if len(evs) == 1 {
			fmt.Println("reaction caused by the input:", *evs[0].CausationID == in.ID)
			break
		}
	}
	st, _ := acme.Worker(ctx, "echoer")
	fmt.Println("restarts after the fixture's first-call trap:", st.Restarts)
	// Output:
	// worker echoer runs echo from cursor echoer
	// reaction caused by the input: true
	// restarts after the fixture's first-call trap: 1
}
