package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/control"
)

// TestBatchLimitIsTheQuota: a batch request holds up to the tenant's
// max_batch_events (default 4096, the stores' own ceiling): exactly the
// quota is written atomically, one more is QUOTA_EXCEEDED and writes
// nothing, and a quota above the stores' ceiling is refused when set.
func TestBatchLimitIsTheQuota(t *testing.T) {
	bs := startBenchServer(t, server.DefaultConfig(), "t1", control.Settings{})
	ctx := context.Background()
	c, _ := client.New(bs.base, bs.key)
	batch := func(n int) []client.AppendRequest {
		items := make([]client.AppendRequest, n)
		for i := range items {
			items[i] = client.AppendRequest{Entity: fmt.Sprintf("e:%d", i%7), Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{"v":1}`)}
		}
		return items
	}
	rs, err := c.Tenant("t1").AppendBatch(ctx, batch(control.MaxBatchEventsLimit))
	if err != nil || len(rs) != control.MaxBatchEventsLimit {
		t.Fatalf("a batch of %d: %d receipts, %v", control.MaxBatchEventsLimit, len(rs), err)
	}
	if _, err := c.Tenant("t1").AppendBatch(ctx, batch(control.MaxBatchEventsLimit+1)); !errors.Is(err, client.ErrQuotaExceeded) {
		t.Fatalf("a batch of %d: %v, want QUOTA_EXCEEDED", control.MaxBatchEventsLimit+1, err)
	}
	st, err := c.Tenant("t1").Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev, _ := st["events"].(float64); int(ev) != control.MaxBatchEventsLimit {
		t.Fatalf("stored events %v, want %d", st["events"], control.MaxBatchEventsLimit)
	}
	op, _ := client.New(bs.base, "bpko_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	if _, err := op.Admin().SetQuotas(ctx, "t1", client.Quotas{MaxBatchEvents: control.MaxBatchEventsLimit + 1}); !errors.Is(err, client.ErrInvalidRequest) {
		t.Fatalf("max_batch_events above the stores' ceiling: %v, want INVALID_REQUEST", err)
	}
}
