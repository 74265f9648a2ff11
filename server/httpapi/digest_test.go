package httpapi_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server"
)

// TestReplicaDigest: the digest of a tenant's events before a sequence
// stays the same as later events arrive, differs for another prefix,
// and is served to the operator only; an upto past what the tenant
// holds, or not a number, is refused naming upto.
func TestReplicaDigest(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	for _, ent := range []string{"order:1", "order:2", "order:1"} {
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody(ent)), 201)
	}
	all := e.must(e.req("GET", "/v1/admin/tenants/acme/digest", opToken, nil), 200).json(t)
	if all["upto"].(float64) != 3 || all["events"].(float64) != 3 || len(all["digest"].(string)) != 64 {
		t.Fatalf("digest of every event: %v", all)
	}
	two := e.must(e.req("GET", "/v1/admin/tenants/acme/digest?upto=2", opToken, nil), 200).json(t)
	if two["events"].(float64) != 2 || two["digest"] == all["digest"] {
		t.Fatalf("digest of the first two: %v (all: %v)", two, all)
	}
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:3")), 201)
	if again := e.must(e.req("GET", "/v1/admin/tenants/acme/digest?upto=3", opToken, nil), 200).json(t); again["digest"] != all["digest"] {
		t.Fatalf("the digest of the first three changed when a fourth came: %v, was %v", again, all)
	}
	if now := e.must(e.req("GET", "/v1/admin/tenants/acme/digest", opToken, nil), 200).json(t); now["upto"].(float64) != 4 || now["digest"] == all["digest"] {
		t.Fatalf("digest after a fourth event: %v", now)
	}
	// A range: the events from from on; from 0 is the prefix's digest,
	// and an empty range has the digest of nothing.
	if r := e.must(e.req("GET", "/v1/admin/tenants/acme/digest?from=0&upto=2", opToken, nil), 200).json(t); r["digest"] != two["digest"] {
		t.Fatalf("from=0&upto=2: %v, want the first two's %v", r, two)
	}
	tail := e.must(e.req("GET", "/v1/admin/tenants/acme/digest?from=2&upto=4", opToken, nil), 200).json(t)
	if tail["from"].(float64) != 2 || tail["events"].(float64) != 2 || tail["digest"] == two["digest"] {
		t.Fatalf("from=2&upto=4: %v", tail)
	}
	if e1, e2 := e.must(e.req("GET", "/v1/admin/tenants/acme/digest?from=3&upto=3", opToken, nil), 200).json(t), e.must(e.req("GET", "/v1/admin/tenants/acme/digest?from=0&upto=0", opToken, nil), 200).json(t); e1["events"].(float64) != 0 || e1["digest"] != e2["digest"] {
		t.Fatalf("empty ranges: %v and %v, want the same digest of nothing", e1, e2)
	}
	for _, q := range []string{"upto=9", "upto=-1", "upto=x", "from=x", "from=3&upto=2", "from=5"} {
		field := "upto"
		if strings.HasPrefix(q, "from") {
			field = "from"
		}
		r := e.req("GET", "/v1/admin/tenants/acme/digest?"+q, opToken, nil)
		if r.status != 400 || r.json(t)["field"] != field {
			t.Fatalf("%s: %d %s, want 400 naming %s", q, r.status, r.body, field)
		}
	}
	e.must(e.req("GET", "/v1/admin/tenants/acme/digest", k["admin"], nil), 403)
	e.must(e.req("GET", "/v1/admin/tenants/nobody/digest", opToken, nil), 404)
	e.must(e.req("GET", "/v1/cluster/digest", opToken, nil), 404)            // a single server has no replicated control plane
	e.must(e.req("GET", "/v1/cluster/applied?control=0", opToken, nil), 404) // nor members to confirm a change to it
}

// TestReplicaDigestOfADamagedCopy: a copy the node cannot read (a payload
// changed on disk) is answered 200 with damaged saying why, not as a
// failed request: it is what a replica check looks for.
func TestReplicaDigestOfADamagedCopy(t *testing.T) {
	var root string
	e := start(t, func(c *server.Config) { root = c.Root })
	k := e.tenant("acme")
	for range 3 {
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{"total": 5}}), 201)
	}
	segs, _ := filepath.Glob(filepath.Join(root, "tenants", "acme", "*.seg"))
	if len(segs) == 0 {
		t.Fatal("no segment file")
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.LastIndex(b, []byte(`"total":5`))
	if at < 0 {
		t.Fatal("no payload found in the segment")
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("9"), int64(at+len(`"total":`))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d := e.must(e.req("GET", "/v1/admin/tenants/acme/digest", opToken, nil), 200).json(t)
	if dmg, _ := d["damaged"].(string); dmg == "" || d["digest"] != "" || d["events"].(float64) != 2 {
		t.Fatalf("digest of a damaged copy: %v, want damaged after 2 events and no digest", d)
	}
}
