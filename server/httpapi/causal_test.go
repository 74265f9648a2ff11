package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server/httpapi"
)

// TestCausalRoutes: descendants and correlation through the SDK against a
// real listener — results, bounds (limit and depth, truncated), unknown
// and malformed ids, and another tenant's id.
func TestCausalRoutes(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.tenant("other")
	ctx := context.Background()
	c, err := client.New(e.base, k["writer"])
	if err != nil {
		t.Fatal(err)
	}
	acme := c.Tenant("acme")
	add := func(entity string, cause *client.Receipt) client.Receipt {
		t.Helper()
		req := client.AppendRequest{Entity: entity, Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`)}
		if cause != nil {
			req.CausationID, req.CorrelationID = cause.ID, cause.CorrelationID
		}
		r, err := acme.Append(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// root → a, b; a → a1; a1 → a11 (a chain 3 deep under root); and an
	// unrelated event.
	root := add("order:1", nil)
	a := add("pay:1", &root)
	add("other:1", nil)
	b := add("ship:1", &root)
	a1 := add("pay:1", &a)
	a11 := add("pay:2", &a1)
	evIDs := func(evs []client.Event) []string {
		var out []string
		for _, ev := range evs {
			out = append(out, ev.ID)
		}
		return out
	}
	all := []string{root.ID, a.ID, b.ID, a1.ID, a11.ID}
	p, err := acme.Descendants(ctx, root.ID, 0, 0)
	if err != nil || !slices.Equal(evIDs(p.Events), all) || p.Truncated {
		t.Fatalf("descendants(root) = %v truncated %v, %v; want %v", evIDs(p.Events), p.Truncated, err, all)
	}
	if p, err = acme.Descendants(ctx, root.ID, 0, 2); err != nil || !slices.Equal(evIDs(p.Events), all[:4]) || !p.Truncated {
		t.Fatalf("descendants(root, depth 2) = %v truncated %v, %v", evIDs(p.Events), p.Truncated, err)
	}
	if p, err = acme.Descendants(ctx, root.ID, 0, 3); err != nil || len(p.Events) != 5 || p.Truncated {
		t.Fatalf("descendants(root, depth 3) = %v truncated %v, %v", evIDs(p.Events), p.Truncated, err)
	}
	if p, err = acme.Descendants(ctx, root.ID, 3, 0); err != nil || !slices.Equal(evIDs(p.Events), all[:3]) || !p.Truncated {
		t.Fatalf("descendants(root, limit 3) = %v truncated %v, %v", evIDs(p.Events), p.Truncated, err)
	}
	if p, err = acme.Correlation(ctx, a11.ID, 0); err != nil || !slices.Equal(evIDs(p.Events), all) || p.Truncated {
		t.Fatalf("correlation(a11) = %v truncated %v, %v; want %v", evIDs(p.Events), p.Truncated, err, all)
	}
	if p, err = acme.Correlation(ctx, a11.ID, 4); err != nil || !slices.Equal(evIDs(p.Events), all[:4]) || !p.Truncated {
		t.Fatalf("correlation(a11, limit 4) = %v truncated %v, %v", evIDs(p.Events), p.Truncated, err)
	}
	// The events read as the other routes show them.
	if p.Events[1].CausationID == nil || *p.Events[1].CausationID != root.ID || p.Events[1].Entity != "pay:1" {
		t.Fatalf("event fields: %+v", p.Events[1])
	}
	// A large limit is capped at MaxPageLimit, like the other event routes.
	many := []client.AppendRequest{}
	for i := 0; i < httpapi.MaxPageLimit+1; i++ {
		many = append(many, client.AppendRequest{Entity: fmt.Sprintf("fan:%d", i%9), Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{}`), CausationID: b.ID, CorrelationID: b.CorrelationID})
		if len(many) == 1000 || i == httpapi.MaxPageLimit {
			if _, err := acme.AppendBatch(ctx, many); err != nil {
				t.Fatal(err)
			}
			many = many[:0]
		}
	}
	if p, err = acme.Descendants(ctx, b.ID, httpapi.MaxPageLimit+500, 0); err != nil || len(p.Events) != httpapi.MaxPageLimit || !p.Truncated {
		t.Fatalf("descendants(b, limit above the cap) = %d events truncated %v, %v; want %d, true", len(p.Events), p.Truncated, err, httpapi.MaxPageLimit)
	}
	if p, err = acme.Descendants(ctx, b.ID, 0, 0); err != nil || len(p.Events) != httpapi.DefaultPageLimit || !p.Truncated {
		t.Fatalf("descendants(b) = %d events; want the default page of %d", len(p.Events), httpapi.DefaultPageLimit)
	}
	// Unknown ids, another tenant's ids and malformed input.
	oc, _ := client.New(e.base, k["reader"])
	if _, err := oc.Tenant("acme").Descendants(ctx, "0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e", 0, 0); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("descendants(unknown) = %v; want NOT_FOUND", err)
	}
	if _, err := oc.Tenant("other").Correlation(ctx, root.ID, 0); err == nil {
		t.Fatal("correlation through another tenant's path answered with acme's key")
	}
	for _, q := range []string{"descendants?depth=0", "descendants?depth=x", "descendants?limit=0", "correlation?limit=-1"} {
		r := e.req("GET", "/v1/tenants/acme/events/"+root.ID+"/"+q, k["reader"], nil)
		if r.status != 400 || r.code() != "INVALID_REQUEST" {
			t.Errorf("%s: %d %s; want 400 INVALID_REQUEST", q, r.status, r.body)
		}
	}
	if r := e.req("GET", "/v1/tenants/acme/events/"+url.PathEscape("not-a-uuid")+"/correlation", k["reader"], nil); r.status != 400 {
		t.Errorf("malformed id: %d %s", r.status, r.body)
	}
	// A depth above MaxCausalDepth is capped, not refused.
	if r := e.req("GET", fmt.Sprintf("/v1/tenants/acme/events/%s/descendants?depth=%d", root.ID, httpapi.MaxCausalDepth+1), k["reader"], nil); r.status != 200 {
		t.Errorf("depth above the cap: %d %s", r.status, r.body)
	}
}

// TestCausalRoutesOtherTenantsEvent: an event of tenant other asked
// through acme's routes with acme's key is not found (404), for both
// walks; and an event caused by an id acme does not hold walks alone.
func TestCausalRoutesOtherTenantsEvent(t *testing.T) {
	e := start(t, nil)
	ka := e.tenant("acme")
	ko := e.tenant("other")
	post := func(tenant, key, body string) string {
		t.Helper()
		r := e.must(e.req("POST", "/v1/tenants/"+tenant+"/events", key, body), 201)
		return r.json(t)["id"].(string)
	}
	theirs := post("other", ko["writer"], `{"entity":"order:1","scope":"s","kind":"1:1","payload":{"secret":true}}`)
	post("other", ko["writer"], `{"entity":"order:1","scope":"s","kind":"1:1","payload":{"secret":2},"causation_id":"`+theirs+`","correlation_id":"`+theirs+`"}`)
	// acme's event caused by other's: the link names an id acme does not hold.
	ours := post("acme", ka["writer"], `{"entity":"order:1","scope":"s","kind":"1:1","payload":{},"causation_id":"`+theirs+`","correlation_id":"`+theirs+`"}`)
	for _, walk := range []string{"descendants", "correlation"} {
		r := e.req("GET", "/v1/tenants/acme/events/"+theirs+"/"+walk, ka["reader"], nil)
		if r.status != 404 || strings.Contains(string(r.body), "secret") {
			t.Errorf("%s of other's event through acme: %d %s; want 404", walk, r.status, r.body)
		}
		r = e.must(e.req("GET", "/v1/tenants/acme/events/"+ours+"/"+walk, ka["reader"], nil), 200)
		if evs := r.json(t)["events"].([]any); len(evs) != 1 || strings.Contains(string(r.body), "secret") {
			t.Errorf("%s of acme's event caused from other: %s; want acme's event alone", walk, r.body)
		}
	}
}

// TestEffectKindsOverHTTP: the append routes refuse an effect kind (they
// write no reactions), the import route takes one with its cause as core
// Import does, and a query filters on it.
func TestEffectKindsOverHTTP(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	r := e.req("POST", "/v1/tenants/acme/events", k["writer"], `{"entity":"order:1","scope":"s","kind":"0xD:0x4","payload":{}}`)
	if r.status != 400 || r.code() != "INVALID_KIND" {
		t.Fatalf("append of an effect kind: %d %s; want 400 INVALID_KIND", r.status, r.body)
	}
	cause, eff := core.NewEventID(), core.NewEventID()
	lines := fmt.Sprintf(`{"id":%q,"entity":"order:1","scope":"s","kind":"0x1:0x1","correlation_id":%q,"causation_id":null,"timestamp_us":1,"payload":{}}
{"id":%q,"entity":"order:1","scope":"s","kind":"0xd:0x4","correlation_id":%q,"causation_id":%q,"timestamp_us":2,"payload":{"ack":true}}
`, cause, cause, eff, cause, cause)
	im := e.must(e.req("POST", "/v1/tenants/acme/import", k["admin"], lines, "Content-Type", "application/x-ndjson"), 200).json(t)
	if im["imported"].(float64) != 2 {
		t.Fatalf("import %v", im)
	}
	for _, q := range []string{"kind=0xD:0x4", "kind=13:4", fmt.Sprint("kind=", uint16(core.KindEffectAck))} {
		r := e.must(e.req("GET", "/v1/tenants/acme/events?"+q, k["reader"], nil), 200)
		if n := strings.Count(string(r.body), eff.String()); n != 1 || strings.Contains(string(r.body), `"id":"`+cause.String()) {
			t.Errorf("query %s: %s; want the effect event alone", q, r.body)
		}
	}
	for _, q := range []string{"kind=0x10:1", "kind=1:0x1000", "kind=x"} {
		if r := e.req("GET", "/v1/tenants/acme/events?"+q, k["reader"], nil); r.status != 400 {
			t.Errorf("query %s: %d %s; want 400", q, r.status, r.body)
		}
	}
	d := e.must(e.req("GET", "/v1/tenants/acme/events/"+cause.String()+"/descendants", k["reader"], nil), 200)
	if evs := d.json(t)["events"].([]any); len(evs) != 2 {
		t.Fatalf("descendants of the imported cause: %s", d.body)
	}
}
