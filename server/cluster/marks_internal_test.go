package cluster

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
)

// TestMarkNeverAheadOfStore: a store's mark names a write only once the
// store holds its events, so a reader that takes the mark and then the
// store's end (the replica check) never records a write with an end
// before it, and never skips the tenant later as "nothing written since".
func TestMarkNeverAheadOfStore(t *testing.T) {
	f := testFSM(t)
	mustApply(t, f, writeEntry(t, 1, "acme", "e-1"))
	seen := 0
	for i := uint64(2); i < 200; i++ {
		done := make(chan struct{})
		go func() { defer close(done); mustApply(t, f, writeEntry(t, i, "acme", "e")) }()
		for {
			m := f.marks.get("acme")
			if m.Wrote == i {
				e, err := f.hold("acme", false, false)
				if err != nil {
					t.Fatal(err)
				}
				end := e.s.Usage().GlobalSequence
				e.release()
				if end < i { // entry i is the i-th event: the end is i once written
					seen++
				}
				break
			}
		}
		<-done
	}
	if seen > 0 {
		t.Fatalf("%d of 198 times the mark named a write whose event the store did not hold yet", seen)
	}
}

// TestInspectIsNoUse: Inspect does not count as a use of the store (an
// idle store stays idle, and does not move ahead of the stores requests
// use when the node needs room), neither of one open nor of one it opens.
func TestInspectIsNoUse(t *testing.T) {
	f := testFSM(t)
	mustApply(t, f, writeEntry(t, 1, "acme", "e-1"))
	n := &Node{fsm: f}
	e, err := f.hold("acme", false, true)
	if err != nil {
		t.Fatal(err)
	}
	e.release()
	before := e.lastUsed.Load()
	time.Sleep(20 * time.Millisecond)
	if err := n.Inspect("acme", func(*core.Store) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if after := e.lastUsed.Load(); after != before {
		t.Errorf("an open store's last use moved %s by Inspect", time.Duration(after-before))
	}
	// A closed store opened by Inspect: its last use is the open.
	f.closeIdle(time.Now().Add(time.Hour))
	start := time.Now()
	if err := n.Inspect("acme", func(*core.Store) error { return nil }); err != nil {
		t.Fatal(err)
	}
	f.mu.RLock()
	e2 := f.stores["acme"]
	f.mu.RUnlock()
	if e2 != nil && e2.lastUsed.Load() >= start.UnixNano() {
		t.Errorf("a store Inspect opened counts as used now: it stays open a whole idle timeout and ahead in the LRU")
	}
}

// TestInspectNeverCreates: Inspect of a store dropped (or never written)
// answers ErrNoTenant and leaves no directory behind; the dropped store's
// mark is gone with it.
func TestInspectNeverCreates(t *testing.T) {
	f := testFSM(t)
	n := &Node{fsm: f}
	mustApply(t, f, writeEntry(t, 1, "acme", "e-1"))
	if m := n.Mark("acme"); m.Born != 1 || m.Wrote != 1 {
		t.Fatalf("mark after a write at 1: %+v", m)
	}
	drop, err := encodeCommand(&command{Op: opDrop, Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, f, &raft.Log{Type: raft.LogCommand, Index: 2, Data: drop})
	if m := n.Mark("acme"); m != (StoreMark{}) {
		t.Fatalf("mark of a dropped store: %+v", m)
	}
	for _, name := range []string{"acme", "ghost"} {
		if err := n.Inspect(name, func(*core.Store) error { return nil }); !errors.Is(err, ErrNoTenant) {
			t.Fatalf("Inspect(%s): %v, want ErrNoTenant", name, err)
		}
		if _, err := os.Stat(filepath.Join(f.root, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Inspect(%s) left a store directory: %v", name, err)
		}
	}
}
