package core_test

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// cursorReplica is a Replicator that also replicates named cursors: a
// commit is applied to every replica of its log, in the caller's goroutine
// (the test's writes are all applied by then), unless fail is set.
type cursorReplica struct {
	memReplica
	calls *atomic.Int64
	fail  *atomic.Pointer[error]
}

func (r cursorReplica) ReplicateCursor(name string, pos uint64) error {
	r.calls.Add(1)
	if p := r.fail.Load(); p != nil {
		return *p
	}
	for _, s := range r.log.replicas {
		if err := s.CommitReplicatedCursor(name, pos); err != nil {
			return err
		}
	}
	return nil
}

// TestNamedCursorCommitsReplicate: on a store whose Replicator replicates
// cursors, Commit hands the position to it and every replica then holds
// it; a position past the log's end, or a refusal of the log, moves
// nothing.
func TestNamedCursorCommitsReplicate(t *testing.T) {
	l := &memLog{entries: make(chan memEntry, 64), done: make(chan struct{})}
	var calls atomic.Int64
	var fail atomic.Pointer[error]
	for i := 0; i < 2; i++ {
		r := cursorReplica{memReplica{l, i}, &calls, &fail}
		l.replicas = append(l.replicas, openStore(t, func(c *core.Config) { c.Replicator = r }))
	}
	go l.run(t)
	t.Cleanup(func() { close(l.entries); <-l.done })
	a, b := l.replicas[0], l.replicas[1]
	c1 := mustCoord(t, "acct-1", "s")
	for i := 0; i < 3; i++ {
		mustAppend(t, a, c1, kindA, `{"n":1}`)
	}
	cur := mustNamedCursor(t, a, "billing", core.All())
	if evs := mustPoll(t, cur, 10); len(evs) != 3 {
		t.Fatalf("polled %d events, want 3", len(evs))
	}
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 || cur.Committed() != 3 {
		t.Fatalf("ReplicateCursor called %d times, committed %d; want 1 and 3", calls.Load(), cur.Committed())
	}
	for i, s := range []*core.Store{a, b} {
		if got := mustNamedCursor(t, s, "billing", core.All()).Committed(); got != 3 {
			t.Fatalf("replica %d: billing resumes at %d, want 3", i, got)
		}
		if ps, err := s.CursorPositions(); err != nil || len(ps) != 1 || ps["billing"] != 3 {
			t.Fatalf("replica %d: CursorPositions = %v, %v", i, ps, err)
		}
	}
	// Past the end: refused before the log is asked.
	cur.Seek(99)
	var ahead *core.CursorAheadError
	if err := cur.Commit(); !errors.As(err, &ahead) || calls.Load() != 1 {
		t.Fatalf("commit past the end: %v (%d calls), want a *CursorAheadError and no proposal", err, calls.Load())
	}
	// The log's refusal is Commit's; nothing moves.
	errLost := errors.New("leadership lost")
	fail.Store(&errLost)
	cur.Seek(1)
	if err := cur.Commit(); !errors.Is(err, errLost) || cur.Committed() != 3 {
		t.Fatalf("refused commit: %v, committed %d; want the log's error and 3", err, cur.Committed())
	}
	if got := mustNamedCursor(t, b, "billing", core.All()).Committed(); got != 3 {
		t.Fatalf("replica b moved to %d on a refused commit", got)
	}
	if err := b.CommitReplicatedCursor("bad name", 0); !errors.Is(err, core.ErrInvalidCursorName) {
		t.Fatalf("bad name: %v", err)
	}
	if err := b.CommitReplicatedCursor("billing", 4); !errors.As(err, &ahead) {
		t.Fatalf("apply past the end: %v", err)
	}
}

// TestCommitReplicatedCursorNeedsAReplicator: a store writing its own log
// takes no replicated cursor positions, and keeps committing its own.
func TestCommitReplicatedCursorNeedsAReplicator(t *testing.T) {
	s := openStore(t)
	mustAppend(t, s, mustCoord(t, "e", "s"), kindA, `{}`)
	if err := s.CommitReplicatedCursor("c", 1); !errors.Is(err, core.ErrNotReplicated) {
		t.Fatalf("CommitReplicatedCursor without a Replicator: %v, want ErrNotReplicated", err)
	}
	cur := mustNamedCursor(t, s, "c", core.All())
	mustPoll(t, cur, 10)
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	if ps, err := s.CursorPositions(); err != nil || ps["c"] != 1 {
		t.Fatalf("CursorPositions = %v, %v; want c at 1", ps, err)
	}
}

// volatileReplica is a memReplica whose replicas are rebuilt from the log
// after a crash (core.VolatileReplica).
type volatileReplica struct{ memReplica }

func (volatileReplica) VolatileReplica() bool { return true }

// TestVolatileReplicaCursorCommitsSkipSyncs: a replica whose Replicator
// says its files are rebuilt from the replicated log writes an applied
// cursor position without syncing the log or the position file (a power
// loss leaves neither: the log replays them), while any other replica
// syncs both, so its position never points past events a power loss
// keeps.
func TestVolatileReplicaCursorCommitsSkipSyncs(t *testing.T) {
	for _, volatile := range []bool{false, true} {
		l := &memLog{entries: make(chan memEntry, 64), done: make(chan struct{})}
		mem := vfs.NewStrictMem()
		cfg := memConfig(func(c *core.Config) {
			c.Sync.EveryNEvents, c.Sync.Interval = 0, 0 // replicas never sync their own writes
			if volatile {
				c.Replicator = volatileReplica{memReplica{l, 0}}
			} else {
				c.Replicator = memReplica{l, 0}
			}
		})
		s := openMem(t, cfg, mem)
		l.replicas = []*core.Store{s}
		go l.run(t)
		c1 := mustCoord(t, "acct-1", "s")
		for i := 0; i < 3; i++ {
			mustAppend(t, s, c1, kindA, `{"n":1}`)
		}
		if err := s.CommitReplicatedCursor("billing", 3); err != nil {
			t.Fatal(err)
		}
		close(l.entries)
		<-l.done
		if got := mustNamedCursor(t, s, "billing", core.All()).Committed(); got != 3 {
			t.Fatalf("volatile %v: billing resumes at %d, want 3", volatile, got)
		}
		after := afterPowerLoss(t, cfg, mem)
		ps, err := after.CursorPositions()
		if err != nil {
			t.Fatal(err)
		}
		events := after.Usage().GlobalSequence
		switch {
		case volatile && (ps["billing"] != 0 || events != 0):
			t.Errorf("a volatile replica synced: after a power loss billing is at %d with %d events", ps["billing"], events)
		case !volatile && (ps["billing"] != 3 || events != 3):
			t.Errorf("a durable replica: after a power loss billing is at %d with %d events, want 3 and 3", ps["billing"], events)
		}
	}
}
