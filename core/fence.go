package core

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/index"
)

// Fence is a visibility fence: writes made through it are written (and
// made durable per the sync setting) but stay invisible — to reads,
// cursors and subscribers — until Commit publishes all of them at once.
// Cancel, or Close on a fence that was neither committed nor cancelled,
// keeps them hidden for ever (they stay on disk, in their entities' clock
// and hash chain). One fence can be open at a time; while it is, ordinary
// writes fail with ErrFenceActive. A fence not ended within its deadline
// (Config.FenceTimeout, or BeginFenceTimeout's) expires: it is cancelled
// as by Cancel, a KindFenceExpired event records it, and Commit, Cancel
// and writes through it fail with ErrFenceExpired. A crash while a fence is open leaves its
// writes hidden after reopen. The tickets of fenced writes resolve at
// Commit (or fail with ErrFenceCancelled). A Fence is safe for concurrent
// use.
type Fence struct {
	s  *Store
	id uint64

	endOnce sync.Once
	endErr  error

	// beginSeg is the segment its begin record went to (0 until written):
	// compaction leaves the segments of an open fence alone.
	beginSeg atomic.Uint32

	timeout time.Duration // its deadline, from begin (see expire)
	expired atomic.Bool   // the deadline passed and cancelled it
	timer   *time.Timer   // writer goroutine only: set at begin, stopped at end
	hidden  int           // events its expiry hid (read after the cancel resolved)

	// writer goroutine only:
	pend []pending               // events written under the fence
	held []*request              // requests answered when the fence ends
	idem map[string]idemOriginal // idempotency keys written under the fence
	ids  pendIDs                 // the ids of pend, when an imported id asks (hasID)
}

// hasID reports whether an event written under the fence in an earlier
// group has id: those are in neither the index nor the group's pend.
// Writer goroutine only.
func (f *Fence) hasID(id EventID) bool { return f.ids.has(f.pend, id) }

// truncatePend cuts pend back to its first n events (a publish taken
// back).
func (f *Fence) truncatePend(n int) {
	f.pend = f.pend[:n]
	f.ids.cut(n)
}

// BeginFence opens a visibility fence. It fails with ErrFenceActive when
// one is already open. The fence expires Config.FenceTimeout after it
// opened (see Fence).
func (s *Store) BeginFence(ctx context.Context) (*Fence, error) {
	return s.BeginFenceTimeout(ctx, s.cfg.FenceTimeout)
}

// BeginFenceTimeout is BeginFence with its own deadline instead of
// Config.FenceTimeout (same range, 1ms..24h; outside it the error is a
// *ConfigError naming FenceTimeout).
func (s *Store) BeginFenceTimeout(ctx context.Context, timeout time.Duration) (*Fence, error) {
	if s.readOnly {
		return nil, ErrReadOnly
	}
	if err := checkFenceTimeout(timeout); err != nil {
		return nil, err
	}
	f := &Fence{s: s, id: uint64(time.Now().UnixNano()), idem: map[string]idemOriginal{}, timeout: timeout}
	if !s.fence.CompareAndSwap(nil, f) {
		return nil, ErrFenceActive
	}
	t, err := s.enqueue(&request{op: opFenceBegin, fence: f, t: newTicket()})
	if err != nil {
		s.fence.CompareAndSwap(f, nil)
		return nil, err
	}
	if _, err := t.Wait(ctx); err != nil {
		if _, done, terr := t.TryCheck(); !done || terr == nil {
			// ctx ended first and the writer opens the fence anyway: have it
			// cancelled right behind, or a fence nobody holds would refuse
			// every ordinary write. (A refused begin cleared s.fence itself.)
			_, _ = s.enqueueFenced(&request{op: opFenceCancel, fence: f, t: newTicket()})
		}
		return nil, err
	}
	return f, nil
}

// Submit queues an event under the fence; its ticket resolves at Commit.
func (f *Fence) Submit(ctx context.Context, coord Coordinate, kind Kind, payload []byte) (*Ticket, error) {
	return f.SubmitWithOptions(ctx, coord, kind, payload, AppendOptions{})
}

// SubmitWithOptions is Submit with AppendOptions.
func (f *Fence) SubmitWithOptions(ctx context.Context, coord Coordinate, kind Kind, payload []byte, opts AppendOptions) (*Ticket, error) {
	r, err := f.s.newAppend(ctx, ActionFence, coord, kind, payload, opts, true)
	if err != nil {
		return nil, err
	}
	r.fence = f
	return f.s.enqueueFenced(r)
}

// SubmitReaction is Submit for a reaction (see Store.AppendReaction).
func (f *Fence) SubmitReaction(ctx context.Context, coord Coordinate, kind Kind, payload []byte, correlation, causation EventID) (*Ticket, error) {
	return f.SubmitWithOptions(ctx, coord, kind, payload, AppendOptions{CorrelationID: correlation, CausationID: causation})
}

// SubmitBatch queues an atomic batch under the fence; its ticket resolves
// at Commit.
func (f *Fence) SubmitBatch(ctx context.Context, items []BatchItem) (*BatchTicket, error) {
	r, err := f.s.newBatch(ctx, ActionFence, items)
	if err != nil || r == nil {
		return emptyOr(r, err)
	}
	r.fence = f
	if _, err := f.s.enqueueFenced(r); err != nil {
		return nil, err
	}
	return r.bt, nil
}

// Outbox returns an outbox whose flushes are written under the fence.
func (f *Fence) Outbox() *Outbox { return &Outbox{s: f.s, fence: f} }

// Commit syncs and publishes every write made under the fence at once,
// then resolves their tickets. Ordinary writes are accepted again.
func (f *Fence) Commit(ctx context.Context) error { return f.end(ctx, opFenceCommit) }

// Cancel ends the fence keeping its writes hidden for ever (they stay on
// disk and in their entities' chains); their tickets fail with
// ErrFenceCancelled.
func (f *Fence) Cancel(ctx context.Context) error { return f.end(ctx, opFenceCancel) }

// Close cancels the fence if it was neither committed nor cancelled, so
// that `defer f.Close()` never leaves a fence open; after Commit, Cancel
// or its expiry it does nothing and returns nil.
func (f *Fence) Close() error {
	err := f.end(context.Background(), opFenceCancel)
	if errors.Is(err, ErrFenceEnded) || errors.Is(err, ErrFenceExpired) {
		return nil
	}
	return err
}

func (f *Fence) end(ctx context.Context, o op) error {
	first := false
	f.endOnce.Do(func() {
		first = true
		t, err := f.s.enqueueFenced(&request{op: o, fence: f, t: newTicket()})
		if err == nil {
			_, err = t.Wait(ctx)
		}
		f.endErr = err
	})
	if !first {
		if f.expired.Load() {
			return fmt.Errorf("%w (fence %d, after %s)", ErrFenceExpired, f.id, f.timeout)
		}
		return ErrFenceEnded
	}
	return f.endErr
}

// enqueueFenced hands a fenced write or fence operation to the writer.
func (s *Store) enqueueFenced(r *request) (*Ticket, error) {
	if s.fence.Load() != r.fence {
		if r.fence.expired.Load() {
			return nil, fmt.Errorf("%w (fence %d, after %s)", ErrFenceExpired, r.fence.id, r.fence.timeout)
		}
		return nil, ErrFenceEnded
	}
	return s.enqueue(r)
}

// fenceMarker writes the marker of a fence operation ending the group.
func (w *writer) fenceMarker(r *request) {
	f := r.fence
	var typ byte
	switch r.op {
	case opFenceBegin:
		if w.fence != nil {
			r.t.err = ErrFenceActive
			return
		}
		typ = format.RecFenceBegin
	default:
		if w.fence != f {
			r.t.err = ErrFenceEnded
			return
		}
		typ = format.RecFenceCommit
		if r.op == opFenceCancel {
			typ = format.RecFenceCancel
		}
	}
	if err := w.makeRoom(format.FrameHeaderSize + format.MarkerSize); err != nil {
		w.fail(err)
		return
	}
	w.buf = format.AppendMarker(w.buf, typ, 0, f.id)
	if r.op == opFenceBegin {
		w.fence = f
		f.beginSeg.Store(w.seg)
	}
}

// endFenceOp finishes a fence operation once its group is written and
// published.
func (w *writer) endFenceOp(r *request) {
	f := r.fence
	err := r.t.err
	if err == nil {
		err = w.failed
	}
	if err != nil {
		if r.op == opFenceBegin {
			if w.fence == f {
				w.fence = nil
			}
			w.s.fence.CompareAndSwap(f, nil)
		}
		r.t.resolve(Receipt{}, err)
		return
	}
	switch r.op {
	case opFenceBegin:
		f.timer = time.AfterFunc(f.timeout, f.expire)
	case opFenceCommit:
		ix := w.s.ix
		ix.Lock()
		for i := range f.pend {
			p := &f.pend[i]
			ix.InsertLocked(p.seq, p.e, p.idem, index.Links{Cause: p.cause, Corr: p.corr})
			p.fenced = false
		}
		ix.Unlock()
		w.notifyPublished(f.pend)
		for _, h := range f.held {
			h.answer()
		}
		w.closeFence(f)
	case opFenceCancel:
		if f.expired.Load() {
			f.hidden = len(f.pend)
			w.cancelFence(errFenceExpiredCancel)
		} else {
			w.cancelFence(ErrFenceCancelled)
		}
	}
	r.t.resolve(Receipt{}, nil)
}

// cancelFence keeps the open fence's events hidden (their entries hold
// their sequences) and fails its tickets with err.
func (w *writer) cancelFence(err error) {
	f := w.fence
	ix := w.s.ix
	ix.Lock()
	for i := range f.pend {
		p := &f.pend[i]
		p.e.Flags |= index.Hidden
		ix.InsertLocked(p.seq, p.e, "", index.Links{})
	}
	ix.Unlock()
	for _, h := range f.held {
		h.fail(fmt.Errorf("%w (fence %d)", err, f.id))
	}
	w.closeFence(f)
}

func (w *writer) closeFence(f *Fence) {
	if f.timer != nil {
		f.timer.Stop()
	}
	f.pend, f.held, f.idem = nil, nil, nil
	w.fence = nil
	w.s.fence.CompareAndSwap(f, nil)
}
