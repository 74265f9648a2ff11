package core

import (
	"fmt"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/index"
	"github.com/batpak-go/batpak/core/internal/segment"
)

// The fetch layer: reading events at index locations out of the segment
// mappings, with the checks and retries that reads beside a redaction or a
// compaction need. It sits below both the public reads (read.go) and the
// writer (the idempotency check reads back a key's original event), and
// calls neither.

// readRetry plans and reads, planning again (a few times) if the read
// failed while a compaction replaced segment files under it.
func (s *Store) readRetry(plan func() []index.Loc) ([]StoredEvent, error) {
	return s.readRetryBytes(plan, 0)
}

// readRetryBytes is readRetry with readLocsBytes' bound.
func (s *Store) readRetryBytes(plan func() []index.Loc, maxBytes int) ([]StoredEvent, error) {
	for try := 0; ; try++ {
		epoch := s.compactions.Load()
		evs, err := s.readLocsBytes(plan(), maxBytes)
		if err == nil || try == 3 || s.compactions.Load() == epoch {
			return evs, err
		}
	}
}

// readLocsBytes reads the events at locs in order, stopping before the
// one that would take the bytes read (heldBytes of each) past maxBytes (at
// least one is read; maxBytes <= 0: no bound).
func (s *Store) readLocsBytes(locs []index.Loc, maxBytes int) ([]StoredEvent, error) {
	if len(locs) == 0 {
		return nil, nil
	}
	n := len(locs)
	if maxBytes > 0 {
		n = min(n, 64) // the slice grows as events fit
	}
	out := make([]StoredEvent, 0, n)
	size := 0
	var rerr error
	s.eachLoc(locs, func(ev StoredEvent, err error) bool {
		if err != nil {
			rerr = err
			return false
		}
		held := heldBytes(&ev)
		if maxBytes > 0 && len(out) > 0 && size+held > maxBytes {
			return false
		}
		size += held
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
func (s *Store) eachLoc(locs []index.Loc, fn func(StoredEvent, error) bool) {
	var m *segment.Mapping
	defer func() {
		if m != nil {
			s.segs.Release(m)
		}
	}()
	for _, l := range locs {
		if m == nil || m.ID() != l.Seg {
			if m != nil {
				s.segs.Release(m)
				m = nil
			}
			var err error
			if m, err = s.acquireSegment(l.Seg); err != nil {
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

func (s *Store) decodeAt(m *segment.Mapping, l index.Loc) (StoredEvent, error) {
	lastLook := false
	for try := 0; ; try++ {
		// Copy the frame first and check the copy: a redaction may rewrite
		// the frame in place while we read it. s.rewrites (odd while a
		// rewrite runs) says whether one overlapped this read.
		gen := s.rewrites.Load()
		buf, ok, err := m.FrameCopy(int(l.Off))
		if err != nil {
			return StoredEvent{}, &CorruptionError{File: m.File(), Offset: int64(l.Off), Reason: err.Error()}
		}
		if ok {
			if rec, ok := format.FrameAt(buf, 0); ok && format.CheckEvent(rec) {
				return decodeOwned(format.EventView(rec)), nil
			}
		}
		// A read-only store beside a live writer cannot see its rewrites
		// count: the writer's redaction journal says a rewrite may run.
		overlapped := gen%2 == 1 || s.rewrites.Load() != gen || (s.readOnly && redacting(s.fs, s.cfg.Dir))
		if !overlapped && s.readOnly && !lastLook {
			// The writer may have finished the frame and removed its
			// journal between the copy and the look: one more copy is
			// final (the journal goes once the frames are synced).
			lastLook, overlapped = true, true
		}
		if !overlapped || try == readRetries {
			// No rewrite overlapped the read: the frame is damaged.
			why := "event frame fails its checksum on read"
			if s.readOnly && redacting(s.fs, s.cfg.Dir) {
				why += pendingRedaction
			}
			return StoredEvent{}, &CorruptionError{File: m.File(), Offset: int64(l.Off), Reason: why}
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
	case e.restore && o.receipt.ID != e.id:
		why = fmt.Sprintf("the imported event %s cannot carry it too", e.id)
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
	evs, err := s.readRetry(func() []index.Loc {
		s.ix.RLock()
		e := *s.ix.At(seq)
		s.ix.RUnlock()
		return []index.Loc{{Seq: seq, Seg: e.Seg, Off: e.Off}}
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

// eventOverheadBytes is what a read event holds besides its payload and
// names: its header, sequence and slice headers, rounded up.
const eventOverheadBytes = 160

// heldBytes is what a read event holds in memory: its payload, entity,
// scope and idempotency key, and a fixed overhead. Byte bounds on reads
// count this, so that events with long names and small payloads are
// bounded as surely as large payloads.
func heldBytes(ev *StoredEvent) int {
	return len(ev.Payload) + len(ev.Coordinate.Entity) + len(ev.Coordinate.Scope) + len(ev.IdempotencyKey) + eventOverheadBytes
}

// HeldBytes is what the event holds in memory as read: its payload,
// entity, scope and idempotency key, and 160 bytes besides. It is the
// measure the byte bounds of reads count (Cursor.PollBytes), so a server
// can hold room for what it reads before reading it.
func (ev *StoredEvent) HeldBytes() int { return heldBytes(ev) }
