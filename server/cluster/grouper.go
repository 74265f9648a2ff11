package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/core"
)

// The leader's write groups: writes proposed while earlier entries are
// still on their way to a quorum wait in a queue, and the next entry
// carries all of them (a write group, op 4 of the command format). Each
// raft entry costs every node an encoding, a key in raft.db and an apply
// of its own, whatever it holds, so a quorum round that carries one entry
// of 64 writes instead of 64 entries of one does far less work on every
// node. Writes keep their order, their own results and their own
// refusals: the group only shares the entry.

const (
	// groupInFlight is how many entries of writes the leader keeps on
	// their way to a quorum at once; while they are, new writes gather for
	// the next. Two lets one entry be replicated while the next is written
	// to the leader's log.
	groupInFlight = 2
	// groupMaxWrites and groupMaxBytes bound one write group entry (a
	// write larger than groupMaxBytes goes in an entry of its own).
	groupMaxWrites = 1024
	groupMaxBytes  = 4 << 20
	// groupGather is the longest the leader waits, once a slot is free,
	// for as many writes as the last entry answered to be queued: clients
	// writing in a loop resubmit right after their answers, and an entry
	// proposed before they have would carry a few of them and leave the
	// rest to the next (small entries, more rounds). It is short next to a
	// quorum round (a few milliseconds on loopback).
	groupGather = 500 * time.Microsecond
	// groupMaxQueued and groupMaxQueuedBytes bound the writes waiting for
	// an entry (callers that do not wait for their answers, like a loop
	// of core.Store.Submit, could queue faster than rounds drain): past
	// either, a write is refused with a *core.RetryError, nothing
	// proposed. They are many rounds' worth (each round takes up to
	// 2 × groupMaxWrites).
	groupMaxQueued      = 64 << 10
	groupMaxQueuedBytes = 256 << 20
)

// proposal is one write waiting for its entry.
type proposal struct {
	tenant string                // the store written (core's writes to one store keep their order)
	data   []byte                // the write's own encoded command
	done   func([]Result, error) // called once, from the grouper
}

// grouper gathers the writes proposed on this node into entries.
type grouper struct {
	n     *Node
	slots chan struct{} // entries in flight
	wake  chan struct{} // a proposal was queued

	// answered is how many writes the last answered entry carried.
	answered atomic.Int64
	// entries and writes count the entries proposed and their writes.
	entries, writes atomic.Uint64

	mu          sync.Mutex
	queue       []*proposal
	queuedBytes int
	closed      bool
	// largeInFlight: an entry holding one write larger than
	// groupMaxBytes is on its way to a quorum (take).
	largeInFlight bool
}

func newGrouper(n *Node) *grouper {
	return &grouper{n: n, slots: make(chan struct{}, groupInFlight), wake: make(chan struct{}, 1)}
}

// submit queues an encoded write command; done receives its results, or
// the error of its entry (mapped as Node.apply maps it), exactly once.
// After the node closes, done gets ErrClosed.
func (g *grouper) submit(tenant string, data []byte, done func([]Result, error)) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		done(nil, ErrClosed)
		return
	}
	if len(g.queue) >= groupMaxQueued || g.queuedBytes+len(data) > groupMaxQueuedBytes && len(g.queue) > 0 {
		n, b := len(g.queue), g.queuedBytes
		g.mu.Unlock()
		done(nil, &core.RetryError{After: 100 * time.Millisecond,
			Reason: fmt.Sprintf("the leader's write queue holds %d writes of %d bytes (at most %d writes, %d bytes)", n, b, groupMaxQueued, groupMaxQueuedBytes)})
		return
	}
	g.queue = append(g.queue, &proposal{tenant: tenant, data: data, done: done})
	g.queuedBytes += len(data)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// apply is submit that waits: the write's results, ctx's error when ctx
// ends first (the write may still be applied), ErrOutcomeUnknown when the
// node closes while it waits for a proposed entry.
func (g *grouper) apply(ctx context.Context, tenant string, data []byte) ([]Result, error) {
	type answer struct {
		res []Result
		err error
	}
	ch := make(chan answer, 1)
	g.submit(tenant, data, func(res []Result, err error) { ch <- answer{res, err} })
	select {
	case a := <-ch:
		return a.res, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-g.n.fsm.stop:
		return nil, fmt.Errorf("%w (%v)", ErrOutcomeUnknown, ErrClosed)
	}
}

// run proposes the queue as entries until the node closes, keeping at
// most groupInFlight of them on their way to a quorum.
func (g *grouper) run() {
	stop := g.n.fsm.stop
	for {
		select {
		case <-g.wake:
		case <-stop:
			g.close()
			return
		}
		for {
			select {
			case g.slots <- struct{}{}:
			case <-stop:
				g.close()
				return
			}
			if !g.gather(stop) {
				<-g.slots
				g.close()
				return
			}
			batch := g.take()
			if len(batch) == 0 {
				<-g.slots
				break
			}
			g.propose(batch)
		}
	}
}

// gather waits, at most groupGather, until the queue holds as many writes
// as the last answered entry carried. It reports false when the node
// closes meanwhile.
func (g *grouper) gather(stop <-chan struct{}) bool {
	need := int(g.answered.Load())
	if need <= 1 || g.queued() >= need {
		return true
	}
	t := time.NewTimer(groupGather)
	defer t.Stop()
	for g.queued() < need {
		select {
		case <-g.wake:
		case <-t.C:
			return true
		case <-stop:
			return false
		}
	}
	return true
}

func (g *grouper) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// take cuts the next entry's writes from the queue, in order: up to
// groupMaxWrites writes and groupMaxBytes, or one write larger than
// groupMaxBytes alone. Such a large write takes seconds to replicate and
// apply, and every entry after it in the log waits for it; so while one
// is in flight another waits, and the small writes of other tenants
// queued behind it go ahead (a tenant's own writes keep their order: its
// writes after one left behind stay behind it). One tenant's stream of
// large batches so holds up the others' writes by at most the one in
// flight.
func (g *grouper) take() []*proposal {
	g.mu.Lock()
	defer g.mu.Unlock()
	var batch, rest []*proposal
	size := 0
	var behind map[string]bool // tenants with a write left in the queue
	i := 0
	for ; i < len(g.queue); i++ {
		p := g.queue[i]
		if behind[p.tenant] {
			rest = append(rest, p)
			continue
		}
		if len(p.data) > groupMaxBytes {
			if len(batch) == 0 && !g.largeInFlight {
				batch = append(batch, p) // an entry of its own
				i++
				break
			}
			if behind == nil {
				behind = map[string]bool{}
			}
			behind[p.tenant] = true
			rest = append(rest, p)
			continue
		}
		if len(batch) == groupMaxWrites || size+len(p.data) > groupMaxBytes {
			break // full: p and the writes after it wait
		}
		batch = append(batch, p)
		size += len(p.data)
	}
	rest = append(rest, g.queue[i:]...)
	for _, p := range batch {
		g.queuedBytes -= len(p.data)
	}
	g.queue = rest
	if len(g.queue) == 0 {
		g.queue = nil
	}
	return batch
}

// propose sends one entry holding batch (a lone write goes as its own
// command, readable by every node version) and answers its writes once
// raft has applied it here (ErrOutcomeUnknown when the node closes
// first), freeing its slot.
func (g *grouper) propose(batch []*proposal) {
	data := batch[0].data
	if len(batch) > 1 {
		parts := make([][]byte, len(batch))
		for i, p := range batch {
			parts[i] = p.data
		}
		data = encodeGroup(parts)
	}
	g.entries.Add(1)
	g.writes.Add(uint64(len(batch)))
	large := len(batch) == 1 && len(data) > groupMaxBytes // as take judges it: a group's framing does not count
	if large {
		g.mu.Lock()
		g.largeInFlight = true
		g.mu.Unlock()
	}
	f := g.n.raft.Apply(data, g.n.timeout)
	go func() {
		// Not f.Error(): raft never answers an entry committed but not
		// yet applied when it shuts down; Close must answer its writes.
		err := g.n.wait(context.Background(), f)
		g.answered.Store(int64(len(batch)))
		defer func() { <-g.slots }()
		if large {
			g.mu.Lock()
			g.largeInFlight = false
			g.mu.Unlock()
			select { // a large write left in the queue may go now
			case g.wake <- struct{}{}:
			default:
			}
		}
		if err != nil {
			err = g.n.applyErr(err)
			for _, p := range batch {
				p.done(nil, err)
			}
			return
		}
		switch resp := f.Response().(type) {
		case []Result:
			batch[0].done(resp, nil)
		case [][]Result:
			for i, p := range batch {
				if i < len(resp) {
					p.done(resp[i], nil)
				} else {
					p.done(nil, fmt.Errorf("cluster: a write group of %d writes answered %d", len(batch), len(resp)))
				}
			}
		case error:
			for _, p := range batch {
				p.done(nil, resp)
			}
		default:
			for _, p := range batch {
				p.done(nil, fmt.Errorf("cluster: unexpected apply response %T", resp))
			}
		}
	}()
}

// close refuses the writes still queued (never proposed) and any later.
func (g *grouper) close() {
	g.mu.Lock()
	q := g.queue
	g.queue, g.queuedBytes, g.closed = nil, 0, true
	g.mu.Unlock()
	for _, p := range q {
		p.done(nil, ErrClosed)
	}
}
