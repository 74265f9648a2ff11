package cluster

import (
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/tenancy"
)

// applyOnly is the Replicator of a state machine tested without a node:
// the stores take writes only through the state machine.
type applyOnly struct{}

func (applyOnly) Replicate(bool, []core.BatchItem, func([]core.Receipt, error)) {
	panic("no writes are taken in this test")
}

func testFSM(t *testing.T) *fsm {
	t.Helper()
	dir := t.TempDir()
	f := newFSM(filepath.Join(dir, "tenants"), filepath.Join(dir, "staging"), func(_, d string) core.Config {
		c := tenancy.StoreConfig(d, false)
		c.Replicator = applyOnly{}
		return c
	})
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.closeStores()
	})
	return f
}

func writeEntry(t *testing.T, index uint64, tenant, entity string) *raft.Log {
	t.Helper()
	data, err := encodeCommand(&command{Tenant: tenant, Items: []wireItem{toWire(core.BatchItem{
		Coordinate: core.Coordinate{Entity: entity, Scope: "s"}, Kind: core.MustKind(1, 1), Payload: []byte(`{}`),
		Options: core.AppendOptions{ID: core.NewEventID(), Timestamp: int64(index)}})}})
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Type: raft.LogCommand, Index: index, Data: data}
}

func mustApply(t *testing.T, f *fsm, logs ...*raft.Log) {
	t.Helper()
	for i, r := range f.ApplyBatch(logs) {
		rs, ok := r.([]Result)
		if !ok || rs[0].Err != nil {
			t.Fatalf("entry %d: %v", i, r)
		}
	}
}

type bufSink struct{ bytes.Buffer }

func (*bufSink) ID() string    { return "test" }
func (*bufSink) Cancel() error { return nil }
func (*bufSink) Close() error  { return nil }

func snapshotOf(t *testing.T, f *fsm) io.ReadCloser {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	var sink bufSink
	if err := s.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return io.NopCloser(&sink)
}

// TestRestoreRefusesAStoreThatIsNotAPrefix: an open store whose events
// are not a prefix of the snapshot's is an error naming the tenant, not
// something papered over; one that is a prefix is caught up in place.
func TestRestoreRefusesAStoreThatIsNotAPrefix(t *testing.T) {
	first := writeEntry(t, 1, "acme", "a")
	local, ahead, other := testFSM(t), testFSM(t), testFSM(t)
	mustApply(t, local, first)
	mustApply(t, ahead, first, writeEntry(t, 2, "acme", "b"), writeEntry(t, 3, "globex", "c"))
	mustApply(t, other, writeEntry(t, 1, "acme", "a"), writeEntry(t, 2, "acme", "b"))

	h, err := local.acquire("acme", false)
	if err != nil {
		t.Fatal(err)
	}
	defer h.release()
	held := h.s
	err = local.Restore(snapshotOf(t, other))
	if err == nil || !strings.Contains(err.Error(), `"acme"`) || !strings.Contains(err.Error(), "not a prefix") {
		t.Fatalf("restore over a diverged store: %v, want an error naming acme", err)
	}
	if err := local.Restore(snapshotOf(t, ahead)); err != nil {
		t.Fatal(err)
	}
	if e, err := local.acquire("acme", false); err != nil || e.s != held {
		t.Fatalf("the held store was replaced (%v)", err)
	} else {
		e.release()
	}
	evs, err := held.Query(core.All())
	if err != nil || len(evs) != 2 {
		t.Fatalf("caught-up store: %d events (%v), want 2", len(evs), err)
	}
	if local.appliedIndex() != 3 {
		t.Fatalf("applied index %d after the restore, want 3", local.appliedIndex())
	}
	if g, err := local.acquire("globex", false); err != nil {
		t.Fatal(err)
	} else if evs, err := g.s.Query(core.All()); err != nil || len(evs) != 1 {
		t.Fatalf("globex from the snapshot: %d events (%v)", len(evs), err)
	}
}
