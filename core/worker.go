package core

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WorkerAction is a handler's answer: go on, or stop the worker.
type WorkerAction int

const (
	// Continue: commit the batch's position and deliver the next batch.
	Continue WorkerAction = iota
	// Stop: commit the batch's position and stop the worker (Join returns nil).
	Stop
)

// Handler processes one batch of events of a cursor worker. The batch's
// position is committed after it returns Continue or Stop; an error or a
// panic instead restarts the worker from the last committed position
// (at-least-once delivery), within the restart budget — unless the worker
// was being stopped (Join returns nil) or the store closing (ErrClosed):
// those end it without spending the budget. The handler runs on the
// worker's goroutine and may write to the store.
type Handler func(ctx context.Context, batch []StoredEvent) (WorkerAction, error)

// RestartPolicy bounds how often a failing handler is restarted.
type RestartPolicy struct {
	max    int
	within time.Duration // 0: over the worker's life
}

// RestartOnce allows one restart over the worker's life (the default).
func RestartOnce() RestartPolicy { return RestartPolicy{max: 1} }

// RestartNever stops the worker at the first failure.
func RestartNever() RestartPolicy { return RestartPolicy{max: 0} }

// RestartBounded allows max restarts within any window of length within.
func RestartBounded(max int, within time.Duration) RestartPolicy {
	return RestartPolicy{max: max, within: within}
}

// WorkerConfig configures a cursor worker. Zero fields take the defaults.
type WorkerConfig struct {
	// Name makes the worker's position durable (a named cursor): a worker
	// started again with the same name resumes after the last batch its
	// handler finished, even after a restart of the process.
	Name string
	// BatchSize is the most events per handler call. Default 64.
	BatchSize int
	// BatchBytes bounds a handler call's events in bytes as
	// Cursor.PollBytes counts them (a call gets at least one event): a
	// handler that copies its batch elsewhere (a plugin's memory) needs
	// it to fit. 0: no bound.
	BatchBytes int
	// IdleSleep is the longest the worker waits for new events before
	// polling again (it also wakes as soon as the store publishes). Default 10ms.
	IdleSleep time.Duration
	// Restart is the restart budget. Default RestartOnce().
	Restart *RestartPolicy
	// Turn, when set, is taken before each poll that can find events (the
	// log holds events past the worker's position) and released once the
	// handler has returned: a host running many workers over many stores
	// passes one to bound how many hold a batch at once, so a worker
	// waiting for its turn holds no events. An error from Turn ends the
	// worker: with nil from Join when ctx ended, with Turn's error
	// otherwise. Turn may block; it must honour ctx.
	Turn func(ctx context.Context) (release func(), err error)
}

// Worker runs a handler over a cursor on its own goroutine.
type Worker struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error

	mu       sync.Mutex
	restarts int
}

// CursorWorker starts a worker that feeds the events of r, in order and in
// batches, to handler. It stops when the handler answers Stop, when Stop
// is called or ctx ends (Join returns nil), when the restart budget is
// exhausted (Join returns a *WorkerError) or when the store closes (Join
// returns ErrClosed).
//
// The position commits after each batch the handler finished. For a named
// worker the commit is durable, and made so only after the log is on
// stable storage past the writes the handler made with the context it
// was handed (Append, AppendBatch, a ticket's Wait: React's reactions, a
// plugin's): on a store that syncs every N events, a reaction is never
// lost to a power loss while the position past its source survives (the
// commit costs a sync only when such writes are not yet stable).
func (s *Store) CursorWorker(ctx context.Context, r Region, cfg WorkerConfig, handler Handler) (*Worker, error) {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 64
	}
	if cfg.IdleSleep <= 0 {
		cfg.IdleSleep = 10 * time.Millisecond
	}
	policy := RestartOnce()
	if cfg.Restart != nil {
		policy = *cfg.Restart
	}
	cur := s.Cursor(r)
	if cfg.Name != "" {
		var err error
		if cur, err = s.NamedCursor(cfg.Name, r); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Worker{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer cancel()
		w.err = w.run(ctx, s, cur, cfg, policy, handler)
	}()
	return w, nil
}

// Stop asks the worker to stop after the batch in hand; Join waits for it.
func (w *Worker) Stop() { w.cancel() }

// Join waits for the worker to end and says why it ended: nil for a Stop
// (by the handler, Stop or ctx), a *WorkerError when its handler kept
// failing, or the store's error (ErrClosed, a read error).
func (w *Worker) Join() error {
	<-w.done
	return w.err
}

// Done is closed when the worker has ended.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Restarts counts the handler failures the worker recovered from so far.
func (w *Worker) Restarts() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.restarts
}

func (w *Worker) run(ctx context.Context, s *Store, cur *Cursor, cfg WorkerConfig, policy RestartPolicy, handler Handler) error {
	var failures []time.Time
	mark := &writeMark{}
	hctx := context.WithValue(ctx, writeMarkKey{}, mark)
	for {
		if ctx.Err() != nil {
			return nil
		}
		wake := s.bc.changed()
		release := func() {}
		poll := cfg.Turn == nil || cur.pending()
		if poll && cfg.Turn != nil {
			r, err := cfg.Turn(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			release = r
		}
		var batch []StoredEvent
		var err error
		if poll {
			batch, _, err = cur.PollBytes(cfg.BatchSize, cfg.BatchBytes)
		}
		if err != nil {
			release()
			return err
		}
		if len(batch) == 0 {
			release()
			t := time.NewTimer(cfg.IdleSleep)
			select {
			case <-wake:
			case <-t.C:
			case <-ctx.Done():
			case <-s.bc.shut:
			}
			t.Stop()
			continue
		}
		mark.end.Store(0)
		action, err := callHandler(hctx, handler, batch)
		release()
		if err != nil {
			// Neither a stop nor a closing store is the handler failing:
			// restarting would not help, and the budget is not spent.
			if ctx.Err() != nil {
				return nil
			}
			if s.closing() {
				return ErrClosed
			}
			now := time.Now()
			failures = append(failures, now)
			if policy.within > 0 {
				kept := failures[:0]
				for _, f := range failures {
					if now.Sub(f) <= policy.within {
						kept = append(kept, f)
					}
				}
				failures = kept
			}
			if len(failures) > policy.max {
				return &WorkerError{Restarts: w.Restarts(), Err: err}
			}
			w.mu.Lock()
			w.restarts++
			w.mu.Unlock()
			cur.Rewind()
			continue
		}
		// What the handler wrote with the context it was handed (its
		// reactions) was acknowledged before it returned: the position is
		// made durable only after those writes, so a power loss never
		// leaves a committed position past sources whose reactions are
		// lost.
		if err := cur.commitAfter(mark.end.Load()); err != nil {
			return err
		}
		if action == Stop {
			return nil
		}
	}
}

// closing reports whether Close has begun (writes fail with ErrClosed).
func (s *Store) closing() bool {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	return s.closed || s.shut.Load()
}

// callHandler runs handler, turning a panic into an error.
func callHandler(ctx context.Context, h Handler, batch []StoredEvent) (a WorkerAction, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v\n%s", ErrHandlerPanic, p, debug.Stack())
		}
	}()
	return h(ctx, batch)
}

// Reaction is an event a React function derives from a source event.
type Reaction struct {
	Coordinate Coordinate
	Kind       Kind
	Payload    []byte
	Options    AppendOptions // CorrelationID and CausationID are set by React
}

// React runs fn over every event of r (a cursor worker) and appends the
// events it returns, with correlation = the source's correlation and
// causation = the source's id, through the store's ordinary write path.
// The reactions to one source are written as one atomic batch whose items
// carry idempotency keys derived from the worker's name and the source id
// (unless fn sets its own), so a redelivery after a restart does not write
// them twice, and reactors of different names reacting to the same event
// do not collide. Unnamed reactors share one key space: give each reactor
// a name when several react to the same events.
//
// fn need not answer a redelivered source as it did the first time (it
// may read a clock or draw an id): when the reactions a source had are
// already stored under its derived keys, at the places and of the kinds
// fn names again, and fn now returns other payloads or more of them, the
// reactions written first stand, none is written twice, the store's
// Logger warns, and the worker goes on (KeptReactions). A key
// stored for another place or kind — another reactor's, unnamed reactors
// sharing their keys — fails the handler as before.
func (s *Store) React(ctx context.Context, r Region, cfg WorkerConfig, fn func(ctx context.Context, ev StoredEvent) ([]Reaction, error)) (*Worker, error) {
	return s.CursorWorker(ctx, r, cfg, func(ctx context.Context, batch []StoredEvent) (WorkerAction, error) {
		for _, ev := range batch {
			out, err := fn(ctx, ev)
			if err != nil {
				return Continue, err
			}
			if len(out) == 0 {
				continue
			}
			items := make([]BatchItem, len(out))
			derived := true // every key is the reactor's own for this source
			for i, re := range out {
				opts := re.Options
				opts.CorrelationID = ev.Header.CorrelationID
				opts.CausationID = ev.Header.ID
				if opts.IdempotencyKey == "" {
					opts.IdempotencyKey = reactionKey(cfg.Name, ev.Header.ID, i)
				} else {
					derived = false
				}
				items[i] = BatchItem{Coordinate: re.Coordinate, Kind: re.Kind, Payload: re.Payload, Options: opts}
			}
			if _, err := s.AppendBatch(WithAction(ctx, ActionReaction), items); err != nil {
				prefix := reactionKeyPrefix(cfg.Name, ev.Header.ID)
				if derived && s.storedAlike(items) && s.KeptReactions(ctx, err, prefix, items) {
					s.cfg.Logger.Warn("batpak: reactions to this event were written before and are kept (the reactor now answers otherwise)",
						"reactor", cfg.Name, "event", ev.Header.ID.String(), "err", err)
					continue
				}
				return Continue, fmt.Errorf("batpak: react to %s: %w", ev.Header.ID, err)
			}
		}
		return Continue, nil
	})
}

// KeptReactions reports whether err, returned by AppendBatch for items —
// the reactions to one source event, whose idempotency keys all begin
// with prefix (a worker's keys for that source, numbered after it) —
// says that reactions to the source were stored before under those keys
// and the handler now answers otherwise: an *IdempotencyError on a key
// with the prefix (a reaction with another payload, kind or place), or
// ErrBatchMixedKeys (more reactions than were stored). A worker that gets
// true keeps the reactions written first and goes on: writing nothing
// then is what makes a redelivery write each reaction once, however the
// handler's answer changed. A named worker handed ctx (CursorWorker)
// then commits its position only once those stored reactions are
// durable, as it does for the reactions its handler writes.
func (s *Store) KeptReactions(ctx context.Context, err error, prefix string, items []BatchItem) bool {
	var ie *IdempotencyError
	if !errors.Is(err, ErrBatchMixedKeys) && !(errors.As(err, &ie) && strings.HasPrefix(ie.Key, prefix)) {
		return false
	}
	var end uint64
	for i := range items {
		s.ix.RLock()
		seq, ok := s.ix.Idem(items[i].Options.IdempotencyKey)
		s.ix.RUnlock()
		if ok {
			end = max(end, uint64(seq)+1)
		}
	}
	noteWritten(ctx, end)
	return true
}

// KeyHolder returns the id of the visible or hidden event stored under the
// idempotency key, and whether there is one: a worker judging what it
// wrote before (its reactions' keys) looks them up without reading an
// event. Keys of events a compaction removed are forgotten.
func (s *Store) KeyHolder(key string) (EventID, bool) {
	s.ix.RLock()
	defer s.ix.RUnlock()
	seq, ok := s.ix.Idem(key)
	if !ok || seq >= s.ix.Len() {
		return EventID{}, false
	}
	return s.ix.At(seq).ID, true
}

// storedAlike reports whether every item whose idempotency key the store
// already holds names the coordinate and kind of the event stored under
// it: a reactor's answer to a redelivered source may differ in payloads
// (or count), never in where and what, unless the key is another's.
func (s *Store) storedAlike(items []BatchItem) bool {
	for i := range items {
		it := &items[i]
		s.ix.RLock()
		seq, ok := s.ix.Idem(it.Options.IdempotencyKey)
		s.ix.RUnlock()
		if !ok {
			continue
		}
		o, err := s.idemOriginal(seq)
		if err != nil || o.coord != it.Coordinate || o.kind != it.Kind {
			return false
		}
	}
	return true
}

// writeMark collects the end (highest global sequence + 1) of the writes
// made with a context carrying it (writeMarkKey), as their tickets'
// Wait returns: a worker hands its handler such a context and commits its
// position only once the log is durable past them.
type writeMark struct{ end atomic.Uint64 }

type writeMarkKey struct{}

// noteWritten raises the write mark ctx carries, if any, to end.
func noteWritten(ctx context.Context, end uint64) {
	m, _ := ctx.Value(writeMarkKey{}).(*writeMark)
	if m == nil {
		return
	}
	for {
		old := m.end.Load()
		if end <= old || m.end.CompareAndSwap(old, end) {
			return
		}
	}
}

// reactionKey is the idempotency key of the i-th reaction of a reactor
// named name (possibly "") to the event src.
func reactionKey(name string, src EventID, i int) string {
	return reactionKeyPrefix(name, src) + strconv.Itoa(i)
}

// reactionKeyPrefix is what every reactionKey of name for src begins with.
func reactionKeyPrefix(name string, src EventID) string {
	if name == "" {
		return "react:" + src.String() + ":"
	}
	return "react:" + name + ":" + src.String() + ":"
}
