package follow

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/batpak-go/batpak/core"
	"golang.org/x/sync/semaphore"
)

// Hub fans one store's events out to any number of subscriptions. While
// it has subscribers it runs one goroutine that follows the store (a
// core.Cursor over every event, woken by a lossy core subscription once
// per group commit), encodes each new event once, and keeps the frames in
// a bounded ring that its subscribers read, each filtering by its region.
// A subscriber behind the ring (catching up from an old position, or
// slow) reads the store with its own cursor until it reaches the ring.
// When the last subscription closes the goroutine stops and the hub holds
// nothing on the store, so an idle store can close. A Hub is safe for
// concurrent use.
type Hub struct {
	store *core.Store
	opts  Options
	// reads is the store-read budget (shared by a Set's hubs), share this
	// hub's part of it (Options.StoreReadBytes)
	reads *budget
	share *semaphore.Weighted

	mu     sync.Mutex
	run    *run // nil while idle
	subs   int
	closed bool
	// idle is called (h.mu not held) after the last subscription closed;
	// Set uses it to forget the hub.
	idle func(*Hub)

	encoded atomic.Uint64
	cutOff  atomic.Uint64
}

// New makes a hub for store s. It starts following the store at the
// first Subscribe.
func New(s *core.Store, opts Options) (*Hub, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	b := newBudget(o.StoreReadBytes, o.Starved)
	return &Hub{store: s, opts: o, reads: b, share: b.share()}, nil
}

// Subscribe starts a subscription to region r's events after start:
// catch-up from the store, then live. It fails with ErrStartAhead when
// start is past the end of the log, ErrHubClosed after Close, and
// ErrStoreClosed once the hub saw its store close (a subscription made on
// a store that closed meanwhile ends at its first Next, with
// ErrStoreClosed). Close the subscription when done.
func (h *Hub) Subscribe(r core.Region, start Start) (*Subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrHubClosed
	}
	if h.run != nil && h.run.isEnded() {
		// The store closed (or failed) under it: nothing more to follow.
		return nil, h.run.endErr()
	}
	if end := h.store.Usage().GlobalSequence; start.next > end {
		seq, _ := start.After()
		return nil, fmt.Errorf("%w: after %d, but the log holds sequences 0..%d", ErrStartAhead, seq, int64(end)-1)
	}
	if h.run == nil {
		h.run = h.startRun()
	}
	h.subs++
	return newSubscription(h, h.run, r, start), nil
}

// Close ends every subscription with ErrHubClosed (each Next returns an
// *EndError with its resume position), stops following the store, and
// makes later Subscribe calls fail. It returns once the hub's goroutine
// has exited.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	r := h.run
	h.run = nil
	h.mu.Unlock()
	if r != nil {
		r.end(ErrHubClosed)
		r.stop()
	}
}

// Stats reports the hub's state.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	st := Stats{Subscribers: h.subs, Encoded: h.encoded.Load(), CutOff: h.cutOff.Load()}
	r := h.run
	h.mu.Unlock()
	if r != nil {
		st.Running = !r.isEnded()
		r.mu.RLock()
		st.RingFrames, st.RingBytes, st.Published = int(r.head-r.tail), r.bytes, r.coverEnd
		r.mu.RUnlock()
	}
	return st
}

// release is called when a subscription closes.
func (h *Hub) release() {
	h.mu.Lock()
	h.subs--
	var r *run
	last := h.subs == 0
	if last {
		r, h.run = h.run, nil
	}
	idle := h.idle
	h.mu.Unlock()
	if r != nil {
		r.stop()
	}
	if last && idle != nil {
		idle(h)
	}
}

// entry is one frame in the ring, with what a region needs to match it.
type entry struct {
	seq   uint64
	coord core.Coordinate
	kind  core.Kind
	clock uint64
	data  []byte
}

// run is one period of following the store, from the first subscriber to
// the last. Its ring covers every visible event with a global sequence in
// [coverStart, coverEnd): those still held, in order, at ring positions
// tail..head-1.
type run struct {
	h      *Hub
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	ended  chan struct{} // closed by end

	mu         sync.RWMutex
	ring       []entry
	mask       uint64
	head, tail uint64 // ring positions: entries tail..head-1 are held
	bytes      int64
	coverStart uint64
	coverEnd   uint64
	err        error // why the run ended (nil while it runs)

	wmu     sync.Mutex
	waiters map[*Subscription]struct{}
}

func (h *Hub) startRun() *run {
	n := 1
	for n < h.opts.RingEvents {
		n <<= 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{
		h: h, ctx: ctx, cancel: cancel, done: make(chan struct{}), ended: make(chan struct{}),
		ring: make([]entry, n), mask: uint64(n - 1), waiters: map[*Subscription]struct{}{},
	}
	// Subscribe first, then read the log end: a publication between the
	// two is then both announced and after the position.
	lossy := h.store.SubscribeLossy(core.All())
	end := h.store.Usage().GlobalSequence
	r.coverStart, r.coverEnd = end, end
	cur := h.store.Cursor(core.All())
	cur.Seek(end)
	go r.follow(cur, lossy)
	return r
}

// follow is the run's goroutine: read what is new, encode it once, put it
// in the ring, wake the subscribers it concerns; wait for the next
// publication.
func (r *run) follow(cur *core.Cursor, lossy *core.Subscription) {
	defer close(r.done)
	defer lossy.Close()
	wake := make([]core.Notification, 256)
	for {
		// Bounded in bytes too: a burst of large events is read in steps
		// of about what the ring holds, not PollEvents of them at once.
		evs, _, err := cur.PollBytes(r.h.opts.PollEvents, int(min(r.h.opts.RingBytes, math.MaxInt32)))
		if err != nil {
			if r.ctx.Err() == nil {
				r.end(storeErr(err))
			}
			return
		}
		if len(evs) > 0 {
			r.publish(evs, cur.Position())
			continue
		}
		if _, err := lossy.RecvBatch(r.ctx, wake); err != nil {
			if r.ctx.Err() == nil {
				r.end(storeErr(err))
			}
			return
		}
	}
}

// storeErr names a store that closed as ErrStoreClosed; other read errors
// pass through.
func storeErr(err error) error {
	if errors.Is(err, core.ErrClosed) || errors.Is(err, core.ErrSubscriptionClosed) {
		return ErrStoreClosed
	}
	return fmt.Errorf("follow: reading the store: %w", err)
}

// publish encodes evs (outside any lock), adds them to the ring, moves the
// covered range to coverEnd and wakes the waiting subscribers that have
// something new.
func (r *run) publish(evs []core.StoredEvent, coverEnd uint64) {
	es := make([]entry, len(evs))
	for i := range evs {
		ev := &evs[i]
		es[i] = entry{seq: ev.GlobalSequence, coord: ev.Coordinate, kind: ev.Header.Kind, clock: ev.Header.Clock, data: r.h.opts.Encode(*ev)}
	}
	r.h.encoded.Add(uint64(len(es)))
	limit := uint64(len(r.ring))
	r.mu.Lock()
	for i := range es {
		for r.head > r.tail && (r.head-r.tail == limit || r.bytes+int64(len(es[i].data)) > r.h.opts.RingBytes) {
			old := &r.ring[r.tail&r.mask]
			r.coverStart = old.seq + 1
			r.bytes -= int64(len(old.data))
			*old = entry{}
			r.tail++
		}
		r.ring[r.head&r.mask] = es[i]
		r.bytes += int64(len(es[i].data))
		r.head++
	}
	r.coverEnd = coverEnd
	r.mu.Unlock()

	r.mu.RLock()
	r.wmu.Lock()
	for s := range r.waiters {
		if r.concernsLocked(s) {
			delete(r.waiters, s)
			s.signal()
		}
	}
	r.wmu.Unlock()
	r.mu.RUnlock()
}

// concernsLocked reports whether waiting subscriber s has something to
// read; if not, it moves s's position past what it has been shown to have
// nothing in, so that an idle subscriber of a quiet region never falls
// behind the ring. Caller holds r.mu (read) and r.wmu.
func (r *run) concernsLocked(s *Subscription) bool {
	if s.waitNext < r.coverStart {
		return true // behind the ring: it reads the store
	}
	if s.waitNext >= r.coverEnd {
		return false
	}
	for p := r.searchLocked(s.waitNext); p < r.head; p++ {
		if s.matches(&r.ring[p&r.mask]) {
			return true
		}
	}
	s.waitNext = r.coverEnd
	return false
}

// searchLocked returns the ring position of the first entry with a
// sequence ≥ seq (head if none). Caller holds r.mu.
func (r *run) searchLocked(seq uint64) uint64 {
	n := int(r.head - r.tail)
	i := sort.Search(n, func(i int) bool { return r.ring[(r.tail+uint64(i))&r.mask].seq >= seq })
	return r.tail + uint64(i)
}

// end records why the run ended (the first reason wins) and wakes every
// subscriber.
func (r *run) end(err error) {
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		return
	}
	r.err = err
	close(r.ended)
	r.mu.Unlock()
	r.wmu.Lock()
	for s := range r.waiters {
		delete(r.waiters, s)
		s.signal()
	}
	r.wmu.Unlock()
}

func (r *run) isEnded() bool {
	select {
	case <-r.ended:
		return true
	default:
		return false
	}
}

func (r *run) endErr() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.err
}

// stop ends the goroutine and waits for it.
func (r *run) stop() {
	r.cancel()
	<-r.done
}
