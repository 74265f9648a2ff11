package server_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batpak-go/batpak/examples/plugins/wasmbuild"
	"github.com/batpak-go/batpak/sdk/client"
)

// orders appends n OrderPlaced events (kind 1:1, total_cents 250) to
// entity in batches.
func orders(tb testing.TB, w *client.Tenant, entity string, n int) {
	tb.Helper()
	for n > 0 {
		k := min(n, 1000)
		batch := make([]client.AppendRequest, k)
		for i := range batch {
			batch[i] = client.AppendRequest{Entity: entity, Scope: "shop", Kind: "1:1", Payload: []byte(`{"total_cents":250}`)}
		}
		if _, err := w.AppendBatch(context.Background(), batch); err != nil {
			tb.Fatal(err)
		}
		n -= k
	}
}

// BenchmarkTenantPluginProjection measures GET …/projections/{plugin}/
// {entity} over loopback for an entity of 1000 events through the Go
// order-total plugin: "cached" (the entity unchanged: the state comes
// from the projection cache, no plugin call), "not-modified" (the same
// with If-None-Match: 304) and "changed" (one new event since the last
// read: one plugin call folding it onto the cached state; the append is
// outside the timer).
func BenchmarkTenantPluginProjection(b *testing.B) {
	wasm := wasmbuild.ForTest(b, filepath.Join("..", "examples", "plugins", "order-total"))
	e := startPluginEnv(b, b.TempDir(), nil)
	ctx := context.Background()
	if _, err := e.acme.PushPlugin(ctx, manifestOf(b, "order-total", "1", "projection", wasm, nil), wasm, true); err != nil {
		b.Fatal(err)
	}
	orders(b, e.acmeWriter, "order:1", 1000)
	first, _, err := e.acmeReader.Project(ctx, "order-total", "order:1", "")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := e.acmeReader.Project(ctx, "order-total", "order:1", ""); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("not-modified", func(b *testing.B) {
		for b.Loop() {
			if _, nm, err := e.acmeReader.Project(ctx, "order-total", "order:1", first.ETag); err != nil || !nm {
				b.Fatal(err, nm)
			}
		}
	})
	b.Run("changed", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			orders(b, e.acmeWriter, "order:1", 1)
			b.StartTimer()
			if _, _, err := e.acmeReader.Project(ctx, "order-total", "order:1", ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestTenantPluginFigures reports, for the Go order-total plugin (about
// 2.7 MB of WebAssembly), push-to-active latency (upload → first
// projection served) for a first tenant (compiled) and a second tenant
// pushing the same module (the shared compile cache), and an entity's
// first projection (1000 events folded) against the next (cached).
// Set BATPAK_PLUGIN_FIGURES=1.
func TestTenantPluginFigures(t *testing.T) {
	if os.Getenv("BATPAK_PLUGIN_FIGURES") == "" {
		t.Skip("set BATPAK_PLUGIN_FIGURES=1")
	}
	wasm := wasmbuild.ForTest(t, filepath.Join("..", "examples", "plugins", "order-total"))
	e := startPluginEnv(t, t.TempDir(), nil)
	ctx := context.Background()
	orders(t, e.acmeWriter, "order:1", 1000)
	globexWriter := e.globex
	orders(t, globexWriter, "order:1", 1000)
	pushToActive := func(tn *client.Tenant, version string) (time.Duration, time.Duration) {
		start := time.Now()
		if _, err := tn.PushPlugin(ctx, manifestOf(t, "order-total", version, "projection", wasm, nil), wasm, true); err != nil {
			t.Fatal(err)
		}
		pushed := time.Since(start)
		for {
			p, _, err := tn.Project(ctx, "order-total", "order:1", "")
			if err == nil && p.Version == version {
				return pushed, time.Since(start)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	counter := fixture(t, "counter")
	start := time.Now()
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "count", "1", "projection", counter, nil), counter, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.acme.Project(ctx, "count", "order:1", ""); err != nil {
		t.Fatal(err)
	}
	t.Logf("counter.wasm (%d bytes): push-to-active %v", len(counter), time.Since(start))
	p1, a1 := pushToActive(e.acme, "1")
	p2, a2 := pushToActive(e.globex, "1")
	t.Logf("module %d bytes", len(wasm))
	t.Logf("first tenant:  push %v, push-to-active (first projection of 1000 events served) %v", p1, a1)
	t.Logf("second tenant, same module: push %v, push-to-active %v", p2, a2)
	orders(t, e.acmeWriter, "order:2", 1000)
	cold := time.Now()
	if _, _, err := e.acmeReader.Project(ctx, "order-total", "order:2", ""); err != nil {
		t.Fatal(err)
	}
	coldD := time.Since(cold)
	warm := time.Now()
	const n = 200
	for i := 0; i < n; i++ {
		if _, _, err := e.acmeReader.Project(ctx, "order-total", "order:2", ""); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("projection of 1000 events: uncached %v, cached %v per request", coldD, time.Since(warm)/n)
}
