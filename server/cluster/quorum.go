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
// the entry removing a member must be committed by a majority of the
// voters that remain. A removal that leaves a majority of them down can
// never commit; the leader then finds no quorum of the new configuration,
// steps down, and no node can be elected until those members come back —
// if they never do, the cluster is lost (see README, "When a quorum is
// lost for good"). So before removing a voter the leader checks that it
// has heard, lately, from a majority of the voters that would remain:
//
//	counted as reachable   the leader itself; a follower whose answer to
//	                       an AppendEntries request (raft's heartbeat,
//	                       sent every HeartbeatTimeout/10, or a
//	                       replication) arrived within the contact window
//	contact window         2 × HeartbeatTimeout (2 s by default): a live
//	                       follower answers some 20 heartbeats in it, and a
//	                       follower not heard from for that long is also
//	                       what cluster health calls unhealthy
//	                       (HealthyMaxContact, 2 s)
//	refused                a removal leaving fewer reachable voters than a
//	                       majority of those that remain (*QuorumError;
//	                       nothing proposed); ForceLeave skips the check
//
// A follower that died within the window still counts; one the leader
// has not reached since it began leading does not (for the first few
// heartbeats after an election a removal may be refused: retry).

// contactWindowBeats is the contact window in heartbeat timeouts.
const contactWindowBeats = 2

// contacts records when each peer last answered this node's
// AppendEntries requests (sent only while it leads).
type contacts struct {
	mu   sync.Mutex
	last map[raft.ServerID]time.Time
}

func (c *contacts) note(id raft.ServerID, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[raft.ServerID]time.Time{}
	}
	c.last[id] = at
}

// at is when peer id last answered (zero: never).
func (c *contacts) at(id raft.ServerID) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last[id]
}

// AppendEntries implements raft.Transport: the wrapped transport's,
// noting when the peer answered (any answer, a refusal of the entries
// included: the peer is alive and reachable).
func (w *watchedTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	err := w.Transport.AppendEntries(id, target, args, resp)
	if err == nil {
		w.contacts.note(id, time.Now())
	}
	return err
}

// ErrNoQuorum matches a *QuorumError.
var ErrNoQuorum = errors.New("cluster: the change would leave the cluster without a quorum")

// QuorumError refuses a membership change (Leave, or Join replacing a
// member) that would leave the cluster without a majority of reachable
// voters: nothing was proposed. It matches ErrNoQuorum.
type QuorumError struct {
	// Removing is the member the change would remove.
	Removing string
	// Remaining is the voters that would remain; Unheard those of them
	// the leader has not heard from within Window; Need how many of
	// Remaining make a quorum.
	Remaining []string
	Unheard   []string
	Need      int
	Window    time.Duration
}

func (e *QuorumError) Error() string {
	unheard := strings.Join(e.Unheard, ", ")
	return fmt.Sprintf("cluster: removing %s would leave voters %s, of which the leader has not heard from %s within %s; %d of those %d are needed for a quorum, so the cluster would commit nothing, this removal included, until enough of them are back; start %s again first, or, if gone for good, remove %s first (removing a member that is down keeps the quorum), then %s",
		e.Removing, strings.Join(e.Remaining, ", "), unheard, e.Window, e.Need, len(e.Remaining), unheard, unheard, e.Removing)
}

// Is matches ErrNoQuorum.
func (e *QuorumError) Is(target error) bool { return target == ErrNoQuorum }

// contactWindow is how recently the leader must have heard from a
// follower for the quorum guard to count it.
func (n *Node) contactWindow() time.Duration {
	return contactWindowBeats * n.raft.ReloadableConfig().HeartbeatTimeout
}

// quorumWithout checks, on the leader, that the voters of c other than
// id keep a majority this node has heard from within the contact window
// (*QuorumError otherwise). Removing a nonvoter, or an id c does not
// name, changes no quorum: nil.
func (n *Node) quorumWithout(c raft.Configuration, id raft.ServerID) error {
	voter := false
	for _, s := range c.Servers {
		voter = voter || s.ID == id && s.Suffrage == raft.Voter
	}
	if !voter {
		return nil
	}
	window := n.contactWindow()
	now := time.Now()
	e := &QuorumError{Removing: string(id), Window: window}
	for _, s := range c.Servers {
		if s.Suffrage != raft.Voter || s.ID == id {
			continue
		}
		e.Remaining = append(e.Remaining, string(s.ID))
		if s.ID != raft.ServerID(n.cfg.ID) && now.Sub(n.watch.contacts.at(s.ID)) > window {
			e.Unheard = append(e.Unheard, string(s.ID))
		}
	}
	e.Need = len(e.Remaining)/2 + 1
	if len(e.Remaining) == 0 || len(e.Remaining)-len(e.Unheard) >= e.Need {
		return nil // none left: raft refuses removing the last voter itself
	}
	return e
}
