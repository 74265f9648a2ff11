package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// gateWriter blocks the write that contains "initial configuration"
// (raft logs it in NewRaft right after restoring the snapshot) until
// released: a follower whose snapshot restore takes a while.
type gateWriter struct {
	hit     chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gateWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("initial configuration")) {
		g.once.Do(func() { close(g.hit) })
		<-g.release
	}
	return len(p), nil
}

// TestRestartedFollowerNotesCommitsAsTheyArrive: a follower whose raft
// is slow to start (restoring a large snapshot) while its transport already
// takes the leader's requests, and the leader commits more meanwhile (a
// key's revocation), must not count itself caught up as of a time after
// that commit before its stores hold it: a request's commit index is as
// recent as its arrival, not as raft's taking it.
func TestRestartedFollowerNotesCommitsAsTheyArrive(t *testing.T) {
	root := t.TempDir()
	_, l, f := keyedNodes(t, root)
	ctx := context.Background()
	if err := appendOne(ctx, l); err != nil {
		t.Fatal(err)
	}
	f.WaitApplied(ctx, l.AppliedIndex())
	id, addr := f.ID(), f.Addr()
	f.Close()
	for i := 0; i < 5; i++ {
		appendOne(ctx, l)
	}
	time.Sleep(time.Second)

	g := &gateWriter{hit: make(chan struct{}), release: make(chan struct{})}
	opened := make(chan *Node, 1)
	go func() {
		cfg := keyedConfig(root, id, addr)
		cfg.Logger = slog.New(slog.NewTextHandler(g, nil))
		n, err := Open(cfg)
		if err != nil {
			t.Error(err)
		}
		opened <- n
	}()
	<-g.hit                            // f listens; its raft is not yet consuming
	time.Sleep(500 * time.Millisecond) // the leader's fresh request R1 is sent and queued
	c1 := l.raft.CommitIndex()
	// The leader commits a lot more meanwhile; the last one is "the revocation".
	var idx2 uint64
	for i := 0; i < 1500; i++ {
		if err := appendOne(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	idx2 = l.raft.CommitIndex()
	tC2 := time.Now()
	time.Sleep(100 * time.Millisecond)
	t.Logf("commit when f listened ~%d, revocation committed at index %d (%v)", c1, idx2, tC2.Format("15:04:05.000"))
	close(g.release)
	nf := <-opened
	if nf == nil {
		return
	}
	defer nf.Close()
	neverCaughtUpPast(t, nf, idx2, tC2)
}
