package core

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// Causation says which event caused a batch item.
type Causation struct {
	kind  uint8 // causeNone, causeEvent or causePriorItem
	id    EventID
	index int
}

// The kinds of Causation.
const (
	causeNone uint8 = iota
	causeEvent
	causePriorItem
)

// NoCausation: the item is a root cause (unless Options.CausationID says
// otherwise). It is the zero value.
func NoCausation() Causation { return Causation{} }

// CausedBy names an event (usually one already stored) as the cause.
func CausedBy(id EventID) Causation { return Causation{kind: causeEvent, id: id} }

// PriorItem names an earlier item of the same batch as the cause. The item
// also takes that item's correlation id unless its options set one.
func PriorItem(index int) Causation { return Causation{kind: causePriorItem, index: index} }

// Event returns the cause CausedBy named, and whether the causation is one.
func (c Causation) Event() (EventID, bool) { return c.id, c.kind == causeEvent }

// Prior returns the item index PriorItem named, and whether the causation
// is one.
func (c Causation) Prior() (int, bool) { return c.index, c.kind == causePriorItem }

// BatchItem is one event of an atomic batch.
type BatchItem struct {
	Coordinate Coordinate
	Kind       Kind
	Payload    []byte
	Options    AppendOptions
	Causation  Causation
}

// AppendBatch writes items atomically and waits: all of them become
// visible together — to readers, cursors and subscribers — or none does,
// across segment rotation and across a crash at any byte. Items of the same
// entity continue its clock and hash chain in order. Items may carry
// compare-and-set expectations (checked in order, each seeing the items
// before it): if any fails, nothing is written and the error is a
// *BatchItemError naming the item. Items may carry idempotency keys: a
// retry whose keys are all stored returns the original receipts
// (Deduplicated set); a batch mixing stored keys with new keys or with
// items without a key fails with ErrBatchMixedKeys: a batch that may be
// retried needs a key on every item. An empty batch returns no receipts and no error.
// Limits: Config.Batch.MaxSize items and MaxBytes of payload
// (ErrBatchTooLarge). The batch is synced like any other write: it shares a
// group commit — one write call, one fsync — with whatever else is queued
// (other batches included); its failure fails only itself.
func (s *Store) AppendBatch(ctx context.Context, items []BatchItem) ([]Receipt, error) {
	t, err := s.SubmitBatch(ctx, items)
	if err != nil {
		return nil, err
	}
	return t.Wait(ctx)
}

// SubmitBatch validates the batch and queues it without waiting; the
// ticket resolves with one receipt per item. Payloads are copied.
func (s *Store) SubmitBatch(ctx context.Context, items []BatchItem) (*BatchTicket, error) {
	r, err := s.newBatch(ctx, ActionBatch, items)
	if err != nil || r == nil {
		return emptyOr(r, err)
	}
	if _, err := s.enqueue(r); err != nil {
		return nil, err
	}
	return r.bt, nil
}

// TrySubmitBatch is SubmitBatch that never blocks: under back-pressure it
// returns a *RetryError, while a fence is active a *CancelledError.
func (s *Store) TrySubmitBatch(ctx context.Context, items []BatchItem) (*BatchTicket, error) {
	r, err := s.newBatch(ctx, ActionBatch, items)
	if err != nil || r == nil {
		return emptyOr(r, err)
	}
	if _, err := s.tryEnqueue(r); err != nil {
		return nil, err
	}
	return r.bt, nil
}

// AppendReactionBatch writes items atomically, as AppendBatch does, as
// reactions to the event causation in the conversation correlation: every
// item gets correlation as its correlation id, and every item that names
// no cause of its own (NoCausation and a zero Options.CausationID) gets
// causation as its cause; PriorItem and CausedBy items keep theirs. Items
// may carry the named effect kinds (see Kind). The gate sees the batch as
// ActionReaction. Errors and limits as AppendBatch; items is not changed.
func (s *Store) AppendReactionBatch(ctx context.Context, correlation, causation EventID, items []BatchItem) ([]Receipt, error) {
	own := make([]BatchItem, len(items))
	for i, it := range items {
		it.Options.CorrelationID = correlation
		if it.Causation.kind == causeNone && it.Options.CausationID.IsZero() {
			it.Options.CausationID = causation
		}
		own[i] = it
	}
	r, err := s.newBatch(ctx, ActionReaction, own)
	if err != nil || r == nil {
		return nil, err
	}
	if _, err := s.enqueue(r); err != nil {
		return nil, err
	}
	return r.bt.Wait(ctx)
}

// emptyOr turns newBatch's "nothing to write" into a resolved ticket.
func emptyOr(r *request, err error) (*BatchTicket, error) {
	if err != nil {
		return nil, err
	}
	bt := &BatchTicket{}
	bt.resolve(nil, nil)
	return bt, nil
}

// newBatch validates and admits a batch on the caller's goroutine and
// prepares it; it returns a nil request for an empty batch.
func (s *Store) newBatch(ctx context.Context, action Action, items []BatchItem) (*request, error) {
	if s.readOnly {
		return nil, ErrReadOnly
	}
	if len(items) == 0 {
		return nil, nil
	}
	total, err := s.checkBatchLimits(items)
	if err != nil {
		return nil, err
	}
	evs := make([]eventReq, len(items))
	// The payloads are copied into one buffer (one allocation), and the
	// ids drawn together (one hold of the id source's lock) once every
	// item has passed its checks: a refused batch draws none, so refusals
	// cannot push the ids' clock ahead. Until then an item that takes a
	// new id holds provisionalID, for the checks that only need an id to
	// be there (an effect's causation from a PriorItem).
	payloads := make([]byte, 0, total)
	keys := map[string]int{}
	fresh := 0
	for i := range items {
		it := &items[i]
		opts, err := resolveCausation(i, it, evs)
		if err != nil {
			return nil, err
		}
		if k := opts.IdempotencyKey; k != "" {
			if j, dup := keys[k]; dup {
				return nil, &BatchItemError{Index: i, Err: fmt.Errorf("%w: idempotency key %q is also item %d's", ErrInvalidOptions, k, j)}
			}
			keys[k] = i
		}
		at := len(payloads)
		payloads = append(payloads, it.Payload...)
		ev, err := s.prepareUnhashed(it.Coordinate, it.Kind, payloads[at:len(payloads):len(payloads)], opts, action == ActionReaction, provisionalID)
		if err != nil {
			return nil, &BatchItemError{Index: i, Err: err}
		}
		if !ev.imported {
			fresh++
		}
		evs[i] = ev
	}
	hashPayloads(evs)
	ids := make([]EventID, fresh)
	eventIDs.fill(ids)
	for i := range evs {
		if !evs[i].imported {
			evs[i].id, ids = ids[0], ids[1:]
		}
		if items[i].Causation.kind == causePriorItem {
			// The prior item's id (and correlation) is known now.
			opts, _ := resolveCausation(i, &items[i], evs)
			evs[i].opts.CausationID, evs[i].opts.CorrelationID = opts.CausationID, opts.CorrelationID
		}
	}
	if err := s.admitBatch(ctx, action, evs); err != nil {
		return nil, err
	}
	return &request{op: opBatch, items: evs, bt: &BatchTicket{}}, nil
}

// provisionalID stands for the id a batch item will be given, while its
// batch is checked (see newBatch); it is never written.
var provisionalID = EventID{15: 1}

// checkBatchLimits refuses a batch over Config.Batch's item or payload
// bounds with ErrBatchTooLarge; it returns the batch's payload bytes.
func (s *Store) checkBatchLimits(items []BatchItem) (int, error) {
	if len(items) > s.cfg.Batch.MaxSize {
		return 0, fmt.Errorf("%w: %d items, the limit is %d (Config.Batch.MaxSize)", ErrBatchTooLarge, len(items), s.cfg.Batch.MaxSize)
	}
	total := 0
	for i := range items {
		total += len(items[i].Payload)
	}
	if total > s.cfg.Batch.MaxBytes {
		return 0, fmt.Errorf("%w: %d payload bytes, the limit is %d (Config.Batch.MaxBytes)", ErrBatchTooLarge, total, s.cfg.Batch.MaxBytes)
	}
	return total, nil
}

// resolveCausation returns item i's options with its Causation turned
// into a causation id (and, for PriorItem, the prior item's correlation
// when it names none); evs holds the items before it.
func resolveCausation(i int, it *BatchItem, evs []eventReq) (AppendOptions, error) {
	opts := it.Options
	switch c := it.Causation; c.kind {
	case causeEvent:
		opts.CausationID = c.id
	case causePriorItem:
		if c.index < 0 || c.index >= i {
			return opts, &BatchItemError{Index: i, Err: errPriorItem(c.index)}
		}
		opts.CausationID = evs[c.index].id
		if opts.CorrelationID.IsZero() {
			opts.CorrelationID = evs[c.index].opts.CorrelationID
			if opts.CorrelationID.IsZero() {
				opts.CorrelationID = evs[c.index].id
			}
		}
	}
	return opts, nil
}

// completion is the resolve-once machinery shared by Ticket and
// BatchTicket: a flag for the fast path and a channel made only when
// someone waits before resolution.
type completion struct {
	state atomic.Uint32 // 0 pending, 1 resolved
	mu    sync.Mutex
	ch    chan struct{}
}

// closedChan is what Done returns for a resolved ticket.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *completion) complete() {
	c.mu.Lock()
	c.state.Store(1)
	ch := c.ch
	c.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

func (c *completion) resolved() bool { return c.state.Load() == 1 }

func (c *completion) done() <-chan struct{} {
	if c.resolved() {
		return closedChan
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.resolved() {
		return closedChan
	}
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

// wait blocks until resolution or ctx ends.
func (c *completion) wait(ctx context.Context) error {
	if c.resolved() {
		return nil
	}
	cancel := ctx.Done()
	if cancel == nil { // a context that never ends: a plain receive
		<-c.done()
		return nil
	}
	select {
	case <-c.done():
		return nil
	case <-cancel:
		return ctx.Err()
	}
}

// BatchTicket is the pending result of SubmitBatch: one receipt per item,
// in item order, or the error that refused the whole batch.
type BatchTicket struct {
	c        completion
	receipts []Receipt
	err      error
}

func (t *BatchTicket) resolve(rs []Receipt, err error) {
	t.receipts, t.err = rs, err
	t.c.complete()
}

// Wait blocks until the batch is acknowledged or ctx ends (then it returns
// ctx.Err() and the batch may still be written).
func (t *BatchTicket) Wait(ctx context.Context) ([]Receipt, error) {
	if err := t.c.wait(ctx); err != nil {
		return nil, err
	}
	if t.err == nil && len(t.receipts) > 0 {
		end := uint64(0)
		for i := range t.receipts {
			end = max(end, t.receipts[i].GlobalSequence+1)
		}
		noteWritten(ctx, end)
	}
	return t.receipts, t.err
}

// TryCheck reports the result without blocking; done is false while the
// batch is pending.
func (t *BatchTicket) TryCheck() (receipts []Receipt, done bool, err error) {
	if !t.c.resolved() {
		return nil, false, nil
	}
	return t.receipts, true, t.err
}

// Done is closed when the ticket resolves.
func (t *BatchTicket) Done() <-chan struct{} { return t.c.done() }

func errPriorItem(index int) error {
	return fmt.Errorf("%w: PriorItem(%d) must name an earlier item", ErrInvalidOptions, index)
}
