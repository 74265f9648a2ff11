package cluster

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestStatusReportsAHaltedNode(t *testing.T) {
	n := openLoneLeader(t)
	defer n.Close()
	if st := n.Status(); st.Halted != "" {
		t.Fatalf("a working node reports halted: %q", st.Halted)
	}
	go n.raft.Apply([]byte{0xff, '{', '}'}, time.Second) // a command format no version knows
	for deadline := time.Now().Add(5 * time.Second); n.Err() == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the node did not halt")
		}
	}
	if st := n.Status(); st.Halted == "" || !strings.Contains(st.Halted, "format") {
		t.Fatalf("status of a halted node: halted %q, want Err's message %q", st.Halted, n.Err())
	}
}

// A leader that halted no longer counts as Leading: its stores lack what
// committed after the entry it halted on (a revocation proposed just
// after it, say), so requests are not judged on them.
func TestHaltedLeaderIsNotLeading(t *testing.T) {
	n := openLoneLeader(t)
	defer n.Close()
	go n.raft.Apply([]byte{0xff, '{', '}'}, time.Second) // a command format no version knows
	for deadline := time.Now().Add(5 * time.Second); n.Err() == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the node did not halt")
		}
	}
	if !n.IsLeader() {
		t.Fatal("a lone halted node stopped leading")
	}
	if n.Leading() {
		t.Fatalf("a halted leader (%v) counts as Leading", n.Err())
	}
}

// openLoneLeader opens a one-node cluster on raft's in-memory transport,
// with short timings, and waits until the node is Leading (it leads and
// has applied what earlier terms committed). The caller closes it.
func openLoneLeader(t *testing.T) *Node {
	t.Helper()
	_, tr := raft.NewInmemTransport("a")
	n, err := Open(Config{ID: "a", Dir: filepath.Join(t.TempDir(), "a"), Transport: tr,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Bootstrap(Server{ID: "a", Address: "a"}); err != nil {
		n.Close()
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !n.Leading(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			n.Close()
			t.Fatal("not leading")
		}
	}
	return n
}
