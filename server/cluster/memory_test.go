package cluster_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// TestLargeEntriesNotHeldInMemory: raft entries a node has written are
// not kept in memory by the hundred: a tenant writing large batches
// (each within Config.MaxBytes) cannot make every node hold the last
// thousand of them, however idle the cluster is afterwards.
func TestLargeEntriesNotHeldInMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 48 MiB")
	}
	c := newMemCluster(t, 1, fastTimeouts)
	n := c.settled(10 * time.Second)
	payload := `{"blob":"` + strings.Repeat("x", 512<<10-16) + `"}`
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const entries = 48
	for i := 0; i < entries; i++ {
		// Two 512 KiB events: one 1 MiB entry.
		mustAppend(t, n, "acme", item("e", payload, core.AppendOptions{}), item("e", payload, core.AppendOptions{}))
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew %d MiB after %d entries of 1 MiB", grew>>20, entries)
	if grew > 32<<20 {
		t.Fatalf("the heap holds %d MiB more after %d entries of 1 MiB, want them not kept (at most 32 MiB)", grew>>20, entries)
	}
}
