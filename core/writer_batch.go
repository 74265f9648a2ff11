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
// record, and ends its group, so it is the last thing on disk when the
// group is synced. If anything goes wrong before the batch is published —
// a failed expectation, a mixed idempotent retry, an injected fault — the
// writer rolls back to where the batch started: entity states, sequence,
// queued entries, and the bytes on disk (zeroed, and segments created for
// the batch removed), so the store stays writable and the batch never
// existed. Recovery ignores a batch that lacks its commit record, so a
// crash at any byte leaves the same result.

// batchMark is where a batch started, for rollback.
type batchMark struct {
	seg     uint32
	pos     int64 // disk offset in seg where the batch's first frame goes
	pendLen int
	nextSeq uint64
	saved   map[uint32]index.Head // entity heads before the batch touched them
	keys    []string              // idempotency keys the batch added to groupIdm
}

type batchWrite struct {
	r    *request
	mark batchMark
}

// faultPoint names a place in the batch write path where tests inject a
// failure (see export_test.go); production code never sets the hook.
type faultPoint int

const (
	faultBatchStart    faultPoint = iota // before anything is written
	faultAfterBegin                      // after the batch-begin record
	faultAfterItem                       // after item k (the hook gets k)
	faultAfterItems                      // after the last item, before the commit record
	faultAfterCommit                     // after the commit record is written, before fsync
	faultBeforePublish                   // after fsync, before the batch is published
)

func (w *writer) fault(p faultPoint, item int) error {
	if w.faultHook == nil {
		return nil
	}
	return w.faultHook(p, item)
}

// writeBatch writes the group's closing batch. It returns nil when nothing
// is left to publish (refused, deduplicated or rolled back); the request's
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
		seg: w.seg, pos: w.off, pendLen: len(w.pend), nextSeq: w.nextSeq, saved: map[uint32]index.Head{},
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
	if err := w.flush(); err != nil {
		w.fail(err)
		return abort(w.failed)
	}
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
	origs := make([]idemOriginal, len(r.items))
	for i := range r.items {
		key := r.items[i].opts.IdempotencyKey
		if key == "" {
			fresh = i
			continue
		}
		orig, found, err := w.lookupIdem(key)
		if err != nil {
			r.bt.err = err
			return true
		}
		if !found {
			fresh = i
			continue
		}
		known, origs[i] = i, orig
	}
	switch {
	case known < 0:
		return false
	case fresh >= 0:
		r.bt.err = fmt.Errorf("%w: item %d's key %q is already stored but item %d is new; a retry must repeat the whole batch",
			ErrBatchMixedKeys, known, r.items[known].opts.IdempotencyKey, fresh)
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

// beforePublish is the last fault point: the batch is written and synced.
func (w *writer) beforePublish(bw *batchWrite) {
	if err := w.fault(faultBeforePublish, -1); err != nil {
		w.rollback(&bw.mark)
		bw.r.bt.receipts, bw.r.bt.err = nil, err
	}
}

// rollback undoes a batch back to its mark. A failure to undo the bytes on
// disk stops the writer (the log would otherwise hold a batch its owner
// was told failed).
func (w *writer) rollback(m *batchMark) {
	ix := w.s.ix
	for en, st := range m.saved {
		ix.Entity(en).Head = st
	}
	w.nextSeq = m.nextSeq
	w.pend = w.pend[:m.pendLen]
	for _, k := range m.keys {
		delete(w.groupIdm, k)
	}
	w.buf, w.bufEvents = w.buf[:0], 0
	w.fail(w.unwrite(m.seg, m.pos))
}

// unwrite removes what was written after offset pos of segment seg:
// segments created since are deleted and the bytes after pos zeroed and
// synced, so neither this process nor a recovery will see them.
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
		if err := segment.ZeroFill(w.file, pos, w.off); err != nil {
			return fmt.Errorf("batpak: roll back batch: %w", err)
		}
		w.fsyncs.Add(1)
		w.off = pos
	}
	w.s.setSegmentEnd(w.seg, w.off)
	w.s.segs.SetActive(w.seg, w.off)
	return nil
}
