package control_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/batpak-go/batpak/server/control"
)

func rev(s string) string { return fmt.Sprintf("%x", hashOf(s)) }

// A tenant's policy revisions and its active one are recorded, audited
// and replayed; rollback needs a known revision; a deleted tenant's
// policy state goes with it.
func TestPolicyRevisionsReplayAndRollback(t *testing.T) {
	dir := t.TempDir()
	p := open(t, dir)
	ctx := opCtx()
	must(t)(p.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{}))
	must(t)(p.CreateTenant(ctx, "globex", control.Quotas{}, control.Settings{}))
	r1, r2 := rev("one"), rev("two")
	must(t)(p.ActivatePolicy(ctx, "acme", r1, 10, 0))
	tp := must(t)(p.ActivatePolicy(ctx, "acme", r2, 20, 0)).(control.TenantPolicy)
	if tp.Active != r2 || len(tp.Revisions) != 2 || tp.Revisions[0].Revision != r1 || tp.Revisions[1].Bytes != 20 || tp.Revisions[0].By.ID != "operator" {
		t.Fatalf("after two uploads: %+v", tp)
	}
	if p.ActivePolicy("globex") != "" {
		t.Fatal("another tenant has acme's policy")
	}
	if _, err := p.RollbackPolicy(ctx, "acme", rev("never")); !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("rollback to an unknown revision: %v, want ErrNotFound", err)
	}
	if _, err := p.RollbackPolicy(ctx, "acme", "ABC"); !errors.Is(err, control.ErrInvalid) {
		t.Fatalf("rollback to a malformed revision: %v, want ErrInvalid", err)
	}
	if _, err := p.RollbackPolicy(ctx, "globex", r1); !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("rollback of globex to acme's revision: %v, want ErrNotFound", err)
	}
	must(t)(p.RollbackPolicy(ctx, "acme", r1))
	before := p.Policy("acme")
	hist, err := p.History(control.PolicyEntity("acme"))
	check(t, err)
	if len(hist) != 3 || hist[2].Kind != "policy.rolled_back" || hist[0].Kind != "policy.activated" {
		t.Fatalf("history: %+v", hist)
	}
	check(t, p.Close())

	p = open(t, dir)
	if after := p.Policy("acme"); !reflect.DeepEqual(before, after) || after.Active != r1 {
		t.Fatalf("replayed policy %+v, want %+v", after, before)
	}
	if got := p.PolicyTenants(); len(got) != 1 || got["acme"] != r1 {
		t.Fatalf("PolicyTenants = %v", got)
	}
	check(t, p.DeleteTenant(ctx, "acme"))
	must(t)(p.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{}))
	if tp := p.Policy("acme"); tp.Active != "" || len(tp.Revisions) != 0 {
		t.Fatalf("a re-created tenant inherits a policy: %+v", tp)
	}
	check(t, p.Close())
	p = open(t, dir)
	defer p.Close()
	if tp := p.Policy("acme"); tp.Active != "" {
		t.Fatalf("after replay a re-created tenant inherits a policy: %+v", tp)
	}
}
