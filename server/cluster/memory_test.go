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
// thousand of them, however idle the cluster is afterwards. The cache of
// recent entries holds at most 3 × MaxBytes + 16 MiB (64 MiB here).
func TestLargeEntriesNotHeldInMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 128 MiB")
	}
	c := newMemCluster(t, 1, fastTimeouts)
	n := c.settled(10 * time.Second)
	payload := `{"blob":"` + strings.Repeat("x", 512<<10-16) + `"}`
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const entries = 128
	for i := 0; i < entries; i++ {
		// Two 512 KiB events: one 1 MiB entry.
		mustAppend(t, n, "acme", item("e", payload, core.AppendOptions{}), item("e", payload, core.AppendOptions{}))
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew %d MiB after %d entries of 1 MiB", grew>>20, entries)
	if grew > 80<<20 {
		t.Fatalf("the heap holds %d MiB more after %d entries of 1 MiB, want them not all kept (at most the cache's 64 MiB, and some slack)", grew>>20, entries)
	}
}
