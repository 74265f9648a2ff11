package core

import (
	"errors"
	"fmt"
	"iter"
	"time"
)

// Get returns the visible event with this id, or ErrNotFound.
func (s *Store) Get(id EventID) (StoredEvent, error) {
	if err := s.checkReadable(); err != nil {
		return StoredEvent{}, err
	}
	var found bool
	evs, err := s.readRetry(func() []loc {
		s.ix.mu.RLock()
		defer s.ix.mu.RUnlock()
		seq, ok := s.ix.lookup(id)
		if found = ok; !ok {
			return nil
		}
		e := s.ix.at(seq)
		return []loc{{seq: seq, seg: e.seg, off: e.off}}
	})
	if err != nil {
		return StoredEvent{}, err
	}
	if !found || len(evs) == 0 {
		return StoredEvent{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return evs[0], nil
}

// readRetry plans and reads, planning again (a few times) if the read
// failed while a compaction replaced segment files under it.
func (s *Store) readRetry(plan func() []loc) ([]StoredEvent, error) {
	for try := 0; ; try++ {
		epoch := s.compactions.Load()
		evs, err := s.readLocs(plan())
		if err == nil || try == 3 || s.compactions.Load() == epoch {
			return evs, err
		}
	}
}

// Query returns the visible events in r, ordered by global sequence.
// Payloads are read from the segment files and checked against their CRC.
func (s *Store) Query(r Region) ([]StoredEvent, error) {
	if err := s.checkReadable(); err != nil {
		return nil, err
	}
	return s.readRetry(func() []loc { return s.ix.plan(r) })
}

// Events iterates over the visible events in r in global order, reading
// each one from its segment only when the loop reaches it, so a loop that
// stops early (a limit, a cancelled context) does no further work. Which
// events are visited is fixed when the iteration starts. On a read error
// the iterator yields it once and stops.
//
//	for ev, err := range s.Events(core.Scope("eu")) {
//		if err != nil { return err }
//		...
//	}
func (s *Store) Events(r Region) iter.Seq2[StoredEvent, error] {
	return func(yield func(StoredEvent, error) bool) {
		if err := s.checkReadable(); err != nil {
			yield(StoredEvent{}, err)
			return
		}
		// On a read error after a compaction, plan the rest again from
		// the last event delivered.
		next := uint64(0)
		for try := 0; ; try++ {
			epoch := s.compactions.Load()
			var locs []loc
			if try == 0 {
				locs = s.ix.plan(r)
			} else {
				locs, _ = s.ix.planFrom(r, next, int(^uint(0)>>1))
			}
			var failed error
			stopped := false
			s.eachLoc(locs, func(ev StoredEvent, err error) bool {
				if err != nil {
					failed = err
					return false
				}
				next = ev.GlobalSequence + 1
				if !yield(ev, nil) {
					stopped = true
					return false
				}
				return true
			})
			if stopped || failed == nil {
				return
			}
			if try == 3 || s.compactions.Load() == epoch {
				yield(StoredEvent{}, failed)
				return
			}
		}
	}
}

// Stream returns the events of exactly this entity, ordered by clock.
func (s *Store) Stream(entity string) ([]StoredEvent, error) {
	if err := s.checkReadable(); err != nil {
		return nil, err
	}
	return s.readRetry(func() []loc { return s.ix.stream(entity) })
}

// ByScope returns the events filed under exactly this scope, in global order.
func (s *Store) ByScope(scope string) ([]StoredEvent, error) { return s.Query(Scope(scope)) }

// ByFact returns the events of this kind, in global order.
func (s *Store) ByFact(kind Kind) ([]StoredEvent, error) { return s.Query(All().WithKind(kind)) }

// DefaultAncestorLimit bounds Ancestors when limit <= 0.
const DefaultAncestorLimit = 1024

// Ancestors walks causation links back from id: the result starts with the
// event itself, then the event that caused it, and so on, until a root cause
// (zero CausationID), a cause that is not in the store (written elsewhere, or
// removed), or limit events (limit <= 0 means DefaultAncestorLimit). It does
// not follow the entity's clock chain: two events of the same entity are
// related here only if one caused the other. It returns ErrNotFound when id
// itself is unknown.
func (s *Store) Ancestors(id EventID, limit int) ([]StoredEvent, error) {
	if limit <= 0 {
		limit = DefaultAncestorLimit
	}
	var out []StoredEvent
	seen := map[EventID]bool{}
	for len(out) < limit {
		ev, err := s.Get(id)
		if err != nil {
			if len(out) > 0 && isNotFound(err) {
				break
			}
			return nil, err
		}
		out = append(out, ev)
		seen[id] = true
		id = ev.Header.CausationID
		if id.IsZero() || seen[id] {
			break
		}
	}
	return out, nil
}

func isNotFound(err error) bool { return err != nil && errors.Is(err, ErrNotFound) }

// readLocs reads the events at locs.
func (s *Store) readLocs(locs []loc) ([]StoredEvent, error) {
	if len(locs) == 0 {
		return nil, nil
	}
	out := make([]StoredEvent, 0, len(locs))
	var rerr error
	s.eachLoc(locs, func(ev StoredEvent, err error) bool {
		if err != nil {
			rerr = err
			return false
		}
		out = append(out, ev)
		return true
	})
	if rerr != nil {
		return nil, rerr
	}
	return out, nil
}

// eachLoc reads the events at locs in order and hands each to fn until fn
// returns false or a read fails (fn then gets the error, once). One segment
// mapping is held across consecutive events of the same segment.
func (s *Store) eachLoc(locs []loc, fn func(StoredEvent, error) bool) {
	var m *mapping
	defer func() {
		if m != nil {
			s.segs.release(m)
		}
	}()
	for _, l := range locs {
		if m == nil || m.id != l.seg {
			if m != nil {
				s.segs.release(m)
				m = nil
			}
			var err error
			if m, err = s.segs.acquire(l.seg); err != nil {
				fn(StoredEvent{}, err)
				return
			}
		}
		ev, err := s.decodeAt(m, l)
		if !fn(ev, err) || err != nil {
			return
		}
	}
}

func (s *Store) decodeAt(m *mapping, l loc) (StoredEvent, error) {
	for try := 0; ; try++ {
		// Copy the frame first and check the copy: a redaction may rewrite
		// the frame in place while we read it.
		buf, ok, err := m.frameCopy(int(l.off))
		if err != nil {
			return StoredEvent{}, &CorruptionError{File: m.file, Offset: int64(l.off), Reason: err.Error()}
		}
		if ok {
			if rec, ok := frameAt(buf, 0); ok && checkEvent(rec) {
				return eventView(rec).decodeOwned(), nil
			}
		}
		if try == readRetries {
			return StoredEvent{}, &CorruptionError{File: m.file, Offset: int64(l.off), Reason: "event frame fails its checksum on read"}
		}
		time.Sleep(readRetryWait)
	}
}

// idemOriginal is what a repeated idempotency key is checked against.
type idemOriginal struct {
	receipt Receipt
	coord   Coordinate
	kind    Kind
	phash   Hash
}

// dedupe returns the original receipt for a retry of the same event, or
// an *IdempotencyError when e is a different event.
func (o idemOriginal) dedupe(e *eventReq) (Receipt, error) {
	var why string
	switch {
	case o.coord != e.coord:
		why = fmt.Sprintf("it was used for %s, not %s", o.coord, e.coord)
	case o.kind != e.kind:
		why = fmt.Sprintf("it was used for kind %s, not %s", o.kind, e.kind)
	case o.phash != e.phash:
		why = "it was used with a different payload"
	default:
		rc := o.receipt
		rc.Deduplicated = true
		return rc, nil
	}
	return Receipt{}, &IdempotencyError{Key: e.opts.IdempotencyKey, Original: o.receipt.ID, Reason: why}
}

// idemOriginal reads back the event a stored idempotency key belongs to.
// Called by the writer.
func (s *Store) idemOriginal(seq uint32) (idemOriginal, error) {
	evs, err := s.readRetry(func() []loc {
		s.ix.mu.RLock()
		e := *s.ix.at(seq)
		s.ix.mu.RUnlock()
		return []loc{{seq: seq, seg: e.seg, off: e.off}}
	})
	if err != nil {
		return idemOriginal{}, err
	}
	ev := evs[0]
	h := ev.Header
	return idemOriginal{
		receipt: Receipt{ID: h.ID, CorrelationID: h.CorrelationID, GlobalSequence: uint64(seq), Clock: h.Clock, Timestamp: h.Timestamp},
		coord:   ev.Coordinate,
		kind:    h.Kind,
		phash:   h.PayloadHash,
	}, nil
}
