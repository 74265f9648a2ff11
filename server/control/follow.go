package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/batpak-go/batpak/core"
)

// ErrClosed: a following plane (Options.Store) was closed; its changes
// fail with it (reads keep answering from memory). A plane that owns its
// store fails them with the store's error instead (core.ErrClosed).
var ErrClosed = errors.New("control: plane is closed")

// followBatch is how many events the tail reads from the store at a time.
const followBatch = 256

// followIdle is the longest the tail waits for a notification before it
// reads the store again anyway: notifications only wake it (they are
// lossy), the store's log is what it applies.
const followIdle = time.Second

// follower tails the system store in follow mode: it applies every event
// after the plane's position, in global-sequence order, exactly once.
type follower struct {
	cancel context.CancelFunc
	done   chan struct{}
	sub    *core.Subscription
	cur    *core.Cursor

	// replayed is the log end when Open began: the changes below it are
	// Open's replay, not passed to OnChange.
	replayed uint64

	mu      sync.Mutex
	applied uint64        // the global sequence the tail examines next
	err     error         // why the tail stopped (nil while it runs)
	wake    chan struct{} // closed and replaced when applied or err changes
}

// openFollowing starts a Plane over opts.Store: it replays what the store
// holds and keeps applying what it receives.
func openFollowing(opts Options) (*Plane, error) {
	s := opts.Store
	p := &Plane{store: s, defaults: opts.Defaults, onChange: opts.OnChange, st: newState()}
	// Subscribe before the first read: a notification of an event published
	// after it is then never missed (the subscription holds it), so the
	// tail never sleeps on an event it has not read.
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{cancel: cancel, done: make(chan struct{}), sub: s.SubscribeLossy(core.All()), cur: s.Cursor(core.All()), wake: make(chan struct{})}
	p.follow = f
	end := s.Usage().GlobalSequence
	f.replayed = end
	go p.tail(ctx)
	if err := p.WaitApplied(context.Background(), end); err != nil {
		p.stopFollowing()
		return nil, fmt.Errorf("control: replay: %w", err)
	}
	return p, nil
}

// tail reads the store from the start and applies each event; it ends
// when the plane closes, the store fails (or closes) or an event cannot be
// applied, recording why.
func (p *Plane) tail(ctx context.Context) {
	f := p.follow
	defer close(f.done)
	var notes [64]core.Notification
	for {
		if ctx.Err() != nil {
			return
		}
		evs, err := f.cur.Poll(followBatch)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.stop(fmt.Errorf("control: follow the system store: %w", err))
			return
		}
		for _, ev := range evs {
			if ev.Header.Kind.Category() != core.CategorySystem { // not the store's own records
				c, err := decode(ev)
				if err != nil {
					f.stop(fmt.Errorf("control: follow the system store: event %d (%s): %w", ev.GlobalSequence, ev.Coordinate.Entity, err))
					return
				}
				p.mu.Lock()
				p.st.apply(c)
				p.mu.Unlock()
				if p.onChange != nil && ev.GlobalSequence >= f.replayed {
					p.onChange(c.public())
				}
			}
			f.advance(ev.GlobalSequence + 1)
		}
		f.advance(f.cur.Position())
		if len(evs) > 0 {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, followIdle)
		_, err = f.sub.RecvBatch(wctx, notes[:])
		cancel()
		if errors.Is(err, core.ErrSubscriptionClosed) && ctx.Err() == nil {
			// The store is closing: the next Poll says so. Should it not,
			// wait as if idle rather than spin.
			select {
			case <-ctx.Done():
			case <-time.After(followIdle / 10):
			}
		}
	}
}

func (f *follower) advance(pos uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pos <= f.applied {
		return
	}
	f.applied = pos
	close(f.wake)
	f.wake = make(chan struct{})
}

// stop records why the tail stopped (the first reason only) and wakes
// every waiter.
func (f *follower) stop(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return
	}
	f.err = err
	close(f.wake)
	f.wake = make(chan struct{})
}

func (f *follower) state() (applied uint64, wake <-chan struct{}, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied, f.wake, f.err
}

// stopFollowing ends the tail and waits for it; it leaves the store open.
func (p *Plane) stopFollowing() {
	f := p.follow
	f.stop(ErrClosed)
	f.cancel()
	<-f.done
	f.sub.Close()
}

// Following reports whether the plane follows its store (Options.Store).
func (p *Plane) Following() bool { return p.follow != nil }

// Err reports why a following plane stopped applying its store's
// changes: nil while it follows (and always for a plane that does not
// follow), ErrClosed after Close, otherwise the error that stopped it — a
// change this version cannot apply (an unknown kind, written by a newer
// server, or a damaged record) or the store's failure. Once it is not
// nil, reads answer from the last change applied and every change method
// fails with it.
func (p *Plane) Err() error {
	if p.follow == nil {
		return nil
	}
	_, _, err := p.follow.state()
	return err
}

// Applied is the global sequence of the system store up to which the plane
// has applied the log: every event with a smaller sequence is reflected
// in its reads. A plane that does not follow applies its own changes as
// it records them and reports its store's Stats().GlobalSequence.
func (p *Plane) Applied() uint64 {
	if p.follow == nil {
		return p.store.Usage().GlobalSequence
	}
	applied, _, _ := p.follow.state()
	return applied
}

// WaitApplied waits until the plane has applied every event of the system
// store below global sequence seq (a change's Sequence+1, or a replica's
// log end), so that a read made afterwards reflects them. It returns
// ctx's error if ctx ends first, and Err's error if the plane stops
// following before. A plane that does not follow returns at once.
func (p *Plane) WaitApplied(ctx context.Context, seq uint64) error {
	if p.follow == nil {
		return nil
	}
	for {
		applied, wake, err := p.follow.state()
		if applied >= seq {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// lockChange takes the write lock; a following plane then waits until it
// has applied what its store holds, so that the change is validated
// against every change the store had when it began (the compare-and-set
// on the entity's clock still catches one that lands meanwhile). An error
// here is left for record to report.
func (p *Plane) lockChange() {
	p.wmu.Lock()
	if p.follow != nil {
		_ = p.WaitApplied(context.Background(), p.store.Usage().GlobalSequence)
	}
}

// TenantID returns the tenant the change is about, from its payload (""
// for the operator credential).
func (c Change) TenantID() string {
	switch {
	case strings.HasPrefix(c.Entity, "tenant:"):
		return strings.TrimPrefix(c.Entity, "tenant:")
	case c.Entity == OperatorEntity:
		return ""
	}
	var b struct {
		Tenant string `json:"tenant"`
	}
	if err := json.Unmarshal(c.Payload, &b); err != nil {
		return ""
	}
	return b.Tenant
}
