package httpapi_test

import (
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server/httpapi"
)

// concrete fills a route's path parameters and gives a valid body, so that
// any refusal comes from the credential check.
func concrete(rt httpapi.Route, tenant, eventID string) (path string, body any, hdr []string) {
	path = strings.NewReplacer("{tenant}", tenant, "{id}", eventID, "{entity}", "order:1", "{name}", "c1").Replace(rt.Path)
	if strings.HasSuffix(rt.Path, "/keys/{id}") {
		path = strings.TrimSuffix(path, eventID) + "nokey"
	}
	switch {
	case strings.HasSuffix(rt.Path, "/events") && rt.Method == "POST":
		body = appendBody("order:1")
	case strings.HasSuffix(rt.Path, "/batches"):
		body = map[string]any{"events": []any{appendBody("order:1")}}
	case strings.HasSuffix(rt.Path, "/import"):
		body = []byte(`{"id":"0190a2b4-0000-7000-8000-0000000000aa","entity":"x:1","scope":"s","kind":"0x1:0x1","clock":0,"global_sequence":0,"correlation_id":"0190a2b4-0000-7000-8000-0000000000aa","causation_id":null,"timestamp_us":1,"payload":{}}` + "\n")
		hdr = []string{"Content-Type", "application/x-ndjson"}
	case strings.HasSuffix(rt.Path, "/cursors/{name}") && rt.Method == "PUT":
		body = map[string]any{"region": map[string]any{"entity": "x:"}}
	case strings.HasSuffix(rt.Path, "/commit"):
		body = map[string]any{"position": 1}
	case strings.HasSuffix(rt.Path, "/keys") && rt.Method == "POST":
		body = map[string]any{"roles": []string{"admin"}}
	case rt.Path == "/v1/admin/tenants" && rt.Method == "POST":
		body = map[string]any{"id": "newcomer"}
	case strings.HasSuffix(rt.Path, "/quotas"):
		body = map[string]any{"max_cursors": 1}
	case strings.HasSuffix(rt.Path, "/settings"):
		body = map[string]any{"sync": "buffered"}
	case strings.HasSuffix(rt.Path, "/suspend"):
		body = map[string]any{"reason": "x"}
	}
	if rt.Method == "DELETE" && strings.HasSuffix(rt.Path, "/tenants/{tenant}") {
		path += "?confirm=" + tenant
	}
	return path, body, hdr
}

// snapshotOf is what the isolation test compares before and after: the
// events, cursors, keys and state of a tenant.
func (e *env) snapshotOf(id, adminKey string) string {
	e.t.Helper()
	st := e.must(e.req("GET", "/v1/tenants/"+id+"/stats", adminKey, nil), 200).json(e.t)
	cur := e.must(e.req("GET", "/v1/tenants/"+id+"/cursors", adminKey, nil), 200)
	keys := e.must(e.req("GET", "/v1/tenants/"+id+"/keys", adminKey, nil), 200)
	ten := e.must(e.req("GET", "/v1/admin/tenants/"+id, opToken, nil), 200).json(e.t)
	return jsonNum(st["events"]) + "|" + jsonNum(st["global_sequence"]) + "|" + string(cur.body) + "|" + string(keys.body) + "|" + jsonNum(ten["state"]) + jsonNum(ten["quotas"]) + jsonNum(ten["settings"])
}

// TestIsolationMatrix: every tenant route × {no credential, another
// tenant's key, a revoked key, a reader key where more is needed, the
// operator credential, a suspended tenant} is refused with the right 4xx,
// and neither tenant's store or control-plane state changes.
func TestIsolationMatrix(t *testing.T) {
	e := start(t, nil)
	acme := e.tenant("acme")
	other := e.tenant("other")
	ev := e.must(e.req("POST", "/v1/tenants/acme/events", acme["writer"], appendBody("order:1")), 201).json(t)["id"].(string)
	e.must(e.req("POST", "/v1/tenants/other/events", other["writer"], appendBody("order:1")), 201)
	// A revoked admin key of acme.
	revoked := e.must(e.req("POST", "/v1/admin/tenants/acme/keys", opToken, map[string]any{"roles": []string{"admin"}}), 201).json(t)
	e.must(e.req("DELETE", "/v1/admin/tenants/acme/keys/"+revoked["id"].(string), opToken, nil), 204)

	before := map[string]string{"acme": e.snapshotOf("acme", acme["admin"]), "other": e.snapshotOf("other", other["admin"])}
	routes := e.srv.API().Routes()
	checked := 0
	for _, rt := range routes {
		if rt.Access != httpapi.Tenant {
			continue
		}
		path, body, hdr := concrete(rt, "acme", ev)
		try := func(name, token string, status int, code string) {
			t.Helper()
			r := e.req(rt.Method, path, token, body, hdr...)
			if r.status != status || r.code() != code {
				t.Errorf("%s %s as %s: %d %s, want %d %s", rt.Method, rt.Path, name, r.status, r.code(), status, code)
			}
			if strings.Contains(string(r.body), "other") && name == "wrong tenant" {
				t.Errorf("%s %s: the refusal names the other tenant: %s", rt.Method, rt.Path, r.body)
			}
			checked++
		}
		try("no credential", "", 401, "UNAUTHENTICATED")
		try("wrong tenant", other["admin"], 403, "FORBIDDEN")
		try("revoked key", revoked["key"].(string), 401, "UNAUTHENTICATED")
		try("operator", opToken, 403, "FORBIDDEN")
		if rt.Role != "reader" {
			try("reader key", acme["reader"], 403, "FORBIDDEN")
		}
		if rt.Role == "admin" {
			try("writer key", acme["writer"], 403, "FORBIDDEN")
		}
	}
	// Suspended: every route refuses, reads too.
	e.must(e.req("POST", "/v1/admin/tenants/acme/suspend", opToken, map[string]any{"reason": "test"}), 200)
	for _, rt := range routes {
		if rt.Access != httpapi.Tenant {
			continue
		}
		path, body, hdr := concrete(rt, "acme", ev)
		if r := e.req(rt.Method, path, acme["admin"], body, hdr...); r.status != 403 || r.code() != "TENANT_SUSPENDED" {
			t.Errorf("%s %s on a suspended tenant: %d %s", rt.Method, rt.Path, r.status, r.body)
		}
		checked++
	}
	e.must(e.req("POST", "/v1/admin/tenants/acme/resume", opToken, nil), 200)
	// Admin routes refuse tenant keys and no credential.
	for _, rt := range routes {
		if rt.Access != httpapi.Operator {
			continue
		}
		path, body, hdr := concrete(rt, "acme", ev)
		if r := e.req(rt.Method, path, "", body, hdr...); r.status != 401 {
			t.Errorf("%s %s without credential: %d", rt.Method, rt.Path, r.status)
		}
		if r := e.req(rt.Method, path, acme["admin"], body, hdr...); r.status != 403 || r.code() != "FORBIDDEN" {
			t.Errorf("%s %s with a tenant admin key: %d %s", rt.Method, rt.Path, r.status, r.body)
		}
		checked += 2
	}
	after := map[string]string{"acme": e.snapshotOf("acme", acme["admin"]), "other": e.snapshotOf("other", other["admin"])}
	for id := range before {
		if before[id] != after[id] {
			t.Errorf("tenant %s changed:\n before %s\n after  %s", id, before[id], after[id])
		}
	}
	if checked < 100 {
		t.Fatalf("only %d checks", checked)
	}
	// The same requests with the right credential do work (the matrix's
	// bodies are valid).
	path, body, _ := concrete(httpapi.Route{Method: "POST", Path: "/v1/tenants/{tenant}/events"}, "acme", ev)
	e.must(e.req("POST", path, acme["writer"], body), 201)
}
