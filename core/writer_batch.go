package core

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/index"
	"github.com/batpak-go/batpak/core/internal/segment"
)

// The writer's side of atomic batches: a batch is written as a
// batch-begin record, its items (flagged format.SysBatch) and a batch-commit
// record. Batches share a group with single appends and other batches, so
// one write call and one fsync cover all of them. If anything goes wrong
// with a batch before it is synced — a failed expectation, a mixed
// idempotent retry, an injected fault — the writer rolls back to where the
// batch started: entity states, sequence, queued entries, and the bytes
// (cut from the group's buffer, or zeroed on disk with the segments created
// for the batch removed when a rotation had already written them). Nothing
// of the group after the batch is placed yet, so the group goes on where
// the batch started: no hole, and the store stays writable. A fault after
// the group's write, before publication (tests only, see
// faultBeforePublish), rolls back the whole group, since later writes of
// the group lie after the batch on disk. Recovery ignores a batch that lacks its commit record, so a
// crash at any byte leaves the same result.

// batchMark is where a batch started, for rollback.
type batchMark struct {
	seg       uint32
	pos       int64 // log offset in seg where the batch's first frame goes
	bufEvents int   // w.bufEvents then
	pendLen   int
	nextSeq   uint64
	saved     map[uint32]index.Head // entity heads before the batch touched them
	keys      []string              // idempotency keys the batch added to groupIdm
}

type batchWrite struct {
	r    *request
	mark batchMark
}

// groupMark is where the group started. saved (entity heads before the
// group touched them) is kept only while a fault hook is set: nothing but
// an injected fault after the fsync rolls a whole group back.
type groupMark struct {
	seg     uint32
	pos     int64
	nextSeq uint64
	saved   map[uint32]index.Head
}

// markGroup records where the group being processed starts.
func (w *writer) markGroup() {
	w.group = groupMark{seg: w.seg, pos: w.off, nextSeq: w.nextSeq}
	if w.faultHook != nil {
		w.group.saved = map[uint32]index.Head{}
	}
}

// faultPoint names a place in the batch write path where tests inject a
// failure (see export_test.go); production code never sets the hook.
type faultPoint int

const (
	faultBatchStart    faultPoint = iota // before anything is written
	faultAfterBegin                      // after the batch-begin record
	faultAfterItem                       // after item k (the hook gets k)
	faultAfterItems                      // after the last item, before the commit record
	faultAfterCommit                     // after the commit record is placed, before the write and fsync
	faultBeforePublish                   // after the group's write and fsync (before the fsync for a group that publishes while it syncs), before it is published (fails the group)
)

func (w *writer) fault(p faultPoint, item int) error {
	if w.faultHook == nil {
		return nil
	}
	return w.faultHook(p, item)
}

// appendBatch handles a batch of the group: written, or answered with
// the reason it was not.
func (w *writer) appendBatch(r *request) {
	if w.failed != nil {
		w.resolved = append(w.resolved, r) // fails with the writer's error
		return
	}
	if bw := w.writeBatch(r); bw != nil {
		w.batches = append(w.batches, bw)
	}
}

// writeBatch places a batch in the group. It returns nil when nothing is
// left to publish (refused, deduplicated or rolled back); the request's
// ticket holds the outcome either way.
func (w *writer) writeBatch(r *request) *batchWrite {
	w.resolved = append(w.resolved, r)
	defer func() {
		for i := range r.items {
			r.items[i].payload = nil
		}
	}()
	if err := w.checkFence(r); err != nil {
		r.bt.err = err
		return nil
	}
	if done := w.dedupeBatch(r); done {
		return nil
	}
	if err := w.fault(faultBatchStart, -1); err != nil {
		r.bt.err = err
		return nil
	}
	bw := &batchWrite{r: r, mark: batchMark{
		seg: w.seg, pos: w.off + int64(len(w.buf)), bufEvents: w.bufEvents,
		pendLen: len(w.pend), nextSeq: w.nextSeq, saved: map[uint32]index.Head{},
	}}
	abort := func(err error) *batchWrite {
		w.rollback(&bw.mark)
		r.bt.err = err
		return nil
	}
	sys := format.SysBatch
	if r.fence != nil {
		sys |= format.SysFenced
	}
	n := len(r.items)
	if err := w.makeRoom(format.FrameHeaderSize + format.MarkerSize); err != nil {
		w.fail(err)
		return abort(w.failed)
	}
	w.buf = format.AppendMarker(w.buf, format.RecBatchBegin, uint32(n), w.nextSeq)
	if err := w.fault(faultAfterBegin, -1); err != nil {
		return abort(err)
	}
	receipts := make([]Receipt, n)
	// A keyed batch's unkeyed items are remembered by place for the rest
	// of the group, so that a retry queued behind it is judged the same
	// as one in a later group (matchUnkeyed): deterministic on every
	// replica of a cluster, whatever the grouping. A fenced batch's are
	// not: its events stay hidden until the fence commits.
	byPlace := false
	if r.fence == nil {
		for i := range r.items {
			byPlace = byPlace || r.items[i].opts.IdempotencyKey != ""
		}
	}
	for i := range r.items {
		e := &r.items[i]
		if err := w.checkExpectation(e); err != nil {
			return abort(&BatchItemError{Index: i, Err: err})
		}
		if err := w.checkImportedID(e); err != nil {
			return abort(&BatchItemError{Index: i, Err: err})
		}
		rc, err := w.place(e, sys, bw.mark.saved)
		if err != nil {
			return abort(&BatchItemError{Index: i, Err: err})
		}
		receipts[i] = rc
		if k := e.opts.IdempotencyKey; k != "" {
			bw.mark.keys = append(bw.mark.keys, k)
		} else if byPlace {
			w.groupByPlace[uint32(rc.GlobalSequence)] = idemOriginal{receipt: rc, coord: e.coord, kind: e.kind, phash: e.phash}
		}
		if err := w.fault(faultAfterItem, i); err != nil {
			return abort(err)
		}
	}
	if err := w.fault(faultAfterItems, -1); err != nil {
		return abort(err)
	}
	if err := w.makeRoom(format.FrameHeaderSize + format.MarkerSize); err != nil {
		w.fail(err)
		return abort(w.failed)
	}
	w.buf = format.AppendMarker(w.buf, format.RecBatchCommit, uint32(n), bw.mark.nextSeq)
	if err := w.fault(faultAfterCommit, -1); err != nil {
		return abort(err)
	}
	r.bt.receipts = receipts
	return bw
}

// dedupeBatch handles a batch whose items carry idempotency keys the store
// already holds: all of them known (a retry) answers with the original
// receipts; a known key beside a new one is refused. Items without a key
// in such a retry are matched by place (matchUnkeyed). It reports whether
// the batch is answered.
func (w *writer) dedupeBatch(r *request) bool {
	known, freshKey, unkeyed := -1, -1, -1
	var origs []idemOriginal // made at the first key found: most batches carry none
	for i := range r.items {
		key := r.items[i].opts.IdempotencyKey
		if key == "" {
			unkeyed = i
			continue
		}
		orig, found, err := w.lookupIdem(key)
		if err != nil {
			r.bt.err = err
			return true
		}
		if !found {
			freshKey = i
			continue
		}
		if it := &r.items[i]; it.restore && orig.receipt.ID != it.id {
			_, err := orig.dedupe(it)
			r.bt.err = &BatchItemError{Index: i, Err: err}
			return true
		}
		if origs == nil {
			origs = make([]idemOriginal, len(r.items))
		}
		if known < 0 {
			known = i
		}
		origs[i] = orig
	}
	switch {
	case known < 0:
		return false
	case freshKey >= 0:
		r.bt.err = fmt.Errorf("%w: item %d's key %q is already stored but item %d's key %q is new; a retry must repeat the whole batch",
			ErrBatchMixedKeys, known, r.items[known].opts.IdempotencyKey, freshKey, r.items[freshKey].opts.IdempotencyKey)
		return true
	case unkeyed >= 0:
		if err := w.matchUnkeyed(r, origs, known); err != nil {
			r.bt.err = err
			return true
		}
	}
	receipts := make([]Receipt, len(r.items))
	for i := range r.items {
		rc, err := origs[i].dedupe(&r.items[i])
		if err != nil {
			r.bt.err = &BatchItemError{Index: i, Err: err}
			return true
		}
		receipts[i] = rc
	}
	r.bt.receipts = receipts
	return true
}

// matchUnkeyed finds the originals of a retried batch's items that carry
// no idempotency key, given those of its keyed items (origs, known one of
// them). A stored batch's events have consecutive global sequences, so
// when every keyed item's original sits at the same distance from its
// place in the batch, item i's original is the event at that base plus i.
// The event there is looked up among the group's keyed batches first
// (groupByPlace), then in the index. An unkeyed item whose event there is
// missing (compacted away, hidden in a fence), or is another coordinate,
// kind or payload (or, imported, another id), is not the stored batch's
// item: the retry is refused with ErrBatchMixedKeys. Called only for a
// retry that mixes keyed and unkeyed items: it reads each unkeyed item's
// event.
func (w *writer) matchUnkeyed(r *request, origs []idemOriginal, known int) error {
	base := int64(origs[known].receipt.GlobalSequence) - int64(known)
	for i := range r.items {
		if r.items[i].opts.IdempotencyKey == "" {
			continue
		}
		if b := int64(origs[i].receipt.GlobalSequence) - int64(i); b != base {
			return fmt.Errorf("%w: items %d and %d carry keys of different stored writes (%q, %q); a retry must repeat the whole batch",
				ErrBatchMixedKeys, known, i, r.items[known].opts.IdempotencyKey, r.items[i].opts.IdempotencyKey)
		}
	}
	ix := w.s.ix
	for i := range r.items {
		it := &r.items[i]
		if it.opts.IdempotencyKey != "" {
			continue
		}
		seq := base + int64(i)
		orig, found := w.groupByPlace[uint32(seq)]
		if !found && seq >= 0 {
			ix.RLock()
			found = seq < int64(ix.Len()) && ix.At(uint32(seq)).Visible()
			ix.RUnlock()
			if found {
				var err error
				if orig, err = w.s.idemOriginal(uint32(seq)); err != nil {
					return err
				}
			}
		}
		if !found || orig.coord != it.coord || orig.kind != it.kind || orig.phash != it.phash || (it.restore && orig.receipt.ID != it.id) {
			return fmt.Errorf("%w: item %d's key %q is already stored but item %d, which carries no key, is not the stored batch's item %d; "+
				"a retry must repeat the whole batch (a key on every item lets each be recognized)",
				ErrBatchMixedKeys, known, r.items[known].opts.IdempotencyKey, i, i)
		}
		origs[i] = orig
	}
	return nil
}

// beforePublish is the last fault point: the group is written and synced.
// The hook is asked once per batch of the group; a fault rolls the whole
// group back and fails every write of it that had succeeded.
func (w *writer) beforePublish() {
	for range w.batches {
		if err := w.fault(faultBeforePublish, -1); err != nil {
			w.rollbackGroup(err)
			return
		}
	}
}

// rollback undoes a batch back to its mark: cut from the group's buffer
// when its bytes are still there, else unwritten from disk. A failure to
// undo the bytes on disk stops the writer (the log would otherwise hold a
// batch its owner was told failed).
func (w *writer) rollback(m *batchMark) {
	w.sealPlaced() // the frames before the mark stay: sealed, as they must be written
	ix := w.s.ix
	for en, st := range m.saved {
		ix.Entity(en).Head = st
	}
	w.nextSeq = m.nextSeq
	w.truncatePend(m.pendLen)
	for _, k := range m.keys {
		delete(w.groupIdm, k)
	}
	for seq := range w.groupByPlace {
		if uint64(seq) >= m.nextSeq {
			delete(w.groupByPlace, seq)
		}
	}
	if w.seg == m.seg && w.off <= m.pos {
		w.buf, w.bufEvents = w.buf[:m.pos-w.off], m.bufEvents
		return
	}
	// A rotation wrote the batch's start (and the group before it): the
	// buffer holds only the batch's bytes.
	w.buf, w.bufEvents = w.buf[:0], 0
	w.fail(w.unwrite(m.seg, m.pos))
}

// rollbackGroup undoes the whole group after its fsync and stages err for
// every write of it that had succeeded. Only an injected fault gets here,
// and the group's prior entity heads are kept only while a hook is set; a
// group without them stops the writer instead.
func (w *writer) rollbackGroup(err error) {
	g := &w.group
	if g.saved == nil {
		w.fail(err)
		return
	}
	w.sealPlaced()
	ix := w.s.ix
	for en, st := range g.saved {
		ix.Entity(en).Head = st
	}
	w.nextSeq = g.nextSeq
	w.truncatePend(0)
	clear(w.groupIdm)
	clear(w.groupByPlace)
	w.buf, w.bufEvents = w.buf[:0], 0
	w.fail(w.unwrite(g.seg, g.pos))
	// After unwrite, which waits for a running sync: one that covered the
	// group would otherwise move durable past the sequences given back.
	if w.durable.Load() > w.nextSeq {
		w.durable.Store(w.nextSeq)
	}
	for _, r := range w.resolved {
		if !r.ok() {
			continue
		}
		if r.op == opBatch {
			r.bt.receipts, r.bt.err = nil, err
		} else {
			r.t.receipt, r.t.err = Receipt{}, err
		}
	}
}

// unwrite removes what was written after offset pos of segment seg:
// segments created since are deleted and the bytes after pos zeroed
// (from the end backwards, see segment.ZeroFillBackward) and synced, so
// neither this process nor a recovery will see them, even after a kill in
// the middle of it.
func (w *writer) unwrite(seg uint32, pos int64) error {
	// The group's background sync may still be running on the active file:
	// let it finish before that file is closed and removed.
	if err := w.awaitSync(); err != nil {
		return err
	}
	dir := w.s.cfg.Dir
	for w.seg > seg {
		w.unmapActive()
		w.file.Close()
		if err := w.s.fs.Remove(filepath.Join(dir, format.SegmentName(w.seg))); err != nil {
			return fmt.Errorf("batpak: roll back batch: %w", err)
		}
		w.s.dropSegmentEnd(w.seg)
		w.seg--
		f, err := w.s.fs.OpenFile(filepath.Join(dir, format.SegmentName(w.seg)), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("batpak: roll back batch: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return fmt.Errorf("batpak: roll back batch: %w", err)
		}
		w.file, w.alloc, w.off = f, st.Size(), w.s.segmentEnd(w.seg)
		if err := w.mapActive(); err != nil {
			return err
		}
		if err := segment.SyncDir(w.s.fs, dir); err != nil {
			return err
		}
	}
	if w.off > pos {
		// Backwards: a kill part-way leaves the batch cut short (discarded
		// by recovery), never zeros with the batch's frames after them.
		if err := segment.ZeroFillBackward(w.file, pos, w.off); err != nil {
			return fmt.Errorf("batpak: roll back batch: %w", err)
		}
		w.fsyncs.Add(1)
		w.off = pos
	}
	w.s.setSegmentEnd(w.seg, w.off)
	w.s.segs.SetActive(w.seg, w.off)
	return nil
}
