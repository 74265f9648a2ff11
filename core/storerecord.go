package core

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/batpak-go/batpak/ijson"
)

// Store records: the events batpak writes about itself — audit records
// of destructive operations and bypasses, log salvage, fence expiry — on
// entities under ReservedEntityPrefix. Their shape is the store's, not the
// application's, so the application's payload limits (SingleAppendMaxBytes,
// MaxJSONDepth) do not apply: a small limit must never make maintenance or
// a bypass impossible. They are bounded instead by storeRecordMaxBytes and
// storeRecordMaxDepth. Like every write, they cannot be written while a
// visibility fence is open (a later visible event would overtake the
// fence's hidden ones): a store record waits for the fence to end (at most
// its deadline) or for ctx.
const (
	storeRecordMaxBytes = 16 << 20
	storeRecordMaxDepth = MaxMaxJSONDepth + 16
)

// prepareStoreRecord validates a store record.
func (s *Store) prepareStoreRecord(coord Coordinate, kind Kind, payload []byte) (eventReq, error) {
	if s.readOnly {
		return eventReq{}, ErrReadOnly
	}
	if err := coord.Validate(); err != nil {
		return eventReq{}, err
	}
	if len(payload) > storeRecordMaxBytes {
		return eventReq{}, fmt.Errorf("%w: a store record of %d bytes, the limit is %d", ErrPayloadTooLarge, len(payload), storeRecordMaxBytes)
	}
	if err := ijson.Validate(payload, storeRecordMaxDepth); err != nil {
		return eventReq{}, payloadError(err)
	}
	return newEventReq(coord, kind, payload, AppendOptions{}, false), nil
}

// appendStoreRecord writes a prepared store record without asking the
// gate and waits for it. While a fence is open it waits for the fence to
// end (or ctx). Once queued, the record is waited for whatever ctx does,
// so an error means it was not written. On a store with a Replicator the
// record is replicated like any write (every replica must hold it, or
// their sequences and chains part), unless local is set (a record of
// this replica's own repair, written while it opens).
func (s *Store) appendStoreRecord(ctx context.Context, ev eventReq, local bool) (Receipt, error) {
	for {
		r := &request{op: opAppend, ev: ev, local: local || s.cfg.Replicator == nil}
		r.t = &r.ticket
		t, err := s.enqueue(r)
		if err == nil {
			var rc Receipt
			if rc, err = t.Wait(context.WithoutCancel(ctx)); err == nil {
				return rc, nil
			}
		}
		if !errors.Is(err, ErrFenceActive) {
			return Receipt{}, err
		}
		if err := s.awaitNoFence(ctx); err != nil {
			return Receipt{}, err
		}
	}
}

// awaitNoFence waits until no visibility fence is open, ctx ends or the
// store closes.
func (s *Store) awaitNoFence(ctx context.Context) error {
	for wait := time.Millisecond; s.fence.Load() != nil; wait = min(2*wait, 100*time.Millisecond) {
		s.closeMu.RLock()
		closed := s.closed
		s.closeMu.RUnlock()
		if closed {
			return ErrClosed
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("batpak: waiting for the open visibility fence to end: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
	return nil
}

// writeStoreRecord prepares and writes a store record (see above),
// replicated on a store with a Replicator.
func (s *Store) writeStoreRecord(ctx context.Context, coord Coordinate, kind Kind, payload []byte) (Receipt, error) {
	ev, err := s.prepareStoreRecord(coord, kind, payload)
	if err != nil {
		return Receipt{}, err
	}
	return s.appendStoreRecord(ctx, ev, false)
}

// writeLocalStoreRecord is writeStoreRecord to this replica's log only,
// even with a Replicator: the record of a repair of this replica's own
// files, made while it opens (a replicated write could not be waited for
// there).
func (s *Store) writeLocalStoreRecord(ctx context.Context, coord Coordinate, kind Kind, payload []byte) (Receipt, error) {
	ev, err := s.prepareStoreRecord(coord, kind, payload)
	if err != nil {
		return Receipt{}, err
	}
	return s.appendStoreRecord(ctx, ev, true)
}
