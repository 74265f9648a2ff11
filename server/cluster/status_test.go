package cluster_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

func TestStatusReportsRolesIndexesAndMembers(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(5 * time.Second)
	rs := mustAppend(t, l, "acme", item("e", `{}`, core.AppendOptions{}))
	idx := rs[0].Index
	assertIdentical(t, c.list(), idx, "acme")
	if err := l.Snapshot(); err != nil {
		t.Fatal(err)
	}

	st := l.Status()
	if st.ID != l.ID() || st.Address != l.Addr() || st.State != "leader" || st.Leader.ID != l.ID() || st.Leader.Address != l.Addr() {
		t.Fatalf("leader status %+v", st)
	}
	if st.Term == 0 || st.AppliedIndex < idx || st.CommitIndex < idx || st.LastLogIndex < idx || st.LastSnapshotIndex < idx || st.LastContact != 0 || st.Halted != "" {
		t.Fatalf("leader status %+v, want indexes at least %d", st, idx)
	}
	if len(st.Servers) != 3 {
		t.Fatalf("servers %+v", st.Servers)
	}
	leaders := 0
	for _, m := range st.Servers {
		if m.Suffrage != "voter" || m.ID != m.Address {
			t.Errorf("member %+v", m)
		}
		if m.Leader {
			leaders++
			if m.ID != l.ID() {
				t.Errorf("member %s marked leader, the leader is %s", m.ID, l.ID())
			}
		}
	}
	if leaders != 1 {
		t.Errorf("%d members marked leader", leaders)
	}
	for _, n := range c.list() {
		if n == l {
			continue
		}
		fs := n.Status()
		if fs.State != "follower" || fs.Leader.ID != l.ID() || fs.Term != st.Term || fs.AppliedIndex < idx || len(fs.Servers) != 3 {
			t.Fatalf("follower status %+v", fs)
		}
		if fs.LastContact < 0 || fs.LastContact > 5*time.Second {
			t.Fatalf("follower last contact %s", fs.LastContact)
		}
	}

	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"id"`, `"address"`, `"state":"leader"`, `"leader":{`, `"term"`, `"applied_index"`, `"commit_index"`, `"last_log_index"`, `"last_snapshot_index"`, `"last_contact":0`, `"servers":[`, `"suffrage":"voter"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("status JSON %s lacks %s", b, key)
		}
	}

	// A partitioned follower's last contact grows; a closed node is shut down.
	var f *cluster.Node
	for _, n := range c.list() {
		if n != l {
			f = n
		}
	}
	c.partition(f.ID())
	time.Sleep(400 * time.Millisecond)
	if lc := f.Status().LastContact; lc < 300*time.Millisecond {
		t.Fatalf("a partitioned follower's last contact is %s", lc)
	}
	c.heal(f.ID())
	c.stop(f.ID())
	if st := f.Status(); st.State != "shutdown" {
		t.Fatalf("closed node status %+v", st)
	}
}

func TestStatusOfANewNode(t *testing.T) {
	_, tr := raft.NewInmemTransport("lone")
	n, err := cluster.Open(cluster.Config{ID: "lone", Dir: filepath.Join(t.TempDir(), "lone"), Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	st := n.Status()
	if st.State != "follower" || st.Leader.ID != "" || st.LastContact != -1 || st.Servers == nil || len(st.Servers) != 0 || st.AppliedIndex != 0 {
		t.Fatalf("status of a node never bootstrapped: %+v", st)
	}
	b, _ := json.Marshal(st)
	if !strings.Contains(string(b), `"servers":[]`) {
		t.Fatalf("JSON %s: want an empty servers list", b)
	}
}

// startAt opens node id with an empty data directory at raft address addr,
// linked to every running node.
func (c *memCluster) startAt(id, addr string) *cluster.Node {
	c.t.Helper()
	_, tr := raft.NewInmemTransport(raft.ServerAddress(addr))
	cfg := cluster.Config{ID: id, Dir: filepath.Join(c.root, id+"@"+addr), Transport: tr}
	fastTimeouts(&cfg)
	n, err := cluster.Open(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ot := range c.trans {
		ot.Connect(raft.ServerAddress(addr), tr)
		tr.Connect(ot.LocalAddr(), ot)
	}
	c.nodes[id], c.trans[id] = n, tr
	return n
}

func members(n *cluster.Node) map[string]string {
	out := map[string]string{}
	for _, m := range n.Status().Servers {
		out[m.ID] = m.Address + "/" + m.Suffrage
	}
	return out
}

func TestJoinReplacesAMemberThatMoved(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(5 * time.Second)
	last := mustAppend(t, l, "acme", item("e", `{"i":0}`, core.AppendOptions{}))[0].Index

	// The same id and address again: nothing proposed.
	before := l.Status().LastLogIndex
	for _, n := range c.list() {
		if err := l.Join(n.ID(), n.Addr()); err != nil {
			t.Fatalf("join of member %s again: %v", n.ID(), err)
		}
	}
	if after := l.Status().LastLogIndex; after != before {
		t.Fatalf("rejoining current members appended entries (%d -> %d)", before, after)
	}

	// A follower comes back at a new address with an empty disk.
	var moved string
	for _, n := range c.list() {
		if n != l {
			moved = n.ID()
		}
	}
	c.stop(moved)
	n := c.startAt(moved, moved+"-new")
	if err := l.Join(moved, moved+"-new"); err != nil {
		t.Fatal(err)
	}
	got := members(l)
	if len(got) != 3 || got[moved] != moved+"-new/voter" {
		t.Fatalf("members after the move: %v", got)
	}
	for i := 1; i < 5; i++ {
		last = mustAppend(t, l, "acme", item("e", `{}`, core.AppendOptions{ExpectedClock: expectAfter(i)}))[0].Index
	}
	assertIdentical(t, c.list(), last, "acme")
	if st := n.Status(); st.Leader.ID != l.ID() || len(st.Servers) != 3 {
		t.Fatalf("the moved node's status %+v", st)
	}

	// Another node (a new id) takes over the moved node's address.
	c.stop(moved)
	n = c.startAt("n4", moved+"-new")
	if err := l.Join("n4", moved+"-new"); err != nil {
		t.Fatal(err)
	}
	got = members(l)
	if _, ok := got[moved]; ok || len(got) != 3 || got["n4"] != moved+"-new/voter" {
		t.Fatalf("members after n4 took %s's address: %v", moved, got)
	}
	last = mustAppend(t, l, "acme", item("e", `{}`, core.AppendOptions{ExpectedClock: expectAfter(5)}))[0].Index
	assertIdentical(t, c.list(), last, "acme")

	// The leader is not replaced through Join; a follower refuses joins.
	if err := l.Join(l.ID(), "elsewhere"); err == nil || !strings.Contains(err.Error(), "leader") {
		t.Fatalf("join replacing the leader: %v", err)
	}
	if err := n.Join("n9", "n9"); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("join on a follower: %v", err)
	}
	if got := members(l); len(got) != 3 {
		t.Fatalf("members changed by refused joins: %v", got)
	}
}

// A caught-up node's status shows everything committed as applied, even
// when the last entries wrote nothing: after a failover the new leader's
// no-op is committed and applied though no store saw it.
func TestStatusAppliedReachesCommitAfterFailover(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(5 * time.Second)
	mustAppend(t, l, "acme", item("e", `{}`, core.AppendOptions{}))
	c.stop(l.ID())
	nl := c.leader(10 * time.Second)
	if nl == nil {
		t.Fatal("no new leader")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := nl.Status()
		if st.State == "leader" && st.CommitIndex > 0 && st.AppliedIndex == st.CommitIndex {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("new leader's status after the failover: applied %d of %d committed", st.AppliedIndex, st.CommitIndex)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestJoiningNodeIsNotRemoved: a node joining a cluster applies the
// configurations from before its own addition first, none naming it; it
// is not judged removed meanwhile (a client would get 421 NOT_A_MEMBER,
// which it does not retry). Once a member, a node that leaves is removed,
// also after a restart.
func TestJoiningNodeIsNotRemoved(t *testing.T) {
	c := newMemCluster(t, 2, nil)
	l := c.settled(5 * time.Second)
	for i := range 200 {
		mustAppend(t, l, "acme", item("e", `{"i":1}`, core.AppendOptions{ExpectedClock: expectAfter(i)}))
	}
	n3 := c.start("n3")
	joinNeverRemoved(t, l, n3, "the joining node")
	if err := l.Leave("n3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n3 learns of its removal", n3.Removed)
	c.stop("n3")
	if n3 = c.start("n3"); !n3.Removed() {
		t.Fatal("a removed node restarted on its data is not judged removed")
	}
	// Its raft state wiped (the rest of its directory, its member mark
	// included, left as it was) and joined again under its id: the log
	// it catches up with names its earlier self, then its removal, then
	// its new addition; it is never judged removed on the way.
	c.stop("n3")
	if err := os.RemoveAll(filepath.Join(c.root, "n3", "raft")); err != nil {
		t.Fatal(err)
	}
	for i := 200; i < 400; i++ { // its removal and its new addition far apart in the log
		mustAppend(t, l, "acme", item("e", `{"i":1}`, core.AppendOptions{ExpectedClock: expectAfter(i)}))
	}
	n3 = c.start("n3")
	joinNeverRemoved(t, l, n3, "the node wiped and joined again")
	// A node nobody asks about while it is a member knows it has been one
	// from the configurations it applied.
	n4 := c.start("n4")
	if err := l.Join("n4", "n4"); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "acme", item("e", `{"i":1}`, core.AppendOptions{ExpectedClock: expectAfter(400)}))
	joined := l.AppliedIndex()
	waitFor(t, 5*time.Second, "n4 catches up", func() bool { return n4.AppliedIndex() >= joined && !n4.CaughtUpAt().IsZero() })
	if err := l.Leave("n4"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n4 learns of its removal", func() bool { return !n4.HasMember("n4") })
	if !n4.Removed() {
		t.Fatal("a node nobody asked about while it was a member is not judged removed")
	}
}

// joinNeverRemoved has leader l join n (its id its address) and fails if
// n, asked all along, is ever judged removed before it holds l's log
// with three members.
func joinNeverRemoved(t *testing.T, l, n *cluster.Node, what string) {
	t.Helper()
	done := make(chan struct{})
	var removed atomic.Int64
	go func() {
		defer close(done)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if n.Removed() {
				removed.Add(1)
			}
			if st := n.Status(); st.AppliedIndex >= l.Status().LastLogIndex && len(st.Servers) == 3 {
				return
			}
		}
	}()
	if err := l.Join(n.ID(), n.ID()); err != nil {
		t.Fatal(err)
	}
	<-done
	if got := removed.Load(); got > 0 {
		t.Fatalf("%s was judged removed %d times while it caught up", what, got)
	}
}
