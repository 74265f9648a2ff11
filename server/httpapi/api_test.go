package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server"
)

func TestAppendQueryAndReadBack(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	r := e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:1")), 201)
	rec := r.json(t)
	if rec["global_sequence"].(float64) != 0 || rec["clock"].(float64) != 0 || rec["deduplicated"] != false {
		t.Fatalf("receipt %s", r.body)
	}
	id := rec["id"].(string)
	// Idempotency-Key header: a retry returns the original receipt, 200.
	first := e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:2"), "Idempotency-Key", "k-1"), 201)
	again := e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:2"), "Idempotency-Key", "k-1"), 200)
	if first.json(t)["id"] != again.json(t)["id"] || again.json(t)["deduplicated"] != true {
		t.Fatalf("retry %s vs %s", first.body, again.body)
	}
	// Same key, different event.
	if r := e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:3"), "Idempotency-Key", "k-1"); r.status != 409 || r.code() != "IDEMPOTENCY_MISMATCH" {
		t.Fatalf("reused key: %d %s", r.status, r.body)
	}
	// Compare-and-set.
	b := appendBody("order:1")
	b["expected_clock"] = 5
	r = e.req("POST", "/v1/tenants/acme/events", k["writer"], b)
	if r.status != 409 || r.code() != "CONFLICT" || r.json(t)["expected"].(float64) != 5 || r.json(t)["actual"].(float64) != 0 {
		t.Fatalf("conflict: %d %s", r.status, r.body)
	}
	b["expected_clock"] = 0
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], b), 201)
	// Batch with cause_item.
	batch := map[string]any{"events": []any{appendBody("pay:1"), map[string]any{"entity": "pay:1", "scope": "shop", "kind": 4098, "payload": true, "cause_item": 0}}}
	br := e.must(e.req("POST", "/v1/tenants/acme/batches", k["writer"], batch), 201)
	recs := br.json(t)["receipts"].([]any)
	if len(recs) != 2 {
		t.Fatalf("batch %s", br.body)
	}
	second := recs[1].(map[string]any)["id"].(string)
	// A batch's Idempotency-Key names its items <key>/<i>: its own limit
	// says so, naming the header.
	if r := e.req("POST", "/v1/tenants/acme/batches", k["writer"], batch, "Idempotency-Key", strings.Repeat("x", 255)); r.status != 400 ||
		r.json(t)["field"] != "Idempotency-Key" || !strings.Contains(string(r.body), "for 2 events it may be at most 254 bytes; it is 255") {
		t.Fatalf("a batch key of 255 bytes: %d %s", r.status, r.body)
	}

	// Reads.
	ev := e.must(e.req("GET", "/v1/tenants/acme/events/"+id, k["reader"], nil), 200).json(t)
	if ev["entity"] != "order:1" || ev["kind"] != "1:1" || ev["payload"].(map[string]any)["n"].(float64) != 1 {
		t.Fatalf("event %v", ev)
	}
	anc := e.must(e.req("GET", "/v1/tenants/acme/events/"+second+"/ancestors", k["reader"], nil), 200).json(t)["events"].([]any)
	if len(anc) != 2 {
		t.Fatalf("ancestors %v", anc)
	}
	st := e.must(e.req("GET", "/v1/tenants/acme/entities/order:1/events?after_clock=0", k["reader"], nil), 200).json(t)["events"].([]any)
	if len(st) != 1 || st[0].(map[string]any)["clock"].(float64) != 1 {
		t.Fatalf("stream %v", st)
	}
	// Paging: 5 events, pages of 2.
	var seen []float64
	after := ""
	for i := 0; i < 10; i++ {
		p := e.must(e.req("GET", "/v1/tenants/acme/events?limit=2"+after, k["reader"], nil), 200).json(t)
		for _, x := range p["events"].([]any) {
			seen = append(seen, x.(map[string]any)["global_sequence"].(float64))
		}
		if p["next_after"] == nil {
			break
		}
		after = "&after=" + jsonNum(p["next_after"])
	}
	if len(seen) != 5 {
		t.Fatalf("paged %v", seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("not in order: %v", seen)
		}
	}
	// Region filter.
	p := e.must(e.req("GET", "/v1/tenants/acme/events?entity=pay:&kind=1:2", k["reader"], nil), 200).json(t)
	if len(p["events"].([]any)) != 1 {
		t.Fatalf("region query %v", p)
	}
	// NDJSON.
	nd := e.must(e.req("GET", "/v1/tenants/acme/events", k["reader"], nil, "Accept", "application/x-ndjson"), 200)
	lines := strings.Split(strings.TrimSpace(string(nd.body)), "\n")
	if len(lines) != 6 || lines[5] != `{"next_after":null}` {
		t.Fatalf("ndjson %q", lines)
	}
	// Export, then import into another tenant.
	ex := e.must(e.req("GET", "/v1/tenants/acme/export", k["admin"], nil), 200)
	k2 := e.tenant("beta")
	im := e.must(e.req("POST", "/v1/tenants/beta/import", k2["admin"], ex.body, "Content-Type", "application/x-ndjson"), 200).json(t)
	if im["imported"].(float64) != 5 {
		t.Fatalf("import %v", im)
	}
	if got := e.count("beta", k2["admin"]); got != 5 {
		t.Fatalf("beta holds %v events", got)
	}
	v := e.must(e.req("POST", "/v1/tenants/acme/verify", k["admin"], nil), 200).json(t)
	if v["ok"] != true {
		t.Fatalf("verify %v", v)
	}
}

func jsonNum(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestCursorsDefinePollCommit(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	for i := 0; i < 3; i++ {
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:1")), 201)
	}
	def := map[string]any{"region": map[string]any{"entity": "order:"}}
	e.must(e.req("PUT", "/v1/tenants/acme/cursors/c1", k["writer"], def), 201)
	e.must(e.req("PUT", "/v1/tenants/acme/cursors/c1", k["writer"], def), 200)
	if r := e.req("PUT", "/v1/tenants/acme/cursors/c1", k["writer"], map[string]any{"region": map[string]any{"scope": "x"}}); r.status != 409 {
		t.Fatalf("redefinition: %d", r.status)
	}
	p := e.must(e.req("GET", "/v1/tenants/acme/cursors/c1/events?limit=2", k["reader"], nil), 200).json(t)
	if len(p["events"].([]any)) != 2 {
		t.Fatalf("poll %v", p)
	}
	e.must(e.req("POST", "/v1/tenants/acme/cursors/c1/commit", k["writer"], map[string]any{"position": 2}), 200)
	if r := e.req("POST", "/v1/tenants/acme/cursors/c1/commit", k["writer"], map[string]any{"position": 1}); r.status != 409 {
		t.Fatalf("backwards commit: %d %s", r.status, r.body)
	}
	if r := e.req("POST", "/v1/tenants/acme/cursors/c1/commit", k["writer"], map[string]any{"position": 4}); r.status != 400 {
		t.Fatalf("commit past the end: %d %s", r.status, r.body)
	}
	p = e.must(e.req("GET", "/v1/tenants/acme/cursors/c1/events", k["reader"], nil), 200).json(t)
	if evs := p["events"].([]any); len(evs) != 1 || evs[0].(map[string]any)["global_sequence"].(float64) != 2 {
		t.Fatalf("poll after commit %v", p)
	}
	l := e.must(e.req("GET", "/v1/tenants/acme/cursors", k["reader"], nil), 200).json(t)["cursors"].([]any)
	if len(l) != 1 || l[0].(map[string]any)["committed"].(float64) != 2 || l[0].(map[string]any)["lag"].(float64) != 1 {
		t.Fatalf("list %v", l)
	}
	e.must(e.req("DELETE", "/v1/tenants/acme/cursors/c1", k["writer"], nil), 204)
	e.must(e.req("GET", "/v1/tenants/acme/cursors/c1/events", k["reader"], nil), 404)
	// Defined again, it starts from the beginning.
	e.must(e.req("PUT", "/v1/tenants/acme/cursors/c1", k["writer"], def), 201)
	p = e.must(e.req("GET", "/v1/tenants/acme/cursors/c1/events", k["reader"], nil), 200).json(t)
	if len(p["events"].([]any)) != 3 {
		t.Fatalf("redefined cursor %v", p)
	}
}

func TestAdminLifecycle(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:1")), 201)
	e.must(e.req("POST", "/v1/admin/tenants", opToken, map[string]any{"id": "acme"}), 409)
	if r := e.req("POST", "/v1/admin/tenants", opToken, map[string]any{"id": "Bad_Id"}); r.status != 400 || r.code() != "INVALID_REQUEST" {
		t.Fatalf("bad id: %d %s", r.status, r.body)
	}
	l := e.must(e.req("GET", "/v1/admin/tenants", opToken, nil), 200).json(t)["tenants"].([]any)
	if len(l) != 1 {
		t.Fatalf("tenants %v", l)
	}
	g := e.must(e.req("GET", "/v1/admin/tenants/acme", opToken, nil), 200).json(t)
	if g["usage"].(map[string]any)["events"].(float64) != 1 {
		t.Fatalf("tenant %v", g)
	}
	snap := e.must(e.req("POST", "/v1/admin/tenants/acme/snapshot", opToken, nil), 200).json(t)
	if !strings.HasPrefix(snap["backup"].(string), "acme/") || strings.Contains(string(mustJSON(snap)), e.srvRoot()) {
		t.Fatalf("snapshot %v", snap)
	}
	// Keys: list never shows a secret; a revoked key stops at once.
	keys := e.must(e.req("GET", "/v1/admin/tenants/acme/keys", opToken, nil), 200)
	if strings.Contains(string(keys.body), k["writer"]) || strings.Contains(string(keys.body), "hash") {
		t.Fatalf("key list shows secrets: %s", keys.body)
	}
	e.must(e.req("DELETE", "/v1/tenants/acme/keys/"+k["writer_id"], k["admin"], nil), 204)
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:1")), 401)
	// Quotas and settings.
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"max_batch_events": 2, "events_per_second": -1}), 200) // the rate test emptied the bucket
	if r := e.req("PUT", "/v1/admin/tenants/acme/settings", opToken, map[string]any{"sync": "sometimes"}); r.status != 400 {
		t.Fatalf("bad settings: %d", r.status)
	}
	e.must(e.req("PUT", "/v1/admin/tenants/acme/settings", opToken, map[string]any{"sync": "buffered"}), 200)
	// Delete needs confirmation.
	if r := e.req("DELETE", "/v1/admin/tenants/acme", opToken, nil); r.status != 400 {
		t.Fatalf("delete without confirm: %d", r.status)
	}
	e.must(e.req("DELETE", "/v1/admin/tenants/acme?confirm=acme", opToken, nil), 204)
	e.must(e.req("GET", "/v1/admin/tenants/acme", opToken, nil), 404)
	e.must(e.req("GET", "/v1/tenants/acme/stats", k["admin"], nil), 401)
	// Created again: empty.
	k = e.tenant("acme")
	if n := e.count("acme", k["admin"]); n != 0 {
		t.Fatalf("recreated tenant holds %v events", n)
	}
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

func (e *env) srvRoot() string { return "/tmp/" }

func TestQuotaRateLimited(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"events_per_second": 0.01, "events_burst": 2}), 200)
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("o:1")), 201)
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("o:1")), 201)
	r := e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("o:1"))
	if r.status != 429 || r.code() != "QUOTA_EXCEEDED" || r.header.Get("Retry-After") == "" || r.json(t)["quota"] != "events_per_second" {
		t.Fatalf("over the rate: %d %v %s", r.status, r.header, r.body)
	}
	if n := e.count("acme", k["admin"]); n != 2 {
		t.Fatalf("%v events stored", n)
	}
	// Batch size quota: exactly the limit accepted, one more refused.
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"max_batch_events": 2, "events_per_second": -1}), 200) // the rate test emptied the bucket
	two := map[string]any{"events": []any{appendBody("b:1"), appendBody("b:2")}}
	three := map[string]any{"events": []any{appendBody("b:1"), appendBody("b:2"), appendBody("b:3")}}
	if r := e.req("POST", "/v1/tenants/acme/batches", k["writer"], three); r.status != 413 || r.json(t)["quota"] != "max_batch_events" {
		t.Fatalf("batch over quota: %d %s", r.status, r.body)
	}
	e.must(e.req("POST", "/v1/tenants/acme/batches", k["writer"], two), 201)
	// Payload quota boundary.
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"max_payload_bytes": 10, "events_per_second": -1}), 200)
	ok := map[string]any{"entity": "p:1", "scope": "s", "kind": "1:1", "payload": "12345678"} // "12345678" is 10 bytes
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], ok), 201)
	ok["payload"] = "123456789"
	if r := e.req("POST", "/v1/tenants/acme/events", k["writer"], ok); r.status != 413 || r.json(t)["quota"] != "max_payload_bytes" {
		t.Fatalf("payload over quota: %d %s", r.status, r.body)
	}
	// Metrics count the rejections.
	m := e.must(e.req("GET", "/metrics", opToken, nil), 200)
	if !strings.Contains(string(m.body), `batpak_quota_rejections_total{quota="events_per_second",tenant="acme"} 1`) {
		t.Fatalf("metrics lack the rejection:\n%s", grep(string(m.body), "quota"))
	}
}

func grep(s, w string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, w) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestPanicBecomes500AndServerLives(t *testing.T) {
	e := start(t, nil)
	h := e.srv.API().Wrap("GET /boom", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	mux := http.NewServeMux()
	mux.Handle("/boom", h)
	mux.Handle("/", e.srv.Handler())
	// Serve the wrapped handler on a listener of its own.
	e2 := serveHandler(t, mux)
	res, err := http.Get(e2 + "/boom")
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	_ = json.NewDecoder(res.Body).Decode(&p)
	res.Body.Close()
	id := res.Header.Get("X-Request-Id")
	if res.StatusCode != 500 || p["code"] != "INTERNAL" || p["request_id"] != id || id == "" {
		t.Fatalf("panic answered %d %v", res.StatusCode, p)
	}
	if !strings.Contains(e.logs.String(), "handler panic") || !strings.Contains(e.logs.String(), id) {
		t.Fatalf("no log line with the request id:\n%s", e.logs.String())
	}
	res, err = http.Get(e2 + "/healthz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("after the panic: %v %v", res, err)
	}
	res.Body.Close()
}

func TestRequestIDEchoedWhenSane(t *testing.T) {
	e := start(t, nil)
	r := e.req("GET", "/healthz", "", nil, "X-Request-Id", "abc-123")
	if r.header.Get("X-Request-Id") != "abc-123" {
		t.Fatalf("sane id not echoed: %q", r.header.Get("X-Request-Id"))
	}
	r = e.req("GET", "/healthz", "", nil, "X-Request-Id", "bad id\twith spaces")
	if got := r.header.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Fatalf("insane id kept: %q", got)
	}
	if r := e.req("GET", "/nope", "", nil); r.status != 404 || r.code() != "NOT_FOUND" {
		t.Fatalf("unknown route %d %s", r.status, r.body)
	}
	if r := e.req("PATCH", "/healthz", "", nil); r.status != 405 || r.header.Get("Allow") == "" {
		t.Fatalf("wrong method %d %v", r.status, r.header)
	}
	if !strings.Contains(e.logs.String(), "request_id=abc-123") {
		t.Fatalf("access log lacks the request:\n%s", e.logs.String())
	}
}

// Every answer says X-Content-Type-Options: nosniff: a route's, an
// error, an unknown route, a method not allowed, an event stream.
func TestEveryAnswerSaysNoSniff(t *testing.T) {
	e := start(t, nil)
	keys := e.tenant("acme")
	for _, tc := range []struct {
		method, path, token string
		status              int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/v1/tenants/acme/stats", keys["reader"], 200},
		{"GET", "/v1/tenants/acme/stats", "", 401},
		{"GET", "/v1/tenants/acme/stats", opToken, 403},
		{"GET", "/nope", "", 404},
		{"PATCH", "/healthz", "", 405},
		{"GET", "/v1/admin/tenants", opToken, 200},
	} {
		r := e.req(tc.method, tc.path, tc.token, nil)
		if r.status != tc.status || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s %s: %d, X-Content-Type-Options %q; want %d, nosniff", tc.method, tc.path, r.status, r.header.Get("X-Content-Type-Options"), tc.status)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.base+"/v1/tenants/acme/subscribe", nil)
	req.Header.Set("Authorization", "Bearer "+keys["reader"])
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("an event stream: %d, X-Content-Type-Options %q", res.StatusCode, res.Header.Get("X-Content-Type-Options"))
	}
}

func TestNonLoopbackNeedsTLS(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.Root = t.TempDir()
	cfg.Listen = "0.0.0.0:0"
	if _, err := server.New(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "allow_insecure_remote") {
		t.Fatalf("non-loopback without TLS: %v", err)
	}
}
