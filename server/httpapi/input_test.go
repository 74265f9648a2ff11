package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server"
)

// TestBadInputOnWriteRoutes: malformed and deeply nested JSON, bodies over
// the limit, wrong content types, invalid UTF-8, bad kinds and coordinates
// are refused with problem+json 4xx on every write route, and nothing is
// written.
func TestBadInputOnWriteRoutes(t *testing.T) {
	const maxBody = 64 << 10
	const depth = 16
	e := start(t, func(c *server.Config) { c.MaxBodyBytes = maxBody; c.MaxJSONDepth = depth })
	k := e.tenant("acme")
	before := e.snapshotOf("acme", k["admin"])
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	huge := `{"entity":"a","scope":"s","kind":"1:1","payload":"` + strings.Repeat("x", maxBody) + `"}`
	type tc struct {
		name, body, ctype string
		status            int
		code              string
	}
	common := []tc{
		{"malformed", `{"entity":`, "application/json", 400, "INVALID_JSON"},
		{"deep", `{"payload":` + deep + `}`, "application/json", 400, "INVALID_JSON"},
		{"huge", huge, "application/json", 413, "PAYLOAD_TOO_LARGE"},
		{"text/plain", `{}`, "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"no content type", `{}`, "", 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"latin1", `{}`, "application/json; charset=latin1", 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"invalid utf8", "{\"entity\":\"\xff\xfe\"}", "application/json", 400, "INVALID_JSON"},
		{"unknown field", `{"colour":1}`, "application/json", 400, "INVALID_REQUEST"},
		{"two values", `{} {}`, "application/json", 400, "INVALID_JSON"},
	}
	routes := map[string][]tc{
		"POST /v1/tenants/acme/events": append(common,
			tc{"bad kind", `{"entity":"a","scope":"s","kind":"0:1","payload":{}}`, "application/json", 400, "INVALID_KIND"},
			tc{"kind text", `{"entity":"a","scope":"s","kind":"order","payload":{}}`, "application/json", 400, "INVALID_KIND"},
			tc{"empty entity", `{"entity":"","scope":"s","kind":"1:1","payload":{}}`, "application/json", 400, "INVALID_COORDINATE"},
			tc{"nul scope", `{"entity":"a","scope":"a\u0000b","kind":"1:1","payload":{}}`, "application/json", 400, "INVALID_COORDINATE"},
			tc{"reserved entity", `{"entity":"batpak:x","scope":"s","kind":"1:1","payload":{}}`, "application/json", 400, ""},
			tc{"payload too deep", `{"entity":"a","scope":"s","kind":"1:1","payload":` + strings.Repeat("[", depth+1) + strings.Repeat("]", depth+1) + `}`, "application/json", 400, "INVALID_JSON"},
			tc{"duplicate key payload", `{"entity":"a","scope":"s","kind":"1:1","payload":{"a":1,"a":2}}`, "application/json", 400, "INVALID_JSON"},
			tc{"entity named twice", `{"entity":"a","entity":"b","scope":"s","kind":"1:1","payload":{}}`, "application/json", 400, "INVALID_JSON"},
			tc{"entity named twice but for case", `{"entity":"a","ENTITY":"b","scope":"s","kind":"1:1","payload":{}}`, "application/json", 400, "INVALID_JSON"},
		),
		"POST /v1/tenants/acme/batches": append(common,
			tc{"empty batch", `{"events":[]}`, "application/json", 400, "INVALID_REQUEST"},
			tc{"events named twice", `{"events":[{"entity":"a","scope":"s","kind":"1:1","payload":1}],"events":[{"entity":"b","scope":"s","kind":"1:1","payload":1}]}`, "application/json", 400, "INVALID_JSON"},
			tc{"item scope named twice", `{"events":[{"entity":"a","scope":"s","scope":"t","kind":"1:1","payload":1}]}`, "application/json", 400, "INVALID_JSON"},
			tc{"item scope named twice but for case", `{"events":[{"entity":"a","scope":"s","Scope":"t","kind":"1:1","payload":1}]}`, "application/json", 400, "INVALID_JSON"},
			tc{"bad item kind", `{"events":[{"entity":"a","scope":"s","kind":"1:1","payload":1},{"entity":"a","scope":"s","kind":"x","payload":1}]}`, "application/json", 400, "INVALID_KIND"},
			tc{"forward cause", `{"events":[{"entity":"a","scope":"s","kind":"1:1","payload":1,"cause_item":1},{"entity":"a","scope":"s","kind":"1:1","payload":1}]}`, "application/json", 400, "INVALID_REQUEST"},
		),
		"PUT /v1/tenants/acme/cursors/c1": append(common,
			tc{"bad region kind", `{"region":{"kind":"nope"}}`, "application/json", 400, "INVALID_KIND"},
			tc{"bad category", `{"region":{"category":99}}`, "application/json", 400, "INVALID_KIND"},
		),
		"POST /v1/tenants/acme/keys": append(common,
			tc{"bad role", `{"roles":["root"]}`, "application/json", 400, "INVALID_REQUEST"},
		),
		"POST /v1/tenants/acme/import": {
			{"json type", `{}`, "application/json", 415, "UNSUPPORTED_MEDIA_TYPE"},
			{"malformed line", "{\"id\":\n", "application/x-ndjson", 400, ""},
			{"huge", huge, "application/x-ndjson", 413, "PAYLOAD_TOO_LARGE"},
		},
	}
	for route, cases := range routes {
		method, path, _ := strings.Cut(route, " ")
		for _, c := range cases {
			r := e.req(method, path, k["admin"], c.body, "Content-Type", c.ctype)
			if r.status != c.status || (c.code != "" && r.code() != c.code) {
				t.Errorf("%s %s: %d %s, want %d %s", route, c.name, r.status, r.body, c.status, c.code)
			}
		}
	}
	if after := e.snapshotOf("acme", k["admin"]); after != before {
		t.Fatalf("bad input changed the tenant:\n%s\n%s", before, after)
	}
}

// TestBodyAndDepthBoundaries: exactly the body limit and the depth limit
// are accepted, one more refused.
func TestBodyAndDepthBoundaries(t *testing.T) {
	const maxBody = 4 << 10
	const depth = 8
	e := start(t, func(c *server.Config) { c.MaxBodyBytes = maxBody; c.MaxJSONDepth = depth })
	k := e.tenant("acme")
	body := func(n int) string {
		head := `{"entity":"a","scope":"s","kind":"1:1","payload":"`
		return head + strings.Repeat("x", n-len(head)-2) + `"}`
	}
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], body(maxBody)), 201)
	if r := e.req("POST", "/v1/tenants/acme/events", k["writer"], body(maxBody+1)); r.status != 413 || r.json(t)["limit"].(float64) != maxBody {
		t.Fatalf("one byte over: %d %s", r.status, r.body)
	}
	nest := func(d int) string {
		return `{"entity":"a","scope":"s","kind":"1:1","payload":` + strings.Repeat("[", d) + strings.Repeat("]", d) + `}`
	}
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], nest(depth)), 201)
	if r := e.req("POST", "/v1/tenants/acme/events", k["writer"], nest(depth+1)); r.status != 400 || r.code() != "INVALID_JSON" {
		t.Fatalf("one level deeper: %d %s", r.status, r.body)
	}
	if n := e.count("acme", k["admin"]); n != 2 {
		t.Fatalf("%v events", n)
	}
}

// TestUnknownQueryParameters: a query parameter a route does not take is
// refused with 400 naming it (a misspelt filter would otherwise be ignored
// and the whole log answered), the ones the OpenAPI document lists are
// taken, and a write named with one is not made.
func TestUnknownQueryParameters(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], `{"entity":"order:1","scope":"s","kind":"1:1","payload":{}}`), 201)
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], `{"entity":"user:1","scope":"s","kind":"1:1","payload":{}}`), 201)
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], `{"entity":"order:3","scope":"s","kind":"1:1","payload":{}}`), 201)

	r := e.req("GET", "/v1/tenants/acme/events?entity_prefix=order:", k["reader"], nil)
	if r.status != 400 || r.code() != "INVALID_REQUEST" || !strings.Contains(string(r.body), `"field":"entity_prefix"`) ||
		!strings.Contains(string(r.body), `did you mean \"entity\"`) {
		t.Fatalf("misspelt filter: %d %s", r.status, r.body)
	}
	// Every parameter the route takes, the cluster's two included (a
	// single server ignores them).
	r = e.must(e.req("GET", "/v1/tenants/acme/events?entity=order:&scope=s&kind=1:1&after=0&limit=5&consistency=local&min_seq=0", k["reader"], nil), 200)
	if strings.Contains(string(r.body), "user:1") || strings.Contains(string(r.body), "order:1") || !strings.Contains(string(r.body), "order:3") {
		t.Fatalf("filtered read: %s", r.body)
	}
	// A route that takes no parameter says so; a write with a stray one
	// is not made.
	r = e.req("POST", "/v1/tenants/acme/events?dry_run=1", k["writer"], `{"entity":"order:2","scope":"s","kind":"1:1","payload":{}}`)
	if r.status != 400 || !strings.Contains(string(r.body), "takes") {
		t.Fatalf("write with an unknown parameter: %d %s", r.status, r.body)
	}
	r = e.must(e.req("GET", "/v1/tenants/acme/events", k["reader"], nil), 200)
	if strings.Contains(string(r.body), "order:2") {
		t.Fatal("the write named with an unknown parameter was made")
	}
	// A long name is clipped in the answer.
	r = e.req("GET", "/v1/tenants/acme/stats?"+strings.Repeat("x", 5000)+"=1", k["reader"], nil)
	if r.status != 400 || len(r.body) > 2048 {
		t.Fatalf("long parameter name: %d, %d bytes", r.status, len(r.body))
	}
	// A query Go's parser would drop a pair of (the filter with it) is
	// refused, not answered with the whole log.
	for _, q := range []string{"entity=user:;scope=s", "entity_prefix=user:;", "entity=%zz", "entity=user:&entity_prefix%zz=1"} {
		r = e.req("GET", "/v1/tenants/acme/events?"+q, k["reader"], nil)
		if r.status != 400 || r.code() != "INVALID_REQUEST" {
			t.Errorf("?%s: %d %s, want 400", q, r.status, r.body)
		}
	}
	// Several unknown names: the same one is named every time; an empty
	// name gets no suggestion.
	for range 5 {
		r = e.req("GET", "/v1/tenants/acme/events?zz=1&bb=1&mm=1&aa=1", k["reader"], nil)
		if !strings.Contains(string(r.body), `"field":"aa"`) {
			t.Fatalf("several unknown parameters: %s, want the first by name (aa)", r.body)
		}
	}
	r = e.req("GET", "/v1/tenants/acme/events?=x", k["reader"], nil)
	if r.status != 400 || strings.Contains(string(r.body), "did you mean") {
		t.Fatalf("empty name: %d %s", r.status, r.body)
	}
	// The cluster's parameters are checked on a single server too.
	for _, q := range []string{"consistency=bogus", "min_seq=abc"} {
		r = e.req("GET", "/v1/tenants/acme/events?"+q, k["reader"], nil)
		if r.status != 400 || r.code() != "INVALID_REQUEST" {
			t.Errorf("?%s: %d %s, want 400", q, r.status, r.body)
		}
	}
	e.must(e.req("GET", "/v1/tenants/acme/stats?consistency=linearizable&min_seq=2", k["reader"], nil), 200)
	// Public routes take anything.
	e.must(e.req("GET", "/healthz?probe=1", "", nil), 200)
}

// TestRepeatedParametersRefused: a query parameter or an Idempotency-Key
// given twice is refused (400 naming it), whichever value comes first,
// and nothing is written: a proxy or a client reading the other value
// would see another request than the server.
func TestRepeatedParametersRefused(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("a:1")), 201)
	for _, q := range []string{"entity=zzz:&entity=a:", "entity=a:&entity=zzz:", "limit=1&limit=2", "entity=a:&limit=1&limit=1"} {
		r := e.req("GET", "/v1/tenants/acme/events?"+q, k["reader"], nil)
		if r.status != 400 || r.code() != "INVALID_REQUEST" || !strings.Contains(string(r.body), "given 2 times") {
			t.Fatalf("?%s: %d %s, want 400 naming the repeated parameter", q, r.status, r.body)
		}
	}
	batch := map[string]any{"events": []any{appendBody("b:1")}}
	for _, tc := range []struct {
		path string
		body any
	}{{"/v1/tenants/acme/events", appendBody("b:1")}, {"/v1/tenants/acme/batches", batch}} {
		r, err := http.NewRequest("POST", e.base+tc.path, strings.NewReader(string(mustJSON(tc.body))))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Authorization", "Bearer "+k["writer"])
		r.Header.Set("Content-Type", "application/json")
		r.Header.Add("Idempotency-Key", "a")
		r.Header.Add("Idempotency-Key", "b")
		if code, b := sendRaw(t, r); code != 400 || !strings.Contains(string(b), "Idempotency-Key") {
			t.Fatalf("POST %s with two Idempotency-Key headers: %d %s, want 400 naming it", tc.path, code, b)
		}
	}
	if n := e.count("acme", k["admin"]); n != 1 {
		t.Fatalf("acme holds %v events after the refusals, want 1", n)
	}
}

// TestUnauthenticatedSaysWhatWasMissing: a 401 names the usual mistakes
// — no Authorization header, or a key sent without the Bearer scheme —
// and says nothing about a credential that was sent and refused.
func TestUnauthenticatedSaysWhatWasMissing(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	for _, c := range []struct {
		name, header, want string
	}{
		{"no header", "", "no credential"},
		{"no scheme", k["reader"], "no Bearer scheme"},
		{"another scheme", "Basic " + k["reader"], "no Bearer scheme"},
		{"a tab after Bearer", "Bearer\t" + k["reader"], "one space between Bearer and the credential"},
		{"unknown key", "Bearer bpk_nosuchkeyatall", "the credential is not valid: unknown, revoked, expired or mistyped"},
	} {
		r := e.req("GET", "/v1/tenants/acme/stats", "", nil, "Authorization", c.header)
		if r.status != 401 || r.code() != "UNAUTHENTICATED" {
			t.Fatalf("%s: %d %s", c.name, r.status, r.body)
		}
		var p struct{ Detail string }
		_ = json.Unmarshal(r.body, &p)
		if !strings.Contains(p.Detail, c.want) || strings.Contains(p.Detail, k["reader"]) {
			t.Fatalf("%s: detail %q, want it to say %q", c.name, p.Detail, c.want)
		}
	}
}

// TestTwoAuthorizationHeadersRefused: a request with two Authorization
// headers is refused (400 naming the header) whichever comes first, even
// when both are valid keys: a proxy in front may read the other one.
func TestTwoAuthorizationHeadersRefused(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	for _, pair := range [][2]string{{k["reader"], "bpk_nosuchkeyatall"}, {"bpk_nosuchkeyatall", k["reader"]}, {k["reader"], k["reader"]}} {
		r, err := http.NewRequest("GET", e.base+"/v1/tenants/acme/stats", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Add("Authorization", "Bearer "+pair[0])
		r.Header.Add("Authorization", "Bearer "+pair[1])
		if code, b := sendRaw(t, r); code != 400 || !strings.Contains(string(b), "more than one Authorization header") {
			t.Fatalf("two Authorization headers: %d %s, want 400 naming them", code, b)
		}
	}
}

// TestCompressedBodyRefused: a body sent with a Content-Encoding (gzip,
// say) is refused with 415 naming the encoding, not read as JSON and
// refused for its bytes.
func TestCompressedBodyRefused(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	for _, path := range []string{"/v1/tenants/acme/events", "/v1/tenants/acme/batches"} {
		r := e.req("POST", path, k["admin"], "\x1f\x8b\x08\x00", "Content-Encoding", "gzip")
		if r.status != 415 || !strings.Contains(string(r.body), `Content-Encoding \"gzip\" is not supported`) {
			t.Fatalf("POST %s gzip-encoded: %d %s, want 415 naming the encoding", path, r.status, r.body)
		}
	}
	r := e.req("POST", "/v1/tenants/acme/events", k["admin"], `{"entity":"a","scope":"s","kind":"1:1","payload":{}}`, "Content-Encoding", "identity")
	if r.status != 201 {
		t.Fatalf("Content-Encoding identity: %d %s, want 201", r.status, r.body)
	}
}

// TestPayloadNamesDifferingInCaseAccepted: a payload's member names are
// the writer's own (I-JSON compares them exactly): "total" and "Total" in
// one payload are two members, whichever path reads the request.
func TestPayloadNamesDifferingInCaseAccepted(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	for _, body := range []string{
		`{"entity":"a","scope":"s","kind":"1:1","payload":{"total":1,"Total":2}}`,
		`{"Entity":"a","scope":"s","kind":"1:1","payload":{"total":1,"Total":2,"events":[{"x":1,"X":2}]}}`,
	} {
		if r := e.req("POST", "/v1/tenants/acme/events", k["admin"], body); r.status != 201 {
			t.Fatalf("%s: %d %s, want 201", body, r.status, r.body)
		}
	}
	if r := e.req("POST", "/v1/tenants/acme/batches", k["admin"], `{"events":[{"entity":"a","scope":"s","kind":"1:1","payload":[{"n":1,"N":2}]}]}`); r.status != 201 {
		t.Fatalf("a batch item's payload with names differing in case: %d %s, want 201", r.status, r.body)
	}
}
