package server_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
)

// TestCursorChangesTakeTheWriteRate: defining, committing and deleting
// named cursors each take one event of the tenant's write rate, so a
// tenant cycling them is refused with QUOTA_EXCEEDED like a flood of
// appends, instead of writing records without bound.
func TestCursorChangesTakeTheWriteRate(t *testing.T) {
	ps := startPolicyServer(t, t.TempDir(), nil)
	ctx := context.Background()
	op := ps.as(t, operatorToken).Admin()
	if _, err := op.CreateTenant(ctx, "acme", &client.Quotas{EventsPerSecond: 1, EventsBurst: 5}, nil); err != nil {
		t.Fatal(err)
	}
	k, err := op.IssueKey(ctx, "acme", "w", "writer")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(ps.base, k.Key, client.Options{MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	acme := c.Tenant("acme")
	refused := 0
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("c%d", i)
		err := acme.DefineCursor(ctx, name, client.CursorRegion{})
		if err == nil {
			err = acme.CommitCursor(ctx, name, 0)
		}
		if errors.Is(err, client.ErrQuotaExceeded) {
			refused++
			continue
		}
		if err != nil {
			t.Fatalf("cursor %d: %v", i, err)
		}
	}
	if refused == 0 {
		t.Fatal("20 cursor definitions and commits at 1 event/s with a burst of 5: none refused")
	}
}
