package opa_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/batpak-go/batpak/policy/opa"
)

// A sandboxed bundle cannot reach outside the policy: a rule or a test
// calling a refused built-in does not compile, in Rego v1 or in a bundle
// whose .manifest declares v0, and nothing is fetched; the same bundles
// compile unsandboxed (the operator's own policy may call out).
func TestSandboxedBundlesCannotReachOut(t *testing.T) {
	var hits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, `{"type": "object"}`)
	}))
	defer target.Close()
	ctx := context.Background()
	schema := `json.match_schema({}, {"$ref": "` + target.URL + `/s"})`
	for name, files := range map[string]map[string]string{
		"json.match_schema":  {"p.rego": "package batpak.write\n\ndeny contains sprintf(\"%v\", [r]) if {\n\tr := " + schema + "\n}\n"},
		"json.verify_schema": {"p.rego": "package batpak.write\n\ndeny contains sprintf(\"%v\", [r]) if {\n\tr := json.verify_schema({\"$ref\": \"file://" + filepath.Join(t.TempDir(), "x.json") + "\"})\n}\n"},
		"http.send (v0)": {".manifest": `{"rego_version": 0}`,
			"p.rego": "package batpak.write\n\ndeny[m] {\n\tm := http.send({\"method\": \"GET\", \"url\": \"" + target.URL + "\"}).raw_body\n}\n"},
		"opa.runtime (v0)": {".manifest": `{"rego_version": 0}`, "p.rego": "package batpak.write\n\ndeny[m] {\n\tm := opa.runtime().env.HOME\n}\n"},
	} {
		builtin := strings.Split(name, " ")[0]
		dir := writeBundle(t, files)
		if _, err := opa.Load(ctx, dir, opa.Options{Sandboxed: true}); err == nil || !strings.Contains(err.Error(), builtin) {
			t.Errorf("sandboxed %s: %v, want a compile error naming it", name, err)
		}
		if _, err := opa.Load(ctx, dir, opa.Options{}); err != nil {
			t.Errorf("unsandboxed %s: %v, want it to compile", name, err)
		}
		withTest := map[string]string{"p.rego": "package batpak.write\n\ndeny contains \"x\" if false\n",
			"p_test.rego": "package batpak.write_test\n\ntest_out if {\n\tr := " + schema + "\n\tr[0]\n}\n"}
		if _, err := opa.RunTests(ctx, writeBundle(t, withTest), opa.TestOptions{Sandboxed: true}); err == nil || !strings.Contains(err.Error(), "json.match_schema") {
			t.Errorf("sandboxed tests calling json.match_schema: %v, want a compile error naming it", err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("sandboxed bundles fetched %d URLs", n)
	}
}
