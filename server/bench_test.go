package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/servertest"
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
	return startBenchServerRoles(tb, cfg, tenant, settings, control.RoleWriter)
}

// startBenchServerRoles is startBenchServer with the key's roles.
func startBenchServerRoles(tb testing.TB, cfg server.Config, tenant string, settings control.Settings, roles ...control.Role) *benchServer {
	tb.Helper()
	base := servertest.Config(tb)
	cfg.Root, cfg.Listen, cfg.AccessLog, cfg.Stderr = base.Root, base.Listen, base.AccessLog, base.Stderr
	if cfg.MaxConnectionsPerSource == 0 {
		cfg.MaxConnectionsPerSource = -1 // the load generator is one address
	}
	cfg.OperatorToken = "bpko_" + string(bytes.Repeat([]byte("a"), 52))
	ctx := context.Background()
	ts := servertest.Start(tb, cfg)
	srv := ts.Server
	unlimited := control.Quotas{EventsPerSecond: -1, BytesPerSecond: -1, RequestsPerSecond: -1, StorageBytes: -1, MaxSubscriptions: -1}
	if _, err := srv.Plane().CreateTenant(ctx, tenant, unlimited, settings); err != nil {
		tb.Fatal(err)
	}
	token, id, hash, err := auth.NewKey()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := srv.Plane().IssueKey(ctx, control.Key{ID: id, Tenant: tenant, Roles: roles, Hash: hash}); err != nil {
		tb.Fatal(err)
	}
	bs := &benchServer{srv: srv, base: ts.URL, key: token, stop: func() { _ = ts.Stop() }}
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

// rawClient is one HTTP/1.1 keep-alive connection driven directly (the
// request in one write, the response read with http.ReadResponse): a
// load generator that leaves the CPU to the server it measures.
type rawClient struct {
	c   net.Conn
	br  *bufio.Reader
	buf []byte
}

func dialRaw(base string) (*rawClient, error) {
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		return nil, err
	}
	return &rawClient{c: c, br: bufio.NewReaderSize(c, 64<<10)}, nil
}

// post sends a JSON body and returns the status and response body.
func (rc *rawClient) post(path, key string, body []byte) (int, []byte, error) {
	return rc.postType(path, key, "application/json", body)
}

// postType sends a body of the content type and returns the status and
// response body.
func (rc *rawClient) postType(path, key, contentType string, body []byte) (int, []byte, error) {
	b := append(rc.buf[:0], "POST "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer "...)
	b = append(b, key...)
	b = append(b, "\r\nContent-Type: "...)
	b = append(b, contentType...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	rc.buf = b
	if _, err := rc.c.Write(b); err != nil {
		return 0, nil, err
	}
	res, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return 0, nil, err
	}
	out, err := io.ReadAll(res.Body)
	res.Body.Close()
	return res.StatusCode, out, err
}

// rawClients dials n connections, closed when tb ends.
func rawClients(tb testing.TB, base string, n int) []*rawClient {
	out := make([]*rawClient, n)
	for i := range out {
		rc, err := dialRaw(base)
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = rc
		tb.Cleanup(func() { rc.c.Close() })
	}
	return out
}

// hammer runs n requests from clients goroutines, each body made by
// body(i), and reports requests per second.
func hammer(b *testing.B, clients, n int, do func(client, i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := do(c, i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}(c)
	}
	wg.Wait()
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n)/el.Seconds(), "req/s")
	// CPU (user+system, server and load generator together) per request:
	// on a shared machine a steadier figure than the rate.
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-us/req")
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

// BenchmarkHTTPAppend measures single-event appends over loopback HTTP
// from 64 keep-alive clients: the example shop policy as the platform
// policy against none, with the tenant's store durable (fsync per group
// commit) and buffered (where the server's CPU cost shows).
//
//	go test -run '^$' -bench HTTPAppend -benchtime 20000x ./server/
func BenchmarkHTTPAppend(b *testing.B) {
	for _, sync := range []string{"durable", "buffered"} {
		// ungated: no policy; policy: 1024 distinct orders over and over
		// (decisions cached after the first round); policy-distinct:
		// every order distinct (every decision evaluated);
		// tenant-policy-distinct: the same policy as the tenant's bundle
		// (evaluated in the policy sandbox's child processes).
		for _, mode := range []string{"ungated", "policy", "policy-distinct", "tenant-policy-distinct"} {
			b.Run(sync+"/"+mode, func(b *testing.B) {
				payloads := orderPayloads(1024)
				if strings.HasSuffix(mode, "policy-distinct") {
					payloads = orderPayloads(b.N + 256)
				}
				cfg := server.DefaultConfig()
				examples := filepath.Join("..", "examples", "policies")
				if mode == "policy" || mode == "policy-distinct" {
					cfg.PolicyDir = examples
				}
				// writer: server access; clerk: the example policy's role
				// for orders (an application role); admin: to push the
				// tenant's bundle.
				bs := startBenchServerRoles(b, cfg, "acme", control.Settings{Sync: sync}, control.RoleWriter, control.RoleAdmin, "clerk")
				const clients = 64
				conns := rawClients(b, bs.base, clients)
				if mode == "tenant-policy-distinct" {
					pushExamplePolicy(b, bs)
				}
				path := "/v1/tenants/acme/events"
				bodies := make([][]byte, len(payloads))
				for i, p := range payloads {
					bodies[i] = fmt.Appendf(nil, `{"entity":"acme:order:%d","scope":"shop","kind":"1:1","payload":%s}`, i, p)
				}
				do := func(c, i int) error {
					st, out, err := conns[c].post(path, bs.key, bodies[i%len(bodies)])
					if err == nil && st != http.StatusCreated {
						err = fmt.Errorf("POST %s: %d %s", path, st, out)
					}
					return err
				}
				warm := 2 * clients // warm up connections
				if mode == "policy" {
					warm = len(bodies) // and every decision, so that all are cached
				}
				for i := 0; i < warm; i++ {
					if err := do(i%clients, i); err != nil {
						b.Fatal(err)
					}
				}
				hammer(b, clients, b.N, do)
			})
		}
	}
}

// pushExamplePolicy makes examples/policies the tenant's bundle (its key
// must carry the admin role).
func pushExamplePolicy(b *testing.B, bs *benchServer) {
	var files []string
	for _, name := range []string{"write.rego", "data.json"} {
		src, err := os.ReadFile(filepath.Join("..", "examples", "policies", name))
		if err != nil {
			b.Fatal(err)
		}
		files = append(files, name, string(src))
	}
	req, _ := http.NewRequest("PUT", bs.base+"/v1/tenants/acme/policy", bytes.NewReader(tarGz(b, files...)))
	req.Header.Set("Authorization", "Bearer "+bs.key)
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("pushing the tenant's bundle: %d %s", resp.StatusCode, out)
	}
}

// BenchmarkHTTPBatch measures durable atomic batches of 100 events over
// loopback HTTP from 8 keep-alive clients (events/s = 100 × req/s):
// ungated, and judged by the example policy as the tenant's bundle (the
// items of a batch in one round trip to the policy sandbox).
//
//	go test -run '^$' -bench HTTPBatch -benchtime 1500x ./server/
func BenchmarkHTTPBatch(b *testing.B) {
	for _, mode := range []string{"ungated", "tenant-policy"} {
		b.Run(mode, func(b *testing.B) { benchHTTPBatch(b, mode == "tenant-policy") })
	}
}

func benchHTTPBatch(b *testing.B, tenantPolicy bool) {
	bs := startBenchServerRoles(b, server.DefaultConfig(), "acme", control.Settings{}, control.RoleWriter, control.RoleAdmin, "clerk")
	if tenantPolicy {
		pushExamplePolicy(b, bs)
	}
	const clients, size = 8, 100
	conns := rawClients(b, bs.base, clients)
	path := "/v1/tenants/acme/batches"
	payloads := orderPayloads(1024)
	bodies := make([][]byte, 64)
	for i := range bodies {
		body := []byte(`{"events":[`)
		for j := 0; j < size; j++ {
			if j > 0 {
				body = append(body, ',')
			}
			body = fmt.Appendf(body, `{"entity":"acme:order:%d","scope":"shop","kind":"1:1","payload":%s}`, i, payloads[(i*size+j)%len(payloads)])
		}
		bodies[i] = append(body, "]}"...)
	}
	hammer(b, clients, b.N, func(c, i int) error {
		st, out, err := conns[c].post(path, bs.key, bodies[i%len(bodies)])
		if err == nil && st != http.StatusCreated {
			err = fmt.Errorf("POST %s: %d %s", path, st, out)
		}
		return err
	})
	b.ReportMetric(float64(size)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
