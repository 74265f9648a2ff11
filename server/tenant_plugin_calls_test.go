package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/tenantplugin"
)

// TestProjectionCallsBounded: a tenant's reader sending many projection
// reads at once of a plugin whose fold takes 32 MiB runs at most
// tenantplugin.TenantCalls of them at a time: the others wait for a slot
// (or get 503 BUSY with Retry-After), so the host's memory holds a few
// instances, not one per request.
func TestProjectionCallsBounded(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), nil)
	ctx := context.Background()
	wasm := fixture(t, "slowok") // grows to 32 MiB and fills it, each call
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "slow", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatal(err)
	}
	const n = 32
	for i := range n {
		appendN(t, e.acmeWriter, fmt.Sprintf("e:%d", i), 1)
	}
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	var wg sync.WaitGroup
	var ok, busy, late atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", e.ps.base+fmt.Sprintf("/v1/tenants/acme/projections/slow/e:%d", i), nil)
			req.Header.Set("Authorization", "Bearer "+e.acmeReaderKey)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			switch {
			case res.StatusCode == 200:
				ok.Add(1)
			case res.StatusCode == 503 && res.Header.Get("Retry-After") != "":
				busy.Add(1)
			case res.StatusCode == 424 && strings.Contains(string(b), `"fault":"timeout"`):
				// A call that fills 32 MiB can pass the plugin's second
				// under the race detector on a busy machine: it ran, and
				// held its instance, all the same.
				late.Add(1)
			default:
				t.Errorf("projection: %d %s", res.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	if ok.Load()+late.Load() == 0 {
		t.Fatalf("%d projection reads at once: none ran (%d busy)", n, busy.Load())
	}
	// Each running call holds a 32 MiB instance; the plugin keeps its
	// instances for reuse. Unbounded, 32 reads at once took over 1 GiB.
	grew := int64(peak.Load()) - int64(base.HeapInuse)
	if limit := int64(tenantplugin.TenantCalls+2) * 40 << 20; grew > limit {
		t.Fatalf("%d projection reads at once (%d served, %d busy): the heap grew %d MiB, over %d MiB", n, ok.Load(), busy.Load(), grew>>20, limit>>20)
	}
	t.Logf("%d served, %d timed out, %d busy, heap grew %d MiB", ok.Load(), late.Load(), busy.Load(), grew>>20)
}
