package client

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"time"
)

// Cluster is the operator's view of a replicated cluster (/v1/cluster);
// the client's credential must be the operator credential. On a single
// server its calls fail with ErrNotFound.
type Cluster struct{ c *Client }

// Cluster returns the cluster API handle.
func (c *Client) Cluster() *Cluster { return &Cluster{c: c} }

// ClusterStatus is one node's view of the cluster.
type ClusterStatus struct {
	ID      string `json:"id"`
	Address string `json:"address"` // raft address
	URL     string `json:"url"`     // API URL
	// State is "leader", "follower", "candidate" or "shutdown".
	State             string          `json:"state"`
	Leader            ClusterMember   `json:"leader"` // ID and Address; empty during an election
	Term              uint64          `json:"term"`
	AppliedIndex      uint64          `json:"applied_index"`
	CommitIndex       uint64          `json:"commit_index"`
	LastLogIndex      uint64          `json:"last_log_index"`
	LastSnapshotIndex uint64          `json:"last_snapshot_index"`
	LastContact       time.Duration   `json:"last_contact"` // a follower's time since it heard from the leader
	Members           []ClusterMember `json:"members"`
	Halted            string          `json:"halted,omitempty"` // why the node stopped applying, if it did
	// Removed: the answering node was removed from the cluster; Members
	// is the configuration it last knew, without it, and no Health is
	// judged.
	Removed bool `json:"removed,omitempty"`
	// ReplicaCheck is the leader's automatic replica check; nil on
	// other nodes (and from servers without it).
	ReplicaCheck *ReplicaCheck `json:"replica_check,omitempty"`
	// Health is every member's health, from each one's own view; only
	// from StatusAllNodes (nil from servers without it).
	Health *ClusterHealth `json:"health,omitempty"`
}

// ClusterHealth is the cluster's health as the answering node judged it
// from every member's own view, asked of each at about the same time.
type ClusterHealth struct {
	// Leader is the member answering as leader in the highest term any
	// member reports, or when none does the one the members in that term
	// follow ("" when none is known).
	Leader string              `json:"leader"`
	Nodes  []ClusterNodeHealth `json:"nodes"` // one per member, in the members' order
	// Voters is the voting members, Quorum how many of them commit an
	// entry, HealthyVoters how many are healthy, FailureTolerance how
	// many more may fail with a quorum left (negative: the cluster cannot
	// commit writes now).
	Voters           int `json:"voters"`
	Quorum           int `json:"quorum"`
	HealthyVoters    int `json:"healthy_voters"`
	FailureTolerance int `json:"failure_tolerance"`
	Answered         int `json:"answered"`
	Unanswered       int `json:"unanswered"`
}

// ClusterNodeHealth is one member's health. A member is healthy when it
// answered, is not halted, follows the leader in the leader's term, heard
// from it within the last 2 s, has caught up with it since it started,
// and has applied all but at most 256 of the entries the leader
// committed.
type ClusterNodeHealth struct {
	ID        string `json:"id"`
	Reachable bool   `json:"reachable"`       // it answered with its view
	Error     string `json:"error,omitempty"` // why it did not
	Voter     bool   `json:"voter"`
	// From its own view (empty when it did not answer):
	State        string        `json:"state,omitempty"`
	Term         uint64        `json:"term,omitempty"`
	Leader       string        `json:"leader,omitempty"` // the leader it follows
	AppliedIndex uint64        `json:"applied_index,omitempty"`
	CommitIndex  uint64        `json:"commit_index,omitempty"`
	LastContact  time.Duration `json:"last_contact,omitempty"`
	// Lag is the entries the leader committed that it has not applied.
	Lag      uint64   `json:"lag"`
	Healthy  bool     `json:"healthy"`
	Problems []string `json:"problems,omitempty"` // why it is not healthy
}

// ReplicaCheck is the state of the leader's automatic replica check: every
// Every it compares each member's copy of every tenant's events with its
// own.
type ReplicaCheck struct {
	Every     string     `json:"every"` // a duration, or "off"
	LastRound *time.Time `json:"last_round,omitempty"`
	LastFull  *time.Time `json:"last_full,omitempty"` // the last round that covered every event
	// Copies is the members' copies of the tenants' events (tenants ×
	// other members); Agreeing how many the latest comparison found the
	// same as the leader's.
	Copies   int `json:"copies"`
	Agreeing int `json:"agreeing"`
	// Compared and NotCompared count the (tenant, member) pairs of the
	// last round (one with nothing new since its last comparison is
	// neither); NotComparedWhy says why for the first few not compared.
	Compared       int      `json:"compared"`
	NotCompared    int      `json:"not_compared"`
	NotComparedWhy []string `json:"not_compared_why,omitempty"`
	// Diverged lists the copies found different from the leader's or
	// unreadable, until a later check finds them the same.
	Diverged []ReplicaAlarm `json:"diverged"`
}

// ReplicaAlarm is a node's copy of a tenant's events that is not the
// leader's.
type ReplicaAlarm struct {
	Tenant string    `json:"tenant"`
	Node   string    `json:"node"`
	Result string    `json:"result"` // "DIFFERENT" or "DAMAGED"
	From   uint64    `json:"from"`   // the range compared when found
	Upto   uint64    `json:"upto"`
	Detail string    `json:"detail,omitempty"` // why a DAMAGED copy cannot be read
	Since  time.Time `json:"since"`
}

// ClusterMember is one member of the cluster configuration.
type ClusterMember struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage,omitempty"` // "voter" or "nonvoter"
	Leader   bool   `json:"leader,omitempty"`
	URL      string `json:"url,omitempty"`
}

// Status returns the answering node's view of the cluster.
func (cl *Cluster) Status(ctx context.Context) (ClusterStatus, error) {
	var st ClusterStatus
	err := cl.c.do(ctx, request{method: "GET", path: "/v1/cluster", safe: true}, &st)
	return st, err
}

// StatusAllNodes returns the answering node's view of the cluster with
// every member's health (Health): the node asks each other member for its
// own view (with this client's credential, at most 5 s each) and judges
// them together. A member that cannot be asked is in Health as
// unreachable, with the reason; the call itself fails only as Status
// does, or with ErrBusy (retried) while the node gathers another. A
// server from before Health (one that refuses the nodes parameter, or
// ignores it) gives the status without it: Health nil.
func (cl *Cluster) StatusAllNodes(ctx context.Context) (ClusterStatus, error) {
	var st ClusterStatus
	err := cl.c.do(ctx, request{method: "GET", path: "/v1/cluster", query: url.Values{"nodes": {"all"}}, safe: true}, &st)
	var e *Error
	if errors.As(err, &e) && e.Status == 400 && e.Code == CodeInvalidRequest && string(e.Extensions["field"]) == `"nodes"` {
		return cl.Status(ctx)
	}
	return st, err
}

// AddNode makes node id — reached by raft at address, by clients at url —
// a voting member. The request goes to the leader (a follower redirects
// it). Adding a member that is one already, unchanged, does nothing, so
// the call is safe to retry. A join that would replace a member — its id
// at another address, or its address under another id — is refused
// (ErrConflict) unless replace is set. A join after which the voters,
// the new node not counted (it stores nothing until it has caught up),
// would have no majority able to store new entries — a member down, say —
// is refused too (ErrConflict, naming them; nothing changed), except a
// cluster of one voter adding its second.
func (cl *Cluster) AddNode(ctx context.Context, id, address, url string, replace bool) (ClusterStatus, error) {
	return cl.addNode(ctx, id, address, url, replace, false)
}

// ForceAddNode is AddNode without the quorum guard, for when it
// misjudges: the members it names are known to be alive and able to
// write. Dangerous: if the voters without the new node cannot form a
// majority, the cluster takes no write until it has caught up (or they
// are back), and is lost if that never happens.
func (cl *Cluster) ForceAddNode(ctx context.Context, id, address, url string, replace bool) (ClusterStatus, error) {
	return cl.addNode(ctx, id, address, url, replace, true)
}

func (cl *Cluster) addNode(ctx context.Context, id, address, apiURL string, replace, force bool) (ClusterStatus, error) {
	body, err := jsonBody(map[string]any{"id": id, "address": address, "url": apiURL, "replace": replace})
	if err != nil {
		return ClusterStatus{}, err
	}
	var query url.Values
	if force {
		query = url.Values{"force": {"true"}}
	}
	var st ClusterStatus
	err = cl.c.do(ctx, request{method: "POST", path: "/v1/cluster/nodes", query: query, body: body, safe: true}, &st)
	return st, err
}

// RemoveNode removes member id from the cluster (leader only; followers
// redirect). A removal that would leave the cluster without a quorum —
// fewer than a majority of the voters that remain able to store new
// entries, as the leader probed them — is refused (ErrConflict, naming them; nothing changed).
// When the leader lost its leadership before the removal was known to
// commit, or it had not committed within the leader's apply timeout (10
// s), it fails with an *OutcomeUnknownError: the removal may or may
// not have taken effect (Status says, once a leader is elected).
func (cl *Cluster) RemoveNode(ctx context.Context, id string) error {
	return cl.c.do(ctx, request{method: "DELETE", path: "/v1/cluster/nodes/" + seg(id)}, nil)
}

// ForceRemoveNode is RemoveNode without the quorum guard, for when it
// misjudges: the members it names are known to be alive (members gone for
// good are removed first, which the guard accepts). Dangerous: if the voters that remain cannot form a
// majority, the cluster takes no write until enough of them come back.
func (cl *Cluster) ForceRemoveNode(ctx context.Context, id string) error {
	return cl.c.do(ctx, request{method: "DELETE", path: "/v1/cluster/nodes/" + seg(id), query: url.Values{"force": {"true"}}}, nil)
}

// ReplicaDigest is one node's digest of a tenant's events (see
// Cluster.Digest).
type ReplicaDigest struct {
	Tenant string `json:"tenant"`
	From   uint64 `json:"from"`   // the first global sequence covered
	Upto   uint64 `json:"upto"`   // the events before this global sequence
	Events uint64 `json:"events"` // how many there were (read before Damaged)
	Digest string `json:"digest"` // hex SHA-256 over their sequences and chain hashes
	// Damaged says why the node could not read its copy of the events
	// (a damaged segment, a broken chain): then Digest is empty, and the
	// copy is not the leader's.
	Damaged string `json:"damaged,omitempty"`
	// Born is the node's store's birth index (0 unknown): digests from
	// stores born at different indexes are of two incarnations of the
	// tenant (deleted and created again between), not comparable.
	Born uint64 `json:"born,omitempty"`
}

// Digest returns the answering node's digest of every event of tenant it
// holds (the answer's Upto says how many). Nodes holding the same events
// answer the same digest, whichever node is asked: it is never
// redirected. One digest runs at a time on a node (503 BUSY, retried).
func (cl *Cluster) Digest(ctx context.Context, tenant string) (ReplicaDigest, error) {
	return cl.digest(ctx, tenant, nil)
}

// DigestUpto is Digest of tenant's events before global sequence upto
// (0: none). A cluster node waits (at most its cluster.read_wait) until
// it holds them: ErrNotCaughtUp otherwise, after the client's retries.
func (cl *Cluster) DigestUpto(ctx context.Context, tenant string, upto uint64) (ReplicaDigest, error) {
	return cl.digest(ctx, tenant, url.Values{"upto": {strconv.FormatUint(upto, 10)}})
}

// DigestRange is the digest of tenant's events with from <= global
// sequence < upto (DigestUpto's digest when from is 0): comparing ranges
// checks the events appended since an earlier check without reading
// again what it covered. from past upto is refused (ErrInvalidRequest).
func (cl *Cluster) DigestRange(ctx context.Context, tenant string, from, upto uint64) (ReplicaDigest, error) {
	return cl.digest(ctx, tenant, url.Values{"from": {strconv.FormatUint(from, 10)}, "upto": {strconv.FormatUint(upto, 10)}})
}

func (cl *Cluster) digest(ctx context.Context, tenant string, q url.Values) (ReplicaDigest, error) {
	path := "/v1/admin/tenants/" + seg(tenant) + "/digest"
	if tenant == ControlPlane {
		path = "/v1/cluster/digest"
	}
	var d ReplicaDigest
	err := cl.c.do(ctx, request{method: "GET", path: path, query: q, safe: true, slow: true}, &d)
	return d, err
}

// ControlPlane names the control plane's replicated store (tenants, keys,
// quotas, cursors, policy and plugin revisions, members) where a tenant
// would be named: Digest, DigestUpto and DigestRange of ControlPlane
// answer the digest of the node's copy of it (GET /v1/cluster/digest). No
// tenant id can be it.
const ControlPlane = "(control plane)"
