package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestStalledFollowerNotesNoStaleCommits: a follower whose raft stalls
// for 2 s (its log write waits) while the leader commits with the third
// node must not count itself caught up, after the stall, as of a time
// past a commit its stores lack. With pipelined replication the leader's
// requests waited in the follower's socket (its transport reads one per
// connection at a time), each naming the commit index of when it was
// made, and were noted as current when read after the stall.
func TestStalledFollowerNotesNoStaleCommits(t *testing.T) {
	_, l, f := keyedNodes(t, t.TempDir())
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if err := appendOne(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	f.WaitApplied(ctx, l.AppliedIndex())
	time.Sleep(300 * time.Millisecond)

	lc := f.state.log.(*logCache)
	lc.mu.Lock() // f's raft stalls on its next log write
	stall := time.Now()
	var idxE uint64
	for time.Since(stall) < 2*time.Second {
		if err := appendOne(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	idxE = l.raft.CommitIndex()
	tE := time.Now() // "the revocation" (index idxE) was committed before tE
	time.Sleep(50 * time.Millisecond)
	lc.mu.Unlock()

	t.Logf("committed %d by %s", idxE, tE.Format("15:04:05.000"))
	neverCaughtUpPast(t, f, idxE, tE)
}

// neverCaughtUpPast polls f until its stores hold index (at most 10 s) and
// fails if meanwhile f counted itself caught up as of a moment after
// committed, when index was committed, while its stores lacked index.
func neverCaughtUpPast(t *testing.T, f *Node, index uint64, committed time.Time) {
	t.Helper()
	violations, first := 0, ""
	var firstAt, lastAt time.Time
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Microsecond) {
		at, st := f.CaughtUpAt(), f.state.index()
		if at.After(committed) && st < index {
			violations++
			if firstAt.IsZero() {
				firstAt = time.Now()
			}
			lastAt = time.Now()
			if first == "" {
				first = fmt.Sprintf("CaughtUpAt=%s, %v after index %d was committed, while the stores reflect %d",
					at.Format("15:04:05.000"), at.Sub(committed), index, st)
			}
		}
		if st >= index {
			break
		}
	}
	if violations > 0 {
		t.Errorf("a follower counted itself caught up past a commit it lacks: %d samples over %v; first: %s", violations, lastAt.Sub(firstAt), first)
	}
}
