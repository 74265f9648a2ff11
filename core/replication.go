package core

import (
	"context"
	"fmt"
)

// Replicator takes a store's admitted writes to a replicated log (a raft
// group, say) instead of the store's own writer, so that every replica of
// the store applies the same writes in the same order. Set it with
// Config.Replicator.
//
// A write with a Replicator goes:
//
//	Append / batch / reaction / import ── validation, Admission ──▶ Replicate
//	replicated log commits it ──▶ every replica's state machine calls
//	SubmitReplicated / SubmitReplicatedBatch on its copy of the store
//	the replica that took the write calls done with its own receipts
//
// Everything not deterministic is fixed before Replicate is called: each
// item's event id is in Options.ID, and an imported event's original
// time in Options.Timestamp (0 elsewhere: the Replicator fixes the time).
// The write's Ticket resolves when done is called.
type Replicator interface {
	// Replicate is called on the writing goroutine with one admitted
	// write: one item for an append, the items of an atomic batch with
	// batch true. The payloads are valid only during the call: keep a
	// copy. Replicate must not wait for the write to be committed; it
	// calls done exactly once, from any goroutine, with one receipt per
	// item, or with the error that refused the whole write (a refusal the
	// replicas made alike, or one saying the outcome is unknown).
	Replicate(batch bool, items []BatchItem, done func([]Receipt, error))
}

// CursorReplicator is implemented by a Replicator that also replicates
// named cursors' committed positions, so that every replica holds the
// same positions and a consumer resumes where it committed on whichever
// replica it reconnects to. Cursor.Commit on a named cursor of a store
// whose Replicator implements it calls ReplicateCursor instead of writing
// the position itself; the replicated log's state machine writes it on
// every replica with Store.CommitReplicatedCursor.
type CursorReplicator interface {
	// ReplicateCursor proposes name's committed position pos and returns
	// once it is committed and applied to this replica (nil), or with the
	// error that refused it. It may block for as long as the log takes.
	ReplicateCursor(name string, pos uint64) error
}

// VolatileReplica is implemented by a Replicator whose replicas' files
// are never read back after a crash: the replica is rebuilt from the
// replicated log (a cluster node discards its stores when it starts).
// When VolatileReplica reports true, CommitReplicatedCursor writes the
// position without syncing the log or the position file first: the
// replicated log is the durable record, and the syncs would cost every
// replica's apply of every commit for nothing.
type VolatileReplica interface {
	VolatileReplica() bool
}

// volatileReplica reports whether the store's Replicator says its files
// are rebuilt from the replicated log after a crash.
func (s *Store) volatileReplica() bool {
	v, ok := s.cfg.Replicator.(VolatileReplica)
	return ok && v.VolatileReplica()
}

// replicate hands an admitted append or batch to the Replicator; its
// ticket resolves when the Replicator calls back.
func (s *Store) replicate(r *request) (*Ticket, error) {
	if s.shut.Load() {
		return nil, ErrClosed
	}
	if r.op == opAppend {
		t := r.t
		s.cfg.Replicator.Replicate(false, []BatchItem{r.ev.replicated()}, func(rs []Receipt, err error) {
			switch {
			case err != nil:
				t.resolve(Receipt{}, err)
			case len(rs) != 1:
				t.resolve(Receipt{}, fmt.Errorf("batpak: replicator answered %d receipts for one write", len(rs)))
			default:
				t.resolve(rs[0], nil)
			}
		})
		return t, nil
	}
	items := make([]BatchItem, len(r.items))
	for i := range r.items {
		items[i] = r.items[i].replicated()
	}
	bt := r.bt
	s.cfg.Replicator.Replicate(true, items, func(rs []Receipt, err error) {
		if err == nil && len(rs) != len(items) {
			err = fmt.Errorf("batpak: replicator answered %d receipts for a batch of %d", len(rs), len(items))
		}
		if err != nil {
			bt.resolve(nil, err)
			return
		}
		bt.resolve(rs, nil)
	})
	return r.t, nil
}

// replicated is the validated event as a replica applies it: its id fixed,
// its causation already resolved to an id.
func (ev *eventReq) replicated() BatchItem {
	opts := ev.opts
	opts.ID, opts.Timestamp = ev.id, ev.ts
	return BatchItem{Coordinate: ev.coord, Kind: ev.kind, Payload: ev.payload, Options: opts}
}

// SubmitReplicated is how a replicated log's state machine applies one
// committed append to this replica (see Replicator): it validates the
// event as every replica does alike (coordinate, payload, options and
// their limits) and queues it to this store's writer, without asking the
// Admission (the replica that took the write did) and without handing it
// to the Replicator again. Writes queued from one goroutine are applied
// in that order. Options.ID must be set (ErrInvalidOptions otherwise): an
// id the store already holds is refused with ErrDuplicateID. Errors:
// ErrNotReplicated on a store without a Replicator; validation errors as
// Append (nothing written); ErrClosed.
func (s *Store) SubmitReplicated(ctx context.Context, it BatchItem) (*Ticket, error) {
	ev, err := s.prepareReplicated(it)
	if err != nil {
		return nil, err
	}
	ev.hashNowOrLater()
	r := &request{op: opAppend, ev: ev, local: true}
	r.t = &r.ticket
	return s.enqueue(r)
}

// SubmitReplicatedBatch is SubmitReplicated for a committed atomic batch:
// all items are written or none (the batch's refusal — a compare-and-set
// miss, an idempotency mismatch — is the ticket's error, alike on every
// replica). Items may name their causes with PriorItem or CausedBy as
// in AppendBatch. Limits as AppendBatch.
func (s *Store) SubmitReplicatedBatch(ctx context.Context, items []BatchItem) (*BatchTicket, error) {
	if s.cfg.Replicator == nil {
		return nil, ErrNotReplicated
	}
	if len(items) == 0 {
		return emptyOr(nil, nil)
	}
	if _, err := s.checkBatchLimits(items); err != nil {
		return nil, err
	}
	evs := make([]eventReq, len(items))
	keys := map[string]int{}
	for i := range items {
		if k := items[i].Options.IdempotencyKey; k != "" {
			if j, dup := keys[k]; dup {
				return nil, &BatchItemError{Index: i, Err: fmt.Errorf("%w: idempotency key %q is also item %d's", ErrInvalidOptions, k, j)}
			}
			keys[k] = i
		}
		it := items[i]
		opts, err := resolveCausation(i, &it, evs)
		if err != nil {
			return nil, err
		}
		it.Options, it.Causation = opts, Causation{}
		ev, err := s.prepareReplicated(it)
		if err != nil {
			return nil, &BatchItemError{Index: i, Err: err}
		}
		evs[i] = ev
	}
	hashPayloads(evs)
	r := &request{op: opBatch, items: evs, bt: &BatchTicket{}, local: true}
	if _, err := s.enqueue(r); err != nil {
		return nil, err
	}
	return r.bt, nil
}

// prepareReplicated validates a replicated event: what every replica
// checks alike. The kind and reserved-entity rules were the taking
// replica's to apply (a system record written by a trusted package is
// replicated too). The payload's digest is the caller's to take
// (hashNowOrLater, hashPayloads).
func (s *Store) prepareReplicated(it BatchItem) (eventReq, error) {
	if s.cfg.Replicator == nil {
		return eventReq{}, ErrNotReplicated
	}
	if it.Options.ID.IsZero() {
		return eventReq{}, fmt.Errorf("%w: a replicated event needs its id (Options.ID)", ErrInvalidOptions)
	}
	switch it.Causation.kind {
	case 1:
		it.Options.CausationID = it.Causation.id
	case 2:
		return eventReq{}, fmt.Errorf("%w: a prior-item causation outside a batch", ErrInvalidOptions)
	}
	return s.prepareAnyKindUnhashed(it.Coordinate, it.Kind, it.Payload, it.Options, true)
}
