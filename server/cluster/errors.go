package cluster

import (
	"errors"
	"fmt"
	"io/fs"
)

var (
	// ErrNotLeader matches a *NotLeaderError.
	ErrNotLeader = errors.New("cluster: this node is not the leader")
	// ErrOutcomeUnknown: the write was proposed but leadership was lost
	// (or the node shut down) before it was known to commit; it may or
	// may not be applied. Retry with idempotency keys.
	ErrOutcomeUnknown = errors.New("cluster: leadership lost before the write was known to commit; it may or may not be written")
	// ErrMembershipUnknown: a membership change (Join, Leave) was
	// proposed, then leadership was lost (or the node shut down) before it
	// was known to commit, or it had not committed within the apply
	// timeout: it may or may not take effect. Once a leader is elected,
	// its configuration (Status().Servers) says which.
	ErrMembershipUnknown = errors.New("cluster: leadership was lost before the membership change was known to commit; it may or may not have taken effect: once a leader is elected, its member list says which")
	// ErrMembershipChanging: a membership change was not proposed because
	// another one was under way (one on this node not finished within the
	// apply timeout, or one raft had not yet committed); nothing was
	// changed: retry.
	ErrMembershipChanging = errors.New("cluster: another membership change is under way; nothing was changed: retry once it has committed")
	// ErrHalted: the node stopped applying the log (see Node.Err).
	ErrHalted = errors.New("cluster: the node stopped applying the log")
	// ErrTooLarge: an Append or AppendBatch carries more than
	// Config.MaxItems items or Config.MaxBytes of payload; nothing was
	// proposed.
	ErrTooLarge = errors.New("cluster: write too large for one raft entry")
	// ErrClosed: the node was closed (or removed from the cluster, which
	// shuts its raft down).
	ErrClosed = errors.New("cluster: node is closed")
	// ErrNoTenant: this node holds no store for the tenant (nothing was
	// ever written to it, or not yet applied here).
	ErrNoTenant = errors.New("cluster: no such tenant on this node")
	// ErrNoBlob: this node holds no blob with that digest (never put, not
	// yet applied here, or removed by Node.CollectBlobs). It matches
	// fs.ErrNotExist.
	ErrNoBlob = fmt.Errorf("cluster: no such blob on this node: %w", fs.ErrNotExist)
)

// NotLeaderError refuses a write (or a membership change) sent to a node
// that is not the leader. Leader and LeaderID name the leader this node
// knows of, empty while an election is under way. Nothing was proposed, so
// the write may be sent again to the leader. It matches ErrNotLeader.
type NotLeaderError struct {
	Leader   string // the leader's raft address
	LeaderID string
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return "cluster: this node is not the leader and no leader is known (an election is under way); retry"
	}
	return fmt.Sprintf("cluster: this node is not the leader; the leader is %s at %s", e.LeaderID, e.Leader)
}

// Is matches ErrNotLeader.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// UnknownFormatError: a log entry carries a command format (or an
// operation of a known format) this node does not know, written by a
// newer version. The node halts rather than misapply it; it matches
// ErrHalted.
type UnknownFormatError struct {
	Version int // the entry's version byte; -1 for an empty entry
	Op      int // the unknown op of a known version; -1 when the version is unknown
}

func (e *UnknownFormatError) Error() string {
	if e.Op >= 0 {
		return fmt.Sprintf("cluster: log entry has command format %d with op %d; this node knows ops 0..%d (upgrade it)", e.Version, e.Op, opGroup)
	}
	return fmt.Sprintf("cluster: log entry has command format %d; this node knows formats %d and %d (upgrade it)", e.Version, commandVersion, commandVersionOps)
}

// Is matches ErrHalted.
func (e *UnknownFormatError) Is(target error) bool { return target == ErrHalted }
