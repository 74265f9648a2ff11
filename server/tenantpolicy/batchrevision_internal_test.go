package tenantpolicy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// onPrincipal is a context that runs hook (once) when a gate first reads
// its principal: while the first item of a batch is being judged.
type onPrincipal struct {
	context.Context
	once sync.Once
	hook func()
}

func (c *onPrincipal) Value(key any) any {
	v := c.Context.Value(key)
	if _, ok := v.(policy.Principal); ok {
		c.once.Do(c.hook)
	}
	return v
}

// TestBatchIsJudgedByOneRevision: every item of a batch is judged by the
// tenant revision active when its judging began, even when its items are
// judged one at a time (here: judged in this process) and a push makes
// another revision active while the first item is being judged; the
// next batch is judged by the new revision.
func TestBatchIsJudgedByOneRevision(t *testing.T) {
	ctx := context.Background()
	m := managerOfAcme(t, Options{})
	rule := func(prefix string) []byte {
		return bundleOf(t, "policy.rego", "package batpak.write\n\ndeny contains \"NO\" if startswith(input.event.entity, \""+prefix+"\")\n")
	}
	if _, err := m.Push(ctx, "acme", bytes.NewReader(rule("secret:"))); err != nil {
		t.Fatal(err)
	}
	items := func() []*core.Proposal {
		ps := make([]*core.Proposal, 3)
		for i := range ps {
			c, _ := core.NewCoordinate(fmt.Sprintf("note:%d", i), "s")
			ps[i] = &core.Proposal{Coordinate: c, Kind: core.MustKind(1, 1), Payload: []byte(`{}`), Action: core.ActionBatch, BatchIndex: i, BatchSize: len(ps)}
		}
		return ps
	}
	adm := m.Admission("acme", nil).(core.ItemsAdmission)
	pushed := make(chan error, 1)
	hooked := &onPrincipal{
		Context: policy.WithPrincipal(ctx, policy.Principal{ID: "writer", Tenant: "acme"}),
		hook: func() {
			_, err := m.Push(ctx, "acme", bytes.NewReader(rule("note:")))
			pushed <- err
		},
	}
	if err := adm.AdmitItems(hooked, items()); err != nil {
		t.Errorf("a batch whose judging began under the revision allowing notes: %v (its later items were judged by the revision pushed meanwhile)", err)
	}
	select {
	case err := <-pushed:
		if err != nil {
			t.Fatalf("the push during the batch: %v", err)
		}
	default:
		t.Fatal("nothing read the principal: the push during the batch never ran")
	}
	var d *policy.Denial
	var bie *core.BatchItemError
	if err := adm.AdmitItems(ctx, items()); !errors.As(err, &bie) || bie.Index != 0 || !errors.As(err, &d) || d.Message != "NO" {
		t.Fatalf("the next batch: %v, want its item 0 denied by the revision pushed", err)
	}
}
