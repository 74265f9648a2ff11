package follow

import (
	"errors"
	"fmt"
	"math"

	"github.com/batpak-go/batpak/core"
	"golang.org/x/sync/semaphore"
)

// Frame is one event as its subscribers receive it: the event's global
// sequence and its encoding (Options.Encode). Data is shared by every
// subscriber that receives the event: read it, never modify it.
type Frame struct {
	Seq  uint64
	Data []byte
}

// Start is where a subscription begins: FromBeginning, or After a global
// sequence. The zero Start is FromBeginning.
type Start struct{ next uint64 }

// FromBeginning starts before the first event of the log.
func FromBeginning() Start { return Start{} }

// After starts with the first event of the region whose global sequence
// is greater than seq: the sequence a client last saw (an SSE client's
// Last-Event-ID).
func After(seq uint64) Start {
	if seq == math.MaxUint64 {
		return Start{next: math.MaxUint64} // refused by Subscribe: past any log end
	}
	return Start{next: seq + 1}
}

// After reports the sequence s starts after; ok is false for
// FromBeginning.
func (s Start) After() (seq uint64, ok bool) {
	if s.next == 0 {
		return 0, false
	}
	return s.next - 1, true
}

// String renders s as "beginning" or "after N".
func (s Start) String() string {
	if seq, ok := s.After(); ok {
		return fmt.Sprintf("after %d", seq)
	}
	return "beginning"
}

// Why a subscription ended. Each comes wrapped in an *EndError that
// carries the position to resume from.
var (
	// ErrSlowConsumer: the subscriber's unsent backlog passed
	// Options.MaxBacklogEvents or Options.MaxBacklogBytes.
	ErrSlowConsumer = errors.New("follow: subscriber fell too far behind")
	// ErrStoreClosed: the store the hub follows closed.
	ErrStoreClosed = errors.New("follow: store closed")
	// ErrHubClosed: Hub.Close or Set.Close ended every subscription
	// (server shutdown).
	ErrHubClosed = errors.New("follow: hub closed")
	// ErrSubscriptionClosed: Next was called after Close.
	ErrSubscriptionClosed = errors.New("follow: subscription closed")
	// ErrStartAhead: Subscribe was given a start past the end of the log.
	ErrStartAhead = errors.New("follow: start is past the end of the log")
)

// EndError ends a subscription: Cause says why (ErrSlowConsumer,
// ErrStoreClosed, ErrHubClosed, or the store's read error), Resume where
// to start a new subscription of the same region so that it continues
// with no gap and no repeat: after the last event delivered (the
// subscription's own start when it delivered none). It matches its Cause
// with errors.Is.
type EndError struct {
	Cause  error
	Resume Start
}

func (e *EndError) Error() string {
	return fmt.Sprintf("%v (resume %v)", e.Cause, e.Resume)
}

func (e *EndError) Unwrap() error { return e.Cause }

// Options configure a Hub (or every hub of a Set). Zero fields take their
// defaults; a value out of range makes New and NewSet fail with an error
// naming the field and its range.
type Options struct {
	// Encode turns an event into the bytes its subscribers receive (for
	// SSE, the event's JSON). Required. The hub calls it once per event for
	// every subscriber that reads the event live; a subscriber catching up
	// on events older than the hub's ring encodes those itself. It must not
	// keep or change the event, and must be safe for concurrent use; the
	// bytes it returns are shared read-only by every subscriber.
	Encode func(core.StoredEvent) []byte
	// MaxBacklogEvents bounds a live subscriber's unsent backlog: when more
	// than this many events of its region are waiting for Next, it is cut
	// off (ErrSlowConsumer). It is also the most events one Next returns.
	// Default 4096; range 1..1<<20.
	MaxBacklogEvents int
	// MaxBacklogBytes is the same bound in encoded bytes (a backlog of one
	// frame larger than it is still delivered). Default 16 MiB; range
	// 1 KiB..1 GiB.
	MaxBacklogBytes int64
	// RingEvents is how many recent frames the hub keeps for its live
	// subscribers; a subscriber further behind reads the store instead.
	// Default 8192; range 16..1<<20.
	RingEvents int
	// RingBytes bounds the encoded bytes the ring holds (the newest frame
	// is kept whatever its size). Default 32 MiB; range 64 KiB..4 GiB.
	RingBytes int64
	// PollEvents is how many events the hub reads from the store per step.
	// Default 1024; range 1..1<<16.
	PollEvents int
	// StoreReadBytes bounds what subscriptions read from the store
	// (catching up, or live and fallen behind the ring) and hold at once,
	// from a Next until the next one: all hubs of a Set (or a lone Hub)
	// together, and one hub (one store, a tenant's) at most a quarter of
	// it. Each step from the store counts twice its payload bound (the
	// events, and the frames made of them) and at least what its frames
	// take. A Next that finds no room waits for it, within its context:
	// subscribers whose clients stop reading hold their share, not memory
	// without bound. Default 256 MiB; range 4 MiB..64 GiB.
	StoreReadBytes int64
	// Starved, when set, is called when a Next finds no room in
	// StoreReadBytes, before it waits: the server cuts off then the
	// streams whose clients stopped reading (what they hold comes back
	// when their subscriptions close). It must not block.
	Starved func()
}

// budget is StoreReadBytes: the whole, shared by a Set's hubs, and each
// hub's share of it.
type budget struct {
	all      *semaphore.Weighted
	shareCap int64  // a hub's share: a quarter, and at least one step's charge
	starved  func() // Options.Starved (nil: none)
}

func newBudget(total int64, starved func()) *budget {
	return &budget{all: semaphore.NewWeighted(total), shareCap: max(total/4, 2*catchUpBytes), starved: starved}
}

// share is a new hub's part of b.
func (b *budget) share() *semaphore.Weighted { return semaphore.NewWeighted(b.shareCap) }

// Defaults of Options.
const (
	DefaultMaxBacklogEvents = 4096
	DefaultMaxBacklogBytes  = 16 << 20
	DefaultRingEvents       = 8192
	DefaultRingBytes        = 32 << 20
	DefaultPollEvents       = 1024
	DefaultStoreReadBytes   = 256 << 20
)

// withDefaults fills zero fields and checks the ranges.
func (o Options) withDefaults() (Options, error) {
	if o.Encode == nil {
		return o, errors.New("follow: Options.Encode is required")
	}
	if o.MaxBacklogEvents == 0 {
		o.MaxBacklogEvents = DefaultMaxBacklogEvents
	}
	if o.MaxBacklogBytes == 0 {
		o.MaxBacklogBytes = DefaultMaxBacklogBytes
	}
	if o.RingEvents == 0 {
		o.RingEvents = DefaultRingEvents
	}
	if o.RingBytes == 0 {
		o.RingBytes = DefaultRingBytes
	}
	if o.PollEvents == 0 {
		o.PollEvents = DefaultPollEvents
	}
	if o.StoreReadBytes == 0 {
		o.StoreReadBytes = DefaultStoreReadBytes
	}
	checks := []struct {
		name      string
		v, lo, hi int64
	}{
		{"MaxBacklogEvents", int64(o.MaxBacklogEvents), 1, 1 << 20},
		{"MaxBacklogBytes", o.MaxBacklogBytes, 1 << 10, 1 << 30},
		{"RingEvents", int64(o.RingEvents), 16, 1 << 20},
		{"RingBytes", o.RingBytes, 64 << 10, 4 << 30},
		{"PollEvents", int64(o.PollEvents), 1, 1 << 16},
		{"StoreReadBytes", o.StoreReadBytes, 4 << 20, 64 << 30},
	}
	for _, c := range checks {
		if c.v < c.lo || c.v > c.hi {
			return o, fmt.Errorf("follow: Options.%s = %d is out of range %d..%d", c.name, c.v, c.lo, c.hi)
		}
	}
	return o, nil
}

// Stats describe a hub (or, summed, a Set) for metrics.
type Stats struct {
	Subscribers int   // open subscriptions
	Running     bool  // the hub is following its store (it has subscribers)
	RingFrames  int   // frames held in the ring now
	RingBytes   int64 // their encoded bytes
	// Published is the global sequence a hub has followed its store to
	// (exclusive): every event before it is in the ring or behind it. A
	// Set's sum leaves it zero (its stores' sequences are unrelated).
	Published uint64
	Encoded   uint64 // Encode calls, live and catch-up
	CutOff    uint64 // subscriptions ended with ErrSlowConsumer
}
