package core

import (
	"context"
)

// Outbox collects events to write as one atomic batch. Staging validates
// each event at once (a bad coordinate fails at Stage, not at Flush), so a
// flush fails only for reasons that depend on the store's state
// (compare-and-set, idempotency, limits, I/O). An Outbox is not safe for
// concurrent use.
type Outbox struct {
	s     *Store
	fence *Fence
	items []BatchItem
}

// Outbox returns an empty outbox for this store.
func (s *Store) Outbox() *Outbox { return &Outbox{s: s} }

// Stage validates an event and adds it to the outbox.
func (o *Outbox) Stage(coord Coordinate, kind Kind, payload []byte) error {
	return o.StageWithOptions(coord, kind, payload, AppendOptions{})
}

// StageWithOptions is Stage with AppendOptions.
func (o *Outbox) StageWithOptions(coord Coordinate, kind Kind, payload []byte, opts AppendOptions) error {
	return o.Push(BatchItem{Coordinate: coord, Kind: kind, Payload: payload, Options: opts})
}

// Push validates a batch item and adds it to the outbox. A PriorItem
// causation must name an item already staged. The payload is copied.
func (o *Outbox) Push(item BatchItem) error {
	if err := item.Kind.validUser(); err != nil {
		return err
	}
	if err := checkUnreserved(item.Coordinate); err != nil {
		return err
	}
	if err := o.s.validateWrite(item.Coordinate, item.Payload, &item.Options); err != nil {
		return err
	}
	if c := item.Causation; c.kind == causePriorItem && (c.index < 0 || c.index >= len(o.items)) {
		return &BatchItemError{Index: len(o.items), Err: errPriorItem(c.index)}
	}
	item.Payload = append([]byte(nil), item.Payload...)
	o.items = append(o.items, item)
	return nil
}

// Len is the number of staged events.
func (o *Outbox) Len() int { return len(o.items) }

// IsEmpty reports whether nothing is staged.
func (o *Outbox) IsEmpty() bool { return len(o.items) == 0 }

// Flush writes the staged events as one atomic batch (see
// Store.AppendBatch), waits, and empties the outbox on success. On failure
// the events stay staged.
func (o *Outbox) Flush(ctx context.Context) ([]Receipt, error) {
	if o.fence != nil {
		return nil, ErrOutboxUnderFence
	}
	rs, err := o.s.AppendBatch(ctx, o.items)
	if err == nil {
		o.items = nil
	}
	return rs, err
}

// SubmitFlush queues the staged events as one atomic batch and empties the
// outbox; the ticket resolves with the receipts (for a fence's outbox, at
// the fence's Commit). If the batch cannot be queued the events stay
// staged.
func (o *Outbox) SubmitFlush(ctx context.Context) (*BatchTicket, error) {
	var t *BatchTicket
	var err error
	if o.fence != nil {
		t, err = o.fence.SubmitBatch(ctx, o.items)
	} else {
		t, err = o.s.SubmitBatch(ctx, o.items)
	}
	if err == nil {
		o.items = nil
	}
	return t, err
}
