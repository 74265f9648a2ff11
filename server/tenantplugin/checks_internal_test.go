package tenantplugin

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/shares"
)

// TestCheckSlotsAreShared: one tenant holds at most half of the check
// slots (modules slow to compile cannot hold them all), another tenant
// still gets one; an upload waiting past checkWait is a *core.RetryError
// naming server.plugin_checks; a load as changes are applied waits while
// its context lasts.
func TestCheckSlotsAreShared(t *testing.T) {
	defer func(w time.Duration) { checkWait = w }(checkWait)
	checkWait = 50 * time.Millisecond
	m := &Manager{checks: shares.New(2)}
	ctx := context.Background()
	relA, err := m.check(ctx, "slow", true)
	if err != nil {
		t.Fatal(err)
	}
	defer relA()
	var re *core.RetryError
	if _, err := m.check(ctx, "slow", true); !errors.As(err, &re) || re.After <= 0 || !strings.Contains(re.Reason, "server.plugin_checks") {
		t.Fatalf("the slow tenant's second upload: %v, want a *core.RetryError after waiting", err)
	}
	relB, err := m.check(ctx, "other", true)
	if err != nil {
		t.Fatalf("another tenant's upload while the slow one holds its share: %v", err)
	}
	defer relB()
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := m.check(short, "third", false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a load with every slot taken: %v, want to wait while its context lasts", err)
	}
}
