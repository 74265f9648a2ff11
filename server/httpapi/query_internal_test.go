package httpapi

import (
	"slices"
	"testing"
)

// parseRouteQueries takes a path's own parameters for each of its
// operations, resolves references, and refuses a reference to nothing
// (which would make a route refuse a parameter it takes).
func TestParseRouteQueries(t *testing.T) {
	doc := `{"paths":{"/x":{"parameters":[{"name":"shared","in":"query"}],
		"get":{"parameters":[{"name":"id","in":"path"},{"$ref":"#/components/parameters/Limit"}]}}},
		"components":{"parameters":{"Limit":{"name":"limit","in":"query"}}}}`
	got := parseRouteQueries([]byte(doc))["GET /x"]
	slices.Sort(got)
	if !slices.Equal(got, []string{"limit", "shared"}) {
		t.Fatalf("GET /x takes %v, want [limit shared]", got)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a reference to no parameter was accepted")
		}
	}()
	parseRouteQueries([]byte(`{"paths":{"/x":{"get":{"parameters":[{"$ref":"#/components/parameters/Nope"}]}}}}`))
}
