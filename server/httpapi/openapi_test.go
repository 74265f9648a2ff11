package httpapi_test

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server/httpapi"
	"github.com/batpak-go/batpak/server/wire"
)

type openapiDoc struct {
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas map[string]map[string]any `json:"schemas"`
	} `json:"components"`
}

// TestOpenAPIMatchesRoutes fails when a registered route is missing from
// the document or the document names one that is not registered.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	e := start(t, nil)
	r := e.must(e.req("GET", "/v1/openapi.json", "", nil), 200)
	var doc openapiDoc
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	_ = json.Unmarshal(r.body, &raw)
	if raw["openapi"] != "3.1.0" {
		t.Fatalf("openapi version %v", raw["openapi"])
	}
	inDoc := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			if m == "parameters" {
				continue
			}
			inDoc[strings.ToUpper(m)+" "+p] = true
		}
	}
	registered := map[string]bool{}
	for _, rt := range e.srv.API().Routes() {
		registered[rt.Pattern()] = true
		if !inDoc[rt.Pattern()] {
			t.Errorf("route %s is not in the OpenAPI document", rt.Pattern())
		}
	}
	var extra []string
	for p := range inDoc {
		if !registered[p] {
			extra = append(extra, p)
		}
	}
	sort.Strings(extra)
	for _, p := range extra {
		t.Errorf("the OpenAPI document names %s, which is not a route", p)
	}
}

// TestOpenAPIExamplesValidate checks every request example against its
// schema (a small JSON Schema subset: type, required, properties,
// additionalProperties, items, enum, oneOf, bounds, pattern, $ref), checks
// that the checker refuses broken examples, and sends the append example
// to the server, which accepts it.
func TestOpenAPIExamplesValidate(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(httpapi.OpenAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	v := validator{schemas: schemas}
	n := 0
	for p, ops := range doc["paths"].(map[string]any) {
		for m, op := range ops.(map[string]any) {
			rb, ok := op.(map[string]any)["requestBody"].(map[string]any)
			if !ok {
				continue
			}
			for ct, media := range rb["content"].(map[string]any) {
				mm := media.(map[string]any)
				ex, has := mm["example"]
				if !has {
					if ct == "application/json" {
						t.Errorf("%s %s: JSON request body without an example", m, p)
					}
					continue
				}
				if err := v.check(mm["schema"], ex, "$"); err != nil {
					t.Errorf("%s %s example: %v", m, p, err)
				}
				n++
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d examples checked", n)
	}
	// The checker is not a rubber stamp.
	bad := []any{
		map[string]any{"entity": "e", "scope": "s", "kind": "1:1"},                                // no payload
		map[string]any{"entity": "e", "scope": "s", "kind": "1:1", "payload": 1, "colour": "red"}, // unknown member
		map[string]any{"entity": "e", "scope": "s", "kind": 70000.0, "payload": 1},                // kind out of range
		map[string]any{"entity": "e", "scope": "s", "kind": "1:1", "payload": 1, "flags": "x"},    // wrong type
		map[string]any{"entity": "e", "scope": "s", "kind": "1:1", "payload": 1, "expected_clock": "soon"},
	}
	for _, b := range bad {
		if err := v.check(map[string]any{"$ref": "#/components/schemas/AppendRequest"}, b, "$"); err == nil {
			t.Errorf("broken example %v validated", b)
		}
	}
	// And the documented example is what the server takes.
	e := start(t, nil)
	k := e.tenant("acme")
	ex := doc["paths"].(map[string]any)["/v1/tenants/{tenant}/events"].(map[string]any)["post"].(map[string]any)["requestBody"].(map[string]any)["content"].(map[string]any)["application/json"].(map[string]any)["example"]
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], ex), 201)
	var req wire.AppendRequest
	b, _ := json.Marshal(ex)
	if err := wire.Decode(b, &req, 64); err != nil {
		t.Fatal(err)
	}
}

type validator struct{ schemas map[string]any }

func (v validator) check(schema any, val any, at string) error {
	s, ok := schema.(map[string]any)
	if !ok {
		return nil
	}
	if ref, ok := s["$ref"].(string); ok {
		return v.check(v.schemas[strings.TrimPrefix(ref, "#/components/schemas/")], val, at)
	}
	if alts, ok := s["oneOf"].([]any); ok {
		matched := 0
		for _, a := range alts {
			if v.check(a, val, at) == nil {
				matched++
			}
		}
		if matched != 1 {
			return fmt.Errorf("%s: matches %d of oneOf", at, matched)
		}
	}
	if enum, ok := s["enum"].([]any); ok {
		found := false
		for _, x := range enum {
			if x == val {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s: %v not in %v", at, val, enum)
		}
	}
	if t, ok := s["type"]; ok {
		types := []any{t}
		if l, ok := t.([]any); ok {
			types = l
		}
		okType := false
		for _, ty := range types {
			okType = okType || hasType(ty.(string), val)
		}
		if !okType {
			return fmt.Errorf("%s: %v is not %v", at, val, t)
		}
	}
	switch x := val.(type) {
	case float64:
		if m, ok := s["minimum"].(float64); ok && x < m {
			return fmt.Errorf("%s: %v < minimum %v", at, x, m)
		}
		if m, ok := s["maximum"].(float64); ok && x > m {
			return fmt.Errorf("%s: %v > maximum %v", at, x, m)
		}
	case string:
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(x) {
			return fmt.Errorf("%s: %q does not match %s", at, x, p)
		}
		if m, ok := s["minLength"].(float64); ok && float64(len(x)) < m {
			return fmt.Errorf("%s: shorter than %v", at, m)
		}
		if m, ok := s["maxLength"].(float64); ok && float64(len(x)) > m {
			return fmt.Errorf("%s: longer than %v", at, m)
		}
	case []any:
		if m, ok := s["minItems"].(float64); ok && float64(len(x)) < m {
			return fmt.Errorf("%s: fewer than %v items", at, m)
		}
		for i, it := range x {
			if err := v.check(s["items"], it, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		for _, r := range asList(s["required"]) {
			if _, ok := x[r.(string)]; !ok {
				return fmt.Errorf("%s: %s is required", at, r)
			}
		}
		for k, fv := range x {
			ps, ok := props[k]
			if !ok {
				if s["additionalProperties"] == false {
					return fmt.Errorf("%s: unknown member %s", at, k)
				}
				continue
			}
			if err := v.check(ps, fv, at+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

func asList(v any) []any { l, _ := v.([]any); return l }

func hasType(t string, v any) bool {
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == math.Trunc(f)
	}
	return false
}

// TestOpenAPIResponsesMatchServer sends writes, a batch (new and replayed),
// a page, cursor reads and commits and admin calls, and checks each live
// response against the schema the document gives for its route and status:
// it validates, and it carries no member the document does not name.
func TestOpenAPIResponsesMatchServer(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(httpapi.OpenAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	v := validator{schemas: schemas}
	resolve := func(s any) map[string]any {
		m, _ := s.(map[string]any)
		if ref, ok := m["$ref"].(string); ok {
			m, _ = schemas[strings.TrimPrefix(ref, "#/components/schemas/")].(map[string]any)
		}
		return m
	}
	e := start(t, nil)
	k := e.tenant("acme")
	batch := map[string]any{"events": []any{appendBody("order:1"), appendBody("order:2")}}
	cases := []struct {
		method, route, path, token string
		body                       any
		status                     int
		hdr                        []string
	}{
		{"POST", "/v1/tenants/{tenant}/events", "/v1/tenants/acme/events", k["writer"], appendBody("order:1"), 201, nil},
		{"POST", "/v1/tenants/{tenant}/batches", "/v1/tenants/acme/batches", k["writer"], batch, 201, []string{"Idempotency-Key", "b1"}},
		{"POST", "/v1/tenants/{tenant}/batches", "/v1/tenants/acme/batches", k["writer"], batch, 200, []string{"Idempotency-Key", "b1"}},
		{"GET", "/v1/tenants/{tenant}/events", "/v1/tenants/acme/events?entity=order:&limit=2", k["reader"], nil, 200, nil},
		{"PUT", "/v1/tenants/{tenant}/cursors/{name}", "/v1/tenants/acme/cursors/c1", k["writer"], map[string]any{"region": map[string]any{"entity": "order:"}}, 201, nil},
		{"GET", "/v1/tenants/{tenant}/cursors/{name}/events", "/v1/tenants/acme/cursors/c1/events?limit=2", k["reader"], nil, 200, nil},
		{"POST", "/v1/tenants/{tenant}/cursors/{name}/commit", "/v1/tenants/acme/cursors/c1/commit", k["writer"], map[string]any{"position": 2}, 200, nil},
		{"GET", "/v1/tenants/{tenant}/cursors", "/v1/tenants/acme/cursors", k["reader"], nil, 200, nil},
		{"GET", "/v1/tenants/{tenant}/policy", "/v1/tenants/acme/policy", k["reader"], nil, 200, nil},
		{"POST", "/v1/admin/tenants", "/v1/admin/tenants", opToken, map[string]any{"id": "beta"}, 201, nil},
		{"POST", "/v1/admin/tenants/{tenant}/keys", "/v1/admin/tenants/beta/keys", opToken, map[string]any{"roles": []string{"reader"}}, 201, nil},
		{"GET", "/v1/admin/tenants/{tenant}", "/v1/admin/tenants/beta", opToken, nil, 200, nil},
	}
	for _, c := range cases {
		r := e.must(e.req(c.method, c.path, c.token, c.body, c.hdr...), c.status)
		op := doc["paths"].(map[string]any)[c.route].(map[string]any)[strings.ToLower(c.method)].(map[string]any)
		res, _ := op["responses"].(map[string]any)[fmt.Sprint(c.status)].(map[string]any)
		media, _ := res["content"].(map[string]any)["application/json"].(map[string]any)
		if media == nil {
			t.Errorf("%s %s %d: the document gives no JSON body; the server sent %s", c.method, c.route, c.status, r.body)
			continue
		}
		var val any
		if err := json.Unmarshal(r.body, &val); err != nil {
			t.Fatal(err)
		}
		if err := v.check(media["schema"], val, "$"); err != nil {
			t.Errorf("%s %s %d: %v: %s", c.method, c.route, c.status, err, r.body)
		}
		props, _ := resolve(media["schema"])["properties"].(map[string]any)
		for name := range val.(map[string]any) {
			if _, ok := props[name]; !ok {
				t.Errorf("%s %s %d: member %q is not in the document", c.method, c.route, c.status, name)
			}
		}
	}
}
