package core

import (
	"sync"
	"sync/atomic"
)

// Notification announces one published event to subscribers.
type Notification struct {
	ID             EventID
	CorrelationID  EventID
	CausationID    EventID
	Coordinate     Coordinate
	Kind           Kind
	Clock          uint64
	GlobalSequence uint64
}

// broadcaster fans published events out to lossy subscriptions and wakes
// anything waiting for the store to change.
//
// The writer puts each published event into one shared ring, once,
// whatever the number of subscribers; each subscription reads the ring at
// its own position and filters by its region. The ring holds at least the
// last Config.BroadcastCapacity notifications (rounded up to a power of
// two). A subscription that falls further behind has lost the overwritten
// notifications: it skips ahead and counts what it lost (see
// Subscription.Dropped). The writer never waits for a subscriber, and a
// subscriber that reads nothing costs the writer nothing.
//
// The ring is a table of pages of notifications. The writer fills the
// current page in place and publishes a whole group by moving head once;
// a full page is replaced by a fresh one (one allocation per page, none per
// group or per event), so a page never changes after its slots are
// published. A reader therefore copies a run of notifications out of a
// page with one memmove and no atomic per notification, loading the head
// once per call to learn what is ready and what it has lost.
//
//	pages[(pos>>shift) % len(pages)] ─▶ notePage{first, ns[0..1<<shift)}
//	position pos is held while head-size <= pos < head; the table has one
//	page more than size needs, so it holds every held position's page
//
// Waiters (subscriptions, cursor workers, projection watchers) block on a
// channel that is closed and replaced after each publication that had
// waiters: one wake-up per group commit, not per event. The writer only
// asks for the wake-up; a waker goroutine closes the channel.
type broadcaster struct {
	pages []atomic.Pointer[notePage]
	size  uint64        // notifications held: a power of two, at least the capacity
	shift uint          // a page holds 1<<shift notifications
	cur   *notePage     // the page the writer fills (writer goroutine only)
	_     [64]byte      // keep head on its own cache line: the writer moves it
	head  atomic.Uint64 // notifications published so far
	_     [56]byte
	subs  atomic.Int32 // open subscriptions: the writer skips the ring when 0
	mu    sync.Mutex
	wake  chan struct{}
	waits atomic.Bool   // someone holds wake: close it on the next publication
	kick  chan struct{} // (buffered 1) asks the waker to close wake
	// wakerRuns: the waker goroutine was started (at the first wait).
	wakerRuns bool
	shut      chan struct{}
	// isShut mirrors shut for the subscribers' fast path.
	isShut atomic.Bool
}

// notePage is one page of the ring: ns[i] is the notification at ring
// position first+i. Slots below the head are never written again.
type notePage struct {
	first uint64
	ns    []Notification
}

// maxPageShift bounds a page to 256 notifications (26 KiB): large enough
// that a reader copies long runs, small enough that a slow reader holding
// an overwritten page keeps little memory alive.
const maxPageShift = 8

func newBroadcaster(capacity int) *broadcaster {
	size, shift := uint64(1), uint(0)
	for size < uint64(capacity) {
		size <<= 1
		shift++
	}
	shift = min(shift, maxPageShift)
	// One page more than size: the table holds the last size notifications
	// even while the newest page is partly filled.
	pages := size>>shift + 1
	return &broadcaster{pages: make([]atomic.Pointer[notePage], pages), size: size, shift: shift, wake: make(chan struct{}), kick: make(chan struct{}, 1), shut: make(chan struct{})}
}

// page returns the table entry that holds (or held) position pos.
func (b *broadcaster) page(pos uint64) *atomic.Pointer[notePage] {
	return &b.pages[(pos>>b.shift)%uint64(len(b.pages))]
}

// slot returns the slot for the notification at position h (writer
// goroutine only; h is the next position, not yet published), starting a
// fresh page when the current one is full.
func (b *broadcaster) slot(h uint64) *Notification {
	if b.cur == nil || h-b.cur.first == uint64(len(b.cur.ns)) {
		b.cur = &notePage{first: h, ns: make([]Notification, 1<<b.shift)}
		b.page(h).Store(b.cur)
	}
	return &b.cur.ns[h-b.cur.first]
}

// signal wakes everything waiting for a change. The waker goroutine does
// the waking: closing a channel readies every goroutine waiting on it, one
// by one (about 30 µs for 100 waiters on a busy 2-core machine), and that
// must not hold up the writer's next group.
func (b *broadcaster) signal() {
	if !b.waits.Load() {
		return
	}
	select {
	case b.kick <- struct{}{}:
	default: // a wake-up is pending: it will close the channel waiters hold
	}
}

// waker wakes waiters on the writer's behalf until the store closes.
func (b *broadcaster) waker() {
	for {
		select {
		case <-b.kick:
			b.wakeAll()
		case <-b.shut:
			return
		}
	}
}

// wakeAll closes the channel waiters hold and puts a fresh one in its place.
func (b *broadcaster) wakeAll() {
	b.mu.Lock()
	b.waits.Store(false)
	close(b.wake)
	b.wake = make(chan struct{})
	b.mu.Unlock()
}

// changed returns a channel closed at the next publication (or never, if
// none comes). Check the state after taking it, then wait on it. The first
// call starts the waker goroutine, which ends when the store closes.
func (b *broadcaster) changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.wakerRuns && !b.isShut.Load() {
		b.wakerRuns = true
		go b.waker()
	}
	b.waits.Store(true)
	return b.wake
}

// close wakes every waiter for good (the store closed).
func (b *broadcaster) close() {
	b.mu.Lock()
	if !b.isShut.Load() {
		b.isShut.Store(true)
		close(b.shut)
	}
	b.mu.Unlock()
	b.wakeAll()
}

// notifyPublished turns freshly published entries into notifications and
// wakes waiters. Called by the writer goroutine, once per published group
// (or committed fence), after it inserted the entries into the index: the
// whole group becomes visible to subscribers at once.
func (w *writer) notifyPublished(ps []pending) {
	bc := w.s.bc
	if bc.subs.Load() == 0 || len(ps) == 0 {
		bc.signal()
		return
	}
	ix := w.s.ix
	h := bc.head.Load()
	for i := range ps {
		p := &ps[i]
		if p.fenced || !p.e.Visible() {
			continue
		}
		*bc.slot(h) = Notification{
			ID:             p.e.ID,
			CorrelationID:  p.corr,
			CausationID:    p.cause,
			Coordinate:     Coordinate{Entity: ix.Entity(p.e.Entity).Name, Scope: ix.ScopeName(p.e.Scope)},
			Kind:           Kind(p.e.Kind),
			Clock:          p.e.Clock,
			GlobalSequence: uint64(p.seq),
		}
		h++
	}
	bc.head.Store(h)
	bc.signal()
}
