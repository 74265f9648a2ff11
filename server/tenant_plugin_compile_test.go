package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testmodules"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
)

// TestPluginCompileIsBounded: a small module that takes wazero's compiler
// far longer than the server allows (38 KB: over a minute in the server's
// process before compiles were bounded) is refused at the limit, naming
// it, while another tenant's writes go on; the server then takes and runs
// a good module. (The limit is 10 s because a race-detector build takes a
// second to compile even the smallest module.)
func TestPluginCompileIsBounded(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), func(c *server.Config) { c.PluginCompile.Timeout = 10 * time.Second })
	ctx := context.Background()
	slow := testmodules.SlowToCompile(2000, 8000)
	refused := make(chan error, 1)
	go func() {
		_, err := e.acme.PushPlugin(ctx, manifestOf(t, "slow", "1", "projection", slow, nil), slow, true)
		refused <- err
	}()
	// globex writes while acme's module compiles.
	writer := clientOf(t, e.ps, e.globexKey).Tenant("globex")
	appendN(t, writer, "order:1", 20)
	err := <-refused
	// Time or memory, whichever it passes first (the module takes both).
	if ce := wantCode(t, "the slow module", err, client.CodePluginRejected); !strings.Contains(ce.Detail, "over the server's compile limit: it took longer than 10s") &&
		!strings.Contains(ce.Detail, "over the server's compile limit: it took more than 1024 MiB") {
		t.Fatalf("refusal %q, want it to name the compile limit", ce.Detail)
	}
	if files := storedModules(t, e.root, "acme"); len(files) != 0 {
		t.Fatalf("the refused module left %v stored", files)
	}
	wasm := fixture(t, "counter")
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "counter", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatalf("a good module after the refusal: %v", err)
	}
	appendN(t, e.acmeWriter, "order:1", 1)
	p, _, err := e.acmeReader.Project(ctx, "counter", "order:1", "")
	if err != nil {
		t.Fatal(err)
	}
	if n := counterState(t, p); n != 1 {
		t.Fatalf("counter state %d, want 1", n)
	}
}
