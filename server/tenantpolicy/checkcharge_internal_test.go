package tenantpolicy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestOnCheckReportsTheChecksTenantsAskFor: Options.OnCheck is told of
// every check a tenant's change makes — an accepted push, a refused one,
// a rollback to a revision no longer compiled — for the tenant, with the
// time it held the check slot (what the server charges to its upload
// budget); a push of the active bundle and the loads at Open, which check
// nothing the tenant asked for, are not reported.
func TestOnCheckReportsTheChecksTenantsAskFor(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var calls []time.Duration
	onCheck := func(tenant string, held time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		if tenant != "acme" {
			t.Errorf("OnCheck for tenant %q, want acme", tenant)
		}
		calls = append(calls, held)
	}
	reported := func(what string, want int) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if len(calls) != want {
			t.Fatalf("after %s OnCheck was called %d times, want %d", what, len(calls), want)
		}
		if want > 0 && calls[want-1] <= 0 {
			t.Fatalf("after %s OnCheck was told the check held its slot %v", what, calls[want-1])
		}
	}
	m := managerOfAcme(t, Options{OnCheck: onCheck})
	rule := func(prefix string) []byte {
		return bundleOf(t, "policy.rego", "package batpak.write\n\ndeny contains \"NO\" if startswith(input.event.entity, \""+prefix+"\")\n")
	}
	a := rule("a:")
	if _, err := m.Push(ctx, "acme", bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	reported("an accepted push", 1)
	var re *RejectedError
	if _, err := m.Push(ctx, "acme", bytes.NewReader(bundleOf(t, "policy.rego", "package batpak.write\n\ndeny contains \"NO\" if nope(1)\n"))); !errors.As(err, &re) {
		t.Fatalf("a bundle that does not compile: %v, want a *RejectedError", err)
	}
	reported("a refused push", 2)
	if _, err := m.Push(ctx, "acme", bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	reported("a push of the active bundle", 2)
	for _, p := range []string{"b:", "c:"} {
		if _, err := m.Push(ctx, "acme", bytes.NewReader(rule(p))); err != nil {
			t.Fatal(err)
		}
	}
	reported("two more pushes", 4)
	// Only the active revision (c:) and the one it replaced (b:) are
	// compiled: rolling back to a: compiles it again.
	sum := sha256.Sum256(a)
	if _, err := m.Rollback(ctx, "acme", hex.EncodeToString(sum[:])); err != nil {
		t.Fatal(err)
	}
	reported("a rollback to a revision no longer compiled", 5)
	m2, err := Open(ctx, m.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	reported("Open loading the active revision", 5)
}
