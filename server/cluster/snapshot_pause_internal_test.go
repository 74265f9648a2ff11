package cluster

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// singleNode starts a one-node cluster (its own leader) for a figure;
// it closes with the test.
func singleNode(t *testing.T) *Node {
	t.Helper()
	if os.Getenv("BATPAK_CLUSTER_FIGURES") == "" {
		t.Skip("a figure: set BATPAK_CLUSTER_FIGURES=1")
	}
	n, err := Open(Config{ID: "p1", Dir: filepath.Join(t.TempDir(), "p1"), Bind: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Bootstrap(Server{ID: n.ID(), Address: n.Addr()}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !n.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
	}
	return n
}

// TestSnapshotPause (a figure: BATPAK_CLUSTER_FIGURES=1) reports how long
// raft's applies wait for the state machine's Snapshot of 320 MiB of
// stores, the store open and then closed: sealed segments are linked
// into the staging directory, only the active segment is copied.
func TestSnapshotPause(t *testing.T) {
	n := singleNode(t)
	pad := []byte(`{"p":"` + strings.Repeat("x", 4000) + `"}`)
	items := make([]core.BatchItem, 4096)
	for i := range items {
		items[i] = core.BatchItem{Coordinate: core.Coordinate{Entity: "b" + strconv.Itoa(i%16), Scope: "s"}, Kind: core.MustKind(1, 1), Payload: pad}
	}
	for range 20 {
		if rs, err := n.AppendBatch(context.Background(), "bulk", items); err != nil || rs[0].Err != nil {
			t.Fatalf("a batch: %v %+v", err, rs)
		}
	}
	snapshotPauses(t, n, "320 MiB (store open)")
	n.fsm.closeIdle(time.Now().Add(time.Hour))
	if st := n.fsm.storeStats(); st.Open != 0 {
		t.Fatalf("%d stores still open", st.Open)
	}
	snapshotPauses(t, n, "320 MiB (store closed)")
}

// TestSnapshotPauseManyTenants (a figure: BATPAK_CLUSTER_FIGURES=1)
// reports how long raft's applies wait for the state machine's Snapshot
// of 1,000 small tenant stores, all of them open.
func TestSnapshotPauseManyTenants(t *testing.T) {
	n := singleNode(t)
	one := core.BatchItem{Coordinate: core.Coordinate{Entity: "e", Scope: "s"}, Kind: core.MustKind(1, 1), Payload: []byte(`{"n":1}`)}
	const tenants = 1000
	for i := range tenants {
		if rs, err := n.AppendBatch(context.Background(), "t"+strconv.Itoa(i), []core.BatchItem{one}); err != nil || rs[0].Err != nil {
			t.Fatalf("a write: %v %+v", err, rs)
		}
	}
	t.Logf("%d stores open", n.fsm.storeStats().Open)
	snapshotPauses(t, n, strconv.Itoa(tenants)+" small tenant stores")
}

// snapshotPauses times n's state machine Snapshot three times (how long
// raft's applies wait) and reports each as a figure of what.
func snapshotPauses(t *testing.T, n *Node, what string) {
	t.Helper()
	for range 3 {
		t0 := time.Now()
		snap, err := n.fsm.Snapshot()
		d := time.Since(t0)
		if err != nil {
			t.Fatal(err)
		}
		snap.Release()
		t.Logf("FIGURE state machine Snapshot of %s: %v", what, d.Round(100*time.Microsecond))
	}
}
