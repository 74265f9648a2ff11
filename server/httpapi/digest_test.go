package httpapi_test

import (
	"testing"
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
	for _, q := range []string{"upto=9", "upto=-1", "upto=x"} {
		r := e.req("GET", "/v1/admin/tenants/acme/digest?"+q, opToken, nil)
		if r.status != 400 || r.json(t)["field"] != "upto" {
			t.Fatalf("%s: %d %s, want 400 naming upto", q, r.status, r.body)
		}
	}
	e.must(e.req("GET", "/v1/admin/tenants/acme/digest", k["admin"], nil), 403)
	e.must(e.req("GET", "/v1/admin/tenants/nobody/digest", opToken, nil), 404)
}
