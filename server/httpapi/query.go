package httpapi

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
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
		var shared []param // the path's own parameters, every operation's
		if raw, ok := ops["parameters"]; ok {
			if err := json.Unmarshal(raw, &shared); err != nil {
				panic(fmt.Sprintf("httpapi: the embedded OpenAPI document, %s: %v", path, err))
			}
		}
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
			for _, p := range slices.Concat(shared, op.Parameters) {
				if p.Ref != "" {
					q, ok := d.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
					if !ok {
						panic(fmt.Sprintf("httpapi: the embedded OpenAPI document, %s %s: no parameter %s", method, path, p.Ref))
					}
					p = q
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

// checkQuery refuses a call whose query is malformed (a pair with ";",
// a bad percent-escape: Go's parser would drop it, filter and all) or
// names a parameter its route does not take (400 INVALID_REQUEST naming
// it, with the ones the route takes): a misspelt filter — entity_prefix
// for entity, say — would otherwise be ignored and the call answered as
// if it had none, the whole log instead of a part of it. On a single
// server it also checks the values of consistency and min_seq, which a
// cluster node reads (and checks) itself. Public and metrics routes take
// anything.
func checkQuery(c *call) error {
	if c.route.Access == Public || c.route.Access == Metrics || c.r.URL.RawQuery == "" {
		return nil
	}
	q, err := url.ParseQuery(c.r.URL.RawQuery)
	if err != nil {
		detail := "the query does not parse: " + clipName(err.Error())
		if strings.Contains(c.r.URL.RawQuery, ";") {
			detail = `the query holds ";": parameters are separated by "&"`
		}
		return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: detail}
	}
	takes := routeQueries[c.route.Pattern()]
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	sort.Strings(names) // the same request names the same parameter
	for _, name := range names {
		if slices.Contains(takes, name) {
			continue
		}
		detail := fmt.Sprintf("unknown query parameter %q", clipName(name))
		if len(takes) == 0 {
			detail += "; " + c.route.Pattern() + " takes none"
		} else {
			sorted := slices.Sorted(slices.Values(takes))
			for _, t := range sorted {
				if len(name) >= 2 && (strings.HasPrefix(name, t) || strings.HasPrefix(t, name)) {
					detail += fmt.Sprintf(" (did you mean %q?)", t)
					break
				}
			}
			detail += "; " + c.route.Pattern() + " takes " + strings.Join(sorted, ", ")
		}
		return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: detail, p: wire.Problem{Field: clipName(name)}}
	}
	for _, name := range names {
		// Every parameter takes one value: a proxy or client reading the
		// last of two would see another request than the server, which
		// would read the first.
		if len(q[name]) > 1 {
			return &apiError{status: 400, code: wire.CodeInvalidRequest, p: wire.Problem{Field: clipName(name)},
				detail: fmt.Sprintf("query parameter %q is given %d times: give it once", clipName(name), len(q[name]))}
		}
	}
	if c.a.opts.Cluster == nil {
		switch v := q.Get("consistency"); v {
		case "", "local", "linearizable":
		default:
			return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: fmt.Sprintf("consistency=%q: want local or linearizable", clipName(v)), p: wire.Problem{Field: "consistency"}}
		}
		if v := q.Get("min_seq"); v != "" {
			if _, err := strconv.ParseUint(v, 10, 64); err != nil {
				return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: fmt.Sprintf("min_seq=%q: want a global sequence (a receipt's global_sequence)", clipName(v)), p: wire.Problem{Field: "min_seq"}}
			}
		}
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
