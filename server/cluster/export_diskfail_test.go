package cluster

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// DiskFailTransport is an in-memory raft transport of a node that, once
// failing, answers every AppendEntries carrying entries with Success
// false — what raft answers when its log store cannot take them (a
// failing or full disk) — and passes everything else, heartbeats
// included, to raft: the node looks alive to its leader but stores
// nothing. For the membership guard's tests, inside and outside the
// package.
type DiskFailTransport struct {
	*raft.InmemTransport
	failing atomic.Bool
	out     chan raft.RPC
}

// NewDiskFailTransport is a DiskFailTransport at addr, storing for now.
func NewDiskFailTransport(addr string) *DiskFailTransport {
	_, tr := raft.NewInmemTransport(raft.ServerAddress(addr))
	d := &DiskFailTransport{InmemTransport: tr, out: make(chan raft.RPC)}
	go func() {
		for rpc := range tr.Consumer() {
			if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok && len(req.Entries) > 0 && d.failing.Load() {
				rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: false}, nil)
				continue
			}
			d.out <- rpc
		}
	}()
	return d
}

// Consumer is what raft reads the node's requests from.
func (d *DiskFailTransport) Consumer() <-chan raft.RPC { return d.out }

// Fail makes the node store nothing from now on (true) or store again.
func (d *DiskFailTransport) Fail(failing bool) { d.failing.Store(failing) }

// StartDiskFailCluster starts 3 nodes (n1, n2, n3) on DiskFailTransports
// under t's temporary directory, each Config passed through adjust, and
// returns the leader they elect, the transports and the nodes by id.
func StartDiskFailCluster(t *testing.T, adjust func(*Config)) (leader *Node, trans map[string]*DiskFailTransport, nodes map[string]*Node) {
	t.Helper()
	root := t.TempDir()
	trans = map[string]*DiskFailTransport{}
	nodes = map[string]*Node{}
	var servers []Server
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("n%d", i)
		trans[id] = NewDiskFailTransport(id)
		servers = append(servers, Server{ID: id, Address: id})
	}
	for a, ta := range trans {
		for b, tb := range trans {
			if a != b {
				ta.Connect(raft.ServerAddress(b), tb.InmemTransport)
			}
		}
	}
	for id, tr := range trans {
		cfg := Config{ID: id, Dir: filepath.Join(root, id), Transport: tr}
		if adjust != nil {
			adjust(&cfg)
		}
		n, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		nodes[id] = n
		t.Cleanup(func() { _ = n.Close() })
	}
	if err := nodes["n1"].Bootstrap(servers...); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); leader == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		for _, n := range nodes {
			if n.IsLeader() {
				leader = n
			}
		}
	}
	return leader, trans, nodes
}
