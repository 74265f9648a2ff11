//go:build unix

package server_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
)

// TestPolicyDecisionLogForgetsDeletedTenant: decisions of a tenant still
// waiting for the decision log's writer when the tenant is deleted are
// never written — not even when a new tenant of the same id is created
// before the writer gets to them (the new tenant's log starts empty, it
// never shows the old tenant's principals and inputs).
//
// The writer is held up deterministically by another tenant's log: its
// first segment is a FIFO that the writer blocks reading until the test
// closes its end.
func TestPolicyDecisionLogForgetsDeletedTenant(t *testing.T) {
	root := t.TempDir()
	ps := startPolicyServer(t, root, nil)
	op, tenant, deny := decisionTenants(t, ps)
	ctx := context.Background()
	slow := tenant("slow")
	hold, fifo := holdDecisionWriter(t, root, slow, deny)

	acme := tenant("acme")
	for i := range 5 {
		deny(acme, fmt.Sprintf("blocked:old-acme-%d", i))
	}
	if err := op.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	acme = tenant("acme")
	hold.Close() // the writer goes on

	got := allDecisions(t, acme, client.PolicyDecisionQuery{})
	if len(got) != 0 {
		t.Fatalf("the new tenant acme's log shows %d decisions of the deleted acme: %+v", len(got), got[0].Input)
	}
	deny(acme, "blocked:new-acme")
	if got := allDecisions(t, acme, client.PolicyDecisionQuery{}); len(got) != 1 || got[0].Input["event.entity"] != "blocked:new-acme" {
		t.Fatalf("the new tenant acme's log: %+v, want its one denial", got)
	}
	if err := os.Remove(fifo); err != nil { // a query would wait on it too
		t.Fatal(err)
	}
	if got := allDecisions(t, slow, client.PolicyDecisionQuery{}); len(got) != 1 {
		t.Fatalf("tenant slow's log holds %d decisions, want 1", len(got))
	}
}

// waitUntil polls cond until it holds or 10s pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPolicyDecisionLogTenantShare: one tenant flooding denials while the
// decision log's writer is held up fills at most a quarter of the queue;
// another tenant's denial meanwhile is still queued and recorded.
func TestPolicyDecisionLogTenantShare(t *testing.T) {
	root := t.TempDir()
	const queue = 8 // a tenant's share: 2
	ps := startPolicyServer(t, root, func(c *server.Config) { c.PolicyDecisionQueue = queue })
	_, tenant, deny := decisionTenants(t, ps)
	slow := tenant("slow")
	hold, fifo := holdDecisionWriter(t, root, slow, deny)

	noisy, quiet := tenant("noisy"), tenant("quiet")
	for i := range 3 * queue {
		deny(noisy, fmt.Sprintf("blocked:noisy-%d", i))
	}
	deny(quiet, "blocked:quiet")
	hold.Close() // the writer goes on
	if err := os.Remove(fifo); err != nil {
		t.Fatal(err)
	}

	if got := allDecisions(t, quiet, client.PolicyDecisionQuery{}); len(got) != 1 || got[0].Input["event.entity"] != "blocked:quiet" {
		t.Fatalf("tenant quiet's log: %+v, want its one denial (the noisy tenant crowded it out)", got)
	}
	if got := allDecisions(t, noisy, client.PolicyDecisionQuery{}); len(got) != queue/4 {
		t.Fatalf("tenant noisy's log holds %d decisions, want its share of the queue, %d", len(got), queue/4)
	}
}

// decisionTenants returns ps's admin client, a function creating a tenant
// with an admin key (its client), and one appending an event the platform
// policy denies.
func decisionTenants(t *testing.T, ps policyServer) (*client.Admin, func(id string) *client.Tenant, func(tc *client.Tenant, entity string)) {
	ctx := context.Background()
	op := ps.as(t, operatorToken).Admin()
	tenant := func(id string) *client.Tenant {
		t.Helper()
		if _, err := op.CreateTenant(ctx, id, nil, nil); err != nil {
			t.Fatal(err)
		}
		k, err := op.IssueKey(ctx, id, "a", "admin", "writer")
		if err != nil {
			t.Fatal(err)
		}
		return ps.as(t, k.Key).Tenant(id)
	}
	deny := func(tc *client.Tenant, entity string) {
		t.Helper()
		if _, err := tc.Append(ctx, note(entity)); !errors.Is(err, client.ErrPolicyDenied) {
			t.Fatalf("append %s: %v, want a denial", entity, err)
		}
	}
	return op, tenant, deny
}

// holdDecisionWriter holds the decision log's writer up deterministically:
// tenant slow's first log segment (under the server root's srv/) is made
// a FIFO, one of slow's denials sends the writer to read it, and the
// returned write end, while open, keeps it waiting. Closing hold lets the
// writer go on; removing fifo keeps later queries from waiting on it.
func holdDecisionWriter(t *testing.T, root string, slow *client.Tenant, deny func(*client.Tenant, string)) (hold *os.File, fifo string) {
	t.Helper()
	slowDir := filepath.Join(root, "srv", "decisions", "slow")
	if err := os.MkdirAll(slowDir, 0o700); err != nil {
		t.Fatal(err)
	}
	fifo = filepath.Join(slowDir, "0000000000000001.jsonl")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no FIFO: %v", err)
	}
	if err := os.WriteFile(filepath.Join(slowDir, "0000000000000002.jsonl"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	deny(slow, "blocked:slow")
	// Once the writer reads the FIFO, a non-blocking open of its write end
	// succeeds.
	waitUntil(t, "the writer to block on the FIFO", func() bool {
		f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		hold = f
		return err == nil
	})
	return hold, fifo
}
