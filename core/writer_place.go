package core

import (
	"fmt"
	"math"
	"path/filepath"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/index"
)

// Placing events: the writer's checks (idempotency, compare-and-set,
// fences) and the assignment of sequence, clock, timestamp and chain hash.

// answer delivers a request's staged result.
func (r *request) answer() {
	switch r.op {
	case opBatch:
		r.bt.resolve(r.bt.receipts, r.bt.err)
	default:
		r.t.resolve(r.t.receipt, r.t.err)
	}
}

// ok reports whether the request's staged result is a success.
func (r *request) ok() bool {
	if r.op == opBatch {
		return r.bt.err == nil
	}
	return r.t.err == nil
}

// fail answers a request with err.
func (r *request) fail(err error) {
	switch r.op {
	case opBatch:
		r.bt.resolve(nil, err)
	default:
		r.t.resolve(Receipt{}, err)
	}
}

// checkFence refuses a write that does not match the writer's fence state:
// an ordinary write while a fence is open, or a fenced write whose fence
// has ended.
func (w *writer) checkFence(r *request) error {
	switch {
	case r.fence == nil && w.fence != nil:
		return ErrFenceActive
	case r.fence != nil && r.fence != w.fence:
		return ErrFenceEnded
	}
	return nil
}

// appendOne handles a single append of the group.
func (w *writer) appendOne(r *request) {
	defer func() { r.ev.payload = nil }() // encoded or refused: the ticket need not keep it
	w.resolved = append(w.resolved, r)
	if w.failed != nil {
		r.t.err = w.failed
		return
	}
	if err := w.checkFence(r); err != nil {
		r.t.err = err
		return
	}
	e := &r.ev
	if key := e.opts.IdempotencyKey; key != "" {
		orig, found, err := w.lookupIdem(key)
		if err != nil {
			r.t.err = err
			return
		}
		if found {
			r.t.receipt, r.t.err = orig.dedupe(e)
			return
		}
	}
	if err := w.checkExpectation(e); err != nil {
		r.t.err = err
		return
	}
	if err := w.checkImportedID(e); err != nil {
		r.t.err = err
		return
	}
	var sys byte
	if r.fence != nil {
		sys = format.SysFenced
	}
	r.t.receipt, r.t.err = w.place(e, sys, nil)
}

// lookupIdem finds the event an idempotency key already names: written
// earlier in this group, held by the open fence, or published.
func (w *writer) lookupIdem(key string) (idemOriginal, bool, error) {
	if orig, ok := w.groupIdm[key]; ok {
		return orig, true, nil
	}
	if w.fence != nil {
		if orig, ok := w.fence.idem[key]; ok {
			return orig, true, nil
		}
	}
	// The writer is not the index's only mutator: a compaction drops the
	// keys of the events it removes, under the lock.
	ix := w.s.ix
	ix.RLock()
	seq, ok := ix.Idem(key)
	ix.RUnlock()
	if ok {
		orig, err := w.s.idemOriginal(seq)
		return orig, err == nil, err
	}
	return idemOriginal{}, false, nil
}

// checkHead matches the head of entity (number en), the first time the writer uses it
// since Open, with the frame of the entity's newest visible event: the
// clock a compare-and-set is judged by and the hash the next event chains
// to come from the head, which Open restores from the checkpoint and the
// footers without reading frames. A head that is not what the log holds
// (a sidecar file whose checksum holds but whose content lies) refuses
// the write with a *CorruptionError, rather than write a broken chain.
// When the entity's newest event is not visible (a stub, a hidden fence
// event), the head stays unmatched and is taken as it is.
func (w *writer) checkHead(en uint32, entity string) error {
	ix := w.s.ix
	es := ix.Entity(en)
	if !es.Head.Exists || es.Head.Checked {
		return nil
	}
	// The newest visible event's place, looked up again on each try of
	// the read (a compaction may move it meanwhile).
	var e index.Entry
	var seq uint32
	n := 0
	newest := func() []index.Loc {
		ix.RLock()
		defer ix.RUnlock()
		if n = len(es.Seqs); n == 0 {
			return nil
		}
		seq = es.Seqs[n-1]
		e = *ix.At(seq)
		return []index.Loc{{Seq: seq, Seg: e.Seg, Off: e.Off}}
	}
	if newest(); n == 0 || e.Clock < es.Head.Clock {
		es.Head.Checked = true
		return nil
	}
	lies := func(why string) error {
		return &CorruptionError{File: filepath.Join(w.s.cfg.Dir, format.SegmentName(e.Seg)), Offset: int64(e.Off),
			Reason: fmt.Sprintf("the index's head of entity %q %s: rebuild the index (remove index.ckpt and the .idx footers)", entity, why)}
	}
	if e.Clock > es.Head.Clock {
		return lies(fmt.Sprintf("has clock %d, its newest event clock %d", es.Head.Clock, e.Clock))
	}
	evs, err := w.s.readRetry(newest)
	if err != nil {
		return err
	}
	if len(evs) == 0 || evs[0].Header.Clock < es.Head.Clock { // moved out of sight meanwhile
		es.Head.Checked = true
		return nil
	}
	if ev := evs[0]; ev.Coordinate.Entity != entity || ev.Header.Clock != es.Head.Clock || ev.Header.Hash != Hash(es.Head.Hash) {
		return lies(fmt.Sprintf("(clock %d) is not its newest event's frame", es.Head.Clock))
	}
	es.Head.Checked = true
	return nil
}

// checkExpectation tests e's compare-and-set precondition against the
// entity's state, queued and earlier-in-batch events included. It creates
// nothing, so a refused write leaves no empty entity behind.
func (w *writer) checkExpectation(e *eventReq) error {
	exp := e.opts.ExpectedClock
	if !exp.set {
		return nil
	}
	ix := w.s.ix
	actual := ExpectNoEvents()
	if en, ok := ix.EntityNamed(e.coord.Entity); ok {
		if err := w.checkHead(en, e.coord.Entity); err != nil {
			return err
		}
		if ix.Entity(en).Head.Exists {
			actual = ExpectClock(ix.Entity(en).Head.Clock)
		}
	}
	if actual != exp {
		return &ConflictError{Entity: e.coord.Entity, Expected: exp, Actual: actual}
	}
	return nil
}

// checkImportedID refuses an imported event whose id the store already
// holds (published, written earlier in this group, or under the open
// fence).
func (w *writer) checkImportedID(e *eventReq) error {
	if !e.imported {
		return nil
	}
	w.s.ix.RLock() // a compaction rebuilds the id table
	_, ok := w.s.ix.Lookup(e.id)
	w.s.ix.RUnlock()
	if ok {
		return fmt.Errorf("%w: %s", ErrDuplicateID, e.id)
	}
	if w.pendHasID(e.id) {
		return fmt.Errorf("%w: %s (twice in one import)", ErrDuplicateID, e.id)
	}
	if w.fence != nil && w.fence.hasID(e.id) {
		return fmt.Errorf("%w: %s (written under the open fence)", ErrDuplicateID, e.id)
	}
	return nil
}

// pendIDs finds an event id among pending events (a group's pend, an
// open fence's): a map from id to index in the slice, filled from where it
// stopped when asked rather than as events are placed (only imported ids
// ask, and a map insert per event was a twentieth of the writer's time).
// Each hit is confirmed against the slice, so entries left behind by a
// rollback that cut it are never believed. It costs O(1) where a scan made
// an import of n events O(n²) in one group (a raft follower catching up
// queues hundreds of thousands).
type pendIDs struct {
	at      map[EventID]int
	indexed int // the ids of pend[:indexed] are in at
}

// has reports whether an event of pend has id.
func (x *pendIDs) has(pend []pending, id EventID) bool {
	for ; x.indexed < len(pend); x.indexed++ {
		if x.at == nil {
			x.at = map[EventID]int{}
		}
		x.at[pend[x.indexed].e.ID] = x.indexed
	}
	i, ok := x.at[id]
	return ok && i < len(pend) && pend[i].e.ID == id
}

// cut records that pend was cut back to n events; the ids after them are
// filled again as it grows back.
func (x *pendIDs) cut(n int) { x.indexed = min(x.indexed, n) }

// reset empties the map for a new slice; one grown large is dropped
// rather than cleared, since clear walks every bucket.
func (x *pendIDs) reset() {
	x.indexed = 0
	if len(x.at) > 4096 {
		x.at = nil
		return
	}
	clear(x.at)
}

// pendHasID reports whether an event of this group's pend has id.
func (w *writer) pendHasID(id EventID) bool { return w.pendIDs.has(w.pend, id) }

// truncatePend cuts pend back to its first n entries (a rollback).
func (w *writer) truncatePend(n int) {
	w.pend = w.pend[:n]
	w.pendIDs.cut(n)
}

// place gives e its sequence, clock and timestamp, encodes it into w.buf
// (rotating segments as needed) and queues it for publication; its chain
// hash is set when it is sealed (sealPlaced), with the other frames
// placed since the last seal.
// When saved is non-nil (a batch), the entity's prior state is recorded
// there first, for rollback.
func (w *writer) place(e *eventReq, sys byte, saved map[uint32]index.Head) (Receipt, error) {
	if w.nextSeq >= math.MaxUint32 {
		return Receipt{}, ErrStoreFull
	}
	ix := w.s.ix
	en := ix.EntityFor([]byte(e.coord.Entity))
	if err := w.checkHead(en, e.coord.Entity); err != nil {
		return Receipt{}, err
	}
	_, inSaved := saved[en]
	_, inGroup := w.group.saved[en]
	if (saved != nil && !inSaved || w.group.saved != nil && !inGroup) && w.unsealed.newest(en) >= 0 {
		w.sealPlaced() // a head kept for a rollback must hold its hash
	}
	es := ix.Entity(en)
	if saved != nil && !inSaved {
		saved[en] = es.Head
	}
	if gs := w.group.saved; gs != nil && !inGroup {
		gs[en] = es.Head
	}
	sc := ix.ScopeFor([]byte(e.coord.Scope))
	rec := format.Event{
		SysFlags:      sys,
		Seq:           w.nextSeq,
		Entity:        e.coord.Entity,
		Scope:         e.coord.Scope,
		Idem:          e.opts.IdempotencyKey,
		Payload:       e.payload,
		ID:            e.id,
		CorrelationID: e.opts.CorrelationID,
		CausationID:   e.opts.CausationID,
		Timestamp:     max(w.now, es.Head.TS),
		Kind:          uint16(e.kind),
		Flags:         e.opts.Flags,
		PayloadHash:   e.phash,
	}
	if rec.CorrelationID == (EventID{}) {
		rec.CorrelationID = e.id
	}
	if e.ts != 0 {
		rec.Timestamp = max(e.ts, es.Head.TS)
	}
	if es.Head.Exists {
		rec.Clock = es.Head.Clock + 1
	}
	if err := w.makeRoom(rec.FrameLen()); err != nil {
		w.fail(err)
		return Receipt{}, w.failed
	}
	// pred is the entity's newest frame still unsealed (makeRoom may have
	// sealed it): e chains to it, and gets its previous hash when the two
	// are sealed; else the head holds it.
	pred := w.unsealed.newest(en)
	if pred < 0 {
		rec.PrevHash = es.Head.Hash
	}
	off := w.off + int64(len(w.buf))
	w.unsealed.add(len(w.buf), pred, en, e.hashLater)
	w.buf = format.AppendEventUnsealed(w.buf, &rec)
	w.bufEvents++
	es.Head = index.Head{Exists: true, Clock: rec.Clock, TS: rec.Timestamp, Checked: true} // its hash once sealed
	if len(w.unsealed.frames) >= maxUnsealed {
		w.sealPlaced()
	}
	w.pend = append(w.pend, pending{
		seq:    uint32(rec.Seq),
		idem:   rec.Idem,
		fenced: sys&format.SysFenced != 0,
		corr:   rec.CorrelationID,
		cause:  rec.CausationID,
		e: index.Entry{ID: e.id, Seg: w.seg, Off: uint32(off), Entity: en, Scope: sc,
			Clock: rec.Clock, Kind: uint16(e.kind)},
	})
	w.nextSeq++
	rc := Receipt{ID: e.id, CorrelationID: rec.CorrelationID, GlobalSequence: rec.Seq, Clock: rec.Clock, Timestamp: rec.Timestamp}
	if rec.Idem != "" {
		w.groupIdm[rec.Idem] = idemOriginal{receipt: rc, coord: e.coord, kind: e.kind, phash: e.phash}
	}
	return rc, nil
}
