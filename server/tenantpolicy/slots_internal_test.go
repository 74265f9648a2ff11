package tenantpolicy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// TestEvaluationSlotsAreShared: one tenant holds at most half of the
// evaluation slots, so another tenant still gets one while the first
// tenant's next evaluation waits; a wait past slotWait is a
// *core.RetryError; every slot comes back.
func TestEvaluationSlotsAreShared(t *testing.T) {
	defer func(w time.Duration) { slotWait = w }(slotWait)
	slotWait = 50 * time.Millisecond
	m := &Manager{slots: make(chan struct{}, 2), tenantSlots: map[string]chan struct{}{}}
	ctx := context.Background()
	relA, err := m.slot(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	var re *core.RetryError
	if _, err := m.slot(ctx, "slow"); !errors.As(err, &re) || re.After <= 0 {
		t.Fatalf("the slow tenant's second evaluation: %v, want a *core.RetryError after waiting", err)
	}
	relB, err := m.slot(ctx, "other")
	if err != nil {
		t.Fatalf("another tenant while the slow one holds its share: %v", err)
	}
	if _, err := m.slot(ctx, "third"); !errors.As(err, &re) {
		t.Fatalf("a third tenant with every slot taken: %v, want a *core.RetryError", err)
	}
	relA()
	relB()
	if len(m.slots) != 0 || len(m.tenantSlots["slow"]) != 0 || len(m.tenantSlots["other"]) != 0 || len(m.tenantSlots["third"]) != 0 {
		t.Fatal("slots not given back")
	}
}
