package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
)

// TestClusterSessionReadsOwnWrites: an sdk/client Client with
// Consistency "session" pointed at a follower of a 3-node cluster reads
// every write of its own right after it was acknowledged (the write
// redirected to the leader, the read served by the follower once it has
// applied it), and so does a Client whose read carries the receipt's
// sequence (WithMinSequence).
func TestClusterSessionReadsOwnWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	nodes := startCluster3(t, t.TempDir())
	key, _ := clusterTenantKey(t, nodes[0].base, "acme", `["writer"]`)
	follower := nodes[2]
	waitFollowerOf(t, follower, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	session, err := client.New(follower.base, key, client.Options{Consistency: "session"})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := client.New(follower.base, key)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		r, err := session.Tenant("acme").Append(ctx, client.AppendRequest{Entity: "order:1", Scope: "shop", Kind: "1:1", Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if ev, err := session.Tenant("acme").Get(ctx, r.ID); err != nil || ev.GlobalSequence != r.GlobalSequence {
			t.Fatalf("session read of write %d (seq %d) through %s: %+v, %v", i, r.GlobalSequence, follower.id, ev, err)
		}
		rs, err := plain.Tenant("acme").AppendBatch(ctx, []client.AppendRequest{{Entity: "order:2", Scope: "shop", Kind: "1:1", Payload: json.RawMessage(`{}`)}})
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		page, err := plain.Tenant("acme").WithMinSequence(rs[0].GlobalSequence).QueryPage(ctx, client.Query{Entity: "order:2"})
		if err != nil || len(page.Events) != i+1 {
			t.Fatalf("read with min_seq %d through %s after batch %d: %d events, %v", rs[0].GlobalSequence, follower.id, i, len(page.Events), err)
		}
	}
}
