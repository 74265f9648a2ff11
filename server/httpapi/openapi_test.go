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
