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
// The writer puts each published event into one shared ring of
// Config.BroadcastCapacity slots, once, whatever the number of
// subscribers; each subscription reads the ring at its own position and
// filters by its region. A subscription that falls more than a ring's
// length behind has lost the overwritten notifications: it skips ahead and
// counts what it lost (see Subscription.Dropped). The writer never waits
// for a subscriber, and a subscriber that reads nothing costs the writer
// nothing.
//
// Waiters (subscriptions, cursor workers, projection watchers) block on a
// channel that the writer closes and replaces after each publication that
// had waiters: one wake-up per group commit, not per event.
type broadcaster struct {
	ring  []atomic.Pointer[slot]
	mask  uint64
	_     [48]byte      // keep head on its own cache line: the writer moves it
	head  atomic.Uint64 // notifications published so far
	_     [56]byte
	subs  atomic.Int32 // open subscriptions: the writer skips the ring when 0
	mu    sync.Mutex
	wake  chan struct{}
	waits atomic.Bool // someone holds wake: close it on the next publication
	shut  chan struct{}
	// isShut mirrors shut for the subscribers' fast path.
	isShut atomic.Bool
}

// slot is one ring entry; pos tells a reader whether it was overwritten.
type slot struct {
	pos uint64
	n   Notification
}

func newBroadcaster(capacity int) *broadcaster {
	n := 1
	for n < capacity {
		n <<= 1
	}
	return &broadcaster{ring: make([]atomic.Pointer[slot], n), mask: uint64(n - 1), wake: make(chan struct{}), shut: make(chan struct{})}
}

// publish adds notifications (writer goroutine only) and wakes waiters.
func (b *broadcaster) publish(ns []slot) {
	if len(ns) > 0 {
		h := b.head.Load()
		for i := range ns {
			ns[i].pos = h
			b.ring[h&b.mask].Store(&ns[i])
			h++
		}
		b.head.Store(h)
	}
	b.signal()
}

// signal wakes everything waiting for a change.
func (b *broadcaster) signal() {
	if !b.waits.Load() {
		return
	}
	b.mu.Lock()
	b.waits.Store(false)
	close(b.wake)
	b.wake = make(chan struct{})
	b.mu.Unlock()
}

// changed returns a channel closed at the next publication (or never, if
// none comes). Check the state after taking it, then wait on it.
func (b *broadcaster) changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
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
	b.waits.Store(true)
	b.signal()
}

// notifyPublished turns freshly published entries into notifications.
// Called by the writer after it inserted them into the index.
func (w *writer) notifyPublished(ps []pending) {
	bc := w.s.bc
	if bc.subs.Load() == 0 || len(ps) == 0 {
		bc.signal()
		return
	}
	ix := w.s.ix
	ns := make([]slot, 0, len(ps))
	for i := range ps {
		p := &ps[i]
		if p.fenced || !p.e.Visible() {
			continue
		}
		ns = append(ns, slot{n: Notification{
			ID:             p.e.ID,
			CorrelationID:  p.corr,
			CausationID:    p.cause,
			Coordinate:     Coordinate{Entity: ix.Entity(p.e.Entity).Name, Scope: ix.ScopeName(p.e.Scope)},
			Kind:           Kind(p.e.Kind),
			Clock:          p.e.Clock,
			GlobalSequence: uint64(p.seq),
		}})
	}
	bc.publish(ns)
}
