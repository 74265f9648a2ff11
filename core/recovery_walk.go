package core

import (
	"fmt"
	"math"
	"path/filepath"

	"github.com/batpak-go/batpak/core/internal/format"
)

// The log walker turns the frames of the segments, in order, into the
// events a reader may know about, applying the batch and fence rules:
//
//   - The items of a batch (events flagged format.SysBatch, after a batch-begin
//     record) count only once the batch's commit record follows them, with
//     the item count it announces, even across segment files. A batch that
//     is followed by anything else, or by the end of the log, never happened:
//     its items are dropped (their sequences are reused by later events).
//   - Events written under a visibility fence (flagged format.SysFenced, after a
//     fence-begin record) are visible once the fence's commit record follows;
//     a cancel record, another fence, an ordinary event or the end of the log
//     (a crash while the fence was open) leaves them hidden for ever. Hidden
//     events keep their sequence and their place in the entity's clock and
//     hash chain; they are just never shown.
//
// Recovery and Verify both walk the log this way, so what Open rebuilds is
// exactly what Verify checks.

// walkedEvent is one event handed on by the walker. The byte slices alias
// the segment mapping when the event is handed on directly, and are copies
// when it was held back (batch or fence).
type walkedEvent struct {
	seg     uint32
	off     int
	id      EventID
	seq     uint64
	clock   uint64
	ts      int64
	kind    Kind
	hash    Hash
	prev    Hash
	entity  []byte
	scope   []byte
	idem    []byte
	cause   EventID
	corr    EventID
	hidden  bool
	removed bool // a compaction stub: in the chain, never shown
}

func (e walkedEvent) held() walkedEvent {
	// One allocation for the three (an empty one stays nil).
	b := make([]byte, 0, len(e.entity)+len(e.scope)+len(e.idem))
	keep := func(p []byte) []byte {
		if len(p) == 0 {
			return nil
		}
		b = append(b, p...)
		return b[len(b)-len(p) : len(b) : len(b)]
	}
	e.entity, e.scope, e.idem = keep(e.entity), keep(e.scope), keep(e.idem)
	return e
}

type logWalker struct {
	dir  string
	emit func(*walkedEvent) error
	// check, when set, is called for every event frame as it is read (Verify
	// checks digests there), before any batch or fence rule applies.
	check func(seg uint32, off int, v format.EventView) error
	// next, when set, returns the sequence the next event handed on takes
	// and the segment of the last one: a record that lacks the one it must
	// follow, and whose sequence shows events missing before it, is
	// reported as that (naming a missing segment file), not as damage.
	next func() (uint64, uint32)

	inBatch    bool
	batchCount uint32
	batch      []walkedEvent

	fenceOpen bool
	fenceID   uint64
	fence     []walkedEvent

	droppedBatches int // batches without a commit record

	// cur is the event event hands to emit: a pointer to a field, not to
	// its argument, which would put every event walked on the heap. emit
	// must not keep the pointer.
	cur walkedEvent

	// chunk is the read buffer of the walk's chunked scans (scanSegment):
	// one for the whole walk, made at the first segment that needs it.
	chunk        []byte
	hiddenEvents int
}

func (w *logWalker) corrupt(seg uint32, off int, why string) error {
	return &CorruptionError{File: filepath.Join(w.dir, format.SegmentName(seg)), Offset: int64(off), Reason: why}
}

// orphan is the error for a record at off in segment seg that lacks the
// record it must follow (why): when the sequences before end (what: the
// record, up to end) are not all handed on, the events missing.
func (w *logWalker) orphan(seg uint32, off int, end uint64, what, why string) error {
	if w.next != nil {
		n, prev := w.next()
		if k := len(w.fence); k > 0 && w.fence[k-1].seq >= n { // held back, not handed on yet
			n, prev = w.fence[k-1].seq+1, w.fence[k-1].seg
		}
		if end > n && end < math.MaxUint32 {
			why = missingUpTo(n, prev, end, seg, what)
		}
	}
	return w.corrupt(seg, off, why)
}

// frame handles one valid frame.
func (w *logWalker) frame(seg uint32, off int, rec []byte) error {
	if rec[0] == format.RecEvent {
		if !format.CheckEvent(rec) {
			return w.corrupt(seg, off, "malformed event record")
		}
		v := format.EventView(rec)
		if w.check != nil {
			if err := w.check(seg, off, v); err != nil {
				return err
			}
		}
		ev := walkedEvent{
			seg: seg, off: off, id: v.ID(), seq: v.Seq(), clock: v.Clock(), ts: v.Timestamp(),
			kind: Kind(v.Kind()), hash: v.Hash(), prev: v.PrevHash(),
			entity: v.Entity(), scope: v.Scope(), idem: v.Idem(),
			cause: v.CausationID(), corr: v.CorrelationID(),
		}
		return w.event(ev, v.SysFlags())
	}
	m, ok := format.DecodeMarker(rec)
	if !ok {
		return w.corrupt(seg, off, fmt.Sprintf("unknown or malformed record (type %d)", rec[0]))
	}
	return w.marker(seg, off, m)
}

// event handles one event record (sf: its system flags); a segment
// footer replays its events through here too.
func (w *logWalker) event(ev walkedEvent, sf byte) error {
	ev.removed = sf&format.SysRemoved != 0
	if sf&format.SysBatch != 0 {
		if !w.inBatch {
			return w.orphan(ev.seg, ev.off, ev.seq, fmt.Sprintf("this event's %d", ev.seq), "batch item without a batch-begin record")
		}
		w.batch = append(w.batch, ev.held())
		return nil
	}
	w.dropBatch()
	if sf&format.SysFenced != 0 {
		if !w.fenceOpen {
			return w.orphan(ev.seg, ev.off, ev.seq, fmt.Sprintf("this event's %d", ev.seq), "fenced event without a fence-begin record")
		}
		w.fence = append(w.fence, ev.held())
		return nil
	}
	if err := w.endFence(false); err != nil {
		return err
	}
	w.cur = ev
	err := w.emit(&w.cur)
	// Its bytes may be a mapping that is released after this segment.
	w.cur.entity, w.cur.scope, w.cur.idem = nil, nil, nil
	return err
}

// format.Marker handles one batch or fence record.
func (w *logWalker) marker(seg uint32, off int, m format.Marker) error {
	switch m.Type {
	case format.RecBatchBegin:
		w.dropBatch()
		w.inBatch, w.batchCount, w.batch = true, m.Count, w.batch[:0]
	case format.RecBatchCommit:
		if !w.inBatch {
			end := m.ID + uint64(m.Count)
			return w.orphan(seg, off, end, fmt.Sprintf("this batch-commit record (its batch: %d..%d)", m.ID, end-1), "batch-commit record without a batch-begin record")
		}
		if int(m.Count) != len(w.batch) {
			return w.shortBatch(seg, off, m)
		}
		// The items' array is used again for the next batch: nothing
		// appends to it while they are emitted, and a fence copies them.
		items := w.batch
		w.inBatch, w.batch = false, w.batch[:0]
		if w.fenceOpen { // a batch written under the fence waits for it
			w.fence = append(w.fence, items...)
			return nil
		}
		for i := range items {
			if err := w.emit(&items[i]); err != nil {
				return err
			}
		}
	case format.RecFenceBegin:
		w.dropBatch()
		if err := w.endFence(false); err != nil {
			return err
		}
		w.fenceOpen, w.fenceID, w.fence = true, m.ID, nil
	case format.RecFenceCommit, format.RecFenceCancel:
		w.dropBatch()
		if !w.fenceOpen || m.ID != w.fenceID {
			return w.corrupt(seg, off, "fence end record without its fence-begin record")
		}
		return w.endFence(m.Type == format.RecFenceCommit)
	}
	return nil
}

// shortBatch is the error for the commit record m, at off in segment seg,
// of a batch whose items do not number what it counts: when the items'
// sequences skip some (a segment deleted from the middle of the batch),
// the events and segment files missing, named at the first item after
// them.
func (w *logWalker) shortBatch(seg uint32, off int, m format.Marker) error {
	for i := 1; i < len(w.batch); i++ {
		prev, it := &w.batch[i-1], &w.batch[i]
		if it.seq > prev.seq+1 {
			return w.corrupt(it.seg, it.off, missingBefore(prev.seq+1, prev.seg, it.seq, it.seg))
		}
	}
	return w.corrupt(seg, off, fmt.Sprintf("batch-commit record counts %d items, %d were written", m.Count, len(w.batch)))
}

func (w *logWalker) dropBatch() {
	if w.inBatch {
		w.droppedBatches++
		w.inBatch, w.batch = false, w.batch[:0]
	}
}

// endFence hands on the events of the open fence, visible or hidden.
func (w *logWalker) endFence(visible bool) error {
	if !w.fenceOpen {
		return nil
	}
	evs := w.fence
	w.fenceOpen, w.fence = false, nil
	for i := range evs {
		evs[i].hidden = !visible
		if !visible {
			w.hiddenEvents++
		}
		if err := w.emit(&evs[i]); err != nil {
			return err
		}
	}
	return nil
}

// finish ends the walk: an open batch never happened, and an open fence's
// events stay hidden. It reports whether a fence was left open (the writer
// then records its cancellation).
func (w *logWalker) finish() (danglingFence bool, fenceID uint64, err error) {
	w.dropBatch()
	danglingFence, fenceID = w.fenceOpen, w.fenceID
	return danglingFence, fenceID, w.endFence(false)
}
