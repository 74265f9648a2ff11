package cluster

import (
	"sync/atomic"

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
