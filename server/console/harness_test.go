package console_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/console"
)

const opToken = "bpko_testtesttesttesttesttesttesttesttesttesttesttesttest"

// env is a batpak server with its console on a real loopback listener.
type env struct {
	t    *testing.T
	srv  *server.Server
	ts   *servertest.Server
	base string
}

// stop stops the server (a node going down, say) and waits for it.
func (e *env) stop() { _ = e.ts.Stop() }

func start(t *testing.T) *env {
	t.Helper()
	return startWith(t, nil)
}

// startWith is start with configure (if not nil) applied to the
// server's configuration first.
func startWith(t *testing.T, configure func(*server.Config)) *env {
	t.Helper()
	cfg := servertest.Config(t)
	cfg.OperatorToken = opToken
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Stderr = &testenv.Buffer{}
	if configure != nil {
		configure(&cfg)
	}
	ts := servertest.Start(t, cfg)
	return &env{t: t, srv: ts.Server, ts: ts, base: ts.URL}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %d is not a JSON object: %s", r.status, r.body)
	}
	return m
}

// do sends a request with client c (nil: no cookies); hdr are name, value
// pairs.
func (e *env) do(c *http.Client, method, path string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, ok := body.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(body); err != nil {
				e.t.Fatal(err)
			}
		}
		rd = bytes.NewReader(b)
	}
	r, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	res, err := c.Do(r)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}
}

func (e *env) must(r resp, status int) resp {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	return r
}

// tenant creates a tenant and returns an admin key of it.
func (e *env) tenant(id string) string {
	e.t.Helper()
	e.must(e.do(nil, "POST", "/v1/admin/tenants", map[string]any{"id": id}, "Authorization", "Bearer "+opToken), 201)
	r := e.must(e.do(nil, "POST", "/v1/admin/tenants/"+id+"/keys", map[string]any{"roles": []string{"admin"}, "name": "console"},
		"Authorization", "Bearer "+opToken), 201)
	return r.json(e.t)["key"].(string)
}

// appendEvent writes one event as key and returns its id.
func (e *env) appendEvent(tenant, key string, ev map[string]any) string {
	e.t.Helper()
	r := e.must(e.do(nil, "POST", "/v1/tenants/"+tenant+"/events", ev, "Authorization", "Bearer "+key), 201)
	return r.json(e.t)["id"].(string)
}

// demo writes the demo workload (order placed → payment captured → order
// shipped, each caused by the one before, one correlation per order) and
// returns the ids of each order's three events.
func (e *env) demo(tenant, key string, orders int) [][3]string {
	e.t.Helper()
	var out [][3]string
	for i := 1; i <= orders; i++ {
		n := itoa(i)
		corr := "00000000-0000-4000-8000-" + strings.Repeat("0", 12-len(n)) + n
		placed := e.appendEvent(tenant, key, map[string]any{"entity": "order:" + n, "scope": "shop", "kind": "1:1",
			"payload": map[string]any{"order": "order:" + n, "total": 10 * i}, "correlation_id": corr})
		paid := e.appendEvent(tenant, key, map[string]any{"entity": "payment:" + n, "scope": "shop", "kind": "2:1",
			"payload": map[string]any{"order": "order:" + n, "amount": 10 * i}, "causation_id": placed, "correlation_id": corr})
		shipped := e.appendEvent(tenant, key, map[string]any{"entity": "order:" + n, "scope": "shop", "kind": "1:2",
			"payload": map[string]any{"order": "order:" + n, "carrier": "post"}, "causation_id": paid, "correlation_id": corr})
		out = append(out, [3]string{placed, paid, shipped})
	}
	return out
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// session signs in with credential and returns a client holding the
// cookie and the session's CSRF token.
func (e *env) session(credential string) (*http.Client, string) {
	e.t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	r := e.must(e.do(c, "POST", console.Prefix+"/session", map[string]any{"credential": credential}, "Origin", e.base), 200)
	return c, r.json(e.t)["csrf_token"].(string)
}

// policyAndPlugins gives tenant a policy bundle refusing entities under
// "secret:" (and one write it refused), a healthy projection plugin
// "count", a plugin "trap" quarantined after two faults, and a hosted
// worker "echoer" (handler plugin "echo") reacting to entities under
// "job:" (one so far); it returns the bundle's revision.
func (e *env) policyAndPlugins(tenant, key string) string {
	e.t.Helper()
	auth := []string{"Authorization", "Bearer " + key}
	rev := e.noSecrets(tenant, key)
	for _, p := range []struct {
		name, file string
		limits     map[string]any
		kind       string
	}{{"count", "counter", nil, "projection"}, {"trap", "trap", map[string]any{"max_faults": 2}, "projection"}, {"echo", "handler-flaky", nil, "handler"}} {
		wasm, err := os.ReadFile(filepath.Join("..", "..", "plugins", "testdata", p.file+".wasm"))
		if err != nil {
			e.t.Fatal(err)
		}
		sum := sha256.Sum256(wasm)
		m := map[string]any{"name": p.name, "version": "1.0.0", "kind": p.kind, "sha256": hex.EncodeToString(sum[:])}
		if p.limits != nil {
			m["limits"] = p.limits
		}
		r := e.do(nil, "POST", "/v1/tenants/"+tenant+"/plugins", map[string]any{"manifest": m, "module": wasm, "activate": true}, auth...)
		if r.status/100 != 2 {
			e.t.Fatalf("push plugin %s: %d %s", p.name, r.status, r.body)
		}
	}
	e.must(e.do(nil, "GET", "/v1/tenants/"+tenant+"/projections/count/order:1", nil, auth...), 200)
	for i := 0; i < 3; i++ {
		e.do(nil, "GET", "/v1/tenants/"+tenant+"/projections/trap/order:1", nil, auth...)
	}
	e.must(e.do(nil, "PUT", "/v1/tenants/"+tenant+"/workers/echoer", map[string]any{"plugin": "echo", "region": map[string]any{"entity": "job:"},
		"restart": map[string]any{"backoff_min_ms": 10}}, auth...), 200)
	e.appendEvent(tenant, key, map[string]any{"entity": "job:1", "scope": "work", "kind": "4:1", "payload": map[string]any{}})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r := e.must(e.do(nil, "GET", "/v1/tenants/"+tenant+"/entities/echo/events", nil, auth...), 200).json(e.t)
		if len(r["events"].([]any)) == 1 {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatal("the hosted worker did not react within 20s")
		}
	}
	return rev
}

// noSecrets gives tenant a policy bundle refusing entities under "secret:"
// and has it refuse one write; it returns the bundle's revision.
func (e *env) noSecrets(tenant, key string) string {
	e.t.Helper()
	auth := []string{"Authorization", "Bearer " + key}
	bundle := tarGz(e.t, "policy.rego", `package batpak.write

deny contains {"code": "NO_SECRETS", "message": "entities under secret: are off limits"} if {
	startswith(input.event.entity, "secret:")
}
`)
	e.must(e.do(nil, "PUT", "/v1/tenants/"+tenant+"/policy", bundle, append(auth, "Content-Type", "application/gzip")...), 200)
	if r := e.do(nil, "POST", "/v1/tenants/"+tenant+"/events", map[string]any{"entity": "secret:1", "scope": "s", "kind": "1:1", "payload": 1}, auth...); r.status != 403 {
		e.t.Fatalf("a write the policy refuses: %d %s", r.status, r.body)
	}
	sum := sha256.Sum256(bundle)
	return hex.EncodeToString(sum[:])
}

// tarGz is a policy bundle of name, content pairs.
func tarGz(t *testing.T, files ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for i := 0; i+1 < len(files); i += 2 {
		if err := tw.WriteHeader(&tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(files[i+1]))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
