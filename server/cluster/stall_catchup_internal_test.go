package cluster

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
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
	root := t.TempDir()
	key := bytes.Repeat([]byte("t"), 32)
	var nodes []*Node
	var servers []Server
	for i := 1; i <= 3; i++ {
		n, err := Open(Config{ID: fmt.Sprintf("s%d", i), Dir: filepath.Join(root, fmt.Sprint(i)), PeerKey: key, Bind: "127.0.0.1:0",
			HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, LeaderLeaseTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
		servers = append(servers, Server{ID: n.ID(), Address: n.Addr()})
	}
	if err := nodes[0].Bootstrap(servers...); err != nil {
		t.Fatal(err)
	}
	var l *Node
	for l == nil {
		for _, n := range nodes {
			if n.IsLeader() {
				l = n
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	var f *Node
	for _, n := range nodes {
		if n != l {
			f = n
		}
	}
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

	violations, first := 0, ""
	var firstAt, lastAt time.Time
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		at := f.CaughtUpAt()
		st := f.state.index()
		if at.After(tE) && st < idxE {
			violations++
			if firstAt.IsZero() {
				firstAt = time.Now()
			}
			lastAt = time.Now()
			if first == "" {
				first = fmt.Sprintf("CaughtUpAt=%s, %v after index %d was committed, while the stores reflect %d",
					at.Format("15:04:05.000"), at.Sub(tE), idxE, st)
			}
		}
		if st >= idxE {
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	t.Logf("committed %d by %s", idxE, tE.Format("15:04:05.000"))
	if violations > 0 {
		t.Errorf("a follower counted itself caught up past a commit it lacks: %d samples over %v; first: %s", violations, lastAt.Sub(firstAt), first)
	}
}
