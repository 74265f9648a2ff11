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
// commit index: Node.CaughtUpAt.

// catchUp tracks the latest moment this node held all a leader had
// committed. A leader's announcement (its commit index, and when it
// arrived) becomes the target while none is pending; once the stores
// reflect the log up to the target (stateIndex), the target's arrival
// time is the new caught-up moment and the next announcement becomes
// the target.
type catchUp struct {
	applied func() uint64 // the last index the stores reflect (stateIndex)
	term    func() uint64 // raft's current term

	mu        sync.Mutex
	target    uint64
	targetAt  time.Time
	hasTarget bool
	at        atomic.Int64 // unix nanoseconds of the caught-up moment; 0: never
}

// announced records a leader's commit index received at now.
func (c *catchUp) announced(commit uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.hasTarget {
		c.target, c.targetAt, c.hasTarget = commit, now, true
	}
	c.checkLocked()
}

// checkLocked moves the caught-up moment to the pending target's arrival
// once the stores reflect the log up to it. Caller holds c.mu.
func (c *catchUp) checkLocked() {
	if c.hasTarget && c.applied() >= c.target {
		c.at.Store(c.targetAt.UnixNano())
		c.hasTarget = false
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
// carry no commit index, are not). Every other method is the transport's
// own.
type watchedTransport struct {
	raft.Transport
	out      chan raft.RPC
	stop     chan struct{}
	stopOnce sync.Once
	started  atomic.Bool
	done     chan struct{}
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
	return &watchedTransport{Transport: t, out: make(chan raft.RPC), stop: make(chan struct{}), done: make(chan struct{})}
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
	go w.forward(c)
}

func (w *watchedTransport) forward(c *catchUp) {
	defer close(w.done)
	in := w.Transport.Consumer()
	for {
		select {
		case rpc := <-in:
			// A request of a term this node has moved past (a deposed
			// leader's, or one replayed) announces nothing: raft
			// refuses it.
			if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok && !isHeartbeat(req) && req.Term >= c.term() {
				c.announced(req.LeaderCommitIndex, time.Now())
			}
			select {
			case w.out <- rpc:
			case <-w.stop:
				rpc.Respond(emptyResponse(rpc.Command), raft.ErrTransportShutdown)
				return
			}
		case <-w.stop:
			return
		}
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
