package server_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server/httpapi"
)

// TestCursorChangesTakeTheWriteRate: defining, committing and deleting
// named cursors each take httpapi.CursorWriteCost events of the tenant's
// write rate (at most its burst), so a tenant cycling them is refused
// with QUOTA_EXCEEDED like a flood of appends, instead of writing records
// without bound; a tenant whose burst is below the cost can still make
// them.
func TestCursorChangesTakeTheWriteRate(t *testing.T) {
	ctx := context.Background()
	acme := writerOfNewTenant(t, client.Quotas{EventsPerSecond: 1, EventsBurst: 5})
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

// TestCursorCommitCostsLikeManyEvents: a cursor commit is a record of its
// own (a raft entry every node applies alone, on a cluster), so it costs
// httpapi.CursorWriteCost events of the write rate: a burst that holds
// 10 commits' worth takes 10 commits at once, not 640.
func TestCursorCommitCostsLikeManyEvents(t *testing.T) {
	ctx := context.Background()
	burst := 10 * httpapi.CursorWriteCost
	acme := writerOfNewTenant(t, client.Quotas{EventsPerSecond: 1, EventsBurst: burst})
	if err := acme.DefineCursor(ctx, "c", client.CursorRegion{}); err != nil { // one cost
		t.Fatal(err)
	}
	commits := 0
	for i := 0; i < 40; i++ {
		err := acme.CommitCursor(ctx, "c", 0)
		if errors.Is(err, client.ErrQuotaExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		commits++
	}
	if commits != 9 {
		t.Fatalf("%d commits within a burst of %d events, want 9 (each costs %d, the definition one more)", commits, burst, httpapi.CursorWriteCost)
	}
}

// writerOfNewTenant starts a server, creates tenant "acme" with quotas and
// returns it as seen by a writer key's client that never retries.
func writerOfNewTenant(t *testing.T, quotas client.Quotas) *client.Tenant {
	t.Helper()
	ps := startPolicyServer(t, t.TempDir(), nil)
	ctx := context.Background()
	op := ps.as(t, operatorToken).Admin()
	if _, err := op.CreateTenant(ctx, "acme", &quotas, nil); err != nil {
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
	return c.Tenant("acme")
}
