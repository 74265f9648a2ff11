package control

import (
	"testing"
	"time"

	"github.com/batpak-go/batpak/policy"
)

// A tenant's admin keys and its other keys keep their spends apart: the
// churn of one class never pushes the other's out of the record (each
// class has a budget of its own to restore).
func TestSpendClassesCappedApart(t *testing.T) {
	s := newState()
	t0 := time.Now().Add(-2 * time.Hour)
	admin := policy.Principal{ID: "key:a", Tenant: "acme", Roles: []string{"admin"}}
	writer := policy.Principal{ID: "key:w", Tenant: "acme", Roles: []string{"writer"}}
	for i := range maxSpends / 2 {
		s.noteSpend(change{at: t0.Add(time.Duration(i) * time.Millisecond), kind: kindKeyIssued, body: body{By: admin, Tenant: "acme"}})
	}
	for i := range maxSpends + 100 {
		s.noteSpend(change{at: t0.Add(time.Hour + time.Duration(i)*time.Millisecond), kind: kindCursorDefined, body: body{By: writer, Tenant: "acme"}})
	}
	p := &Plane{st: s}
	var a, m int
	for _, sp := range p.Spending("acme", time.Now().Add(-SpendWindow)) {
		if sp.Admin {
			a++
		} else {
			m++
		}
	}
	if a != maxSpends/2 || m != maxSpends {
		t.Fatalf("kept %d admin and %d member spends, want %d and %d", a, m, maxSpends/2, maxSpends)
	}
}

// Spends older than the window are dropped even when their tenant makes
// no more changes: other tenants' changes prune them.
func TestQuietTenantsSpendsPruned(t *testing.T) {
	s := newState()
	old := time.Now().Add(-30 * 24 * time.Hour)
	writer := policy.Principal{ID: "key:w", Tenant: "acme", Roles: []string{"writer"}}
	for i := range 1000 {
		s.noteSpend(change{at: old.Add(time.Duration(i) * time.Millisecond), kind: kindCursorDefined, body: body{By: writer, Tenant: "acme"}})
	}
	other := policy.Principal{ID: "key:o", Tenant: "other", Roles: []string{"writer"}}
	for i := range 3 {
		s.noteSpend(change{at: time.Now().Add(time.Duration(i) * time.Millisecond), kind: kindCursorDefined, body: body{By: other, Tenant: "other"}})
	}
	if l := s.spends["acme"]; l != nil {
		t.Fatalf("a quiet tenant's month-old spends are still held: %d + %d", len(l[0]), len(l[1]))
	}
	if l := s.spends["other"]; l == nil || len(l[1]) != 3 {
		t.Fatalf("the active tenant's spends: %v", l)
	}
}
