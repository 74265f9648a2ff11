package cluster

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The quorum guard of membership changes.
//
// raft counts a new configuration from the moment the leader appends it:
// the entry removing a member must be stored by a majority of the voters
// that remain. A removal that leaves a majority of them unable to store
// it can never commit; no write commits meanwhile, and, when they are
// down, the leader steps down and no node can be elected until they come
// back — if they never do, the cluster is lost (see README, "When a
// quorum is lost for good"). So before removing a voter (or adding one,
// which raises the quorum) the leader checks that a majority of the
// voters after the change can store new entries:
//
//	probe                  the leader appends a barrier entry (raft's
//	                       Barrier) and waits up to the contact window
//	                       for it to commit; its index is the target
//	                       (if it does not commit in time, the leader's
//	                       last index before it)
//	counted                the leader itself; a follower that, in the
//	                       leader's current term, answered an
//	                       AppendEntries request with Success for a log
//	                       reaching the target — it stored the entry the
//	                       probe made (or, failing it, everything the
//	                       leader had), so it can store the next one.
//	                       The leader waits up to the contact window
//	                       (from the probe) for enough of them
//	not heard from         a follower whose last answer to any
//	                       AppendEntries request (raft's heartbeat, sent
//	                       every HeartbeatTimeout/10, included) is older
//	                       than the contact window
//	behind                 a follower heard from but not counted: it
//	                       answers heartbeats (which raft's followers
//	                       answer without touching their log store) but
//	                       has not stored the target — it cannot write
//	                       its log (a failing or full disk), or is far
//	                       behind (installing a snapshot, or raft backing
//	                       off after failures)
//	contact window         2 × HeartbeatTimeout (2 s by default): a live
//	                       follower answers some 20 heartbeats in it, and
//	                       stores an entry within a replication round
//	                       (milliseconds); a follower not heard from for
//	                       that long is also what cluster health calls
//	                       unhealthy (HealthyMaxContact, 2 s)
//	refused                a removal leaving fewer counted voters than a
//	                       majority of those that remain (*QuorumError;
//	                       nothing proposed, after up to one contact
//	                       window); ForceLeave skips the check
//	joins                  judged alike: the voters after the join, the
//	                       new node counted as unable (it stores nothing
//	                       until it has caught up, and may not speak raft
//	                       at all), except a one-voter cluster adding its
//	                       second; ForceJoin skips the check
//
// A removal after which the leader alone is a quorum (it is the only
// voter left) is not probed. A follower that died within
// the window but had stored the target still counts. Right after an
// election a follower may not have answered in the new term yet: retry.
// The probe is one barrier entry in the log per guarded change.

// contactWindowBeats is the contact window in heartbeat timeouts.
const contactWindowBeats = 2

// contacts records, per peer, what its answers to this node's
// AppendEntries requests (sent only while it leads) said.
type contacts struct {
	mu   sync.Mutex
	last map[raft.ServerID]contact
}

// contact is what a peer's answers said.
type contact struct {
	heard time.Time // the last answer of any kind
	// term is the term of the last request the peer answered with
	// Success that named a log (not a heartbeat); match the index up to
	// which its log held the leader's, by those answers in that term.
	term, match uint64
}

// answered notes peer id's answer resp to req, at at: a Success to a
// request naming a log (PrevLogEntry, or entries) means the peer's log
// holds the leader's up to the request's last entry (PrevLogEntry if it
// carried none) — what raft's own replication counts as the peer's
// match. A heartbeat (no PrevLogEntry, no entries) is answered without
// the peer's log store and says only that the peer is alive.
func (c *contacts) answered(id raft.ServerID, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[raft.ServerID]contact{}
	}
	k := c.last[id]
	k.heard = at
	if resp.Success && resp.Term == req.Term && (req.PrevLogEntry > 0 || len(req.Entries) > 0) {
		m := req.PrevLogEntry
		if len(req.Entries) > 0 {
			m = req.Entries[len(req.Entries)-1].Index
		}
		if req.Term != k.term {
			k.term, k.match = req.Term, m
		} else if m > k.match {
			k.match = m
		}
	}
	c.last[id] = k
}

// of is what peer id's answers said (zero: none).
func (c *contacts) of(id raft.ServerID) contact {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last[id]
}

// AppendEntries implements raft.Transport: the wrapped transport's,
// noting the peer's answer (contacts.answered).
func (w *watchedTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	err := w.Transport.AppendEntries(id, target, args, resp)
	if err == nil {
		w.contacts.answered(id, args, resp, time.Now())
	}
	return err
}

// AppendEntriesPipeline implements raft.Transport: the wrapped
// transport's pipeline, its answers noted as AppendEntries' are (raft
// replicates over a pipeline once a follower has caught up, so most of a
// busy follower's answers come this way).
func (w *watchedTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := w.Transport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	wp := &watchedPipeline{AppendPipeline: p, id: id, c: &w.contacts, out: make(chan raft.AppendFuture), stop: make(chan struct{})}
	go wp.relay()
	return wp, nil
}

// watchedPipeline is a raft.AppendPipeline whose answers are noted in c
// on their way to raft.
type watchedPipeline struct {
	raft.AppendPipeline
	id   raft.ServerID
	c    *contacts
	out  chan raft.AppendFuture
	stop chan struct{}
	once sync.Once
}

func (p *watchedPipeline) relay() {
	in := p.AppendPipeline.Consumer()
	for {
		select {
		case f := <-in:
			if f.Error() == nil {
				p.c.answered(p.id, f.Request(), f.Response(), time.Now())
			}
			select {
			case p.out <- f:
			case <-p.stop:
				return
			}
		case <-p.stop:
			return
		}
	}
}

// Consumer implements raft.AppendPipeline.
func (p *watchedPipeline) Consumer() <-chan raft.AppendFuture { return p.out }

// Close implements raft.AppendPipeline.
func (p *watchedPipeline) Close() error {
	p.once.Do(func() { close(p.stop) })
	return p.AppendPipeline.Close()
}

// ErrNoQuorum matches a *QuorumError.
var ErrNoQuorum = errors.New("cluster: the change would leave the cluster without a quorum")

// QuorumError refuses a membership change (Leave, Join) that would leave
// the cluster without a majority of voters able to store new entries:
// nothing was proposed. It matches ErrNoQuorum.
type QuorumError struct {
	// Removing is the member the change would remove; Adding the node a
	// join would add as a voter (one of the two is set).
	Removing, Adding string
	// Remaining is the voters after the change (Adding among them); Need
	// how many of them make a quorum. Unheard are those of them the
	// leader has not heard from within Window; Behind those it heard from
	// that had not stored its latest entry within Window (unable to write
	// their log, or far behind: installing a snapshot). Adding is in
	// neither: it is counted as unable until it has caught up.
	Remaining []string
	Unheard   []string
	Behind    []string
	Need      int
	Window    time.Duration
}

func (e *QuorumError) Error() string {
	var why, out []string
	if len(e.Unheard) > 0 {
		why = append(why, fmt.Sprintf("the leader has not heard from %s within %s", strings.Join(e.Unheard, ", "), e.Window))
	}
	if len(e.Behind) > 0 {
		why = append(why, fmt.Sprintf("%s answered but had not stored the leader's latest entry within %s (behind: unable to write its log, or catching up)", strings.Join(e.Behind, ", "), e.Window))
	}
	out = append(append(out, e.Unheard...), e.Behind...)
	them := strings.Join(out, ", ")
	if e.Adding != "" {
		why = append([]string{e.Adding + " is new (it counts towards the quorum at once, and stores nothing until it has caught up)"}, why...)
		return fmt.Sprintf("cluster: adding %s as a voter would make voters %s, of which %s; %d of those %d are needed for a quorum, so the cluster would commit nothing, this join included, until enough of them can; start or repair %s first, or, if gone for good, remove %s first (removing a member that is down keeps the quorum), then join %s",
			e.Adding, strings.Join(e.Remaining, ", "), strings.Join(why, ", and "), e.Need, len(e.Remaining), them, them, e.Adding)
	}
	return fmt.Sprintf("cluster: removing %s would leave voters %s, of which %s; %d of those %d are needed for a quorum, so the cluster would commit nothing, this removal included, until enough of them can; start or repair %s first, or, if gone for good, remove %s first (removing a member that is down keeps the quorum), then %s",
		e.Removing, strings.Join(e.Remaining, ", "), strings.Join(why, ", and "), e.Need, len(e.Remaining), them, them, e.Removing)
}

// Is matches ErrNoQuorum.
func (e *QuorumError) Is(target error) bool { return target == ErrNoQuorum }

// contactWindow is how recently the leader must have heard from a
// follower for the quorum guard to count it, and how long the guard
// waits for followers to store its probe.
func (n *Node) contactWindow() time.Duration {
	return contactWindowBeats * n.raft.ReloadableConfig().HeartbeatTimeout
}

// quorumWithout checks, on the leader, that the voters of c other than
// id keep a majority able to store new entries (see the table above;
// *QuorumError otherwise, a *NotLeaderError if leadership is lost
// meanwhile). Removing a nonvoter, or an id c does not name, changes no
// quorum: nil.
func (n *Node) quorumWithout(c raft.Configuration, id raft.ServerID) error {
	voter := false
	for _, s := range c.Servers {
		voter = voter || s.ID == id && s.Suffrage == raft.Voter
	}
	if !voter {
		return nil
	}
	var remaining []raft.ServerID
	for _, s := range c.Servers {
		if s.Suffrage == raft.Voter && s.ID != id {
			remaining = append(remaining, s.ID)
		}
	}
	if len(remaining) == 0 {
		return nil // raft refuses removing the last voter itself
	}
	return n.keepsQuorum(remaining, "", QuorumError{Removing: string(id)})
}

// quorumWith checks, on the leader, that the voters of c with id added
// as a voter have a majority able to store new entries, id counted as
// not (it has yet to catch up; see the table above): *QuorumError
// otherwise, a *NotLeaderError if leadership is lost meanwhile. A member
// of c already (a nonvoter promoted) is judged as the others are. A
// cluster of one voter, the leader, adding a second is not refused: it
// always would be (the two need both), and it is how a cluster grows
// from its first node.
func (n *Node) quorumWith(c raft.Configuration, id raft.ServerID) error {
	var voters []raft.ServerID
	member := false
	for _, s := range c.Servers {
		member = member || s.ID == id
		if s.Suffrage == raft.Voter && s.ID != id {
			voters = append(voters, s.ID)
		}
	}
	if len(voters) == 1 && voters[0] == raft.ServerID(n.cfg.ID) {
		return nil
	}
	newcomer := id
	if member {
		newcomer = ""
	}
	return n.keepsQuorum(append(voters, id), newcomer, QuorumError{Adding: string(id)})
}

// keepsQuorum checks that voters (a configuration a change would make)
// have a majority able to store new entries: the leader, and the
// followers that stored its probe (newcomer, if not "", is counted as
// unable). e says the change; the *QuorumError returned is e filled in.
func (n *Node) keepsQuorum(voters []raft.ServerID, newcomer raft.ServerID, e QuorumError) error {
	window := n.contactWindow()
	judge := func(target, term uint64) *QuorumError {
		now := time.Now()
		e := e
		e.Window, e.Need, e.Remaining = window, len(voters)/2+1, nil
		counted := 0
		for _, s := range voters {
			e.Remaining = append(e.Remaining, string(s))
			if s == newcomer {
				continue
			}
			if s == raft.ServerID(n.cfg.ID) {
				counted++
				continue
			}
			k := n.watch.contacts.of(s)
			switch {
			case now.Sub(k.heard) > window:
				e.Unheard = append(e.Unheard, string(s))
			case k.term != term || k.match < target:
				e.Behind = append(e.Behind, string(s))
			default:
				counted++
			}
		}
		if counted >= e.Need {
			return nil
		}
		return &e
	}
	// The leader alone may be enough (judged against a target no
	// follower reaches).
	if judge(^uint64(0), 0) == nil {
		return nil
	}
	target, term, err := n.probe(window)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(window)
	for {
		e := judge(target, term)
		if e == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return e
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// probe appends a barrier entry to the leader's log and returns, as
// target, an index past every entry the log held when it began (the
// barrier's, or a write's appended meanwhile): a follower that has stored
// target stored an entry after the probe began. It waits up to window for
// the leader to append one, not for the barrier to commit or be applied
// (a leader busy applying, or taking a snapshot, would otherwise leave
// only an index from before the probe, which a follower whose disk failed
// since may have stored). term is the leader's term before it. A
// *NotLeaderError when raft refuses it as a follower or loses leadership
// meanwhile; ErrMembershipChanging (nothing changed) when the leader
// appended nothing within window.
func (n *Node) probe(window time.Duration) (target, term uint64, err error) {
	term, pre := n.raft.CurrentTerm(), n.raft.LastIndex()
	f := n.raft.Barrier(window)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	deadline := time.Now().Add(window)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for target = n.raft.LastIndex(); target <= pre; target = n.raft.LastIndex() {
		select {
		case err := <-done:
			switch {
			case err == nil:
				continue // committed and applied: appended, read again
			case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
				return 0, 0, n.notLeader()
			case errors.Is(err, raft.ErrRaftShutdown):
				return 0, 0, ErrClosed
			}
			done = nil // enqueue timed out: wait out the window below
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%w: the leader did not append its probe entry within %s (busy); retry", ErrMembershipChanging, window)
		}
	}
	if n.raft.CurrentTerm() != term {
		return 0, 0, n.notLeader()
	}
	return target, term, nil
}
