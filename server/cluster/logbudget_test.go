package cluster_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// TestRaftLogKeptWithinItsByteBudget: raft truncates its log by entry
// count, so entries of a large batch each (here ones every replica
// refuses, a compare-and-set that cannot hold, which raft logs all the
// same) would keep TrailingLogs × their size on every node's disk. With
// Config.LogMaxBytes the node snapshots once the entries since the last
// snapshot pass half of it and keeps fewer trailing entries: every node's
// log stays near the budget.
func TestRaftLogKeptWithinItsByteBudget(t *testing.T) {
	const budget = 4 << 20
	c := newMemCluster(t, 3, func(cfg *cluster.Config) {
		cfg.LogMaxBytes = budget
		cfg.SnapshotThreshold, cfg.SnapshotInterval = 1<<40, time.Hour // raft's own snapshots never come
	})
	l := c.leader(10 * time.Second)
	big := `{"s":"` + strings.Repeat("x", 256<<10) + `"}`
	ctx := context.Background()
	for i := 0; i < 80; i++ { // 20 MiB of entries: five budgets
		items := []core.BatchItem{item("e", big, core.AppendOptions{ExpectedClock: core.ExpectClock(999)})}
		res, err := l.AppendBatch(ctx, "acme", items)
		var nl *cluster.NotLeaderError
		if errors.As(err, &nl) || errors.Is(err, cluster.ErrOutcomeUnknown) {
			// A loaded machine's leader may step down under entries this
			// large: write through the next one.
			l = c.leader(10 * time.Second)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Err == nil {
			t.Fatal("a compare-and-set that cannot hold was written (the test needs entries that store nothing)")
		}
		time.Sleep(5 * time.Millisecond) // lets the budget's ticks see the log grow
	}
	l = c.leader(10 * time.Second)
	mustAppend(t, l, "acme", item("e", `{"ok":1}`, core.AppendOptions{}))
	waitFor(t, 10*time.Second, "every node's raft log within twice its budget", func() bool {
		for _, n := range c.list() {
			if _, b, err := cluster.RaftLogSize(n); err != nil || b > 2*budget {
				return false
			}
		}
		return true
	})
	for _, n := range c.list() {
		entries, bytes, _ := cluster.RaftLogSize(n)
		t.Logf("raft log: %d entries, %d KiB", entries, bytes>>10)
	}
}
