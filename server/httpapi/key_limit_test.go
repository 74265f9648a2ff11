package httpapi_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server/control"
)

// TestKeysPerTenantBounded: a tenant holds at most
// control.MaxKeysPerTenant live keys: its admin key cannot grow the
// shared control plane (and every key list) without bound. One past it is
// refused 429 QUOTA_EXCEEDED naming the limit, whoever asks (the tenant's
// admin or the operator); revoking one makes room again.
func TestKeysPerTenantBounded(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme") // 3 keys
	issue := func(token, path string) resp {
		return e.req("POST", path, token, map[string]any{"roles": []string{"reader"}})
	}
	var last string
	for i := 3; i < control.MaxKeysPerTenant; i++ {
		r := issue(k["admin"], "/v1/tenants/acme/keys")
		if r.status != 201 {
			t.Fatalf("key %d: %d %s", i+1, r.status, r.body)
		}
		last = r.json(t)["id"].(string)
	}
	for _, who := range []struct{ token, path string }{{k["admin"], "/v1/tenants/acme/keys"}, {opToken, "/v1/admin/tenants/acme/keys"}} {
		r := issue(who.token, who.path)
		if r.status != 429 || r.code() != "QUOTA_EXCEEDED" || !strings.Contains(string(r.body), fmt.Sprint(control.MaxKeysPerTenant)) {
			t.Fatalf("key %d via %s: %d %s", control.MaxKeysPerTenant+1, who.path, r.status, r.body)
		}
	}
	e.must(e.req("DELETE", "/v1/tenants/acme/keys/"+last, k["admin"], nil), 204)
	e.must(issue(k["admin"], "/v1/tenants/acme/keys"), 201)
	// Another tenant is not affected.
	k2 := e.tenant("beta")
	e.must(issue(k2["admin"], "/v1/tenants/beta/keys"), 201)
}
