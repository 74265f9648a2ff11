package httpapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/server"
)

const opToken = "bpko_testtesttesttesttesttesttesttesttesttesttesttesttest"

// env is a server on a real loopback listener.
type env struct {
	t    *testing.T
	srv  *server.Server
	ts   *servertest.Server
	base string
	logs *testenv.Buffer // the server's stderr: its log and access log
}

func start(t *testing.T, mod func(*server.Config)) *env {
	t.Helper()
	cfg := servertest.Config(t)
	cfg.AccessLog = server.DefaultConfig().AccessLog
	cfg.OperatorToken = opToken
	cfg.ShutdownTimeout = 5 * time.Second
	logs := &testenv.Buffer{}
	cfg.Stderr = logs
	if mod != nil {
		mod(&cfg)
	}
	ts := servertest.Start(t, cfg)
	return &env{t: t, srv: ts.Server, ts: ts, base: ts.URL, logs: logs}
}

// shutdown stops the server and returns what its Serve returned.
func (e *env) shutdown() error { return e.ts.Stop() }

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

// code is the problem code of an error response ("" for success).
func (r resp) code() string {
	var m map[string]any
	_ = json.Unmarshal(r.body, &m)
	c, _ := m["code"].(string)
	return c
}

// req sends a request; body is []byte/string (sent as is, Content-Type
// from hdr or application/json) or any other value (JSON-encoded).
func (e *env) req(method, path, token string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/json"
	case string:
		rd, ctype = strings.NewReader(b), "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	r, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			r.Header.Del(hdr[i])
		} else {
			r.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.Header.Get("X-Request-Id") == "" {
		e.t.Errorf("%s %s: no X-Request-Id", method, path)
	}
	if res.StatusCode >= 400 && !strings.HasPrefix(res.Header.Get("Content-Type"), "application/problem+json") {
		e.t.Errorf("%s %s: %d with Content-Type %q, want problem+json: %s", method, path, res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	return resp{res.StatusCode, res.Header, b}
}

// sendRaw sends r as it is (for what req cannot build: a header given
// twice, a body sent chunked) and returns the status and body.
func sendRaw(t *testing.T, r *http.Request) (int, []byte) {
	t.Helper()
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// must asserts the status.
func (e *env) must(r resp, status int) resp {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	return r
}

// tenant creates a tenant and returns keys by role.
func (e *env) tenant(id string) map[string]string {
	e.t.Helper()
	e.must(e.req("POST", "/v1/admin/tenants", opToken, map[string]any{"id": id}), 201)
	keys := map[string]string{}
	for _, role := range []string{"reader", "writer", "admin"} {
		r := e.must(e.req("POST", "/v1/admin/tenants/"+id+"/keys", opToken, map[string]any{"roles": []string{role}, "name": role}), 201)
		keys[role] = r.json(e.t)["key"].(string)
		keys[role+"_id"] = r.json(e.t)["id"].(string)
	}
	return keys
}

// count is how many events tenant id's store holds (read as its admin).
func (e *env) count(id, adminKey string) float64 {
	e.t.Helper()
	r := e.must(e.req("GET", "/v1/tenants/"+id+"/stats", adminKey, nil), 200)
	return r.json(e.t)["events"].(float64)
}

func appendBody(entity string) map[string]any {
	return map[string]any{"entity": entity, "scope": "shop", "kind": "1:1", "payload": map[string]any{"n": 1}}
}
