package core

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

type op uint8

const (
	opAppend op = iota
	opSync
	opClose
)

// request is one unit of work for the writer. Everything the caller could
// compute (validation, id, payload digest) is done before it is enqueued.
type request struct {
	op      op
	coord   Coordinate
	kind    Kind
	payload []byte
	phash   Hash
	opts    AppendOptions
	id      EventID
	t       *Ticket
	ticket  Ticket // t points here for appends: one allocation per write
}

// pending is an event assigned and encoded by the writer but not yet
// published.
type pending struct {
	e    entry
	seq  uint32
	idem string
}

// maxGroupBytes stops draining the mailbox once a group's encoded frames
// reach this size, bounding the write buffer.
const maxGroupBytes = 8 << 20

// writer owns the active segment. Only its goroutine touches its fields,
// except the atomics and statMu-guarded position read by Stats.
type writer struct {
	s    *Store
	file *os.File
	seg  uint32
	off  int64 // end of written data in the active segment
	// alloc is the file's size including preallocated zeros.
	alloc   int64
	wmap    []byte // shared writable mapping of the active segment
	nextSeq uint64

	unsynced int // events written since the last fsync started
	syncer   syncer
	timer    *time.Timer
	armed    bool

	failed error // set once a write or sync fails; every later write fails

	buf       []byte
	bufEvents int // frames in buf
	reqs      []*request
	pend      []pending
	resolved  []*request
	groupIdm  map[string]idemOriginal // keys written earlier in this group

	lastGroup int   // size of the previous group, for gather
	now       int64 // wall clock (µs) of the group being processed

	exited chan struct{}
	fsyncs atomic.Uint64
	costNs atomic.Int64  // moving average of writer time per event
	pos    atomic.Uint64 // seg<<40 | off, for Stats
}

func newWriter(s *Store, rec recovered) (*writer, error) {
	w := &writer{s: s, nextSeq: rec.nextSeq, exited: make(chan struct{}), groupIdm: map[string]idemOriginal{}}
	w.timer = time.NewTimer(time.Hour)
	w.timer.Stop()
	w.syncer.start(s.cfg.Sync.Mode, &w.fsyncs)
	if rec.lastSeg == 0 {
		if err := w.createSegment(1); err != nil {
			return nil, err
		}
	} else {
		f, err := os.OpenFile(filepath.Join(s.cfg.Dir, segmentName(rec.lastSeg)), os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("batpak: open active segment: %w", err)
		}
		w.file, w.seg, w.off, w.alloc = f, rec.lastSeg, rec.end, rec.fileSize
		if err := w.mapActive(); err != nil {
			f.Close()
			return nil, err
		}
	}
	s.segs.setActive(w.seg, w.off)
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
			continue
		}
		w.gather(first)
		start := time.Now()
		if w.process(w.reqs) {
			return
		}
		w.lastGroup = len(w.reqs)
		if n := len(w.reqs); n > 0 {
			per := time.Since(start).Nanoseconds() / int64(n)
			old := w.costNs.Load()
			w.costNs.Store(old + (per-old)/8)
		}
	}
}

// gather collects the group that starts with first: everything queued,
// up to maxGroupBytes of payload or a control request. When every event is
// synced (EveryNEvents = 1) and the previous group had several writers, it
// waits — at most one typical fsync, capped at 1 ms — for those writers to
// queue their next events, so that one fsync covers them all instead of
// alternating between a few early arrivals and the rest. Waiting that long
// costs at most what the split would: the early arrivals would otherwise
// wait for a whole fsync of their own.
func (w *writer) gather(first *request) {
	mb := w.s.mailbox
	w.reqs = append(w.reqs[:0], first)
	if first.op != opAppend {
		return
	}
	bytes := len(first.payload)
	target := 0
	var deadline time.Time
	if w.s.cfg.Sync.EveryNEvents == 1 && w.lastGroup > 1 {
		target = w.lastGroup
		deadline = time.Now().Add(min(time.Duration(w.syncer.lastNs.Load()), time.Millisecond))
	}
	for bytes < maxGroupBytes {
		select {
		case r := <-mb:
			w.reqs = append(w.reqs, r)
			bytes += len(r.payload)
			if r.op != opAppend {
				return
			}
			continue
		default:
		}
		if len(w.reqs) >= target || !time.Now().Before(deadline) {
			return
		}
		runtime.Gosched()
	}
}

// process handles one drained group: assign and encode every append, write
// them with one write call, sync as configured, publish to the index, then
// resolve tickets. It returns true after a close request.
func (w *writer) process(reqs []*request) (closing bool) {
	w.buf, w.pend, w.resolved = w.buf[:0], w.pend[:0], w.resolved[:0]
	clear(w.groupIdm)
	w.now = w.s.nowMicros() // one wall-clock reading per group commit
	var ctl *request
	for _, r := range reqs {
		if r.op != opAppend {
			ctl = r
			continue
		}
		if w.failed != nil {
			r.t.resolve(Receipt{}, w.failed)
			continue
		}
		w.assign(r)
		r.payload = nil // encoded (or refused): the caller's ticket need not keep it alive
	}
	if w.failed == nil {
		w.fail(w.flush())
	}
	if w.failed == nil {
		every := w.s.cfg.Sync.EveryNEvents
		switch {
		case w.unsynced == 0:
		case ctl != nil, every == 1:
			w.fail(w.syncNow())
		case every > 0 && w.unsynced >= every:
			w.fail(w.startSync())
		case w.s.cfg.Sync.Interval > 0 && !w.armed:
			w.timer.Reset(w.s.cfg.Sync.Interval)
			w.armed = true
		}
	}
	if w.failed != nil {
		for _, r := range w.resolved {
			r.t.resolve(Receipt{}, w.failed)
		}
	} else {
		w.publish()
		for _, r := range w.resolved {
			r.t.resolve(r.t.receipt, r.t.err)
		}
	}
	if ctl != nil {
		switch ctl.op {
		case opSync:
			ctl.t.resolve(Receipt{}, w.failed)
		case opClose:
			ctl.t.resolve(Receipt{}, w.finish())
			return true
		}
	}
	return false
}

// assign checks one append against the entity's state and idempotency
// keys, gives it its sequence, clock, timestamp and chain hash, and encodes
// it into w.buf. The ticket's result is staged in r.t and delivered after
// the group is written.
func (w *writer) assign(r *request) {
	ix := w.s.ix
	w.resolved = append(w.resolved, r)
	if key := r.opts.IdempotencyKey; key != "" {
		if orig, ok := w.groupIdm[key]; ok {
			orig.dedupe(r)
			return
		}
		if seq, ok := ix.idem[key]; ok {
			orig, err := w.s.idemOriginal(seq)
			if err != nil {
				r.t.err = err
				return
			}
			orig.dedupe(r)
			return
		}
	}
	// Check the expectation before creating the entity's state, so that a
	// refused write on a new entity leaves no empty entity behind.
	en, known := ix.byEntity[r.coord.Entity]
	if exp := r.opts.ExpectedClock; exp.set {
		actual := ExpectNoEvents()
		if known && ix.entities[en].wExists {
			actual = ExpectClock(ix.entities[en].wClock)
		}
		if actual != exp {
			r.t.err = &ConflictError{Entity: r.coord.Entity, Expected: exp, Actual: actual}
			return
		}
	}
	if w.nextSeq >= math.MaxUint32 {
		r.t.err = ErrStoreFull
		return
	}
	if !known {
		en = ix.entityFor([]byte(r.coord.Entity))
	}
	es := ix.entities[en]
	sc := ix.scopeFor([]byte(r.coord.Scope))
	rec := eventRecord{
		seq:     w.nextSeq,
		coord:   r.coord,
		idem:    r.opts.IdempotencyKey,
		payload: r.payload,
		header: Header{
			ID:            r.id,
			CorrelationID: r.opts.CorrelationID,
			CausationID:   r.opts.CausationID,
			Timestamp:     max(w.now, es.wTS),
			Kind:          r.kind,
			Flags:         r.opts.Flags,
			PayloadHash:   r.phash,
			PrevHash:      es.wHash,
		},
	}
	if rec.header.CorrelationID.IsZero() {
		rec.header.CorrelationID = r.id
	}
	if es.wExists {
		rec.header.Clock = es.wClock + 1
	}
	if err := w.makeRoom(rec.frameLen()); err != nil {
		w.fail(err)
		r.t.err = w.failed
		return
	}
	off := w.off + int64(len(w.buf))
	w.buf = appendEventFrame(w.buf, &rec)
	w.bufEvents++
	es.wExists, es.wClock, es.wTS, es.wHash = true, rec.header.Clock, rec.header.Timestamp, rec.header.Hash
	w.pend = append(w.pend, pending{
		seq:  uint32(rec.seq),
		idem: rec.idem,
		e: entry{id: r.id, seg: w.seg, off: uint32(off), entity: en, scope: sc,
			clock: rec.header.Clock, kind: r.kind},
	})
	w.nextSeq++
	r.t.receipt = Receipt{ID: r.id, CorrelationID: rec.header.CorrelationID, GlobalSequence: rec.seq, Clock: rec.header.Clock, Timestamp: rec.header.Timestamp}
	if rec.idem != "" {
		w.groupIdm[rec.idem] = idemOriginal{receipt: r.t.receipt, coord: r.coord, kind: r.kind, phash: r.phash}
	}
}

// makeRoom rotates to a new segment when a frame of n bytes would take the
// active one past SegmentMaxBytes (unless the segment holds no frames yet).
func (w *writer) makeRoom(n int) error {
	end := w.off + int64(len(w.buf))
	if end+int64(n) <= w.s.cfg.SegmentMaxBytes || end == segmentHeaderSize {
		return nil
	}
	if err := w.flush(); err != nil {
		return err
	}
	if err := w.seal(); err != nil {
		return err
	}
	return w.createSegment(w.seg + 1)
}

// flush writes w.buf at the end of the active segment.
func (w *writer) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	need := w.off + int64(len(w.buf))
	if need > w.alloc {
		if err := w.extend(need); err != nil {
			return err
		}
	}
	if len(w.buf) <= mappedWriteMax && w.s.cfg.Sync.EveryNEvents != 1 {
		copy(w.wmap[w.off:need], w.buf)
	} else if _, err := w.file.WriteAt(w.buf, w.off); err != nil {
		return fmt.Errorf("batpak: write segment: %w", err)
	}
	w.off = need
	w.alloc = max(w.alloc, need)
	w.unsynced += w.bufEvents
	w.buf, w.bufEvents = w.buf[:0], 0
	return nil
}

// zeros is the fill written ahead of the data in the active segment.
var zeros = make([]byte, 1<<20)

// extend zero-fills the active segment ahead of need and syncs it once.
// Writing into blocks that already hold (zero) data lets each later
// fdatasync flush data only: measured here, a 15 KB group commit costs
// ~100 µs over written blocks against ~230 µs over fallocated ones, whose
// extents must be converted in the journal on every sync.
func (w *writer) extend(need int64) error {
	// The step grows with the segment (an eighth of what it holds, from
	// 64 KiB to 4 MiB), so a small store carries little zero tail.
	step := min(max(w.off/8, 64<<10), preallocStep)
	// Never fill past SegmentMaxBytes: a segment file stays within it
	// unless one event alone is larger.
	target := max(need, min(w.alloc+step, w.s.cfg.SegmentMaxBytes))
	for off := w.alloc; off < target; {
		n := min(int64(len(zeros)), target-off)
		if _, err := w.file.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("batpak: preallocate segment: %w", err)
		}
		off += n
	}
	if err := unix.Fdatasync(int(w.file.Fd())); err != nil {
		return fmt.Errorf("batpak: preallocate segment: %w", err)
	}
	w.fsyncs.Add(1)
	w.alloc = target
	return nil
}

// mappedWriteMax is the largest group copied into the shared mapping of the
// active segment instead of being written with pwrite. For a small group
// the system call is most of the writer's cost (~1.8 µs here, against
// ~50 ns for the copy); a large group amortises it, and pages dirtied
// through the mapping cost more at writeback (the kernel write-protects
// them again), so large groups and groups synced at once use pwrite. Both
// put the bytes in the page cache before the receipt: a killed process
// loses nothing it acknowledged, and fdatasync flushes both alike.
const mappedWriteMax = 1 << 10

// mapActive maps the active segment for writing. Only bytes below w.alloc
// (zero-filled ahead, so backed by allocated blocks) are ever written
// through it, so a full disk fails extend's write instead of raising
// SIGBUS.
func (w *writer) mapActive() error {
	m, err := unix.Mmap(int(w.file.Fd()), 0, w.s.segs.activeMapLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("batpak: map active segment: %w", err)
	}
	w.wmap = m
	return nil
}

func (w *writer) unmapActive() {
	if w.wmap != nil {
		_ = unix.Munmap(w.wmap)
		w.wmap = nil
	}
}

// seal finishes the active segment: sync and close it. The zero-filled
// tail stays: a reader in another process (OpenReadOnly) may have the file
// mapped, and cutting it would turn that reader's next look at the tail
// into SIGBUS. Readers treat the zeros as the end of data.
func (w *writer) seal() error {
	if err := w.awaitSync(); err != nil {
		return err
	}
	w.unmapActive()
	if err := w.file.Sync(); err != nil {
		return fmt.Errorf("batpak: seal segment: %w", err)
	}
	w.fsyncs.Add(1)
	w.unsynced = 0
	w.s.segs.seal(w.seg, w.off)
	w.s.setSegmentEnd(w.seg, w.off)
	return w.file.Close()
}

// createSegment creates segment id with its header, syncs it and the
// directory, and makes it active.
func (w *writer) createSegment(id uint32) error {
	dir := w.s.cfg.Dir
	f, err := os.OpenFile(filepath.Join(dir, segmentName(id)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("batpak: create segment: %w", err)
	}
	if _, err := f.Write(encodeSegmentHeader(id)); err != nil {
		f.Close()
		return fmt.Errorf("batpak: create segment: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("batpak: create segment: %w", err)
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return err
	}
	w.file, w.seg, w.off, w.alloc = f, id, segmentHeaderSize, segmentHeaderSize
	w.s.setSegmentEnd(id, w.off)
	if err := w.mapActive(); err != nil {
		return err
	}
	w.s.segs.setActive(id, w.off)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("batpak: sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("batpak: sync directory: %w", err)
	}
	return nil
}

// publish makes the group's events visible: first the readable end of the
// active segment, then the index entries. In the other order a reader could
// find a new entry in the index and read its frame while the segment's
// readable end still stopped short of it, and fail with a CorruptionError.
func (w *writer) publish() {
	w.s.segs.publish(w.off)
	if len(w.pend) > 0 {
		ix := w.s.ix
		ix.mu.Lock()
		for i := range w.pend {
			p := &w.pend[i]
			ix.insertLocked(p.seq, p.e, p.idem)
		}
		ix.mu.Unlock()
	}
	w.storePos()
}

// fail records the first write failure; from then on every write fails.
func (w *writer) fail(err error) {
	if err != nil && w.failed == nil {
		w.failed = fmt.Errorf("%w (the writer stopped; reopen the store)", err)
		w.s.log.Error("batpak: writer failed", "err", err)
	}
}

// finish runs on Close after every queued write: sync and close the file
// (keeping the zero-filled tail, as seal does).
func (w *writer) finish() error {
	w.timer.Stop()
	if w.file == nil {
		return w.failed
	}
	w.fail(w.awaitSync())
	w.syncer.stop()
	w.unmapActive()
	err := w.failed
	if err == nil {
		if e := w.file.Sync(); e != nil {
			err = fmt.Errorf("batpak: close segment: %w", e)
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
