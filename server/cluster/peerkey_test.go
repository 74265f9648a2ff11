package cluster_test

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// openKeyed opens a node on loopback TCP with peer key key.
func openKeyed(t testing.TB, dir, id string, key []byte, handshake time.Duration) *cluster.Node {
	t.Helper()
	return openTCP(t, cluster.Config{ID: id, Dir: dir, PeerKey: key, HandshakeTimeout: handshake})
}

// keyedCluster starts n nodes sharing peer key key.
func keyedCluster(t testing.TB, key []byte, n int, handshake time.Duration) []*cluster.Node {
	t.Helper()
	return tcpCluster(t, "k", n, func(dir, id string) *cluster.Node { return openKeyed(t, dir, id, key, handshake) })
}

var testPeerKey = bytes.Repeat([]byte("k"), 32)

// TestPeerKeyClusterElectsAndReplicates: nodes sharing a peer key elect a
// leader and replicate, refusing none of each other's connections.
func TestPeerKeyClusterElectsAndReplicates(t *testing.T) {
	replicatesRefusingNothing(t, keyedCluster(t, testPeerKey, 3, 0))
}

// TestPeerKeyRefusesUnkeyedRaft: a plain raft client — one that speaks raft
// without the handshake, or completes it with another key — cannot make
// a follower take an entry: its AppendEntries fails, the follower's log
// and applied state stay the cluster's, and the connection is counted
// refused. This is how an unauthenticated process on the same host could
// otherwise inject an event into one replica.
func TestPeerKeyRefusesUnkeyedRaft(t *testing.T) {
	const bound = 400 * time.Millisecond
	nodes := keyedCluster(t, testPeerKey, 3, bound)
	l := waitLeader(t, nodes, 10*time.Second)
	last := mustAppend(t, l, "acme", item("e", `{"i":0}`, core.AppendOptions{}))[0].Index
	assertIdentical(t, nodes, last, "acme")
	var f *cluster.Node
	for _, n := range nodes {
		if n != l {
			f = n
		}
	}
	before := f.Status()

	plain, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	forged := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(l.ID()), Addr: []byte(l.Addr())},
		Term:      before.Term, PrevLogEntry: before.LastLogIndex, PrevLogTerm: before.Term,
		Entries:           []*raft.Log{{Index: before.LastLogIndex + 1, Term: before.Term, Type: raft.LogCommand, Data: []byte{0xff}}},
		LeaderCommitIndex: before.LastLogIndex + 1,
	}
	var resp raft.AppendEntriesResponse
	err = plain.AppendEntries(raft.ServerID(f.ID()), raft.ServerAddress(f.Addr()), forged, &resp)
	if err == nil {
		t.Fatalf("an unkeyed raft client's AppendEntries was answered: %+v", resp)
	}

	// A client that speaks the handshake with another key.
	conn, err := net.DialTimeout("tcp", f.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	hello := append([]byte("BPKRAFT1"), bytes.Repeat([]byte{1}, 32)...)
	hello = append(append(hello, byte(len(f.Addr()))), f.Addr()...)
	conn.Write(hello)
	reply := make([]byte, 64)
	if _, err := io.ReadFull(conn, reply); err != nil {
		t.Fatalf("the handshake's reply: %v", err)
	}
	conn.Write(bytes.Repeat([]byte{2}, 32)) // not the MAC of the key
	got, took := readUntilClosed(t, conn)
	conn.Close()
	if len(got) != 0 || took > bound+time.Second {
		t.Fatalf("a peer with a wrong proof got %q, dropped after %s", got, took)
	}

	for deadline := time.Now().Add(2 * time.Second); f.Status().RefusedConnections < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("refused_connections %d, want at least 2", f.Status().RefusedConnections)
		}
	}
	if err := f.Err(); err != nil {
		t.Fatalf("the follower halted: %v", err)
	}
	// The cluster goes on, every replica identical.
	last = mustAppend(t, l, "acme", item("e", `{"i":1}`, core.AppendOptions{ExpectedClock: expectAfter(1)}))[0].Index
	assertIdentical(t, nodes, last, "acme")
}

// TestPeerKeyRefusesANodeWithAnotherKey: a node opened with another key
// is refused as a member (its join fails the handshake, nothing changes)
// and receives nothing; the cluster keeps working.
func TestPeerKeyRefusesANodeWithAnotherKey(t *testing.T) {
	nodes := keyedCluster(t, testPeerKey, 3, time.Second)
	l := waitLeader(t, nodes, 10*time.Second)
	mustAppend(t, l, "acme", item("e", `{"i":0}`, core.AppendOptions{}))
	rogue := openKeyed(t, filepath.Join(t.TempDir(), "rogue"), "rogue", bytes.Repeat([]byte("r"), 32), time.Second)
	refusedAtJoin(t, l, nodes, rogue, "peer key")
}

// TestPeerKeyTooShort: a key shorter than MinPeerKeyBytes is refused at
// Open, naming the field.
func TestPeerKeyTooShort(t *testing.T) {
	cfg := cluster.Config{ID: "a", Dir: t.TempDir(), Bind: "127.0.0.1:0", PeerKey: []byte("short")}
	if n, err := cluster.Open(cfg); err == nil || !strings.Contains(err.Error(), "PeerKey") {
		if n != nil {
			n.Close()
		}
		t.Fatalf("a 5-byte peer key: %v", err)
	}
}

// TestPeerKeyHandshakeCannotBeRelayed: a process holding a port the
// leader dials (a stopped member's, say) relays the leader's handshake
// to a follower: the follower refuses it before answering anything,
// since the leader's proof names the port it dialled, not the
// follower's; the cluster goes on.
func TestPeerKeyHandshakeCannotBeRelayed(t *testing.T) {
	nodes := keyedCluster(t, testPeerKey, 3, time.Second)
	l := waitLeader(t, nodes, 10*time.Second)
	mustAppend(t, l, "acme", item("e", `{"i":0}`, core.AppendOptions{}))
	var f *cluster.Node
	for _, n := range nodes {
		if n != l {
			f = n
		}
	}
	// A fourth member joins, then stops; the attacker takes its port,
	// which the leader keeps dialling.
	k4 := openKeyed(t, filepath.Join(t.TempDir(), "k4"), "k4", testPeerKey, time.Second)
	if err := l.Join("k4", k4.Addr()); err != nil {
		t.Fatal(err)
	}
	addr := k4.Addr()
	k4.Close()
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// For each relayed connection the leader wrote to: whether the
	// follower answered anything (the leader's join first dials to see
	// that the address answers, and writes nothing).
	answered := make(chan bool, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				d, err := net.Dial("tcp", f.Addr())
				if err != nil {
					return
				}
				defer d.Close()
				var sent atomic.Int64
				go io.Copy(countingWriter{d, &sent}, c)
				d.SetReadDeadline(time.Now().Add(5 * time.Second))
				k, _ := d.Read(make([]byte, 1))
				if sent.Load() > 0 {
					answered <- k > 0
				}
			}()
		}
	}()
	refused := f.Status().RefusedConnections
	select {
	case yes := <-answered:
		if yes {
			t.Fatal("the follower answered a relayed handshake")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the leader never dialled the relay")
	}
	if got := f.Status().RefusedConnections; got <= refused {
		t.Fatalf("refused_connections %d, want more than %d", got, refused)
	}
	if err := l.Leave("k4"); err != nil {
		t.Fatal(err)
	}
	last := mustAppend(t, l, "acme", item("e", `{"i":1}`, core.AppendOptions{ExpectedClock: expectAfter(1)}))[0].Index
	assertIdentical(t, nodes, last, "acme")
}

// countingWriter counts what it is given before writing it.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.w.Write(p)
}
