package cluster

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A follower's view is only as recent as the last time it held
// everything its leader had committed. Hearing from a leader is not
// enough: raft's heartbeats carry no commit index, and after a follower
// was unreachable the leader keeps sending heartbeats while it backs off
// replicating to it (up to about 10 s), so a restarted follower can hear
// from a leader for seconds while its stores still lack changes made
// meanwhile — a key's revocation, a tenant's deletion. The node watches
// the AppendEntries requests leaders send it (each names the leader's
// commit index; raft sends one every CommitTimeout, 50 ms, even when
// there is nothing new) and notes when it has applied up to an announced
// commit index: Node.CaughtUpAt. An announcement counts from the moment
// its request arrived, taken from the transport as it comes (from before
// raft starts: raft may take seconds to restore a snapshot, and the
// leader commits on meanwhile); requests that waited unread while the
// node's raft was held up, or while the node's half of a connection's
// handshake ran 50 ms or more, are not noted (catchUp.stalled,
// guardedStream.slowAccept); and a request raft made before a dial that
// waited, or that took 50 ms or more while entries were committed, is
// never sent (guardedStream.Dial).

// catchUp tracks the latest moment this node held all a leader had
// committed. A leader's announcement (its commit index, and when it
// arrived) becomes the target while none is pending; once the stores
// reflect the log up to the target (stateIndex), the target's arrival
// time is the new caught-up moment and the next announcement becomes
// the target.
type catchUp struct {
	mu sync.Mutex
	// applied is the last index the stores reflect (stateIndex), term
	// raft's current term: set by bind once raft runs. Before, the node's
	// transport already takes requests (they wait for raft), and each is
	// judged on arrival by the term raft last stored (stored) with nothing
	// applied yet.
	applied func() uint64
	term    func() uint64
	stored  func() uint64
	// caughtUp is called (under mu) each time the caught-up moment moves.
	caughtUp func()

	target    uint64
	targetAt  time.Time
	hasTarget bool
	// quietUntil: announcements arriving before it are not noted (see
	// stalled).
	quietUntil time.Time
	// lastLook is when watchPauses last looked at the clock (unix
	// nanoseconds; 0: it does not run).
	lastLook atomic.Int64
	at       atomic.Int64 // unix nanoseconds of the caught-up moment; 0: never
}

// bind gives c raft's applied index and term, once raft runs, and what
// to call each time the node catches up.
func (c *catchUp) bind(applied, term func() uint64, caughtUp func()) {
	c.mu.Lock()
	c.applied, c.term, c.caughtUp = applied, term, caughtUp
	c.mu.Unlock()
}

// announced records a leader's commit index, of a request of term term,
// received at now. A request of a term this node has moved past (a
// deposed leader's, or one replayed) announces nothing: raft refuses it.
// Nor does a commit index of 0, or one below what this node has applied:
// a leader that has just started does not know what was committed before
// it (hashicorp/raft restores no commit index; it learns it once an entry
// of its own term commits), and until then announces 0 or less than it
// holds, which a node lagging behind would take for caught up.
func (c *catchUp) announced(commit, term uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	current := c.term
	if current == nil {
		current = c.stored
	}
	if look := c.lastLook.Load(); look != 0 {
		if gap := now.Sub(time.Unix(0, look)); gap > pauseGap {
			// The process was paused, or starved, until just now: what it
			// reads now waited meanwhile (watchPauses).
			c.stalledLocked(gap, now)
		}
	}
	if current != nil && term < current() || now.Before(c.quietUntil) {
		return
	}
	if commit == 0 || c.applied != nil && commit < c.applied() {
		return
	}
	if !c.hasTarget {
		c.target, c.targetAt, c.hasTarget = commit, now, true
	}
	c.checkLocked()
}

// stalled records that raft took d, until now, to answer a request (the
// follower's raft was held up: its log write, its state machine), or that
// this node's half of an inbound connection's handshake took d
// (guardedStream.slowAccept). The requests the leader sent meanwhile
// waited in the connection, unread (raft's transport reads a connection's
// next request only once the last is answered; a pipeline keeps up to 128
// on their way; none is read before the handshake ends), each naming the
// leader's commit index of when it was made, and arrive now as a burst.
// Noted as current they could put the caught-up moment past commits the
// stores lack, so the announcements of the next 2d + 50 ms, while that
// burst is read, are not noted: the caught-up moment stays where it was,
// the safe side (a node not caught up lately sends tenant requests to the
// leader).
func (c *catchUp) stalled(d time.Duration, now time.Time) {
	c.mu.Lock()
	c.stalledLocked(d, now)
	c.mu.Unlock()
}

func (c *catchUp) stalledLocked(d time.Duration, now time.Time) {
	if until := now.Add(2*d + 50*time.Millisecond); until.After(c.quietUntil) {
		c.quietUntil = until
	}
}

// pauseLookEvery is how often watchPauses looks at the clock, and
// pauseGap the gap between two looks that counts as a pause.
const (
	pauseLookEvery = 50 * time.Millisecond
	pauseGap       = 500 * time.Millisecond
)

// watchPauses notices that the whole process was paused (SIGSTOP, a
// suspended VM) or starved of CPU: the leader's requests sent meanwhile
// waited in the node's sockets and are read after it as a burst, each
// naming a commit index of long ago — a node that counted itself caught
// up by them would serve reads missing what was committed during the
// pause (a revocation, a deletion). A gap of more than pauseGap between
// two looks is a stall (stalled); announced also checks the time since
// the last look, for requests read before this goroutine runs again. It
// returns when stop is closed, closing done.
func (c *catchUp) watchPauses(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	defer c.lastLook.Store(0)
	t := time.NewTicker(pauseLookEvery)
	defer t.Stop()
	c.lastLook.Store(time.Now().UnixNano())
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			now := time.Now()
			if gap := now.Sub(time.Unix(0, c.lastLook.Load())); gap > pauseGap {
				c.stalled(gap, now)
			}
			c.lastLook.Store(now.UnixNano())
		}
	}
}

// checkLocked moves the caught-up moment to the pending target's arrival
// once the stores reflect the log up to it. Caller holds c.mu.
func (c *catchUp) checkLocked() {
	if c.hasTarget && c.applied != nil && c.applied() >= c.target {
		c.at.Store(c.targetAt.UnixNano())
		c.hasTarget = false
		if c.caughtUp != nil {
			c.caughtUp()
		}
	}
}

// moment returns the latest caught-up moment (zero: never).
func (c *catchUp) moment() time.Time {
	c.mu.Lock()
	c.checkLocked()
	c.mu.Unlock()
	if ns := c.at.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// maxStateScan bounds how many log entries one stateIndex call reads.
const maxStateScan = 4096

// stateIndex finds the last log index this node's stores reflect. raft's
// own applied index is no measure of that: raft counts entries applied
// once it has queued them for the state machine (up to 128 batches
// ahead of it), and goes on counting them after the state machine
// halted. The state machine's applied index is exact but stops short of
// the entries raft never hands it (a leader's no-op, barriers): past it,
// the entries raft has counted that change nothing count too.
type stateIndex struct {
	fsm  func() uint64 // the last entry the state machine applied
	raft func() uint64 // raft's applied index
	log  raft.LogStore

	mu sync.Mutex
	// from, to: entries (from, to] are ones raft never hands the state
	// machine (checked by an earlier call).
	from, to uint64
}

// index returns the last log index the stores reflect.
func (s *stateIndex) index() uint64 {
	a := s.fsm()
	ra := s.raft()
	if ra <= a {
		return a
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a < s.from || a > s.to {
		s.from, s.to = a, a
	}
	i := s.to
	for n := 0; i < ra && n < maxStateScan; n++ {
		var l raft.Log
		if err := s.log.GetLog(i+1, &l); err != nil {
			// Not in the log although raft counts it applied: a snapshot
			// covers it (compacted away below the log, or installed from
			// a leader past the log's end), and the state machine had
			// reached (taken) or holds (restored) that snapshot. A hole
			// within the log is damage: no further.
			first, ferr := s.log.FirstIndex()
			last, lerr := s.log.LastIndex()
			switch {
			case ferr != nil || lerr != nil || !errors.Is(err, raft.ErrLogNotFound):
			case first == 0 || i+1 > last:
				i = ra
				continue
			case i+1 < first:
				i = min(first-1, ra)
				continue
			}
			break
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			break // the state machine has not applied it yet
		}
		i++
	}
	s.to = i
	return i
}

// watchedTransport is the node's raft transport with the AppendEntries
// requests it receives observed on their way to raft (heartbeats, which
// carry no commit index, are not), and the answers to the AppendEntries
// requests it sends noted (contacts). Every other method is the
// transport's own. A request is observed when it arrives, not when raft takes it: a
// request waits for raft while raft is busy (restoring a snapshot as the
// node starts, applying), and the leader may commit more meanwhile (a
// key's revocation), so its commit index is only as recent as its arrival.
type watchedTransport struct {
	raft.Transport
	out      chan raft.RPC
	stop     chan struct{}
	stopOnce sync.Once
	started  atomic.Bool
	done     chan struct{}

	// qmu guards queue: requests taken from the transport, on their way
	// to raft. Each connection carries one request at a time, so it
	// holds at most one per connection.
	qmu   sync.Mutex
	queue []raft.RPC
	ready chan struct{} // a request was queued (capacity 1)

	// contacts: when each peer last answered this node's AppendEntries
	// (see AppendEntries, quorum.go).
	contacts contacts
}

// preVoteWatchedTransport is a watchedTransport of a transport that
// supports pre-vote: raft sees the support (a watchedTransport alone
// hides it, so raft holds plain elections over a transport without it).
type preVoteWatchedTransport struct{ *watchedTransport }

var (
	_ raft.WithClose   = (*watchedTransport)(nil)
	_ raft.WithPreVote = preVoteWatchedTransport{}
)

// watchTransport wraps t; start passes its requests on to raft, noting
// in c the commit index of each AppendEntries request.
func watchTransport(t raft.Transport) *watchedTransport {
	return &watchedTransport{Transport: t, out: make(chan raft.RPC), stop: make(chan struct{}), done: make(chan struct{}),
		ready: make(chan struct{}, 1)}
}

// forRaft is the transport raft is given: w, supporting pre-vote exactly
// when the wrapped transport does.
func (w *watchedTransport) forRaft() raft.Transport {
	if _, ok := w.Transport.(raft.WithPreVote); ok {
		return preVoteWatchedTransport{w}
	}
	return w
}

// start starts passing requests on (once raft is there to read them).
func (w *watchedTransport) start(c *catchUp) {
	w.started.Store(true)
	deliverDone := make(chan struct{})
	go w.deliver(c, deliverDone)
	go w.take(c, deliverDone)
}

// stallMin is the shortest wait for raft to take a request that counts
// as a stall (catchUp.stalled). raft's main loop takes a follower's
// request within a log write (about a millisecond); a stall is a disk or
// a state machine holding it up.
const stallMin = 50 * time.Millisecond

// take reads the transport's requests as they arrive, notes the commit
// index each AppendEntries announces, and queues them for deliver.
func (w *watchedTransport) take(c *catchUp, deliverDone <-chan struct{}) {
	defer func() {
		<-deliverDone
		close(w.done)
	}()
	in := w.Transport.Consumer()
	for {
		select {
		case rpc := <-in:
			if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok && !isHeartbeat(req) {
				c.announced(req.LeaderCommitIndex, req.Term, time.Now())
			}
			w.qmu.Lock()
			w.queue = append(w.queue, rpc)
			w.qmu.Unlock()
			select {
			case w.ready <- struct{}{}:
			default:
			}
		case <-w.stop:
			return
		}
	}
}

// deliver hands the queued requests to raft in order; at stop, those
// left are answered with raft.ErrTransportShutdown.
func (w *watchedTransport) deliver(c *catchUp, done chan<- struct{}) {
	defer close(done)
	for {
		w.qmu.Lock()
		var rpc raft.RPC
		has := len(w.queue) > 0
		if has {
			rpc = w.queue[0]
			w.queue[0] = raft.RPC{}
			w.queue = w.queue[1:]
		}
		w.qmu.Unlock()
		if !has {
			select {
			case <-w.ready:
				continue
			case <-w.stop:
				w.refuseQueued()
				return
			}
		}
		if _, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
			rpc = w.timed(rpc, c)
		}
		select {
		case w.out <- rpc:
		case <-w.stop:
			rpc.Respond(emptyResponse(rpc.Command), raft.ErrTransportShutdown)
			w.refuseQueued()
			return
		}
	}
}

// timed is rpc with its answer timed: from now, as raft is offered it,
// to raft's answer. One that took stallMin or longer is a stall
// (catchUp.stalled), noted before the answer goes out, so before the
// transport reads the connection's next request.
func (w *watchedTransport) timed(rpc raft.RPC, c *catchUp) raft.RPC {
	out, in := rpc.RespChan, make(chan raft.RPCResponse, 1)
	rpc.RespChan = in
	offered := time.Now()
	go func() {
		select {
		case resp := <-in:
			if now := time.Now(); now.Sub(offered) >= stallMin {
				c.stalled(now.Sub(offered), now)
			}
			out <- resp // buffered: the transport's own answer channel
		case <-w.stop: // raft shut down without answering; so did the transport
		}
	}()
	return rpc
}

// refuseQueued answers the requests still queued at stop.
func (w *watchedTransport) refuseQueued() {
	w.qmu.Lock()
	q := w.queue
	w.queue = nil
	w.qmu.Unlock()
	for _, rpc := range q {
		rpc.Respond(emptyResponse(rpc.Command), raft.ErrTransportShutdown)
	}
}

// isHeartbeat matches raft's heartbeats: no entries, no previous entry,
// no commit index (what NetworkTransport's fast path takes).
func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	return len(req.Entries) == 0 && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 && req.LeaderCommitIndex == 0
}

// Consumer implements raft.Transport: the observed requests.
func (w *watchedTransport) Consumer() <-chan raft.RPC { return w.out }

// RequestPreVote implements raft.WithPreVote with the transport's own.
func (w preVoteWatchedTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return w.Transport.(raft.WithPreVote).RequestPreVote(id, target, args, resp)
}

// Close implements raft.WithClose: it stops observing; the node closes
// the transport itself after raft has shut down.
func (w *watchedTransport) Close() error {
	w.halt()
	return nil
}

// halt stops the forwarding goroutine and waits for it if it was started
// (idempotent).
func (w *watchedTransport) halt() {
	w.stopOnce.Do(func() { close(w.stop) })
	if w.started.Load() {
		<-w.done
	}
}

// emptyResponse is a response of the type a request expects (raft's
// in-memory transport needs one even with an error).
func emptyResponse(cmd any) any {
	switch cmd.(type) {
	case *raft.AppendEntriesRequest:
		return &raft.AppendEntriesResponse{}
	case *raft.RequestVoteRequest:
		return &raft.RequestVoteResponse{}
	case *raft.RequestPreVoteRequest:
		return &raft.RequestPreVoteResponse{}
	case *raft.InstallSnapshotRequest:
		return &raft.InstallSnapshotResponse{}
	case *raft.TimeoutNowRequest:
		return &raft.TimeoutNowResponse{}
	}
	return nil
}
