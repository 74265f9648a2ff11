package tenantpolicy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/shares"
)

// TestEvaluationSlotsAreShared: one tenant holds at most half of the
// evaluation slots, so another tenant still gets one while the first
// tenant's next evaluation waits, and a wait past slotWait is a
// *core.RetryError saying whose slots ran out.
func TestEvaluationSlotsAreShared(t *testing.T) {
	defer func(w time.Duration) { slotWait = w }(slotWait)
	slotWait = 50 * time.Millisecond
	m := &Manager{slots: shares.New(2)}
	ctx := context.Background()
	relA, err := m.slot(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	defer relA()
	var re *core.RetryError
	if _, err := m.slot(ctx, "slow"); !errors.As(err, &re) || re.After <= 0 || !strings.Contains(re.Reason, "this tenant's") {
		t.Fatalf("the slow tenant's second evaluation: %v, want a *core.RetryError for its share", err)
	}
	relB, err := m.slot(ctx, "other")
	if err != nil {
		t.Fatalf("another tenant while the slow one holds its share: %v", err)
	}
	defer relB()
	if _, err := m.slot(ctx, "third"); !errors.As(err, &re) || !strings.Contains(re.Reason, "the server's") {
		t.Fatalf("a third tenant with every slot taken: %v, want a *core.RetryError for the server's", err)
	}
}
