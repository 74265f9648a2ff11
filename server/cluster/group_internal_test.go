package cluster

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
)

// openLeader opens a one-node cluster and waits for it to lead.
func openLeader(t *testing.T) *Node {
	t.Helper()
	_, tr := raft.NewInmemTransport("a")
	n, err := Open(Config{ID: "a", Dir: filepath.Join(t.TempDir(), "a"), Transport: tr,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Bootstrap(Server{ID: "a", Address: "a"}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !n.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
	}
	if err := n.Barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

// haltOnNewerEntry makes n's FSM halt on an entry from a newer node (it
// then waits for Close) and returns the applied index before it.
func haltOnNewerEntry(t *testing.T, n *Node) uint64 {
	t.Helper()
	before := n.AppliedIndex()
	go n.raft.Apply([]byte{commandVersion + 9}, time.Second)
	for deadline := time.Now().Add(5 * time.Second); n.Err() == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the node did not halt")
		}
	}
	return before
}

// writeCommand is an encoded one-item write to tenant acme.
func writeCommand(t *testing.T, entity string) []byte {
	t.Helper()
	data, err := encodeCommand(&command{Tenant: "acme", Items: []wireItem{toWire(core.BatchItem{
		Coordinate: core.Coordinate{Entity: entity, Scope: "s"}, Kind: core.MustKind(1, 1),
		Payload: []byte(`1`), Options: core.AppendOptions{ID: core.NewEventID(), Timestamp: 1}})}})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// waitCommitted waits until every entry in n's log is committed.
func waitCommitted(t *testing.T, n *Node) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st := n.raft.Stats()
		if st["commit_index"] == st["last_log_index"] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("entries not committed: %v", st)
		}
	}
}

// TestHaltedNodeAppliesNothingAfterTheHalt: entries committed behind the
// one a node halted on are never applied there, not even when Close
// releases the halted apply: the node's stores stop at the halt (they
// could not match the other replicas' past it) and nothing after it is
// acknowledged.
func TestHaltedNodeAppliesNothingAfterTheHalt(t *testing.T) {
	for round := range 5 {
		n := openLeader(t)
		before := haltOnNewerEntry(t, n)
		futures := make([]raft.ApplyFuture, 8)
		for i := range futures {
			futures[i] = n.raft.Apply(writeCommand(t, "e"+strconv.Itoa(i)), time.Second)
		}
		waitCommitted(t, n)
		time.Sleep(20 * time.Millisecond)
		n.Close()
		if got := n.AppliedIndex(); got != before {
			t.Fatalf("round %d: applied index moved from %d to %d past the entry the node halted on", round, before, got)
		}
		// raft's shutdown drops some unanswered
		wait, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		for i, f := range futures {
			done := make(chan struct{})
			go func() { f.Error(); close(done) }()
			select {
			case <-done:
				if rs, ok := f.Response().([]Result); ok && f.Error() == nil {
					t.Fatalf("round %d: write %d after the halt acknowledged: %+v", round, i, rs)
				}
			case <-wait.Done():
			}
		}
		cancel()
	}
}

// TestGroupedWritesCommittedButUnappliedAtCloseAreAnswered: writes whose
// entry raft committed but had not applied when the node closed (here:
// behind an entry the node halted on) are answered by Close — raft drops
// such entries' futures without answering them.
func TestGroupedWritesCommittedButUnappliedAtCloseAreAnswered(t *testing.T) {
	for round := range 5 {
		n := openLeader(t)
		haltOnNewerEntry(t, n)
		// Writes that passed canPropose just before the halt.
		answers := make(chan error, 8)
		for i := range 8 {
			n.group.submit("t", writeCommand(t, "e"+strconv.Itoa(i)), func(_ []Result, err error) { answers <- err })
		}
		// Wait until their entries are committed (queued for the halted FSM).
		for deadline := time.Now().Add(5 * time.Second); n.group.writes.Load() < 8; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("writes not proposed")
			}
		}
		waitCommitted(t, n)
		time.Sleep(20 * time.Millisecond)
		if err := n.Close(); err != nil {
			t.Logf("close: %v", err)
		}
		for i := range 8 {
			select {
			case err := <-answers:
				if err == nil || !(errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrHalted) || errors.Is(err, ErrClosed)) {
					t.Fatalf("round %d: a write after the halt answered %v", round, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: %d of 8 writes never answered after Close", round, 8-i)
			}
		}
	}
}

// TestHaltedNodeTakesNoSnapshot: once a node halted, a snapshot (raft's
// own, or Node.Snapshot) is refused with the halt: raft counts the entry
// the node halted on as applied when Close releases it, so a copy of the
// stores would be labelled with an entry they lack and a restart would
// restore past it.
func TestHaltedNodeTakesNoSnapshot(t *testing.T) {
	n := openLeader(t)
	mustApply := func() {
		t.Helper()
		if err := n.raft.Apply(writeCommand(t, "e"), time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	mustApply()
	haltOnNewerEntry(t, n)
	snap, err := n.fsm.Snapshot()
	if err == nil {
		snap.Release()
		t.Fatal("a halted node's state machine took a snapshot")
	}
	if !errors.Is(err, ErrHalted) {
		t.Fatalf("snapshot of a halted node: %v, want the halt (ErrHalted)", err)
	}
}

// TestDamagedEntryHaltIsErrHalted: a node halted by an entry it cannot
// decode (not a newer format: damaged) refuses writes with ErrHalted, as
// documented, and Err names the damage.
func TestDamagedEntryHaltIsErrHalted(t *testing.T) {
	n := openLeader(t)
	go n.raft.Apply([]byte{commandVersion, 0xff}, time.Second) // a tenant length past the end
	for deadline := time.Now().Add(5 * time.Second); n.Err() == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the node did not halt")
		}
	}
	if !errors.Is(n.Err(), ErrHalted) || !strings.Contains(n.Err().Error(), "undecodable") {
		t.Fatalf("Err() = %v, want ErrHalted naming the undecodable entry", n.Err())
	}
	_, err := n.Append(context.Background(), "acme", core.BatchItem{Coordinate: core.Coordinate{Entity: "e", Scope: "s"}, Kind: core.MustKind(1, 1), Payload: []byte(`1`)})
	if !errors.Is(err, ErrHalted) {
		t.Fatalf("append on a halted node: %v, want ErrHalted", err)
	}
}

// TestWriteQueueBounded: writes waiting for an entry are bounded in
// number and bytes; past either a write is refused at once with a
// *core.RetryError (nothing proposed), and room made by proposing lets
// writes in again; one write larger than the byte bound fits an empty
// queue.
func TestWriteQueueBounded(t *testing.T) {
	g := newGrouper(&Node{}) // not running: nothing drains the queue
	var refused []error
	done := func(_ []Result, err error) {
		if err != nil {
			refused = append(refused, err)
		}
	}
	for range groupMaxQueued {
		g.submit("t", []byte{1}, done)
	}
	if len(refused) != 0 {
		t.Fatalf("%d writes refused within the bound: %v", len(refused), refused[0])
	}
	g.submit("t", []byte{1}, done)
	var re *core.RetryError
	if len(refused) != 1 || !errors.As(refused[0], &re) || re.After <= 0 || !strings.Contains(re.Reason, "write queue") {
		t.Fatalf("a write past %d queued: %v, want a *core.RetryError naming the write queue", groupMaxQueued, refused)
	}
	for g.queued() > 0 {
		g.take()
	}
	g.submit("t", make([]byte, groupMaxQueuedBytes/2), done)
	g.submit("t", make([]byte, groupMaxQueuedBytes/2), done)
	if len(refused) != 1 {
		t.Fatalf("writes within the byte bound refused: %v", refused[1:])
	}
	g.submit("t", []byte{1}, done)
	if len(refused) != 2 || !errors.As(refused[1], &re) {
		t.Fatalf("a write past %d queued bytes: %v, want a *core.RetryError", groupMaxQueuedBytes, refused)
	}
	for g.queued() > 0 {
		g.take()
	}
	g.submit("t", make([]byte, groupMaxQueuedBytes+1), done) // one write larger than the bound fits an empty queue
	if len(refused) != 2 {
		t.Fatalf("a lone large write refused: %v", refused[2:])
	}
}

// TestTakeLetsSmallWritesPassALargeOne: while an entry of one large write
// is in flight, the small writes of other tenants queued behind the next
// large one go ahead of it; a tenant's own writes keep their order; one
// large write goes at a time.
func TestTakeLetsSmallWritesPassALargeOne(t *testing.T) {
	g := newGrouper(&Node{})
	large, small := make([]byte, groupMaxBytes+1), []byte{1}
	names := map[*proposal]string{}
	add := func(tenant string, data []byte, name string) {
		g.submit(tenant, data, func([]Result, error) {})
		names[g.queue[len(g.queue)-1]] = name
	}
	add("a", large, "a-large-1")
	add("a", large, "a-large-2")
	add("b", small, "b-small-1")
	add("a", small, "a-small-3")
	add("c", small, "c-small")
	add("b", large, "b-large")
	took := func() string {
		var out []string
		for _, p := range g.take() {
			out = append(out, names[p])
		}
		return strings.Join(out, " ")
	}
	for i, step := range []struct {
		inFlight bool
		want     string
	}{
		{false, "a-large-1"},        // a large write at the head: an entry of its own
		{true, "b-small-1 c-small"}, // one in flight: others' small writes pass a-large-2, a's own stay behind it
		{true, ""},                  // nothing but large writes and theirs' behind them
		{false, "a-large-2"},        // the first large one done: the next goes
		{false, "a-small-3"},        // a's small write, then b's large one waits for an entry of its own
		{false, "b-large"},
	} {
		g.largeInFlight = step.inFlight
		if got := took(); got != step.want {
			t.Fatalf("take %d (large in flight %v): %q, want %q", i, step.inFlight, got, step.want)
		}
	}
	if g.queued() != 0 || g.queuedBytes != 0 {
		t.Fatalf("queue left %d writes, %d bytes", g.queued(), g.queuedBytes)
	}
}
