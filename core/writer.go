package core

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/index"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

type op uint8

const (
	opAppend op = iota
	opBatch
	opSync
	opClose
	opFenceBegin
	opFenceCommit
	opFenceCancel
	opSnapshot
)

// write reports whether o writes events (and so may share a group).
func (o op) write() bool { return o == opAppend || o == opBatch }

// eventReq is one event ready for the writer: everything the caller could
// compute (validation, id, causation, the payload digest unless hashLater)
// is done.
type eventReq struct {
	coord   Coordinate
	kind    Kind
	payload []byte
	phash   Hash
	// hashLater: phash is not taken yet; the writer takes it when it
	// seals the event's frame, with the other payloads of its group, 16
	// at a time (see eventReq.hashNowOrLater).
	hashLater bool
	opts      AppendOptions
	id        EventID
	ts        int64 // imports: the original timestamp (0: now)
	imported  bool  // the id comes from elsewhere: refuse one the store holds
	// restore: an imported event being restored (Store.Import), whose
	// idempotency key must not be another event's: a key the store holds
	// for a different id fails it, where an append would be answered
	// with the original's receipt.
	restore bool
}

// request is one unit of work for the writer.
type request struct {
	op    op
	ev    eventReq   // opAppend
	items []eventReq // opBatch
	fence *Fence     // the fence a write is made under, or the fence an op acts on
	t     *Ticket    // opAppend and control ops
	bt    *BatchTicket
	snap  *snapPoint // opSnapshot: where the published log ends
	// local writes go to this store's writer even when it has a
	// Replicator: the replicated log's own applies, and store records.
	local bool

	ticket Ticket // t points here for appends: one allocation per write
}

func (r *request) payloadBytes() int {
	n := len(r.ev.payload)
	for i := range r.items {
		n += len(r.items[i].payload)
	}
	return n
}

// pending is an event written by the writer but not yet published.
type pending struct {
	e      index.Entry
	seq    uint32
	idem   string
	fenced bool
	corr   EventID // for the notification
	cause  EventID
}

// maxGroupBytes stops draining the mailbox once a group's payloads reach
// this size, bounding the write buffer.
const maxGroupBytes = 8 << 20

// writer owns the active segment. Only its goroutine touches its fields,
// except the atomics read by Stats and TrySubmit.
type writer struct {
	s    *Store
	file vfs.File
	seg  uint32
	off  int64 // end of written data in the active segment
	// alloc is the file's size including zero fill.
	alloc   int64
	wmap    []byte // shared writable mapping of the active segment
	nextSeq uint64

	unsynced int // events written since the last fsync started
	syncer   syncer
	timer    *time.Timer
	armed    bool

	// idle fires while the active segment is open; once nothing was asked
	// of the writer for idleAfter (see lastActive) it syncs what is not yet
	// synced and closes the segment's descriptor and mapping, and the next
	// request reopens them (see releaseIdleFile).
	idle       *time.Timer
	idleAfter  time.Duration
	lastActive time.Time

	failed error // set once a write or sync fails; every later write fails

	buf       []byte
	bufEvents int // event frames in buf
	// unsealed holds the event frames placed in buf since the last seal,
	// still without their chain hash and CRC (see writer_seal.go).
	unsealed sealState
	reqs     []*request
	// placed is how many of reqs the group has placed: gather places
	// the writes it holds before it sleeps for the rest (see placeSoFar).
	placed int
	begun  bool // the group's state is reset
	pend   []pending
	// overlapTimer bounds syncAndPublish's wait (created at first use).
	overlapTimer *time.Timer
	resolved     []*request                  // requests of this group to answer after publish
	batches      []*batchWrite               // the group's batches written so far
	group        groupMark                   // where the group started, for a group rollback
	groupIdm     map[string]idemOriginal     // keys written earlier in this group
	pendIDs      pendIDs                     // the ids of pend (see pendHasID)
	fence        *Fence                      // the open visibility fence, if any
	faultHook    func(faultPoint, int) error // tests only (export_test.go)

	lastGroup int         // size of the previous group, for gather
	lastQueue int         // requests queued when the previous group was answered
	yield     yielder     // whether gather yields for company (writer_yield.go)
	yieldHook func()      // tests only: called right after the yield
	fillNs    int64       // moving average of how long full groups took to gather
	waitTimer *time.Timer // gather's wait for the rest of a group
	now       int64       // wall clock (µs) of the group being processed

	rotated bool // a segment was sealed since the last publish

	// durable is how many sequences are on stable storage (the writer's
	// sequence when the last successful sync started; 0 until the first,
	// since what Open found may not be synced yet). Cursor.Commit syncs
	// first when its position is past it.
	durable    atomic.Uint64
	syncingSeq uint64 // the sequences written when the background sync started
	// syncOwed: EveryNEvents were reached while a background sync still
	// ran; the next one starts when that one returns, or before any more
	// bytes are written (owed in flush), whichever comes first.
	syncOwed bool

	exited chan struct{}
	fsyncs atomic.Uint64
	groups atomic.Uint64 // write groups processed (Stats.GroupCommits)
	costNs atomic.Int64  // moving average of writer time per event
	pos    atomic.Uint64 // seg<<40 | off, for Stats
}

func newWriter(s *Store, rec recovered) (*writer, error) {
	w := &writer{s: s, nextSeq: rec.nextSeq, exited: make(chan struct{}), groupIdm: map[string]idemOriginal{}}
	w.timer = time.NewTimer(time.Hour)
	w.timer.Stop()
	w.idleAfter = time.Duration(activeFileIdle.Load())
	w.idle = time.NewTimer(w.idleAfter)
	w.lastActive = time.Now()
	w.syncer.start(s.cfg.Sync.Mode, &w.fsyncs)
	switch {
	case rec.lastSeg == 0:
		if err := w.createSegment(1); err != nil {
			return nil, err
		}
	case segment.IsPackedFile(s.fs, filepath.Join(s.cfg.Dir, format.SegmentName(rec.lastSeg))):
		// Packed segments are never appended to.
		if err := w.createSegment(format.SegID(rec.lastSeg) + 1); err != nil {
			return nil, err
		}
	default:
		f, err := s.fs.OpenFile(filepath.Join(s.cfg.Dir, format.SegmentName(rec.lastSeg)), os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("batpak: open active segment: %w", err)
		}
		w.file, w.seg, w.off, w.alloc = f, rec.lastSeg, rec.end, rec.fileSize
		if err := w.mapActive(); err != nil {
			f.Close()
			return nil, err
		}
	}
	s.segs.SetActive(w.seg, w.off)
	if rec.danglingFence {
		// A crash left a fence open: its events stay hidden (recovery saw to
		// that); record the cancellation so the log says so explicitly.
		w.buf = format.AppendMarker(w.buf, format.RecFenceCancel, 0, rec.fenceID)
		err := w.flush()
		if err == nil {
			err = w.syncNow()
		}
		if err != nil {
			return nil, err
		}
	}
	w.storePos()
	return w, nil
}

func (w *writer) storePos() { w.pos.Store(uint64(w.seg)<<40 | uint64(w.off)) }

func (w *writer) stat() (uint32, int64) {
	p := w.pos.Load()
	return uint32(p >> 40), int64(p & (1<<40 - 1))
}

func (w *writer) run() {
	defer close(w.exited)
	mb := w.s.mailbox
	for {
		var first *request
		var timerC <-chan time.Time
		if w.armed {
			timerC = w.timer.C
		}
		select {
		case first = <-mb:
		case <-timerC:
			w.armed = false
			if w.failed == nil && w.unsynced > 0 {
				w.fail(w.startSync())
			}
			continue
		case err := <-w.inFlightDone():
			w.syncFinished(err)
			if w.syncOwed && w.failed == nil {
				w.fail(w.startSync())
			}
			continue
		case <-w.idle.C:
			w.releaseIdleFile()
			continue
		}
		// The file released while idle is reopened first: gather may
		// place writes, which may rotate and so write.
		if w.file == nil && w.failed == nil && first.op != opClose {
			w.fail(w.reopenFile())
		}
		w.gather(first)
		start := time.Now()
		w.lastActive = start
		if w.process(w.reqs) {
			return
		}
		w.lastGroup, w.lastQueue = len(w.reqs), len(mb)
		if n := len(w.reqs); n > 0 {
			per := time.Since(start).Nanoseconds() / int64(n)
			old := w.costNs.Load()
			w.costNs.Store(old + (per-old)/8)
		}
	}
}

// gather collects the group that starts with first: what is queued, up to
// Batch.GroupCommitMaxBatch requests and maxGroupBytes of payload. Single
// appends and atomic batches share a group — one write call and one fsync
// cover them all; a control request (sync, fence, snapshot, close) ends the
// group, so that it acts after everything queued before it.
//
// When every event is synced (EveryNEvents = 1) and several writers are
// at work — the previous group's, and those whose writes queued while it
// was written — gather waits (see gatherWait) for all of them to queue
// their next writes, so that one fsync covers them all instead of
// alternating between two halves that each wait for the other's fsync.
// While it waits it places what has arrived (placeSoFar): after each
// large batch (placeEachMinEvents), otherwise when the group is complete.
func (w *writer) gather(first *request) {
	mb := w.s.mailbox
	w.reqs = append(w.reqs[:0], first)
	if !first.op.write() {
		return
	}
	limit := w.s.cfg.Batch.GroupCommitMaxBatch
	if limit == 0 {
		limit = int(^uint(0) >> 1)
	}
	bytes := first.payloadBytes()
	target := 0
	var start, deadline time.Time
	if w.s.cfg.Sync.EveryNEvents == 1 && w.lastGroup+w.lastQueue > 1 {
		target = min(w.lastGroup+w.lastQueue, limit)
		start = time.Now()
		deadline = start.Add(w.gatherWait())
		defer func() {
			if len(w.reqs) >= target { // a full group: how long it took
				w.fillNs += (time.Since(start).Nanoseconds() - w.fillNs) / 4
			}
		}()
	}
	yielded := false
	for bytes < maxGroupBytes && len(w.reqs) < limit {
		select {
		case r := <-mb:
			w.reqs = append(w.reqs, r)
			bytes += r.payloadBytes()
			if !r.op.write() {
				return
			}
			continue
		default:
		}
		// With no group size to wait for, yield at most once when the
		// mailbox runs dry (writer_yield.go): appenders just answered are
		// often runnable on this P but not yet running, and would
		// otherwise each come back to a group of its own (measured: 1.2
		// events per group from 8 buffered producers; 3.4–4.6 with the
		// yield).
		if target == 0 && !yielded {
			yielded = true
			if w.yieldForCompany() {
				continue
			}
		}
		if len(w.reqs) >= target || !time.Now().Before(deadline) {
			return
		}
		// Sleep (not spin: on a busy machine the writers we wait for need
		// the CPU) until the sender that completes the group wakes us —
		// one wake-up per group, not one per arrival, unless a large
		// batch just came (placeEachMinEvents) — or the deadline; then
		// take what is queued. What is left of the wait is taken after
		// placing, which may have used it up.
		w.placeSoFar()
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		need := int64(target - len(w.reqs))
		if last := w.reqs[len(w.reqs)-1]; last.op == opBatch && len(last.items) >= placeEachMinEvents {
			need = 1 // woken by the next arrival, to place it at once
		}
		w.s.gatherNeed.Store(need)
		if int64(len(mb)) >= need {
			w.s.gatherNeed.Store(0)
			continue
		}
		if w.waitTimer == nil {
			w.waitTimer = time.NewTimer(left)
		} else {
			w.waitTimer.Reset(left)
		}
		select {
		case <-w.s.gatherFull:
			w.waitTimer.Stop()
		case <-w.waitTimer.C:
			w.s.gatherNeed.Store(0)
		}
	}
}

// placeEachMinEvents is the smallest batch after whose arrival gather
// is woken by the next arrival rather than by the one completing the
// group: a batch takes its writer long enough to build that placing each
// one as it comes (chain hashes, encoding) overlaps with the others still
// being built, and the group's write follows its last arrival by one
// batch's placing instead of most of the group's. One wake-up per batch
// of at least this many events costs little; per single append it would
// cost more than it saves. Measured: batches of 100 from 8 producers
// +8 % (BenchmarkAppendBatch/size=100/producers=8, 5 interleaved runs).
const placeEachMinEvents = 16

// maxGatherWait caps how long gather waits for the rest of a group.
const maxGatherWait = 2 * time.Millisecond

// gatherWait is how long gather may wait for the writers of the previous
// group: one typical fsync (what an early arrival would otherwise wait for
// a group of its own), or half again the time full groups took to gather
// lately when that is longer — writers of large batches need time to
// build the next one, and a group that waits for all of them covers
// their batches with one fsync instead of one each — capped at
// maxGatherWait. Once a writer stops writing, the next group is smaller,
// and so is the target gather waits for.
func (w *writer) gatherWait() time.Duration {
	wait := time.Duration(w.syncer.lastNs.Load())
	wait = max(wait, time.Duration(w.fillNs+w.fillNs/2))
	return min(wait, maxGatherWait)
}

// process handles one group: place every write in order — single appends
// and atomic batches alike, each batch all-or-nothing on its own — then
// the group's closing control request if it has one; write with as few
// write calls as the group allows; sync as configured; publish to the
// index; then answer the requests. It returns true after a close request.
func (w *writer) process(reqs []*request) (closing bool) {
	w.beginGroup()
	w.placeSoFar()
	w.begun, w.placed = false, 0
	last := reqs[len(reqs)-1]
	if w.failed == nil {
		switch last.op {
		case opFenceBegin, opFenceCommit, opFenceCancel:
			w.fenceMarker(last)
		}
	}
	if w.failed == nil {
		w.fail(w.flush())
	}
	published := false
	if w.failed == nil && w.syncsWhilePublishing(last) {
		if len(w.batches) > 0 {
			w.beforePublish()
		}
		published = w.failed == nil && w.syncAndPublish()
	} else {
		if w.failed == nil {
			w.syncGroup(last)
		}
		if w.failed == nil && len(w.batches) > 0 {
			w.beforePublish()
		}
	}
	if w.failed != nil {
		for _, r := range w.resolved {
			r.fail(w.failed)
		}
	} else {
		if !published {
			w.publish()
		}
		for _, r := range w.resolved {
			if r.fence != nil && r.fence == w.fence && r.ok() {
				r.fence.held = append(r.fence.held, r) // answered when the fence ends
				continue
			}
			r.answer()
		}
	}
	switch last.op {
	case opSync:
		last.t.resolve(Receipt{}, w.failed)
	case opSnapshot:
		if w.failed == nil {
			*last.snap = snapPoint{seg: w.seg, end: w.off, events: uint64(w.s.ix.Published())}
		}
		last.t.resolve(Receipt{}, w.failed)
	case opFenceBegin, opFenceCommit, opFenceCancel:
		w.endFenceOp(last)
	case opClose:
		last.t.resolve(Receipt{}, w.finish())
		return true
	}
	return false
}

// beginGroup resets the writer's per-group state for the group in w.reqs.
func (w *writer) beginGroup() {
	if w.begun {
		return
	}
	w.begun = true
	w.unsealed.reset() // a failed group's frames, dropped with its buffer
	w.buf, w.pend, w.resolved, w.batches = w.buf[:0], w.pend[:0], w.resolved[:0], w.batches[:0]
	clear(w.groupIdm)
	w.pendIDs.reset()
	w.markGroup()
	if w.reqs[0].op.write() {
		w.groups.Add(1)
	}
}

// placeSoFar places the writes of the group gathered since the last call,
// in order. gather calls it before it sleeps for the rest of the group, so
// that placing (encoding, hashing) what has arrived overlaps with the
// other writers building their requests, and the group's write and fsync
// follow its last arrival sooner; process places the rest. The outcome is
// the same as placing them all at the end: nothing is written before the
// group's flush (a rotation aside, as always), and nothing is answered
// before its sync.
func (w *writer) placeSoFar() {
	w.beginGroup()
	if w.placed < len(w.reqs) {
		// One wall-clock reading for the writes placed together, taken
		// after they all arrived: a write that arrived while gather
		// waited is never stamped with a time from before it was
		// submitted.
		w.now = w.s.nowMicros()
	}
	for ; w.placed < len(w.reqs); w.placed++ {
		switch r := w.reqs[w.placed]; r.op {
		case opAppend:
			w.appendOne(r)
		case opBatch:
			w.appendBatch(r)
		}
	}
}

// syncGroup applies the sync setting after a group was written. A Sync
// request and fence commits and cancellations always sync.
func (w *writer) syncGroup(last *request) {
	if w.unsynced == 0 && last.op != opFenceCommit && last.op != opFenceCancel {
		if last.op == opSync {
			// Everything is written but maybe not yet synced: a background
			// sync may still run, or nothing was synced since Open.
			w.fail(w.awaitSync())
			if w.failed == nil && w.durable.Load() < w.nextSeq {
				w.fail(w.syncNow())
			}
		}
		return
	}
	every := w.s.cfg.Sync.EveryNEvents
	switch {
	case last.op == opSync, last.op == opSnapshot, last.op == opFenceCommit, last.op == opFenceCancel, every == 1:
		w.fail(w.syncNow())
	case every > 0 && w.unsynced >= every && w.syncer.busy &&
		w.syncingSeq-w.durable.Load()+uint64(w.unsynced) <= 2*uint64(every):
		// The running sync is not waited for here when, with this group,
		// at most 2N events would be acknowledged and not yet durable:
		// the group is published and answered meanwhile, and flush waits
		// for the running sync before it writes more. Groups larger than
		// that wait, as they did, before they are answered.
		w.syncOwed = true
	case every > 0 && w.unsynced >= every:
		w.fail(w.startSync())
	case w.s.cfg.Sync.Interval > 0 && !w.armed:
		w.timer.Reset(w.s.cfg.Sync.Interval)
		w.armed = true
	}
}

// publish makes the group's events visible: first the readable end of the
// active segment, then the index entries, so that a reader who finds an
// entry can always read its frame. Events written under a fence are kept
// back with the fence instead.
func (w *writer) publish() {
	w.s.segs.Publish(w.off)
	if len(w.pend) > 0 {
		ix := w.s.ix
		ix.Lock()
		w.insertPending()
		ix.Unlock()
	}
	w.published()
}

// overlapMinEvents is the smallest group whose index insert runs alongside
// its fsync: handing the fsync to the syncer's goroutine costs a wake-up
// or two (a few µs here), more than inserting a handful of entries saves
// (~0.5 µs each). Measured: no gain for single appends from 8 producers
// (8 events a group), +8 % for batches of 100 from 8 producers.
const overlapMinEvents = 32

// syncsWhilePublishing reports whether this group's fsync runs alongside
// its index insert (syncAndPublish): a group of at least
// overlapMinEvents unfenced writes, with something unsynced, on a store
// that syncs every group (EveryNEvents 1) and whose recent fsyncs took at
// most half of overlapMaxWait. Smaller groups, fenced ones, slow disks,
// and sync, snapshot and fence operations keep the sequential path.
func (w *writer) syncsWhilePublishing(last *request) bool {
	if w.unsynced == 0 || len(w.pend) < overlapMinEvents || w.s.cfg.Sync.EveryNEvents != 1 ||
		(last.op != opAppend && last.op != opBatch) ||
		time.Duration(w.syncer.lastNs.Load()) > overlapMaxWait/2 {
		return false
	}
	// Fenced writes are kept back, not inserted: count what would be.
	n := 0
	for i := range w.pend {
		if !w.pend[i].fenced {
			n++
		}
	}
	return n >= overlapMinEvents
}

// overlapMaxWait bounds how long syncAndPublish holds the index's write
// lock waiting for the group's fsync: readers wait for at most this beyond
// the insert itself. A sync that takes longer gives the lock back (the
// entries are taken out again, and put in once it returns), and a store
// whose recent fsyncs took more than half of it keeps the sequential
// path, so a slow or stuck disk stops writes, never reads.
const overlapMaxWait = 5 * time.Millisecond

// syncAndPublish is the sync and publish of a group on a store that syncs
// every group, overlapped: the fdatasync runs on the syncer's goroutine
// while the writer adds the group's index entries under the index's write
// lock, and the lock is released only once the sync has returned. No
// reader therefore sees an event before it is durable, as with the
// sequential path, and a large group spends its index insert inside the
// fsync's wait instead of after it (see overlapMinEvents). Should the sync
// fail, or take longer than overlapMaxWait, the entries are taken out
// again (Index.UndoLocked: the index is exactly as before, its length
// included) before the lock is released; a failed sync fails the writer,
// a slow one is waited for without the lock and the group published
// afterwards by the caller. It reports whether it published the group.
func (w *writer) syncAndPublish() bool {
	if err := w.startSync(); err != nil {
		w.fail(err)
		return false
	}
	// Let the syncer's goroutine start the fdatasync now. The send made
	// it runnable on this P, where it would otherwise wait until the
	// writer blocks after the index insert or another P steals it:
	// measured here, 113 µs on average between the request and the
	// system call, 17 µs with the yield; batches of 100 from 8 producers
	// +13 %, 64 producers of single appends +4 % (benchstat, n=6).
	runtime.Gosched()
	ix := w.s.ix
	ix.Lock()
	ix.ReserveIDsLocked(len(w.pend))
	ix.BeginUndo()
	fenced := 0
	if w.fence != nil {
		fenced = len(w.fence.pend)
	}
	w.insertPending()
	done, err := w.awaitSyncWithin(overlapMaxWait)
	if !done || err != nil {
		ix.UndoLocked()
		if w.fence != nil {
			w.fence.truncatePend(fenced)
		}
		ix.Unlock()
		if !done {
			err = w.awaitSync()
		}
		w.fail(err)
		return false
	}
	ix.EndUndo()
	w.s.segs.Publish(w.off)
	ix.Unlock()
	w.published()
	return true
}

// awaitSyncWithin waits up to d for the in-flight background sync: done
// false when it is still running (it stays in flight), else its error.
func (w *writer) awaitSyncWithin(d time.Duration) (done bool, err error) {
	if !w.syncer.busy {
		return true, nil
	}
	if w.overlapTimer == nil {
		w.overlapTimer = time.NewTimer(d)
	} else {
		w.overlapTimer.Reset(d)
	}
	select {
	case err := <-w.syncer.done:
		w.overlapTimer.Stop()
		return true, w.syncReturned(err)
	case <-w.overlapTimer.C:
		return false, nil
	}
}

// insertPending adds the group's unfenced events to the index (the caller
// holds its write lock) and keeps the fenced ones back with the fence.
func (w *writer) insertPending() {
	ix := w.s.ix
	ix.WarmIDsLocked(len(w.pend), func(yield func([16]byte) bool) {
		for i := range w.pend {
			if p := &w.pend[i]; !p.fenced && !yield(p.e.ID) {
				return
			}
		}
	})
	for i := range w.pend {
		p := &w.pend[i]
		if p.fenced {
			w.fence.pend = append(w.fence.pend, *p)
			continue
		}
		ix.InsertLocked(p.seq, p.e, p.idem, index.Links{Cause: p.cause, Corr: p.corr})
	}
}

// published finishes a publish once the entries are in: the fence's
// idempotency keys, the position, the sealer and the subscribers.
//
// The writer's position (w.stat) moves only after the entries are in: a
// segment older than the position it reports holds no event the index
// lacks (fenced ones aside, see sealedKeys), so a compaction or the sealer
// may rewrite it. The sealer is woken after a rotation only then.
func (w *writer) published() {
	defer func() {
		w.storePos()
		if w.rotated {
			w.rotated = false
			w.s.kickSealer() // footer (and pack) the segment just sealed
		}
	}()
	if len(w.pend) == 0 {
		w.s.bc.signal()
		return
	}
	for i := range w.pend {
		if p := &w.pend[i]; p.fenced && p.idem != "" {
			w.fence.idem[p.idem] = w.groupIdm[p.idem]
		}
	}
	w.notifyPublished(w.pend)
}

// fail records the first write failure; from then on every write fails.
func (w *writer) fail(err error) {
	if err != nil && w.failed == nil {
		w.failed = fmt.Errorf("%w (%w)", err, ErrWriterStopped)
		stopped := w.failed
		w.s.stopped.Store(&stopped)
		w.s.log.Error("batpak: writer failed", "err", err)
	}
}

// finish runs on Close after every queued write: an open fence is
// cancelled, then the file is synced and closed (keeping the zero-filled
// tail, as seal does).
func (w *writer) finish() error {
	w.timer.Stop()
	w.idle.Stop()
	if w.file == nil {
		// Released while idle (everything synced then), or lost to a failure.
		w.syncer.stop()
		return w.failed
	}
	if w.fence != nil && w.failed == nil {
		w.sealPlaced()
		w.buf = format.AppendMarker(w.buf[:0], format.RecFenceCancel, 0, w.fence.id)
		w.fail(w.flush())
		w.storePos() // the log ends after the marker (the checkpoint's watermark)
		w.cancelFence(ErrFenceCancelled)
	}
	w.fail(w.awaitSync())
	w.syncer.stop()
	w.unmapActive()
	err := w.failed
	if err == nil {
		if e := w.file.Sync(); e != nil {
			err = fmt.Errorf("batpak: close segment: %w", e)
		} else {
			w.durable.Store(w.nextSeq)
		}
		w.fsyncs.Add(1)
	}
	if e := w.file.Close(); e != nil && err == nil {
		err = e
	}
	w.file = nil
	return err
}

// retryAfter suggests how long a refused TrySubmit should wait: the time
// the writer needs to drain the queue down to the retry threshold.
func (w *writer) retryAfter(queued int) time.Duration {
	per := time.Duration(w.costNs.Load())
	if per <= 0 {
		per = time.Microsecond
	}
	thr := w.s.cfg.ChannelCapacity * w.s.cfg.PressureRetryPct / 100
	d := per * time.Duration(max(queued-thr+1, 1))
	return min(max(d, 50*time.Microsecond), 100*time.Millisecond)
}
