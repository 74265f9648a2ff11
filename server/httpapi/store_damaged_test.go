package httpapi_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server"
)

// TestDamagedStoreAnswersStoreDamaged: a read that meets damage in a
// tenant's store (a frame failing its checks) is answered 500
// STORE_DAMAGED saying what kind of damage and that the operator must
// recover it — not a bare internal error, nor the file's path — and the
// operator's log names the tenant and the file. Another tenant reads on.
func TestDamagedStoreAnswersStoreDamaged(t *testing.T) {
	var root string
	e := start(t, func(c *server.Config) { root = c.Root })
	k := e.tenant("acme")
	other := e.tenant("globex")
	for i := range 5 {
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{"note": strings.Repeat("x", 200), "n": i}}), 201)
	}
	e.must(e.req("POST", "/v1/tenants/globex/events", other["writer"], map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{}}), 201)
	segs, _ := filepath.Glob(filepath.Join(root, "tenants", "acme", "*.seg"))
	if len(segs) == 0 {
		t.Fatal("no segment of tenant acme")
	}
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(data, []byte(strings.Repeat("x", 200)))
	if at < 0 {
		t.Fatal("no payload found in the segment")
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("yyyy"), int64(at+50))
	f.Close()

	r := e.req("GET", "/v1/tenants/acme/events", k["reader"], nil)
	body := string(r.body)
	if r.status != 500 || !strings.Contains(body, `"STORE_DAMAGED"`) || !strings.Contains(body, "fail their checks") ||
		!strings.Contains(body, "operator must recover it") || strings.Contains(body, root) {
		t.Fatalf("a read of a damaged store: %d %s; want 500 STORE_DAMAGED naming the damage, without the file's path", r.status, body)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "the tenant's store is damaged") || !strings.Contains(logs, "tenant=acme") {
		t.Fatalf("the operator's log does not name the damaged tenant:\n%s", logs)
	}
	e.must(e.req("GET", "/v1/tenants/globex/events", other["reader"], nil), 200)
}
