package cluster_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// leadingAlone opens node n1 over cfg (on raft's in-memory transport,
// fast timeouts) as a cluster of one and waits until it leads.
func leadingAlone(t *testing.T, cfg *cluster.Config) *cluster.Node {
	t.Helper()
	_, tr := raft.NewInmemTransport("n1")
	cfg.Transport = tr
	fastTimeouts(cfg)
	n, err := cluster.Open(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Bootstrap(cluster.Server{ID: "n1", Address: "n1"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("n1 did not lead within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return n
}

// TestDamagedRaftLogRefusedAtOpen: a node whose raft.db was cut short or
// overwritten in the middle fails Open with an error naming the file,
// rather than crashing the process.
func TestDamagedRaftLogRefusedAtOpen(t *testing.T) {
	for _, damage := range []string{"truncated", "zeroed"} {
		t.Run(damage, func(t *testing.T) {
			dir := t.TempDir()
			cfg := cluster.Config{ID: "n1", Dir: dir}
			n := leadingAlone(t, &cfg)
			for i := 0; i < 50; i++ {
				mustAppend(t, n, "acme", item("e", `{"n":1}`, core.AppendOptions{}))
			}
			n.Close()
			path := filepath.Join(dir, "raft", "raft.db")
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			switch damage {
			case "truncated":
				if err := os.Truncate(path, st.Size()/2); err != nil {
					t.Fatal(err)
				}
			case "zeroed":
				f, err := os.OpenFile(path, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteAt(make([]byte, 64<<10), 4<<10)
				f.Close()
			}
			_, tr2 := raft.NewInmemTransport("n1")
			cfg.Transport = tr2
			n2, err := cluster.Open(cfg)
			if err == nil {
				n2.Close()
				t.Fatalf("a %s raft.db opened", damage)
			}
			t.Logf("%s: %v", damage, err)
		})
	}
}

// TestDamagedSnapshotRefusedAtOpen: a node whose newest raft snapshot is
// damaged, and whose log no longer reaches back to the snapshot before it
// (trimmed after the newest), fails Open with an error naming the
// snapshot and what to do, rather than panicking in raft at every start.
func TestDamagedSnapshotRefusedAtOpen(t *testing.T) {
	dir := t.TempDir()
	cfg := cluster.Config{ID: "n1", Dir: dir, TrailingLogs: 2}
	n := leadingAlone(t, &cfg)
	for round := 0; round < 2; round++ {
		for i := 0; i < 20; i++ {
			mustAppend(t, n, "acme", item("e", `{"n":1}`, core.AppendOptions{}))
		}
		if err := n.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	n.Close()
	snaps, err := filepath.Glob(filepath.Join(dir, "raft", "snapshots", "*", "state.bin"))
	if err != nil || len(snaps) != 2 {
		t.Fatalf("snapshots %v (%v), want two", snaps, err)
	}
	newest := snaps[len(snaps)-1] // named term-index-time: the newest sorts last
	f, err := os.OpenFile(newest, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, 100)
	b[0] ^= 0xff
	f.WriteAt(b, 100)
	f.Close()

	for attempt := 0; attempt < 2; attempt++ {
		_, tr2 := raft.NewInmemTransport("n1")
		cfg.Transport = tr2
		n2, err := cluster.Open(cfg)
		if err == nil {
			n2.Close()
			t.Fatal("a node whose state cannot be restored opened")
		}
		msg := err.Error()
		for _, want := range []string{filepath.Base(filepath.Dir(newest)), "damaged", "cluster leave", "join it again"} {
			if !strings.Contains(msg, want) {
				t.Fatalf("Open's error does not say %q: %v", want, err)
			}
		}
		if attempt == 0 {
			t.Log(err)
		}
	}
}
