package cluster

import (
	"time"
)

// logBudgetEvery is how often logBudget looks at the entries applied
// since the last snapshot.
const logBudgetEvery = 250 * time.Millisecond

// minBudgetSnapshotGap is the least time between two snapshots logBudget
// takes: each copies every store on the node, so a tenant writing the
// largest batches at its full byte rate cannot keep the disk busy
// copying everyone's data (the log may pass its budget by what arrives
// meanwhile).
const minBudgetSnapshotGap = 5 * time.Second

// minTrailingLogs is the fewest entries logBudget has a snapshot keep
// behind it, so a follower a moment behind still catches up from the log.
const minTrailingLogs = 8

// logBudget keeps raft's log within about Config.LogMaxBytes, on this
// node, until Close: raft truncates its log only after a snapshot, to
// TrailingLogs entries, and counts entries, not bytes — at the default
// 10,240 trailing entries of up to 16 MiB each, 160 GiB per node. Every
// logBudgetEvery it sets the snapshots' trailing entries to what half the
// budget holds at the average size of the entries applied since the
// last snapshot (between minTrailingLogs and configured, the configured
// TrailingLogs), and takes a snapshot once those entries pass the other
// half, at most one every minBudgetSnapshotGap. A halted node takes none
// (Node.Snapshot says why).
func (n *Node) logBudget(configured uint64, done chan<- struct{}) {
	defer close(done)
	half := n.cfg.LogMaxBytes / 2
	current := configured
	var last time.Time // when logBudget's last snapshot ended
	t := time.NewTicker(logBudgetEvery)
	defer t.Stop()
	for {
		select {
		case <-n.fsm.stop:
			return
		case <-t.C:
		}
		if n.fsm.err() != nil {
			continue
		}
		entries, bytes := n.fsm.sinceSnapEntries.Load(), n.fsm.sinceSnapBytes.Load()
		if entries > 0 {
			if want := trailingFor(bytes/entries, half, configured); want != current {
				rc := n.raft.ReloadableConfig()
				rc.TrailingLogs = want
				if n.raft.ReloadConfig(rc) == nil {
					current = want
				}
			}
		}
		if bytes >= half && time.Since(last) >= minBudgetSnapshotGap {
			// Raft refuses while another snapshot runs, or when nothing
			// is new: either way the next tick looks again.
			_ = n.raft.Snapshot().Error()
			last = time.Now()
		}
	}
}

// trailingFor is how many entries of avg bytes fit in half, between
// minTrailingLogs and configured.
func trailingFor(avg, half int64, configured uint64) uint64 {
	if avg <= 0 {
		return configured
	}
	return max(min(uint64(half/avg), configured), min(minTrailingLogs, configured))
}
