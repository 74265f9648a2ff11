package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// TestBypassAuditReplicated: the audit record a policy bypass writes in a
// node's store (a store record, written without asking the gate) is
// replicated like any write: every replica holds it, and the replicas'
// sequences and chains stay identical.
func TestBypassAuditReplicated(t *testing.T) {
	c := newMemCluster(t, 3, fastTimeouts)
	leader := c.settled(10 * time.Second)
	s, err := leader.Store("acme")
	if err != nil {
		t.Fatal(err)
	}
	p := policy.NewPipeline(policy.NewGateSet(), s)
	in := &policy.Input{Action: core.ActionAppend, Event: policy.Event{Entity: "e", Scope: "s", Kind: kindA.String()}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := p.Bypass(ctx, in, "incident 42")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(ctx, r, func(context.Context) error { return nil }); err != nil {
		t.Fatalf("commit the bypass: %v", err)
	}
	rs := mustAppend(t, leader, "acme", item("e", `{"after":"bypass"}`, core.AppendOptions{}))
	assertIdentical(t, c.list(), rs[0].Index, "acme")
	if rs[0].Receipt.GlobalSequence != 1 {
		t.Fatalf("the write after the audit record is sequence %d, want 1", rs[0].Receipt.GlobalSequence)
	}
}
