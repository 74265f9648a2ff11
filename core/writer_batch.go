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
// receipts; some known and some not is refused. It reports whether the
// batch is answered.
func (w *writer) dedupeBatch(r *request) bool {
	known, fresh := -1, -1
	unkeyed := false
	var origs []idemOriginal // made at the first key found: most batches carry none
	for i := range r.items {
		key := r.items[i].opts.IdempotencyKey
		if key == "" {
			if fresh < 0 {
				fresh, unkeyed = i, true
			}
			continue
		}
		orig, found, err := w.lookupIdem(key)
		if err != nil {
			r.bt.err = err
			return true
		}
		if !found {
			if fresh < 0 || unkeyed {
				fresh, unkeyed = i, false
			}
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
		known, origs[i] = i, orig
	}
	switch {
	case known < 0:
		return false
	case fresh >= 0 && unkeyed:
		// Its events cannot be told from anyone else's: a retry is
		// recognized by keys alone.
		r.bt.err = fmt.Errorf("%w: item %d's key %q is already stored but item %d carries no key, so this batch cannot be recognized as a retry; "+
			"nothing was written: a batch that may be retried needs a key on every item", ErrBatchMixedKeys, known, r.items[known].opts.IdempotencyKey, fresh)
		return true
	case fresh >= 0:
		r.bt.err = fmt.Errorf("%w: item %d's key %q is already stored but item %d's key %q is new; nothing was written: a retry must repeat the whole batch",
			ErrBatchMixedKeys, known, r.items[known].opts.IdempotencyKey, fresh, r.items[fresh].opts.IdempotencyKey)
		return true
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
