package core

import (
	"fmt"

	"github.com/batpak-go/batpak/core/internal/index"
)

// Causal browsing: Ancestors walks up the causation links; Descendants
// walks down them and Correlation gathers one conversation. The index
// keeps the links in memory — for every event the newest event it caused
// (in the index entry's padding, so free) and the next older event with
// the same cause (4 bytes), and for every event whose correlation id is
// not its own a place in its conversation's group (4 bytes, plus about 64
// bytes per conversation) — so both cost what the events they return
// cost to read, never a scan of the log. (Descendants also steps through
// the in-memory links of every event caused by those it returns, a few
// nanoseconds each, since a level cut by MaxEvents keeps its earliest
// events; it holds memory for MaxEvents events at most.) The links are
// saved in the index checkpoint and in segment footers, and rebuilt from
// the records when the log is read, so every cold-start path yields them;
// a checkpoint whose links break these rules is not used (Open scans).
//
// Compaction: a removed event is no longer in any result, and what it
// caused is no longer reached through it (as Ancestors stops at a removed
// cause); Descendants of those events still works. Redaction: a redacted
// event keeps its place and its links; it is returned with Redacted set
// and no payload.

// Default bounds of Descendants and Correlation, used for zero fields of
// CausalLimits.
const (
	DefaultCausalMaxEvents = 1024
	DefaultCausalMaxDepth  = 64
)

// CausalLimits bounds Descendants and Correlation. MaxEvents counts every
// event returned, the starting one included (<= 0: DefaultCausalMaxEvents);
// MaxDepth is how many causation links below the starting event
// Descendants follows (<= 0: DefaultCausalMaxDepth; Correlation ignores
// it). MaxBytes, when > 0, bounds the payload bytes returned: the result
// ends before the event that would pass it (it holds at least one event),
// so that large events are not all read at once. There is no ceiling
// here: a server or CLI caps what callers may ask.
type CausalLimits struct {
	MaxEvents int
	MaxDepth  int
	MaxBytes  int
}

func (l CausalLimits) norm() CausalLimits {
	if l.MaxEvents <= 0 {
		l.MaxEvents = DefaultCausalMaxEvents
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultCausalMaxDepth
	}
	return l
}

// CausalResult is what Descendants and Correlation return: visible events
// in global order, and whether the limits left some out.
type CausalResult struct {
	Events []StoredEvent
	// Truncated: more events qualified than the limits let in (more than
	// MaxEvents or MaxBytes, or, for Descendants, deeper than MaxDepth).
	Truncated bool
}

// Descendants returns the event id and everything it caused, transitively
// (every visible event whose CausationID is id, then those they caused,
// and so on), in global order — which puts every cause before what it
// caused. It goes level by level: when MaxEvents runs out inside a level,
// that level's earliest events are kept; MaxDepth levels below id are
// followed. Truncated says anything was left out. An event whose cause
// is not in the store (written elsewhere, removed) is reached from no
// event here. It returns ErrNotFound when id is not a visible event.
func (s *Store) Descendants(id EventID, lim CausalLimits) (CausalResult, error) {
	if err := s.checkReadable(); err != nil {
		return CausalResult{}, err
	}
	lim = lim.norm()
	var found, truncated bool
	planned := 0
	evs, err := s.readRetryBytes(func() []index.Loc {
		s.ix.RLock()
		seq, ok := s.ix.Lookup(id)
		s.ix.RUnlock()
		if found = ok; !ok {
			return nil
		}
		var locs []index.Loc
		locs, truncated = s.ix.Descendants(seq, lim.MaxEvents, lim.MaxDepth)
		found, planned = len(locs) > 0, len(locs)
		return locs
	}, lim.MaxBytes)
	if err != nil {
		return CausalResult{}, err
	}
	if !found {
		return CausalResult{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return CausalResult{Events: evs, Truncated: truncated || len(evs) < planned}, nil
}

// Correlation returns the conversation event id belongs to: every visible
// event with the same CorrelationID as id (the event whose own id that is
// included, when it is visible and started the conversation), in global
// order. When there are more than MaxEvents, the earliest are returned and
// Truncated is set. It returns ErrNotFound when id is not a visible event.
func (s *Store) Correlation(id EventID, lim CausalLimits) (CausalResult, error) {
	ev, err := s.Get(id)
	if err != nil {
		return CausalResult{}, err
	}
	lim = lim.norm()
	var truncated bool
	planned := 0
	evs, err := s.readRetryBytes(func() []index.Loc {
		var locs []index.Loc
		locs, truncated = s.ix.Correlation(ev.Header.CorrelationID, lim.MaxEvents)
		planned = len(locs)
		return locs
	}, lim.MaxBytes)
	if err != nil {
		return CausalResult{}, err
	}
	return CausalResult{Events: evs, Truncated: truncated || len(evs) < planned}, nil
}
