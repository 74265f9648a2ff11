package cluster

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
)

// keyedConfig is node id's configuration under root: loopback TCP at
// bind, a peer key, 500 ms raft timings.
func keyedConfig(root, id, bind string) Config {
	return Config{ID: id, Dir: filepath.Join(root, id), PeerKey: bytes.Repeat([]byte("t"), 32), Bind: bind,
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, LeaderLeaseTimeout: 500 * time.Millisecond}
}

// keyedNodes starts three nodes (keyedConfig) under root and returns them
// and the leader, and one follower.
func keyedNodes(t *testing.T, root string) (nodes []*Node, leader, follower *Node) {
	t.Helper()
	var servers []Server
	for i := 1; i <= 3; i++ {
		n, err := Open(keyedConfig(root, fmt.Sprintf("t%d", i), "127.0.0.1:0"))
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
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, n := range nodes {
			if n.IsLeader() {
				leader = n
			}
		}
		if leader != nil {
			for _, n := range nodes {
				if n != leader {
					follower = n
				}
			}
			return nodes, leader, follower
		}
	}
	t.Fatal("no leader within 10 s")
	return nil, nil, nil
}

func appendOne(ctx context.Context, n *Node) error {
	_, err := n.Append(ctx, "acme", core.BatchItem{Coordinate: core.Coordinate{Entity: "e", Scope: "s"}, Kind: core.MustKind(1, 1), Payload: []byte(`{}`)})
	return err
}

// dialsWaiting counts the goroutines in a replication dial that waits.
func dialsWaiting() int {
	buf := make([]byte, 8<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*guardedStream).Dial(")
}

// TestTransferToADownMemberRefusesWritesBriefly: a leadership transfer
// to a member that has just gone down fails at once. raft refuses the
// leader's writes and membership changes while a transfer is under way,
// so a TimeoutNow that waited for the member to listen again refused
// them for up to 30 s.
func TestTransferToADownMemberRefusesWritesBriefly(t *testing.T) {
	_, l, f := keyedNodes(t, t.TempDir())
	ctx := context.Background()
	if err := appendOne(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitApplied(ctx, l.AppliedIndex()); err != nil {
		t.Fatal(err)
	}
	id, addr := f.ID(), f.Addr()
	f.Close()
	time.Sleep(time.Second) // the leader's connections to f fail and are dropped
	// The first transfer finds the connection to f pooled from the
	// election, which fails at once without a dial; the second dials.
	// Nothing is written between them, so f stays up to date and the
	// second goes as far as its TimeoutNow.
	if err := l.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr)).Error(); err == nil {
		t.Fatal("a leadership transfer to a member that is down succeeded")
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	_ = l.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr)).Error()
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		err := appendOne(actx, l)
		cancel()
		if err == nil {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the leader still refused writes %v after a transfer to a member that is down: %v", time.Since(start).Round(time.Millisecond), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestVotesDoNotWaitForMembersThatAreDown: a node left without a quorum
// campaigns every election timeout; its votes and pre-votes dial once, so
// dials waiting for the members that are down do not pile up round after
// round (with waiting vote dials: 15 or more after 8 s at 500 ms timings).
func TestVotesDoNotWaitForMembersThatAreDown(t *testing.T) {
	nodes, _, survivor := keyedNodes(t, t.TempDir())
	for _, n := range nodes {
		if n != survivor {
			n.Close()
		}
	}
	time.Sleep(8 * time.Second)
	if st := survivor.raft.State(); st == raft.Leader {
		t.Fatalf("a node alone out of three leads (%v)", st)
	}
	if n := dialsWaiting(); n > 4 {
		t.Fatalf("%d dials wait for the two members that are down after 8 s of elections, want at most 4 (replication and heartbeats)", n)
	}
}

// TestDialWaitsForAPeerThatListensAgain: a replication dial refused by the
// peer's host waits, and once the peer listens fails rather than hand
// raft a connection for a request made before the wait (its commit index
// would be taken for a current one by a restarted follower); the next
// dial connects at once. stopDialing ends a wait.
func TestDialWaitsForAPeerThatListensAgain(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newGuardedStream(ln, nil, plainGuard{}, 0)
	defer s.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()

	type dialed struct {
		c   net.Conn
		err error
		at  time.Time
	}
	done := make(chan dialed, 1)
	go func() {
		c, err := s.Dial(raft.ServerAddress(addr), time.Second)
		done <- dialed{c, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case d := <-done:
		t.Fatalf("a dial to a port nothing listens on returned at once: %v", d.err)
	default:
	}
	peer, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	defer peer.Close()
	go func() {
		for {
			c, err := peer.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	listening := time.Now()
	d := <-done
	if d.err == nil || !strings.Contains(d.err.Error(), "listens again") {
		if d.c != nil {
			d.c.Close()
		}
		t.Fatalf("a dial that waited answered %v once the peer listened, want an error (the request it carries is stale)", d.err)
	}
	if took := d.at.Sub(listening); took > 2*time.Second {
		t.Fatalf("the waiting dial noticed the peer %v after it listened", took)
	}
	c, err := s.Dial(raft.ServerAddress(addr), time.Second)
	if err != nil {
		t.Fatalf("the next dial: %v", err)
	}
	c.Close()

	peer.Close()
	go func() {
		_, err := s.Dial(raft.ServerAddress(addr), time.Second)
		done <- dialed{nil, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond)
	stopped := time.Now()
	s.stopDialing()
	if d := <-done; d.err == nil || d.at.Sub(stopped) > time.Second {
		t.Fatalf("a waiting dial after stopDialing: %v, %v later", d.err, d.at.Sub(stopped))
	}
}

// TestWaitingDialsEndWithTheirTerm: leadership moving between the two
// live members while the third is down leaves only the current leader's
// dials to it waiting (its replication and heartbeats): a dial that waits
// ends when the term it began in as leader is over (with waits that
// outlived their term: 22 after 10 transfers).
func TestWaitingDialsEndWithTheirTerm(t *testing.T) {
	nodes, l, dead := keyedNodes(t, t.TempDir())
	if err := appendOne(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	var live []*Node
	for _, n := range nodes {
		if n != dead {
			live = append(live, n)
		}
	}
	dead.Close()
	time.Sleep(time.Second)
	for i := 0; i < 10; i++ {
		var from, to *Node
		for _, n := range live {
			if n.IsLeader() {
				from = n
			} else {
				to = n
			}
		}
		if from == nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		_ = from.raft.LeadershipTransferToServer(raft.ServerID(to.ID()), raft.ServerAddress(to.Addr())).Error()
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(time.Second) // a wait notices its term ended at its next retry (250 ms at most)
	if n := dialsWaiting(); n > 2 {
		t.Fatalf("%d dials wait for the member that is down after 10 leadership transfers, want at most 2 (the leader's replication and heartbeats)", n)
	}
}
