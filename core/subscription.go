package core

import (
	"context"
	"iter"
	"sync"
	"sync/atomic"

	"github.com/batpak-go/batpak/core/internal/index"
)

// Subscription receives notifications of published events in a region,
// from the moment it was made. It is lossy by design: the writer never
// waits for it, and when it falls more than Config.BroadcastCapacity
// notifications behind, the overwritten ones are lost and counted in
// Dropped. Use a Cursor when every event must be seen. Events hidden by a
// fence are never announced; a committed fence's events are announced at
// its Commit. A subscriber that keeps up receives every notification of
// its region once, in publication order. A Subscription is safe for
// concurrent use, but its notifications are shared out, not copied,
// between concurrent receivers.
type Subscription struct {
	s      *Store
	filter index.Filter // the region
	all    bool         // the region matches every event: no filtering

	mu      sync.Mutex
	pos     uint64    // next ring position to read
	page    *notePage // the page holding pos, if known
	lastSeq int64     // global sequence of the last notification read (-1: none)
	dropped uint64
	// back holds notifications an All loop took but did not yield before
	// it stopped, or that Recv took ahead (in pre): the next receiver gets
	// them first.
	back []Notification
	// pre is Recv's buffer for taking up to recvAhead notifications at
	// once (made at the first Recv); back holds what it took ahead.
	pre      []Notification
	closed   chan struct{}
	isClosed atomic.Bool
	once     sync.Once
}

// SubscribeLossy subscribes to the events published in r from now on.
// Close the subscription when done with it.
func (s *Store) SubscribeLossy(r Region) *Subscription {
	sub := &Subscription{s: s, filter: r.filter(), all: r == All(), closed: make(chan struct{}), lastSeq: -1}
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
	var one [1]Notification
	n, err := sub.tryFill(one[:])
	return one[0], n == 1, err
}

// Recv blocks for the next notification in the region. It returns
// ErrSubscriptionClosed once the subscription or the store is closed, and
// ctx.Err() if ctx ends first. When several are ready it takes up to
// recvAhead (16) out of the shared ring at once and hands the rest to the
// next receivers, so a subscriber that keeps up reads the ring once per
// run, not once per notification (and those taken ahead are not lost if
// it then falls behind). It still takes the subscription's lock for each
// notification; to follow a busy store with many subscribers, RecvBatch
// or All cost less CPU.
func (sub *Subscription) Recv(ctx context.Context) (Notification, error) {
	var one [1]Notification
	_, err := sub.recvRun(ctx, one[:], false)
	return one[0], err
}

// recvAhead is how many notifications Recv takes out of the ring at once.
const recvAhead = 16

// RecvBatch blocks until at least one notification is ready, then fills
// buf with every one that is ready, up to len(buf), in order, and returns
// how many. It costs one lock per call and copies runs of notifications
// out of the shared ring with one memmove each, so a busy subscriber keeps
// up with far less CPU than with Recv. With an empty buf it returns 0
// without waiting. Errors as Recv.
func (sub *Subscription) RecvBatch(ctx context.Context, buf []Notification) (int, error) {
	run, err := sub.recvRun(ctx, buf, false)
	return len(run), err
}

// recvRun blocks until a notification is ready, then returns those ready,
// up to len(buf): copied into buf or, if shared and the region matches
// every event, a run of a ring page (immutable: the caller may read it
// without the lock). With an empty buf it returns at once.
func (sub *Subscription) recvRun(ctx context.Context, buf []Notification, shared bool) ([]Notification, error) {
	bc := sub.s.bc
	for {
		run, err := sub.tryRun(buf, shared)
		if err != nil || len(run) > 0 || len(buf) == 0 {
			return run, err
		}
		// Nothing ready: take the wake-up channel, then look once more so a
		// publication between the two looks is not missed.
		wake := bc.changed()
		if run, err = sub.tryRun(buf, shared); err != nil || len(run) > 0 {
			return run, err
		}
		select {
		case <-wake:
		case <-sub.closed:
		case <-bc.shut:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (sub *Subscription) tryFill(buf []Notification) (int, error) {
	run, err := sub.tryRun(buf, false)
	return len(run), err
}

func (sub *Subscription) tryRun(buf []Notification, shared bool) ([]Notification, error) {
	if sub.isClosed.Load() || sub.s.bc.isShut.Load() {
		return nil, ErrSubscriptionClosed
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if shared && sub.all && len(sub.back) == 0 {
		head := sub.s.bc.head.Load()
		run := sub.ready(&head)
		run = run[:min(len(run), len(buf))]
		for i := range run {
			sub.account(run[i].GlobalSequence)
		}
		sub.pos += uint64(len(run))
		return run, nil
	}
	if len(buf) == 1 && len(sub.back) == 0 {
		// One at a time (Recv, TryRecv): take a run ahead into pre and
		// keep its rest in back.
		if sub.pre == nil {
			sub.pre = make([]Notification, recvAhead)
		}
		n := sub.fill(sub.pre)
		if n == 0 {
			return nil, nil
		}
		buf[0] = sub.pre[0]
		if n > 1 {
			sub.back = sub.pre[1:n]
		}
		return buf[:1], nil
	}
	return buf[:sub.fill(buf)], nil
}

// allBatch is how many notifications All takes from the ring at a time.
const allBatch = 64

// All iterates over notifications until the subscription or store closes
// or ctx ends; break out of the loop to stop early. Compose it with
// Filter, Map, Take and Scan. All takes the notifications that are ready
// in runs (up to 64, as RecvBatch) and yields them one by one; when the
// loop stops early, those it took but did not yield go back to the
// subscription, and the next receiver gets them first. (A receiver on the
// same subscription inside the loop gets the notifications after the
// run All holds.)
func (sub *Subscription) All(ctx context.Context) iter.Seq[Notification] {
	return func(yield func(Notification) bool) {
		var buf [allBatch]Notification
		var run []Notification
		i := 0 // run[i:] taken, not yet yielded
		defer func() {
			if i < len(run) {
				sub.giveBack(run[i:])
			}
		}()
		for {
			var err error
			if run, err = sub.recvRun(ctx, buf[:], true); err != nil {
				return
			}
			for i = 0; i < len(run); {
				i++
				if !yield(run[i-1]) {
					return
				}
			}
		}
	}
}

// giveBack returns notifications taken but not consumed, ahead of any
// given back before.
func (sub *Subscription) giveBack(ns []Notification) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	sub.back = append(append(make([]Notification, 0, len(ns)+len(sub.back)), ns...), sub.back...)
}

// fill copies into buf what is ready, up to len(buf); caller holds sub.mu.
// It loads the shared head once per call (more only if the writer laps it
// meanwhile): the writer moves the head once per group.
func (sub *Subscription) fill(buf []Notification) int {
	n := 0
	if len(sub.back) > 0 {
		n = copy(buf, sub.back)
		if sub.back = sub.back[n:]; len(sub.back) == 0 {
			sub.back = nil
		}
	}
	head := sub.s.bc.head.Load()
	for n < len(buf) {
		src := sub.ready(&head)
		if len(src) == 0 {
			break
		}
		n += sub.take(buf[n:], src)
	}
	return n
}

// ready returns the notifications published from sub.pos up to head or
// the end of the page holding sub.pos, after skipping what the ring no
// longer holds; none if nothing is published past sub.pos. It reloads
// head if the writer lapped the subscription meanwhile. Caller holds
// sub.mu and does not advance sub.pos past what it returns.
func (sub *Subscription) ready(head *uint64) []Notification {
	bc := sub.s.bc
	for sub.pos < *head {
		if oldest := *head - min(*head, bc.size); sub.pos < oldest {
			sub.pos, sub.page = oldest, nil // fell behind: skip to the oldest held
		}
		p := sub.page
		if p == nil || sub.pos-p.first >= uint64(len(p.ns)) {
			// The writer stores a page before it moves the head past any of
			// its slots, so the table holds this page or, if the writer has
			// lapped us since we loaded the head, a newer one.
			if p = bc.page(sub.pos).Load(); p == nil || p.first != sub.pos&^uint64(len(p.ns)-1) {
				*head = bc.head.Load()
				continue
			}
			sub.page = p
		}
		return p.ns[sub.pos-p.first : min(*head, p.first+uint64(len(p.ns)))-p.first]
	}
	return nil
}

// take consumes notifications from the front of src (slots of sub.page
// from sub.pos) into dst: all of src that fits when the region matches
// every event, else those of src in the region. It advances sub.pos past
// what it read, counts what was lost before it, and returns how many it
// put into dst.
func (sub *Subscription) take(dst, src []Notification) int {
	if sub.all {
		src = src[:min(len(src), len(dst))]
		for i := range src {
			sub.account(src[i].GlobalSequence)
		}
		sub.pos += uint64(len(src))
		return copy(dst, src)
	}
	read, n := 0, 0
	for read < len(src) && n < len(dst) {
		v := &src[read]
		read++
		sub.account(v.GlobalSequence)
		if sub.filter.Matches(v.Coordinate.Entity, v.Coordinate.Scope, uint16(v.Kind), v.Clock) {
			dst[n] = *v
			n++
		}
	}
	sub.pos += uint64(read)
	return n
}

// account notes that the notification of global sequence seq was read,
// counting the region's events published between the previous one read
// and this one as dropped.
func (sub *Subscription) account(seq uint64) {
	if int64(seq) > sub.lastSeq+1 {
		sub.dropped += sub.s.ix.CountMatching(sub.filter, uint64(sub.lastSeq+1), seq)
	}
	sub.lastSeq = int64(seq)
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
