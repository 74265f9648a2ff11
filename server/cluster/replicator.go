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

// Store holds this node's store of tenant (or SystemStore) and returns
// it, opening it, and creating it empty if nothing was applied to it yet.
// Every call must be matched by one ReleaseStore once the caller is done
// with the store: while held (by any caller) it stays open and the same
// object — across snapshot restores (a restore catches it up in place:
// its subscribers and cursors see the missing events as ordinary new
// ones) — until Close or DropStore closes it (ErrClosed from then on;
// call Store again for the tenant's new store). Once nobody holds it (no
// Store without its release, no View running, no apply writing to it),
// the node closes it after Config.StoreIdleTimeout, or sooner when it
// needs room under Config.MaxOpenStores; a later Store opens it again, as
// a new object with every event and cursor position. Reads show what
// this node has applied. Writes taken through the store's ordinary API —
// Append, AppendBatch, reactions, Import, Submit — are validated and
// admitted (Config.StoreConfig's Admission) on this node, then proposed to
// raft as one entry each; they return once the entry is committed on a
// majority of nodes and applied here, with the errors of Node.AppendBatch
// (a *NotLeaderError on a follower: nothing proposed). Fences, Redact,
// EraseEntity and Compact are refused (core.ErrReplicated). Named
// cursors' commits (Cursor.Commit) are replicated too: proposed from
// the leader's store (a follower's refuses with a *NotLeaderError), they
// return once applied here, and a NamedCursor opened on any node that has
// applied them resumes there. Errors: an invalid name, ErrClosed, an
// error opening the store.
func (n *Node) Store(tenant string) (*core.Store, error) {
	if err := validStore(tenant); err != nil {
		return nil, err
	}
	e, err := n.fsm.acquire(tenant, true)
	if err != nil {
		return nil, err
	}
	return e.s, nil
}

// ReleaseStore gives back one hold Node.Store took on s. After the last
// one, s must not be used: the node may close it (core.ErrClosed) once it
// is idle or needs the room. Releasing a store that is not held — released
// as often as it was returned already, or closed by DropStore or Close —
// does nothing and returns false.
func (n *Node) ReleaseStore(s *core.Store) bool { return n.fsm.releaseStore(s) }

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
	answer := func(res []Result, err error) {
		if err != nil {
			done(nil, err)
			return
		}
		rs, err := receipts(res, len(items))
		done(rs, err)
	}
	if r.n.group != nil {
		r.n.group.submit(r.tenant, data, answer)
		return
	}
	go func() { answer(r.n.apply(context.Background(), data)) }()
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

// VolatileReplica says a node's stores are rebuilt from raft after a
// crash (Open discards them and raft restores them from its snapshot and
// log), so a cursor commit's apply writes the position without syncing
// (core.VolatileReplica): every node applies every commit, one after
// another on raft's apply loop.
func (r *replicator) VolatileReplica() bool { return true }

// ReplicateCursor proposes a named cursor's committed position (leader
// only) and waits for its apply here, bounded by Config.ApplyTimeout.
func (r *replicator) ReplicateCursor(name string, pos uint64) error {
	if err := r.n.canPropose(); err != nil {
		return err
	}
	data, err := encodeCommand(&command{Op: opCursor, Tenant: r.tenant, Cursor: name, Pos: pos})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.n.timeout)
	defer cancel()
	return r.n.applyOne(ctx, data)
}

// applyOne proposes a one-result command (a cursor commit, a drop) and
// returns its refusal or error.
func (n *Node) applyOne(ctx context.Context, data []byte) error {
	res, err := n.apply(ctx, data)
	if err != nil {
		return err
	}
	if len(res) != 1 {
		return fmt.Errorf("cluster: %d results for one operation", len(res))
	}
	return res[0].Err
}

// DropStore removes tenant's store (or SystemStore's) from every node:
// once the entry is committed, every node applies it by closing the
// store and removing its directory (renamed into Dir/trash first, then
// removed; Open empties the trash), and its named cursors go with it. A
// *core.Store handed out for the tenant before (Node.Store, View) is
// closed: its calls fail with core.ErrClosed, its subscriptions end.
// A later write to the tenant creates its store again, empty (call
// Node.Store again for it). It returns once committed and applied on this
// node, with the errors of Node.AppendBatch (a *NotLeaderError on a
// follower: nothing proposed). Dropping a tenant that has no store is not
// an error.
func (n *Node) DropStore(ctx context.Context, tenant string) error {
	if err := validStore(tenant); err != nil {
		return err
	}
	if err := n.canPropose(); err != nil {
		return err
	}
	data, err := encodeCommand(&command{Op: opDrop, Tenant: tenant})
	if err != nil {
		return err
	}
	return n.applyOne(ctx, data)
}

var (
	_ core.Replicator       = (*replicator)(nil)
	_ core.CursorReplicator = (*replicator)(nil)
)
