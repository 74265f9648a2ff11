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

	// A salvage (SalvageExport) walks on past damage, which it reports
	// through damage. Then a batch the damage cut stays open for its commit
	// record (cuts: how many of its items were held at each damage point,
	// in log order), and until a record read settles it, a batch item or
	// fenced event may follow whose begin record the damage took
	// (lostBatchBegin, lostFenceBegin). A segment file missing (the
	// sequences show it: next) counts as damage.
	salvage                        bool
	cuts                           []int
	lostBatchBegin, lostFenceBegin bool
	partialBatches                 int    // batches committed, some of whose items were not read
	partialItems                   int    // the items they lack
	cutEnd                         uint64 // the sequence after the last such batch

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
	if n, prev, ok := w.missing(end); ok {
		why = missingUpTo(n, prev, end, seg, what)
	}
	return w.corrupt(seg, off, why)
}

// missing reports whether sequences before end were never handed on nor
// held back (ok), and then the first of them (n) and the segment of the
// event before it (prev).
func (w *logWalker) missing(end uint64) (n uint64, prev uint32, ok bool) {
	if w.next == nil {
		return 0, 0, false
	}
	n, prev = w.next()
	if k := len(w.fence); k > 0 && w.fence[k-1].seq >= n { // held back, not handed on yet
		n, prev = w.fence[k-1].seq+1, w.fence[k-1].seg
	}
	return n, prev, end > n && end < math.MaxUint32
}

// lostBegin reports whether, in a salvage, a record whose begin record
// was not read (lost: the flag damage set), of sequences before end, is
// taken as one whose begin record the damage or a missing segment took.
func (w *logWalker) lostBegin(lost bool, end uint64) bool {
	if !w.salvage {
		return false
	}
	_, _, gap := w.missing(end)
	return lost || gap
}

// damage tells a salvage walk that frames were skipped here (or a
// segment file is missing). An open fence's events stay hidden (its end
// record is not trusted to follow) and a batch in it is dropped; an open
// batch otherwise stays open, cut here, for its commit record.
func (w *logWalker) damage() error {
	if w.fenceOpen {
		w.dropBatch()
		if err := w.endFence(false); err != nil {
			return err
		}
	} else if w.inBatch {
		w.cuts = append(w.cuts, len(w.batch))
	}
	w.lostBatchBegin, w.lostFenceBegin = true, true
	return nil
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
			if !w.lostBegin(w.lostBatchBegin, ev.seq) {
				return w.orphan(ev.seg, ev.off, ev.seq, fmt.Sprintf("this event's %d", ev.seq), "batch item without a batch-begin record")
			}
			// Its batch-begin was lost: held as a batch cut before it.
			w.inBatch, w.batchCount, w.batch, w.cuts = true, 0, w.batch[:0], append(w.cuts[:0], 0)
		}
		if w.salvage && sf&format.SysFenced != 0 && !w.fenceOpen {
			ev.hidden = true // of a fence whose begin was lost: never shown
		}
		w.batch = append(w.batch, ev.held())
		return nil
	}
	w.dropBatch()
	w.lostBatchBegin = false
	if sf&format.SysFenced != 0 {
		if w.fenceOpen {
			w.fence = append(w.fence, ev.held())
			return nil
		}
		if !w.lostBegin(w.lostFenceBegin, ev.seq) {
			return w.orphan(ev.seg, ev.off, ev.seq, fmt.Sprintf("this event's %d", ev.seq), "fenced event without a fence-begin record")
		}
		// Of a fence whose begin was lost: never shown, as if the fence
		// never committed (its end record alone does not say which fence).
		w.lostFenceBegin = true
		ev.hidden = true
		w.hiddenEvents++
	} else {
		w.lostFenceBegin = false
		if err := w.endFence(false); err != nil {
			return err
		}
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
		w.lostBatchBegin = false
		w.inBatch, w.batchCount, w.batch, w.cuts = true, m.Count, w.batch[:0], w.cuts[:0]
	case format.RecBatchCommit:
		end := m.ID + uint64(m.Count)
		if !w.inBatch && !w.lostBegin(w.lostBatchBegin, end) {
			return w.orphan(seg, off, end, fmt.Sprintf("this batch-commit record (its batch: %d..%d)", m.ID, end-1), "batch-commit record without a batch-begin record")
		}
		items := w.batch[:0]
		if w.inBatch {
			items = w.batch
		}
		if w.salvage && (len(w.cuts) > 0 || !w.inBatch || int(m.Count) != len(items)) {
			items = w.cutBatch(m, items)
		} else if int(m.Count) != len(items) {
			return w.shortBatch(seg, off, m)
		}
		// The items' array is used again for the next batch: nothing
		// appends to it while they are emitted, and a fence copies them.
		w.inBatch, w.lostBatchBegin, w.batch, w.cuts = false, false, w.batch[:0], w.cuts[:0]
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
		w.lostBatchBegin, w.lostFenceBegin = false, false
		if err := w.endFence(false); err != nil {
			return err
		}
		w.fenceOpen, w.fenceID, w.fence = true, m.ID, nil
	case format.RecFenceCommit, format.RecFenceCancel:
		w.dropBatch()
		w.lostBatchBegin = false
		if !w.fenceOpen && w.salvage && w.lostFenceBegin {
			// The end of a fence whose begin was lost: its events went
			// on hidden.
			w.lostFenceBegin = false
			return nil
		}
		w.lostFenceBegin = false
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

// cutBatch returns, of the items held (items) when a salvage reads the
// commit record m of a batch it did not read whole (damage cut it, or its
// begin record was not read), those it can confirm committed, in log
// order; the others are left out (the salvage counts them unconfirmed).
//
// A commit record names only the batch's first sequence and count, which
// a batch retried after a crash shares with the attempt the crash cut,
// and damage can hide a begin record: items held from before a damage
// point may be of an attempt that never committed, whose sequences a
// committed batch reused. So the commit record vouches only for the items
// read after the batch's last damage point (the frames between them and
// it are whole: the same attempt), from the last back, while their
// sequences run down without a gap from the batch's last.
//
// An item held before a damage point is confirmed only by the hash chain:
// when a confirmed item of its entity has its hash as previous hash, it
// was in the entity's chain when that item was written, which a batch
// that never committed never is. Then so are the items held before it
// back to the damage point or the batch-begin record before it (no begin
// record came between: the same attempt). Damage points are gone through
// from the last back, so items confirmed so confirm earlier ones too.
//
// The sequences of m's batch that no item returned holds are counted lost
// (partialItems) and, through cutEnd, missing.
func (w *logWalker) cutBatch(m format.Marker, items []walkedEvent) []walkedEvent {
	last := 0 // the first item after the last damage point
	if n := len(w.cuts); n > 0 {
		last = w.cuts[n-1]
	}
	end := m.ID + uint64(m.Count)
	k, next := len(items), end
	for k > last && next > m.ID && items[k-1].seq == next-1 {
		k--
		next--
	}
	// kept[i] is how many items from the start of the i-th stretch
	// between damage points (0: from the batch's start) are confirmed.
	var kept []int
	if last > 0 && k < len(items) {
		type link struct {
			entity string
			hash   Hash
		}
		chained := map[link]bool{} // the previous hashes of items confirmed
		confirm := func(evs []walkedEvent) {
			for i := range evs {
				if evs[i].prev != (Hash{}) {
					chained[link{string(evs[i].entity), evs[i].prev}] = true
				}
			}
		}
		confirm(items[k:])
		kept = make([]int, len(w.cuts))
		for r := len(w.cuts) - 1; r >= 0; r-- {
			lo := 0
			if r > 0 {
				lo = w.cuts[r-1]
			}
			for j := w.cuts[r] - 1; j >= lo; j-- {
				if chained[link{string(items[j].entity), items[j].hash}] {
					kept[r] = j + 1 - lo
					confirm(items[lo : j+1])
					break
				}
			}
		}
	}
	out := items[:0] // in place: each item moves down, if at all
	for r, n := range kept {
		lo := 0
		if r > 0 {
			lo = w.cuts[r-1]
		}
		out = append(out, items[lo:lo+n]...)
	}
	out = append(out, items[k:]...)
	if len(out) < len(items) {
		w.droppedBatches++
	}
	inBatch := 0
	for i := range out {
		if out[i].seq >= m.ID && out[i].seq < end {
			inBatch++
		}
	}
	if lost := int(m.Count) - inBatch; lost > 0 {
		w.partialBatches++
		w.partialItems += lost
		w.cutEnd = max(w.cutEnd, end)
	}
	return out
}

func (w *logWalker) dropBatch() {
	w.cuts = w.cuts[:0]
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
