package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
	"github.com/batpak-go/batpak/server/tenancy"
)

// refuseEntity is a gate refusing writes to one entity.
type refuseEntity string

var errRefusedByGate = errors.New("refused by the gate")

func (g refuseEntity) Admit(_ context.Context, p *core.Proposal) error {
	if p.Coordinate.Entity == string(g) {
		return errRefusedByGate
	}
	return nil
}

// TestStoreWritesReplicate: writes taken through a node's store API —
// appends, batches, reactions — are admitted by the leader's gate, then
// replicated, and every replica ends identical; a follower's store refuses
// a write with the leader's address and proposes nothing; the system store
// replicates like a tenant's.
func TestStoreWritesReplicate(t *testing.T) {
	c := newMemCluster(t, 3, func(cfg *cluster.Config) {
		cfg.StoreConfig = func(_, dir string) core.Config {
			sc := tenancy.StoreConfig(dir, false)
			sc.Sync.EveryNEvents, sc.Sync.Interval = 0, 0
			sc.Admission = refuseEntity("forbidden")
			return sc
		}
	})
	l := c.settled(10 * time.Second)
	ctx := context.Background()
	s, err := l.Store("acme")
	if err != nil {
		t.Fatal(err)
	}
	coord := core.Coordinate{Entity: "order-1", Scope: "s"}
	r1, err := s.AppendWithOptions(ctx, coord, kindA, []byte(`{"n":1}`), core.AppendOptions{ExpectedClock: core.ExpectNoEvents(), IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.AppendWithOptions(ctx, coord, kindA, []byte(`{"n":1}`), core.AppendOptions{IdempotencyKey: "k1"}); err != nil || !again.Deduplicated || again.ID != r1.ID {
		t.Fatalf("idempotent retry: %+v %v", again, err)
	}
	var ce *core.ConflictError
	if _, err := s.AppendWithOptions(ctx, coord, kindA, []byte(`{}`), core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}); !errors.As(err, &ce) {
		t.Fatalf("CAS miss: %v", err)
	}
	brs, err := s.AppendBatch(ctx, []core.BatchItem{item("order-2", `{"n":2}`, core.AppendOptions{}), {Coordinate: coord, Kind: kindA, Payload: []byte(`{"n":3}`), Causation: core.PriorItem(0)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendReaction(ctx, core.Coordinate{Entity: "order-2", Scope: "s"}, kindA, []byte(`{"r":1}`), brs[0].CorrelationID, brs[1].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, core.Coordinate{Entity: "forbidden", Scope: "s"}, kindA, []byte(`{}`)); !errors.Is(err, errRefusedByGate) {
		t.Fatalf("gate: %v", err)
	}
	if _, err := s.BeginFence(ctx); !errors.Is(err, core.ErrReplicated) {
		t.Fatalf("fence on a replicated store: %v", err)
	}
	sys, err := l.Store(cluster.SystemStore)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sys.Append(ctx, core.Coordinate{Entity: "tenant:acme", Scope: "control"}, kindA, []byte(`{"created":true}`)); err != nil {
		t.Fatal(err)
	}
	// A follower's store refuses, naming the leader; nothing is proposed.
	for _, n := range c.list() {
		if n == l {
			continue
		}
		fs, err := n.Store("acme")
		if err != nil {
			t.Fatal(err)
		}
		_, err = fs.Append(ctx, coord, kindA, []byte(`{}`))
		var nl *cluster.NotLeaderError
		if !errors.As(err, &nl) || nl.Leader != l.Addr() {
			t.Fatalf("%s: append on a follower: %v, want a *NotLeaderError naming %s", n.ID(), err, l.Addr())
		}
	}
	if err := l.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	assertIdentical(t, c.list(), l.AppliedIndex(), "acme", cluster.SystemStore)
	if got := len(mustEvents(t, l, "acme")); got != 4 {
		t.Fatalf("leader holds %d events, want 4", got)
	}
	// The follower's store object sees the replicated events.
	for _, n := range c.list() {
		fs, _ := n.Store("acme")
		evs, err := fs.Query(core.All())
		if err != nil || len(evs) != 4 {
			t.Fatalf("%s: %d events through its store, %v", n.ID(), len(evs), err)
		}
	}
}

func mustEvents(t *testing.T, n *cluster.Node, tenant string) []core.StoredEvent {
	t.Helper()
	var evs []core.StoredEvent
	if err := n.View(tenant, func(s *core.Store) (err error) { evs, err = s.Query(core.All()); return err }); err != nil {
		t.Fatal(err)
	}
	return evs
}
