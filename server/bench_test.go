package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/control"
)

// benchServer is a real server on a loopback port with one tenant and a
// writer key, for benchmarks.
type benchServer struct {
	srv  *server.Server
	base string
	key  string
	stop func()
}

func startBenchServer(tb testing.TB, cfg server.Config, tenant string, settings control.Settings) *benchServer {
	tb.Helper()
	cfg.Root = tb.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.AccessLog = "off"
	cfg.Stderr = io.Discard
	cfg.OperatorToken = "bpko_" + string(bytes.Repeat([]byte("a"), 52))
	ctx := context.Background()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		tb.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	unlimited := control.Quotas{EventsPerSecond: -1, BytesPerSecond: -1, StorageBytes: -1}
	if _, err := srv.Plane().CreateTenant(ctx, tenant, unlimited, settings); err != nil {
		tb.Fatal(err)
	}
	token, id, hash, err := auth.NewKey()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := srv.Plane().IssueKey(ctx, control.Key{ID: id, Tenant: tenant, Roles: []control.Role{control.RoleWriter}, Hash: hash}); err != nil {
		tb.Fatal(err)
	}
	bs := &benchServer{srv: srv, base: "http://" + srv.Addr().String(), key: token}
	bs.stop = func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	}
	tb.Cleanup(bs.stop)
	return bs
}

// keepAliveClient keeps up to n connections to one host open.
func keepAliveClient(n int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n, DisableCompression: true}}
}

// post sends body and drains the answer; a status other than want fails.
func post(hc *http.Client, url, key string, body []byte, want int) error {
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	out, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return err
	}
	if res.StatusCode != want {
		return fmt.Errorf("POST %s: %d %s", url, res.StatusCode, out)
	}
	return nil
}

// hammer runs n requests from clients goroutines, each body made by
// body(i), and reports requests per second.
func hammer(b *testing.B, clients, n int, do func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	b.ResetTimer()
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := do(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n)/el.Seconds(), "req/s")
}

// orderPayloads are distinct orders the example shop policy admits.
func orderPayloads(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		qty := 1 + i%7
		price := 100 + i%997
		out[i] = fmt.Appendf(nil, `{"order":"acme:order:%d","customer":"cust-%d","items":[{"sku":"BAT-AA-4","qty":%d,"price_cents":%d},{"sku":"CHG-USB-C","qty":1,"price_cents":1999}],"total_cents":%d,"currency":"EUR","note":"leave at the door"}`,
			i, i%100, qty, price, qty*price+1999)
	}
	return out
}

// examplePolicyDir is examples/policies (write.rego unchanged) with the
// server's writer role given the shop's kinds: server principals carry
// the roles reader, writer and admin, which the example's data does not
// name, so without this every write would be refused KIND_NOT_ALLOWED.
func examplePolicyDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	src := filepath.Join("..", "examples", "policies")
	rego, err := os.ReadFile(filepath.Join(src, "write.rego"))
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(src, "data.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var data map[string]map[string]map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		tb.Fatal(err)
	}
	data["batpak"]["shop"]["roles"].(map[string]any)["writer"] = []string{"0x1:*", "0x2:*"}
	raw, _ = json.Marshal(data)
	if err := os.WriteFile(filepath.Join(dir, "write.rego"), rego, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.json"), raw, 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// BenchmarkHTTPAppend measures single-event appends over loopback HTTP
// from 64 keep-alive clients: the example shop policy as the platform
// policy against none, with the tenant's store durable (fsync per group
// commit) and buffered (where the server's CPU cost shows).
//
//	go test -run '^$' -bench HTTPAppend -benchtime 20000x ./server/
func BenchmarkHTTPAppend(b *testing.B) {
	payloads := orderPayloads(1024)
	for _, sync := range []string{"durable", "buffered"} {
		for _, gated := range []bool{false, true} {
			name := sync + "/ungated"
			if gated {
				name = sync + "/policy"
			}
			b.Run(name, func(b *testing.B) {
				cfg := server.DefaultConfig()
				if gated {
					cfg.PolicyDir = examplePolicyDir(b)
				}
				bs := startBenchServer(b, cfg, "acme", control.Settings{Sync: sync})
				const clients = 64
				hc := keepAliveClient(clients)
				url := bs.base + "/v1/tenants/acme/events"
				bodies := make([][]byte, len(payloads))
				for i, p := range payloads {
					bodies[i] = fmt.Appendf(nil, `{"entity":"acme:order:%d","scope":"shop","kind":"1:1","payload":%s}`, i, p)
				}
				do := func(i int) error { return post(hc, url, bs.key, bodies[i%len(bodies)], http.StatusCreated) }
				for i := 0; i < 2*clients; i++ { // warm up connections and caches
					if err := do(i); err != nil {
						b.Fatal(err)
					}
				}
				hammer(b, clients, b.N, do)
			})
		}
	}
}
