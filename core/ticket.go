package core

import (
	"context"
)

// Ticket is the pending result of Submit. It resolves once the writer has
// written the event (and synced it, when the sync setting asks for that).
// A Ticket is safe for concurrent use.
type Ticket struct {
	c       completion
	receipt Receipt
	err     error
}

func newTicket() *Ticket { return &Ticket{} }

func (t *Ticket) resolve(r Receipt, err error) {
	t.receipt, t.err = r, err
	t.c.complete()
}

// Wait blocks until the write is acknowledged or ctx ends. When ctx ends
// first it returns ctx.Err(); the write itself is not cancelled and may
// still happen.
func (t *Ticket) Wait(ctx context.Context) (Receipt, error) {
	if err := t.c.wait(ctx); err != nil {
		return Receipt{}, err
	}
	if t.err == nil {
		noteWritten(ctx, t.receipt.GlobalSequence+1)
	}
	return t.receipt, t.err
}

// TryCheck reports the result without blocking: done is false while the
// write is still pending.
func (t *Ticket) TryCheck() (r Receipt, done bool, err error) {
	if !t.c.resolved() {
		return Receipt{}, false, nil
	}
	return t.receipt, true, t.err
}

// Done is closed when the ticket resolves; then TryCheck returns the result.
func (t *Ticket) Done() <-chan struct{} { return t.c.done() }

// WriterPressure is a snapshot of the writer mailbox.
type WriterPressure struct {
	QueueLen int // writes waiting for the writer
	Capacity int // Config.ChannelCapacity
}

// Utilization is QueueLen/Capacity in [0, 1].
func (p WriterPressure) Utilization() float64 {
	if p.Capacity == 0 {
		return 0
	}
	return float64(p.QueueLen) / float64(p.Capacity)
}

// Headroom is how many more writes fit before Submit blocks.
func (p WriterPressure) Headroom() int { return max(p.Capacity-p.QueueLen, 0) }

// IsIdle reports an empty mailbox.
func (p WriterPressure) IsIdle() bool { return p.QueueLen == 0 }
