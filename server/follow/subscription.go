package follow

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Subscription delivers every visible event of its region after its
// start, in global order, exactly once: first what the store already
// holds (catch-up), then live. Fenced events arrive when their fence
// commits, never if it is cancelled. Next is meant for one goroutine at a
// time; Close may be called from any.
//
// A live subscription (one that has reached the newest events once) is
// cut off when more than Options.MaxBacklogEvents events of its region,
// or more than Options.MaxBacklogBytes of their frames, are waiting for
// Next — in the ring, or read from the store since it fell behind the
// ring (it reads them a step of about 1 MiB at a time): the hub never
// buffers for it. Catching up from an old position is
// not a backlog: it reads the store at its own pace, at most
// MaxBacklogEvents events per Next. Every ending is an *EndError that
// says where to resume.
type Subscription struct {
	h      *Hub
	r      *run
	region core.Region
	all    bool // region matches every event

	wake      chan struct{} // a publication concerns it, or the run ended
	closeOnce sync.Once
	closed    chan struct{}

	mu     sync.Mutex // one Next at a time; guards what follows
	next   uint64     // the next global sequence to examine
	resume Start      // after the last event delivered
	live   bool       // has reached the newest events once
	// live and behind the ring: what it has read from the store since it
	// fell behind (fromStore); zero again once it reads the ring
	behindEvents int
	behindBytes  int64
	cur          *core.Cursor
	ended        error  // *EndError, once ended
	waitNext     uint64 // while waiting: guarded by r.wmu, see run.concernsLocked

	// held is what the frames read from the store for the last Next
	// hold of the store-read budget (Options.StoreReadBytes), given back
	// at the next Next or Close; heldClosed: Close gave it back for good.
	heldMu     sync.Mutex
	held       int64
	heldClosed bool

	// pace charges steps of the index walked past the first ScanStep
	// entries (PaceScans); paced is how many it was charged, and
	// paceUntil when their wait ends.
	pace      func(steps int) time.Duration
	paced     uint64
	paceUntil time.Time
	storeSent uint64 // events read from the store and sent
}

// ScanStep bounds the index entries one read from the store examines
// (core.Cursor.ExamineAtMost): catching up on a region few events match,
// a subscription walks the index ScanStep entries at a time, each step
// holding the store's index briefly, whatever the region.
const ScanStep = 1 << 16

// StoreEventsStep is how many events read from the store, and sent, a
// paced subscription may send for one step (PaceScans): as many as a
// page of the same region holds.
const StoreEventsStep = 1000

// PaceScans makes the subscription's reads from the store charge pace
// with one step for each ScanStep index entries they examine, or each
// StoreEventsStep events they send, past the first (whichever is more),
// before the read that follows them, and wait as long as
// pace answers: a server takes them from the tenant's request rate, so
// that catching up on a rare region in a large log costs what the pages
// of a query of it would. Call it before the first Next. A Next whose
// context ends during the wait returns its error; the wait goes on at
// the next Next, the steps not charged again.
func (s *Subscription) PaceScans(pace func(steps int) time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pace = pace
}

func newSubscription(h *Hub, r *run, region core.Region, start Start) *Subscription {
	return &Subscription{
		h: h, r: r, region: region, all: region == core.All(),
		wake: make(chan struct{}, 1), closed: make(chan struct{}),
		next: start.next, resume: start,
	}
}

// Region is the subscription's region.
func (s *Subscription) Region() core.Region { return s.region }

// Next blocks until events of the region are available and returns all
// of them (at most Options.MaxBacklogEvents), in global order; each
// frame's Data is shared, read-only. It returns ctx.Err() when ctx ends
// first (the subscription stays usable), ErrSubscriptionClosed after
// Close, and an *EndError when the subscription ended (slow consumer,
// store or hub closed, read error): that one is final, and its Resume is
// where a new subscription picks up.
func (s *Subscription) Next(ctx context.Context) ([]Frame, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.giveBack(false) // the caller is done with the last frames
	for {
		select {
		case <-s.closed:
			return nil, ErrSubscriptionClosed
		default:
		}
		if s.ended != nil {
			return nil, s.ended
		}
		frames, err := s.step(ctx)
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				return nil, err // waited for the budget: still usable
			}
			if err == ErrSubscriptionClosed {
				return nil, err
			}
			s.endWith(err)
			return nil, s.ended
		}
		if len(frames) > 0 {
			last := frames[len(frames)-1].Seq
			s.resume = After(last)
			return frames, nil
		}
		if !s.waiting() {
			continue
		}
		select {
		case <-s.wake:
		case <-s.closed:
			s.unwait()
			return nil, ErrSubscriptionClosed
		case <-ctx.Done():
			s.unwait()
			return nil, ctx.Err()
		}
		s.r.wmu.Lock()
		if s.waitNext > s.next {
			s.next = s.waitNext // the hub showed nothing of ours before it
		}
		s.r.wmu.Unlock()
	}
}

// Position is where a new subscription would resume: after the last
// event delivered (the start, when none was).
func (s *Subscription) Position() Start {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resume
}

// Close ends the subscription; a Next blocked in another goroutine
// returns ErrSubscriptionClosed. The last subscription of a hub to close
// stops the hub following its store. Close is idempotent.
func (s *Subscription) Close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.unwait()
		s.giveBack(true)
		s.h.release()
	})
}

// charge takes n bytes of the store-read budget, the hub's share first,
// waiting within ctx; it fails with ctx's error, or ErrSubscriptionClosed
// after Close.
func (s *Subscription) charge(ctx context.Context, n int64) error {
	h := s.h
	// What one subscription holds stays within a hub's share (and so
	// within the whole, at least 4 shares), so it always fits once the
	// others give theirs back: one event larger than the share is read.
	s.heldMu.Lock()
	n = min(n, h.reads.shareCap-s.held)
	s.heldMu.Unlock()
	if n <= 0 {
		return nil
	}
	got := h.share.TryAcquire(n)
	if got && !h.reads.all.TryAcquire(n) {
		h.share.Release(n)
		got = false
	}
	if !got {
		if h.reads.starved != nil {
			h.reads.starved()
		}
		// Wait, until ctx ends, Close, or the run ends (its reason is
		// then the subscription's ending, at the next step).
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-s.closed:
			case <-s.r.ended:
			case <-wctx.Done():
			}
			cancel()
		}()
		if err := h.share.Acquire(wctx, n); err != nil {
			return s.waitErr(ctx)
		}
		if err := h.reads.all.Acquire(wctx, n); err != nil {
			h.share.Release(n)
			return s.waitErr(ctx)
		}
	}
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	if s.heldClosed {
		h.reads.all.Release(n)
		h.share.Release(n)
		return ErrSubscriptionClosed
	}
	s.held += n
	return nil
}

// waitErr is why a wait for the budget ended early: ctx's error, Close,
// or the run's end.
func (s *Subscription) waitErr(ctx context.Context) error {
	select {
	case <-s.closed:
		return ErrSubscriptionClosed
	default:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.r.endErr()
}

// giveBack returns what s holds of the store-read budget; final (Close):
// for good.
func (s *Subscription) giveBack(final bool) {
	s.heldMu.Lock()
	n := s.held
	s.held = 0
	if final {
		s.heldClosed = true
	}
	s.heldMu.Unlock()
	if n > 0 {
		s.h.reads.all.Release(n)
		s.h.share.Release(n)
	}
}

func (s *Subscription) endWith(err error) {
	if err == ErrSlowConsumer {
		s.h.cutOff.Add(1)
	}
	s.ended = &EndError{Cause: err, Resume: s.resume}
	s.cur = nil
}

// signal wakes a Next waiting on s (never blocks).
func (s *Subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// matches reports whether ring entry e is in s's region.
func (s *Subscription) matches(e *entry) bool {
	return s.all || s.region.Matches(e.coord, e.kind, e.clock)
}

// waiting registers s as waiting for events after s.next; false when
// something arrived meanwhile (read again instead of waiting).
func (s *Subscription) waiting() bool {
	r := s.r
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.err != nil {
		return false
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	s.waitNext = s.next
	if r.concernsLocked(s) {
		return false
	}
	// Drop a stale wake-up so the next one is news.
	select {
	case <-s.wake:
	default:
	}
	r.waiters[s] = struct{}{}
	return true
}

func (s *Subscription) unwait() {
	s.r.wmu.Lock()
	delete(s.r.waiters, s)
	s.r.wmu.Unlock()
}

// step returns what is available now: from the store while s is behind
// the ring, then from the ring. No frames and no error: nothing yet,
// after s.next.
func (s *Subscription) step(ctx context.Context) ([]Frame, error) {
	r := s.r
	r.mu.RLock()
	err, coverStart := r.err, r.coverStart
	r.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	var frames []Frame
	var bytes int64
	if s.next < coverStart {
		if frames, bytes, err = s.fromStore(ctx, coverStart); err != nil || s.next < coverStart {
			return frames, err
		}
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.err != nil {
		return nil, r.err
	}
	if s.next < r.coverStart {
		return frames, nil // the ring moved on meanwhile: the store again next time
	}
	s.behindEvents, s.behindBytes = 0, 0 // back at the ring
	return s.fromRingLocked(frames, bytes)
}

// fromRingLocked appends to frames (holding bytes) what the ring holds
// from s.next. Caller holds r.mu (read).
func (s *Subscription) fromRingLocked(frames []Frame, bytes int64) ([]Frame, error) {
	r := s.r
	if s.next >= r.coverEnd {
		s.live = true // at the newest events
		return frames, nil
	}
	max := s.h.opts.MaxBacklogEvents
	maxBytes := s.h.opts.MaxBacklogBytes
	p := r.searchLocked(s.next)
	start := p
	n := len(frames)
	truncated := false
	for ; p < r.head; p++ {
		e := &r.ring[p&r.mask]
		if !s.matches(e) {
			continue
		}
		if n+1 > max || (n > 0 && bytes+int64(len(e.data)) > maxBytes) {
			if s.live {
				return nil, ErrSlowConsumer
			}
			truncated = true
			break
		}
		n++
		bytes += int64(len(e.data))
	}
	if frames == nil {
		frames = make([]Frame, 0, n)
	}
	end := p
	for p = start; p < end; p++ {
		e := &r.ring[p&r.mask]
		if s.matches(e) {
			frames = append(frames, Frame{Seq: e.seq, Data: e.data})
		}
	}
	if truncated {
		s.next = r.ring[end&r.mask].seq
	} else {
		s.next = r.coverEnd
		s.live = true
	}
	return frames, nil
}

// catchUpBytes bounds the bytes one step from the store reads, each
// event counting its payload and names (core.Cursor.PollBytes; at least
// one event is read, whatever its size), catching up or fallen
// behind the ring: a subscriber that does not read holds one step of
// frames, not MaxBacklogBytes of them.
const catchUpBytes = 1 << 20

// fromStore reads the store with s's own cursor from s.next, up to the
// first event the ring holds (coverStart): catching up, or fallen behind
// the ring. A live subscriber behind the ring reads its backlog a step at
// a time too, and behindEvents and behindBytes count what it has read so
// since it fell behind: past MaxBacklogEvents or MaxBacklogBytes it is a
// slow consumer, as one whose backlog in the ring is past them.
func (s *Subscription) fromStore(ctx context.Context, coverStart uint64) ([]Frame, int64, error) {
	o := &s.h.opts
	if s.cur == nil {
		s.cur = s.h.store.Cursor(s.region)
		s.cur.ExamineAtMost(ScanStep)
	}
	if s.pace != nil {
		if owed := max(s.cur.Examined()/ScanStep, s.storeSent/StoreEventsStep); owed > s.paced {
			if wait := s.pace(int(owed - s.paced)); wait > 0 {
				s.paceUntil = time.Now().Add(wait)
			}
			s.paced = owed
		}
		// A wait cut short (a heartbeat's deadline) goes on here at the
		// next Next, not charged again.
		if wait := time.Until(s.paceUntil); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, 0, ctx.Err()
			case <-t.C:
			}
		}
	}
	s.cur.Seek(s.next)
	examined := s.cur.Examined()
	limit := o.MaxBacklogEvents
	// Bounded in bytes too (payloads and names): a region of large events,
	// or of long names, is not read MaxBacklogEvents at a time (4096
	// events of 1 MiB would be 4 GiB).
	step := min(o.MaxBacklogBytes, catchUpBytes)
	lastStep := false // live: this step reaches the byte bound
	if s.live {
		// one more than the bound tells a backlog past it
		limit = o.MaxBacklogEvents - s.behindEvents + 1
		if left := o.MaxBacklogBytes - s.behindBytes; left <= step {
			step, lastStep = max(left, 1), true
		}
	}
	// The events and the frames made of them: room before reading, and
	// more after encoding if the frames take it (one large event).
	charged := 2 * step
	if err := s.charge(ctx, charged); err != nil {
		return nil, 0, err
	}
	evs, more, err := s.cur.PollBytes(limit, int(step))
	if err != nil {
		return nil, 0, storeErr(err)
	}
	if lastStep && more && s.cur.Examined()-examined < ScanStep {
		// Its backlog holds more than MaxBacklogBytes of payload, so
		// more than that encoded.
		return nil, 0, ErrSlowConsumer
	}
	next := s.cur.Position()
	n := 0
	for n < len(evs) && evs[n].GlobalSequence < coverStart {
		n++
	}
	if n < len(evs) {
		next = evs[n].GlobalSequence // the rest is in the ring
	}
	if s.live && s.behindEvents+n > o.MaxBacklogEvents {
		return nil, 0, ErrSlowConsumer
	}
	frames := make([]Frame, 0, n)
	var bytes int64
	for i := range evs[:n] {
		data := o.Encode(evs[i])
		s.h.encoded.Add(1)
		if s.live && s.behindBytes+bytes+int64(len(data)) > o.MaxBacklogBytes && (s.behindEvents > 0 || len(frames) > 0) {
			return nil, 0, ErrSlowConsumer
		}
		if len(frames) > 0 && bytes+int64(len(data)) > step {
			next = evs[i].GlobalSequence
			break
		}
		bytes += int64(len(data))
		frames = append(frames, Frame{Seq: evs[i].GlobalSequence, Data: data})
	}
	if bytes > charged {
		if err := s.charge(ctx, bytes-charged); err != nil {
			return nil, 0, err // s.next unmoved: read again next time
		}
	}
	s.next = next
	s.storeSent += uint64(len(frames))
	if s.live {
		s.behindEvents += len(frames)
		s.behindBytes += bytes
	}
	return frames, bytes, nil
}
