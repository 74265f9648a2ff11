package httpapi_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/quota"
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
		// The operator's issues: a tenant's own are paced (see
		// TestTenantControlChangesPaced).
		r := issue(opToken, "/v1/admin/tenants/acme/keys")
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
	e.must(e.req("DELETE", "/v1/admin/tenants/acme/keys/"+last, opToken, nil), 204)
	e.must(issue(k["admin"], "/v1/tenants/acme/keys"), 201)
	// Another tenant is not affected.
	k2 := e.tenant("beta")
	e.must(issue(k2["admin"], "/v1/tenants/beta/keys"), 201)
}

// TestTenantControlChangesPaced: a tenant credential's changes to the
// shared control plane (here: issuing and revoking keys in a loop; only
// the issues are charged) are paced by a bucket of
// quota.ControlChangesBurst refilling at
// quota.ControlChangesPerSecond: past it 429 QUOTA_EXCEEDED
// "control_changes_per_second" with Retry-After, so one tenant cannot
// fill the control plane every tenant shares with churn. The operator is
// not paced, nor another tenant.
func TestTenantControlChangesPaced(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	refused := -1
	var r resp
	for i := 0; i < quota.ControlChangesBurst+50; i++ {
		r = e.req("POST", "/v1/tenants/acme/keys", k["admin"], map[string]any{"roles": []string{"reader"}})
		if r.status == 429 {
			refused = i
			break
		}
		e.must(r, 201)
		if r = e.req("DELETE", "/v1/tenants/acme/keys/"+r.json(t)["id"].(string), k["admin"], nil); r.status == 429 {
			refused = i
			break
		}
		e.must(r, 204)
	}
	if refused < 0 || r.code() != "QUOTA_EXCEEDED" || r.json(t)["quota"] != "control_changes_per_second" || r.header.Get("Retry-After") == "" {
		t.Fatalf("%d issue+revoke cycles, last answer %d %s", quota.ControlChangesBurst+50, r.status, r.body)
	}
	if refused < quota.ControlChangesBurst-5 {
		t.Fatalf("refused after %d cycles, want about %d", refused, quota.ControlChangesBurst)
	}
	e.must(e.req("POST", "/v1/admin/tenants/acme/keys", opToken, map[string]any{"roles": []string{"reader"}}), 201)
	k2 := e.tenant("beta")
	e.must(e.req("POST", "/v1/tenants/beta/keys", k2["admin"], map[string]any{"roles": []string{"reader"}}), 201)
	time.Sleep(300 * time.Millisecond) // ≥ 1 token at 10/s
	e.must(e.req("POST", "/v1/tenants/acme/keys", k["admin"], map[string]any{"roles": []string{"reader"}}), 201)
}

// TestTenantControlChangesBudgetedPerDay: beside the pace, a tenant's own
// control-plane changes draw on its control_changes_per_day quota; spent,
// the next is 429 QUOTA_EXCEEDED "control_changes_per_day" with
// Retry-After (a day's worth refills continuously: 86400/budget seconds
// for one). Any kind of change counts — a key issued, a cursor defined,
// a cursor deleted — but a key revoked (see
// TestKeyRevocationOpenWhenBudgetSpent). The operator is not counted,
// another tenant has its own budget, and raising the quota lets the
// tenant go on.
func TestTenantControlChangesBudgetedPerDay(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"control_changes_per_day": 3}), 200)
	id := e.must(e.req("POST", "/v1/tenants/acme/keys", k["admin"], map[string]any{"roles": []string{"reader"}}), 201).json(t)["id"].(string)
	e.must(e.req("DELETE", "/v1/tenants/acme/keys/"+id, k["admin"], nil), 204)
	e.must(e.req("PUT", "/v1/tenants/acme/cursors/billing", k["admin"], map[string]any{}), 201)
	e.must(e.req("DELETE", "/v1/tenants/acme/cursors/billing", k["admin"], nil), 204)
	r := e.req("POST", "/v1/tenants/acme/keys", k["admin"], map[string]any{"roles": []string{"reader"}})
	if r.status != 429 || r.code() != "QUOTA_EXCEEDED" || r.json(t)["quota"] != "control_changes_per_day" {
		t.Fatalf("a 4th change with a budget of 3 a day: %d %s", r.status, r.body)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 20000 || ra > 30000 {
		t.Fatalf("Retry-After %q, want about 86400/3 s (one change's refill)", r.header.Get("Retry-After"))
	}
	// The refused change was not made.
	if keys := e.must(e.req("GET", "/v1/tenants/acme/keys", k["admin"], nil), 200).json(t)["keys"].([]any); len(keys) != 3 {
		t.Fatalf("%d keys after the refusal, want the tenant's 3", len(keys))
	}
	e.must(e.req("POST", "/v1/admin/tenants/acme/keys", opToken, map[string]any{"roles": []string{"reader"}}), 201)
	k2 := e.tenant("beta")
	e.must(e.req("POST", "/v1/tenants/beta/keys", k2["admin"], map[string]any{"roles": []string{"reader"}}), 201)
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"control_changes_per_day": 1000}), 200)
	e.must(e.req("POST", "/v1/tenants/acme/keys", k["admin"], map[string]any{"roles": []string{"reader"}}), 201)
}

// TestControlChangesBudgetSurvivesRestart: the day's budget of control
// changes is charged with what the control plane recorded, so a restart
// does not give a tenant a fresh one: spent before the restart, the next
// admin change after it is 429 control_changes_per_day, while the
// tenant's other credentials keep their own budget.
func TestControlChangesBudgetSurvivesRestart(t *testing.T) {
	root := t.TempDir()
	e := start(t, func(c *server.Config) { c.Root = root })
	k := e.tenant("acme")
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"control_changes_per_day": 3}), 200)
	e.must(e.req("POST", "/v1/tenants/acme/keys", k["admin"], map[string]any{"roles": []string{"reader"}}), 201)
	e.must(e.req("PUT", "/v1/tenants/acme/cursors/one", k["admin"], map[string]any{}), 201)
	e.must(e.req("PUT", "/v1/tenants/acme/cursors/two", k["admin"], map[string]any{}), 201)
	if err := e.shutdown(); err != nil {
		t.Fatal(err)
	}
	e = start(t, func(c *server.Config) { c.Root = root })
	r := e.req("POST", "/v1/tenants/acme/keys", k["admin"], map[string]any{"roles": []string{"reader"}})
	if r.status != 429 || r.code() != "QUOTA_EXCEEDED" || r.json(t)["quota"] != "control_changes_per_day" {
		t.Fatalf("a 4th admin change after a restart, with a budget of 3 a day: %d %s", r.status, r.body)
	}
	e.must(e.req("PUT", "/v1/tenants/acme/cursors/three", k["writer"], map[string]any{}), 201)
}

// TestKeyRevocationOpenWhenBudgetSpent: a leaked writer key can spend the
// control_changes_per_day (and pace) of its tenant's non-admin
// credentials on cursor churn; the tenant's admin credentials have
// budgets of their own, so the admin still issues keys, and revokes the
// leaked one at once (revoking is never charged: each revocation takes
// back a key whose issue was). The revoked key is refused from then on.
func TestKeyRevocationOpenWhenBudgetSpent(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"control_changes_per_day": 4}), 200)
	var r resp
	for i := 0; i < 10; i++ {
		if r = e.req("PUT", "/v1/tenants/acme/cursors/c"+strconv.Itoa(i), k["writer"], map[string]any{}); r.status == 429 {
			break
		}
		e.must(r, 201)
	}
	if r.status != 429 || r.json(t)["quota"] != "control_changes_per_day" {
		t.Fatalf("the writer's cursor churn was never refused: %d %s", r.status, r.body)
	}
	// The admin's changes draw on the admins' budget, untouched.
	e.must(e.req("POST", "/v1/tenants/acme/keys", k["admin"], map[string]any{"roles": []string{"reader"}}), 201)
	e.must(e.req("PUT", "/v1/tenants/acme/cursors/by-admin", k["admin"], map[string]any{}), 201)
	e.must(e.req("DELETE", "/v1/tenants/acme/keys/"+k["writer_id"], k["admin"], nil), 204)
	if r := e.req("PUT", "/v1/tenants/acme/cursors/again", k["writer"], map[string]any{}); r.status != 401 {
		t.Fatalf("the revoked writer key: %d %s", r.status, r.body)
	}
	// Revoking a key that is not there changes nothing: 404.
	e.must(e.req("DELETE", "/v1/tenants/acme/keys/"+k["writer_id"], k["admin"], nil), 404)
}
