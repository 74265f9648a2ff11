package cluster

import (
	"context"
	"fmt"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/tenancy"
)

// SystemStore names the store that holds the server's control plane
// (tenants, keys, quotas, settings) on every node: replicated like a
// tenant's, and never a valid tenant id.
const SystemStore = "_system"

// validStore accepts a tenant id or SystemStore.
func validStore(name string) error {
	if name == SystemStore {
		return nil
	}
	return tenancy.ValidID(name)
}

// Store returns this node's store of tenant (or SystemStore), opening it,
// and creating it empty if nothing was applied to it yet. Reads show what
// this node has applied. Writes taken through the store's ordinary API —
// Append, AppendBatch, reactions, Import, Submit — are validated and
// admitted (Config.StoreConfig's Admission) on this node, then proposed to
// raft as one entry each; they return once the entry is committed on a
// majority of nodes and applied here, with the errors of Node.AppendBatch
// (a *NotLeaderError on a follower: nothing proposed). Fences, Redact,
// EraseEntity and Compact are refused (core.ErrReplicated). The store
// stays the same object for the node's life, across snapshot restores
// (see Restore); Close closes it. Errors: an invalid name, ErrClosed.
func (n *Node) Store(tenant string) (*core.Store, error) {
	if err := validStore(tenant); err != nil {
		return nil, err
	}
	return n.fsm.store(tenant, true)
}

// replicator is a store's core.Replicator: it proposes the store's
// admitted writes to raft through its node.
type replicator struct {
	n      *Node
	tenant string
}

// Replicate encodes the write on the caller's goroutine (its payloads are
// valid only now), then proposes it and waits for the apply on another.
func (r *replicator) Replicate(batch bool, items []core.BatchItem, done func([]core.Receipt, error)) {
	data, err := r.n.command(r.tenant, batch, items)
	if err != nil {
		done(nil, err)
		return
	}
	go func() {
		res, err := r.n.apply(context.Background(), data)
		if err != nil {
			done(nil, err)
			return
		}
		rs, err := receipts(res, len(items))
		done(rs, err)
	}()
}

// receipts turns one entry's results into a write's receipts, or the
// refusal of the write (a batch's results all carry the same one).
func receipts(res []Result, want int) ([]core.Receipt, error) {
	if len(res) != want {
		return nil, fmt.Errorf("cluster: %d results for a write of %d items", len(res), want)
	}
	rs := make([]core.Receipt, len(res))
	for i, r := range res {
		if r.Err != nil {
			return nil, r.Err
		}
		rs[i] = r.Receipt
	}
	return rs, nil
}

var _ core.Replicator = (*replicator)(nil)
