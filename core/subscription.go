package core

import (
	"context"
	"iter"
	"sync"
	"sync/atomic"
)

// Subscription receives notifications of published events in a region,
// from the moment it was made. It is lossy by design: the writer never
// waits for it, and when it falls more than Config.BroadcastCapacity
// notifications behind, the overwritten ones are lost and counted in
// Dropped. Use a Cursor when every event must be seen. Events hidden by a
// fence are never announced; a committed fence's events are announced at
// its Commit. A Subscription is safe for concurrent use, but its
// notifications are shared out, not copied, between concurrent receivers.
type Subscription struct {
	s      *Store
	region Region

	mu       sync.Mutex
	pos      uint64 // next ring position to read
	head     uint64 // the broadcaster's head when last loaded
	lastSeq  int64  // global sequence of the last notification read (-1: none)
	dropped  uint64
	closed   chan struct{}
	isClosed atomic.Bool
	once     sync.Once
}

// SubscribeLossy subscribes to the events published in r from now on.
// Close the subscription when done with it.
func (s *Store) SubscribeLossy(r Region) *Subscription {
	sub := &Subscription{s: s, region: r, closed: make(chan struct{}), lastSeq: -1}
	s.bc.subs.Add(1)
	sub.pos = s.bc.head.Load()
	if n := s.ix.Published(); n > 0 {
		sub.lastSeq = int64(n) - 1
	}
	return sub
}

// Close ends the subscription; Recv then reports ErrSubscriptionClosed.
func (sub *Subscription) Close() {
	sub.once.Do(func() {
		sub.isClosed.Store(true)
		close(sub.closed)
		sub.s.bc.subs.Add(-1)
	})
}

// Dropped counts notifications in this subscription's region that were
// lost because it fell behind.
func (sub *Subscription) Dropped() uint64 {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return sub.dropped
}

// TryRecv returns the next notification if one is ready.
func (sub *Subscription) TryRecv() (Notification, bool, error) {
	if sub.isClosed.Load() || sub.s.bc.isShut.Load() {
		return Notification{}, false, ErrSubscriptionClosed
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	n, ok := sub.next()
	return n, ok, nil
}

// Recv blocks for the next notification in the region. It returns
// ErrSubscriptionClosed once the subscription or the store is closed, and
// ctx.Err() if ctx ends first.
func (sub *Subscription) Recv(ctx context.Context) (Notification, error) {
	bc := sub.s.bc
	for {
		n, ok, err := sub.TryRecv()
		if err != nil || ok {
			return n, err
		}
		// Nothing ready: take the wake-up channel, then look once more so a
		// publication between the two looks is not missed.
		wake := bc.changed()
		if n, ok, err = sub.TryRecv(); err != nil || ok {
			return n, err
		}
		select {
		case <-wake:
		case <-sub.closed:
		case <-bc.shut:
		case <-ctx.Done():
			return Notification{}, ctx.Err()
		}
	}
}

// RecvBatch blocks until at least one notification is ready, then fills
// buf with as many as are ready (up to len(buf)) and returns how many. It
// costs one lock and one look at the shared ring head per call, so a busy
// subscriber keeps up with far less CPU than with Recv. Errors as Recv.
func (sub *Subscription) RecvBatch(ctx context.Context, buf []Notification) (int, error) {
	bc := sub.s.bc
	for {
		n, err := sub.tryFill(buf)
		if err != nil || n > 0 {
			return n, err
		}
		wake := bc.changed()
		if n, err = sub.tryFill(buf); err != nil || n > 0 {
			return n, err
		}
		select {
		case <-wake:
		case <-sub.closed:
		case <-bc.shut:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func (sub *Subscription) tryFill(buf []Notification) (int, error) {
	if sub.isClosed.Load() || sub.s.bc.isShut.Load() {
		return 0, ErrSubscriptionClosed
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	n := 0
	for n < len(buf) {
		v, ok := sub.next()
		if !ok {
			break
		}
		buf[n] = v
		n++
	}
	return n, nil
}

// All iterates over notifications until the subscription or store closes
// or ctx ends; break out of the loop to stop early. Compose it with
// Filter, Map, Take and Scan.
func (sub *Subscription) All(ctx context.Context) iter.Seq[Notification] {
	return func(yield func(Notification) bool) {
		for {
			n, err := sub.Recv(ctx)
			if err != nil || !yield(n) {
				return
			}
		}
	}
}

// next reads the ring from sub.pos; caller holds sub.mu.
func (sub *Subscription) next() (Notification, bool) {
	bc := sub.s.bc
	for {
		if sub.pos >= sub.head {
			// Load the shared head only when what we knew is used up: it
			// sits on a cache line the writer keeps changing.
			if sub.head = bc.head.Load(); sub.pos >= sub.head {
				return Notification{}, false
			}
		}
		head := sub.head
		if oldest := head - min(head, bc.mask+1); sub.pos < oldest {
			sub.pos = oldest // fell behind: skip to the oldest still held
		}
		sl := bc.ring[sub.pos&bc.mask].Load()
		if sl == nil || sl.pos != sub.pos {
			sub.pos++ // overwritten while we looked: lost
			continue
		}
		n := sl.n
		if int64(n.GlobalSequence) > sub.lastSeq+1 {
			sub.dropped += sub.s.ix.CountMatching(sub.region.filter(), uint64(sub.lastSeq+1), n.GlobalSequence)
		}
		sub.pos++
		sub.lastSeq = int64(n.GlobalSequence)
		if sub.region.Matches(n.Coordinate, n.Kind, n.Clock) {
			return n, true
		}
	}
}

// Filter yields the elements of seq that satisfy keep.
func Filter[T any](seq iter.Seq[T], keep func(T) bool) iter.Seq[T] {
	return func(yield func(T) bool) {
		for v := range seq {
			if keep(v) && !yield(v) {
				return
			}
		}
	}
}

// Map yields f of each element of seq.
func Map[T, U any](seq iter.Seq[T], f func(T) U) iter.Seq[U] {
	return func(yield func(U) bool) {
		for v := range seq {
			if !yield(f(v)) {
				return
			}
		}
	}
}

// Take yields the first n elements of seq, then stops.
func Take[T any](seq iter.Seq[T], n int) iter.Seq[T] {
	return func(yield func(T) bool) {
		if n <= 0 {
			return
		}
		i := 0
		for v := range seq {
			if !yield(v) {
				return
			}
			if i++; i == n {
				return
			}
		}
	}
}

// Scan yields the running fold of seq: fold(init, v1), fold(fold(init,
// v1), v2), …
func Scan[T, A any](seq iter.Seq[T], init A, fold func(A, T) A) iter.Seq[A] {
	return func(yield func(A) bool) {
		acc := init
		for v := range seq {
			acc = fold(acc, v)
			if !yield(acc) {
				return
			}
		}
	}
}
