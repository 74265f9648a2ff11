package httpapi_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server"
)

// TestDamagedCursorPosition: a named cursor whose saved position file is
// damaged on disk is answered with what to do (not a bare internal error,
// nor the file's path), is listed as damaged, and can be deleted and
// defined again, after which it reads from the log's beginning.
func TestDamagedCursorPosition(t *testing.T) {
	var root string
	e := start(t, func(c *server.Config) { root = c.Root })
	k := e.tenant("acme")
	for i := range 3 {
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{"n": i}}), 201)
	}
	def := map[string]any{"region": map[string]any{"scope": "shop"}}
	e.must(e.req("PUT", "/v1/tenants/acme/cursors/c1", k["writer"], def), 201)
	e.must(e.req("POST", "/v1/tenants/acme/cursors/c1/commit", k["writer"], map[string]any{"position": 2}), 200)
	var pos string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "c1.pos" {
			pos = p
		}
		return nil
	})
	if pos == "" {
		t.Fatal("no position file c1.pos under the server's root")
	}
	if err := os.WriteFile(pos, []byte("not a cursor position"), 0o644); err != nil {
		t.Fatal(err)
	}

	r := e.req("GET", "/v1/tenants/acme/cursors/c1/events", k["reader"], nil)
	if r.status != 500 || !strings.Contains(string(r.body), "damaged") || !strings.Contains(string(r.body), "delete the cursor") || strings.Contains(string(r.body), root) {
		t.Fatalf("poll of a damaged cursor: %d %s; want 500 saying it is damaged and what to do, without the file's path", r.status, r.body)
	}
	if r := e.req("POST", "/v1/tenants/acme/cursors/c1/commit", k["writer"], map[string]any{"position": 3}); r.status != 500 || !strings.Contains(string(r.body), "damaged") {
		t.Fatalf("commit to a damaged cursor: %d %s", r.status, r.body)
	}
	l := e.must(e.req("GET", "/v1/tenants/acme/cursors", k["reader"], nil), 200).json(t)["cursors"].([]any)
	if len(l) != 1 || l[0].(map[string]any)["damaged"] == nil {
		t.Fatalf("list with a damaged cursor: %v; want it listed as damaged", l)
	}
	if !strings.Contains(e.logs.String(), "c1.pos") {
		t.Fatalf("the operator's log does not name the damaged file:\n%s", e.logs.String())
	}

	e.must(e.req("DELETE", "/v1/tenants/acme/cursors/c1", k["writer"], nil), 204)
	e.must(e.req("PUT", "/v1/tenants/acme/cursors/c1", k["writer"], def), 201)
	p := e.must(e.req("GET", "/v1/tenants/acme/cursors/c1/events", k["reader"], nil), 200).json(t)
	if evs := p["events"].([]any); len(evs) != 3 {
		t.Fatalf("the cursor defined again read %d events, want all 3 from the log's beginning", len(evs))
	}
}
