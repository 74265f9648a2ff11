package core

import (
	"errors"
	"fmt"
	"iter"

	"github.com/batpak-go/batpak/core/internal/index"
)

// Get returns the visible event with this id, or ErrNotFound.
func (s *Store) Get(id EventID) (StoredEvent, error) {
	if err := s.checkReadable(); err != nil {
		return StoredEvent{}, err
	}
	var found bool
	evs, err := s.readRetry(func() []index.Loc {
		s.ix.RLock()
		defer s.ix.RUnlock()
		seq, ok := s.ix.Lookup(id)
		if found = ok; !ok {
			return nil
		}
		e := s.ix.At(seq)
		return []index.Loc{{Seq: seq, Seg: e.Seg, Off: e.Off}}
	})
	if err != nil {
		return StoredEvent{}, err
	}
	if !found || len(evs) == 0 {
		return StoredEvent{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return evs[0], nil
}

// Query returns the visible events in r, ordered by global sequence.
// Payloads are read from the segment files and checked against their CRC.
func (s *Store) Query(r Region) ([]StoredEvent, error) {
	if err := s.checkReadable(); err != nil {
		return nil, err
	}
	return s.readRetry(func() []index.Loc { return s.ix.Plan(r.filter()) })
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
			var locs []index.Loc
			if try == 0 {
				locs = s.ix.Plan(r.filter())
			} else {
				locs, _ = s.ix.PlanFrom(r.filter(), next, int(^uint(0)>>1))
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
	return s.readRetry(func() []index.Loc { return s.ix.Stream(entity) })
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
	res, err := s.AncestorsLimited(id, CausalLimits{MaxEvents: limit})
	return res.Events, err
}

// AncestorsLimited is Ancestors bounded by lim: MaxEvents events (<= 0:
// DefaultAncestorLimit) and, when MaxBytes > 0, payload bytes (the walk
// stops before the event that would pass them, after at least one);
// MaxDepth is ignored. Truncated says a bound stopped the walk before a
// root cause or a missing one.
func (s *Store) AncestorsLimited(id EventID, lim CausalLimits) (CausalResult, error) {
	limit := lim.MaxEvents
	if limit <= 0 {
		limit = DefaultAncestorLimit
	}
	var out []StoredEvent
	seen := map[EventID]bool{}
	size := 0
	for {
		if len(out) == limit {
			return CausalResult{Events: out, Truncated: true}, nil
		}
		ev, err := s.Get(id)
		if err != nil {
			if len(out) > 0 && isNotFound(err) {
				break
			}
			return CausalResult{}, err
		}
		if lim.MaxBytes > 0 && len(out) > 0 && size+len(ev.Payload) > lim.MaxBytes {
			return CausalResult{Events: out, Truncated: true}, nil
		}
		size += len(ev.Payload)
		out = append(out, ev)
		seen[id] = true
		id = ev.Header.CausationID
		if id.IsZero() || seen[id] {
			break
		}
	}
	return CausalResult{Events: out}, nil
}

func isNotFound(err error) bool { return err != nil && errors.Is(err, ErrNotFound) }
