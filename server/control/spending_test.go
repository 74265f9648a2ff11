package control_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/control"
)

// TestSpendingRecordsTenantChanges: the plane keeps, per tenant, the
// changes its own credentials made — with the class of the credential and
// the bytes an upload brought — and not the operator's changes, nor key
// revocations; a reopened plane has the same (it rebuilds them from the
// log), and a deleted tenant's are gone, also for a tenant created again
// under its id.
func TestSpendingRecordsTenantChanges(t *testing.T) {
	dir := t.TempDir()
	p := open(t, dir)
	ctx := context.Background()
	admin := policy.WithPrincipal(ctx, policy.Principal{ID: "key:aaaaaaaaaaaa", Tenant: "acme", Roles: []string{"admin"}, KeyID: "aaaaaaaaaaaa"})
	writer := policy.WithPrincipal(ctx, policy.Principal{ID: "key:bbbbbbbbbbbb", Tenant: "acme", Roles: []string{"writer"}, KeyID: "bbbbbbbbbbbb"})
	other := policy.WithPrincipal(ctx, policy.Principal{ID: "key:cccccccccccc", Tenant: "other", Roles: []string{"admin"}, KeyID: "cccccccccccc"})
	sha := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

	before := time.Now().Add(-time.Second)
	must(t)(p.CreateTenant(opCtx(), "acme", control.Quotas{}, control.Settings{}))
	must(t)(p.CreateTenant(opCtx(), "other", control.Quotas{}, control.Settings{}))
	// The credentials the changes are asked with (a change by a key that
	// is not live is refused).
	for _, k := range []control.Key{{ID: "aaaaaaaaaaaa", Tenant: "acme", Roles: []control.Role{control.RoleAdmin}},
		{ID: "bbbbbbbbbbbb", Tenant: "acme", Roles: []control.Role{control.RoleWriter}},
		{ID: "cccccccccccc", Tenant: "other", Roles: []control.Role{control.RoleAdmin}}} {
		k.Hash = hashOf(k.ID)
		must(t)(p.IssueKey(opCtx(), k))
	}
	must(t)(p.IssueKey(admin, control.Key{ID: "dddddddddddd", Tenant: "acme", Roles: []control.Role{control.RoleReader}, Hash: hashOf("k1")}))
	check(t, p.DefineCursor(writer, control.CursorDef{Name: "c1", Tenant: "acme", Region: control.Region{}}))
	must(t)(p.ActivatePolicy(admin, "acme", sha("bundle"), 1000, 0))
	must(t)(p.AddPluginVersion(admin, "acme", control.PluginVersion{Version: "1.0.0", Digest: sha("module"), Kind: "projection", Bytes: 5000, Manifest: []byte(`{"name":"p1"}`)}, "p1", true, 0, 0))
	check(t, p.RevokeKey(admin, "acme", "dddddddddddd"))                 // not a spend
	must(t)(p.SetQuotas(opCtx(), "acme", control.Quotas{MaxCursors: 5})) // the operator's
	must(t)(p.IssueKey(other, control.Key{ID: "eeeeeeeeeeee", Tenant: "other", Roles: []control.Role{control.RoleReader}, Hash: hashOf("k2")}))

	want := []control.Spend{{Admin: true}, {Admin: false}, {Admin: true, Bytes: 1000}, {Admin: true, Bytes: 5000 + int64(len(`{"name":"p1"}`))}}
	checkSpends := func(p *control.Plane, when string) {
		t.Helper()
		got := p.Spending("acme", before)
		if len(got) != len(want) {
			t.Fatalf("%s: %d spends %+v, want %d", when, len(got), got, len(want))
		}
		for i, sp := range got {
			if sp.Admin != want[i].Admin || sp.Bytes != want[i].Bytes || sp.At.Before(before) || sp.At.After(time.Now()) {
				t.Fatalf("%s: spend %d is %+v, want %+v made during the test", when, i, sp, want[i])
			}
		}
		if n := len(p.Spending("acme", time.Now().Add(time.Minute))); n != 0 {
			t.Fatalf("%s: %d spends after a time later than all of them", when, n)
		}
		if n := len(p.Spending("other", before)); n != 1 {
			t.Fatalf("%s: the other tenant has %d spends, want 1", when, n)
		}
	}
	checkSpends(p, "live")
	check(t, p.Close())
	p = open(t, dir)
	defer p.Close()
	checkSpends(p, "reopened")

	check(t, p.DeleteTenant(opCtx(), "acme"))
	if n := len(p.Spending("acme", before)); n != 0 {
		t.Fatalf("a deleted tenant has %d spends", n)
	}
	must(t)(p.CreateTenant(opCtx(), "acme", control.Quotas{}, control.Settings{}))
	if n := len(p.Spending("acme", before)); n != 0 {
		t.Fatalf("a tenant created again under a deleted one's id has %d spends", n)
	}
}
