package core

import (
	"errors"
	"fmt"
	"path/filepath"
)

// Get returns the visible event with this id, or ErrNotFound.
func (s *Store) Get(id EventID) (StoredEvent, error) {
	if err := s.checkReadable(); err != nil {
		return StoredEvent{}, err
	}
	s.ix.mu.RLock()
	seq, ok := s.ix.lookup(id)
	var l loc
	if ok {
		e := s.ix.at(seq)
		l = loc{seq: seq, seg: e.seg, off: e.off}
	}
	s.ix.mu.RUnlock()
	if !ok {
		return StoredEvent{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	evs, err := s.readLocs([]loc{l})
	if err != nil {
		return StoredEvent{}, err
	}
	return evs[0], nil
}

// Query returns the visible events in r, ordered by global sequence.
// Payloads are read from the segment files and checked against their CRC.
func (s *Store) Query(r Region) ([]StoredEvent, error) {
	if err := s.checkReadable(); err != nil {
		return nil, err
	}
	return s.readLocs(s.ix.plan(r))
}

// Stream returns the events of exactly this entity, ordered by clock.
func (s *Store) Stream(entity string) ([]StoredEvent, error) {
	if err := s.checkReadable(); err != nil {
		return nil, err
	}
	return s.readLocs(s.ix.stream(entity))
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

// readLocs reads events, keeping one segment mapping across consecutive
// events of the same segment.
func (s *Store) readLocs(locs []loc) ([]StoredEvent, error) {
	if len(locs) == 0 {
		return nil, nil
	}
	out := make([]StoredEvent, 0, len(locs))
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
				return nil, err
			}
		}
		ev, err := s.decodeAt(m, l)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

func (s *Store) decodeAt(m *mapping, l loc) (StoredEvent, error) {
	rec, ok := frameAt(m.bytes(), int(l.off))
	if !ok || !checkEvent(rec) {
		return StoredEvent{}, &CorruptionError{File: filepath.Join(s.cfg.Dir, segmentName(l.seg)), Offset: int64(l.off), Reason: "event frame fails its checksum on read"}
	}
	return eventView(rec).decode(), nil
}

// receiptOf rebuilds the receipt of a published event (for a deduplicated
// idempotent write). Called by the writer.
func (s *Store) receiptOf(seq uint32) (Receipt, error) {
	s.ix.mu.RLock()
	e := *s.ix.at(seq)
	s.ix.mu.RUnlock()
	evs, err := s.readLocs([]loc{{seq: seq, seg: e.seg, off: e.off}})
	if err != nil {
		return Receipt{}, err
	}
	h := evs[0].Header
	return Receipt{ID: h.ID, GlobalSequence: uint64(seq), Clock: h.Clock, Timestamp: h.Timestamp}, nil
}
