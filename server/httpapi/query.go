package httpapi

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/batpak-go/batpak/server/wire"
)

// routeQueries is, for every route pattern ("GET /v1/tenants/{tenant}/events"),
// the query parameters the route takes: those the OpenAPI document lists
// for its operation, "in": "query", directly or through
// #/components/parameters. The check and the document therefore cannot
// disagree.
var routeQueries = parseRouteQueries(OpenAPIDocument)

func parseRouteQueries(doc []byte) map[string][]string {
	type param struct {
		Ref  string `json:"$ref"`
		Name string `json:"name"`
		In   string `json:"in"`
	}
	var d struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Parameters map[string]param `json:"parameters"`
		} `json:"components"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		panic(fmt.Sprintf("httpapi: the embedded OpenAPI document: %v", err))
	}
	out := map[string][]string{}
	for path, ops := range d.Paths {
		for method, raw := range ops {
			if method == "parameters" {
				continue
			}
			var op struct {
				Parameters []param `json:"parameters"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				panic(fmt.Sprintf("httpapi: the embedded OpenAPI document, %s %s: %v", method, path, err))
			}
			names := []string{}
			for _, p := range op.Parameters {
				if p.Ref != "" {
					p = d.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
				}
				if p.In == "query" {
					names = append(names, p.Name)
				}
			}
			out[strings.ToUpper(method)+" "+path] = names
		}
	}
	return out
}

// checkQuery refuses a call that names a query parameter its route does
// not take (400 INVALID_REQUEST naming it, with the ones the route takes):
// a misspelt filter — entity_prefix for entity, say — would otherwise be
// ignored and the call answered as if it had none, the whole log instead
// of a part of it. Public and metrics routes take anything.
func checkQuery(c *call) error {
	if c.route.Access == Public || c.route.Access == Metrics || c.r.URL.RawQuery == "" {
		return nil
	}
	takes := routeQueries[c.route.Pattern()]
	for name := range c.r.URL.Query() {
		known := false
		for _, t := range takes {
			if t == name {
				known = true
				break
			}
		}
		if known {
			continue
		}
		detail := fmt.Sprintf("unknown query parameter %q", clipName(name))
		if len(takes) == 0 {
			detail += "; " + c.route.Pattern() + " takes none"
		} else {
			sorted := append([]string(nil), takes...)
			sort.Strings(sorted)
			for _, t := range sorted {
				if strings.HasPrefix(name, t) || strings.HasPrefix(t, name) {
					detail += fmt.Sprintf(" (did you mean %q?)", t)
					break
				}
			}
			detail += "; " + c.route.Pattern() + " takes " + strings.Join(sorted, ", ")
		}
		return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: detail, p: wire.Problem{Field: clipName(name)}}
	}
	return nil
}

// clipName bounds a caller's parameter name quoted back in an error.
func clipName(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
