package cluster

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/batpak-go/batpak/internal/printable"
)

// The cluster's health, judged from every member's own view of it, the
// way Consul's autopilot and rqlite's /nodes judge theirs: a member is
// healthy when it answered, follows the leader in the leader's term, has
// heard from it lately, has caught up with it since it started, and has
// applied nearly everything it committed.

const (
	// HealthyMaxLag is the most committed entries a healthy member has not
	// applied yet (by the leader's commit index). Views are fetched at
	// slightly different moments, so a member under load trails by a few.
	HealthyMaxLag = 256
	// HealthyMaxContact is the longest a healthy follower goes without
	// hearing from the leader (which heartbeats it many times a second).
	HealthyMaxContact = 2 * time.Second
)

// MemberView is what the node asked has of one member of its raft
// configuration for judging the cluster's health: the member's own
// Status, or why it has none (Error).
type MemberView struct {
	ID     string
	Voter  bool
	Status *Status
	Error  string
}

// ReadView is member id's view from body, its answer to GET /v1/cluster
// (a Status with the API's fields beside it), or why that is not one.
func ReadView(id string, voter bool, body []byte) MemberView {
	v := MemberView{ID: id, Voter: voter}
	var st Status
	switch err := json.Unmarshal(body, &st); {
	case err != nil:
		v.Error = "its answer is not a cluster status: " + printable.Clip(err.Error(), 300)
	case st.ID == "":
		v.Error = "its answer is not a cluster status: it names no node"
	case st.ID != id: // two members on record with one URL, or a proxy in between
		v.Error = "the API URL on record for it answered as node " + strconv.Quote(printable.Clip(st.ID, 200))
	default:
		v.Status = &st
	}
	return v
}

// NodeHealth is one member's health.
type NodeHealth struct {
	ID string `json:"id"`
	// Reachable: the member answered with its view; Error says why not.
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	Voter     bool   `json:"voter"`
	// State, Term, Leader (the leader it follows), AppliedIndex,
	// CommitIndex and LastContact are from its own view (absent when it
	// did not answer).
	State        string        `json:"state,omitempty"`
	Term         uint64        `json:"term,omitempty"`
	Leader       string        `json:"leader,omitempty"`
	AppliedIndex uint64        `json:"applied_index,omitempty"`
	CommitIndex  uint64        `json:"commit_index,omitempty"`
	LastContact  time.Duration `json:"last_contact,omitempty"`
	// Lag is how many entries the leader has committed that this member
	// has not applied (0 when no leader answered).
	Lag uint64 `json:"lag"`
	// Healthy: reachable and no Problems.
	Healthy  bool     `json:"healthy"`
	Problems []string `json:"problems,omitempty"`
}

// Health is the cluster's health, from the members' views.
type Health struct {
	// Leader is the member answering as leader in the highest term any
	// member reports, or when none does the one the members in that term
	// follow ("" when none is known).
	Leader string       `json:"leader"`
	Nodes  []NodeHealth `json:"nodes"`
	// Voters is the voting members, Quorum how many of them commit an
	// entry, HealthyVoters how many are healthy, and FailureTolerance how
	// many more voters may fail with a quorum left (HealthyVoters −
	// Quorum; negative: the cluster cannot commit writes now).
	Voters           int `json:"voters"`
	Quorum           int `json:"quorum"`
	HealthyVoters    int `json:"healthy_voters"`
	FailureTolerance int `json:"failure_tolerance"`
	// Answered and Unanswered count the members that did and did not
	// answer.
	Answered   int `json:"answered"`
	Unanswered int `json:"unanswered"`
}

// Assess judges the cluster's health from its members' views, one per
// member of the asking node's configuration, in that order. The leader is
// the member answering as leader in the highest term any member reports;
// when none does (the new leader did not answer), it is the leader that
// members in that term follow, and no member is judged behind it.
func Assess(views []MemberView) Health {
	h := Health{Nodes: make([]NodeHealth, 0, len(views))}
	var term uint64
	for _, v := range views {
		if v.Status != nil {
			term = max(term, v.Status.Term)
		}
	}
	var leader *Status
	follow := map[string]int{}
	for _, v := range views {
		switch st := v.Status; {
		case st == nil || st.Term != term:
		case st.State == "leader":
			leader = st
		case st.Leader.ID != "":
			follow[st.Leader.ID]++
		}
	}
	if leader != nil {
		h.Leader = leader.ID
	} else {
		for id, n := range follow {
			if n > follow[h.Leader] || n == follow[h.Leader] && id < h.Leader {
				h.Leader = id
			}
		}
	}
	for _, v := range views {
		n := judge(v, term, h.Leader, leader)
		if n.Reachable {
			h.Answered++
		} else {
			h.Unanswered++
		}
		if n.Voter {
			h.Voters++
			if n.Healthy {
				h.HealthyVoters++
			}
		}
		h.Nodes = append(h.Nodes, n)
	}
	h.Quorum = h.Voters/2 + 1
	h.FailureTolerance = h.HealthyVoters - h.Quorum
	return h
}

// judge is one member's health given the highest term reported, the
// leader's id ("" unknown) and the leader's view (nil: it did not answer).
func judge(v MemberView, term uint64, leaderID string, leader *Status) NodeHealth {
	n := NodeHealth{ID: v.ID, Voter: v.Voter}
	st := v.Status
	if st == nil {
		n.Error = v.Error
		if n.Error == "" {
			n.Error = "no answer"
		}
		n.Problems = []string{n.Error}
		return n
	}
	n.Reachable = true
	n.State, n.Term, n.Leader = st.State, st.Term, st.Leader.ID
	n.AppliedIndex, n.CommitIndex, n.LastContact = st.AppliedIndex, st.CommitIndex, st.LastContact
	problem := func(format string, args ...any) { n.Problems = append(n.Problems, fmt.Sprintf(format, args...)) }
	if st.Halted != "" {
		problem("halted: %s", printable.Clip(st.Halted, 300))
	}
	switch st.State {
	case "leader", "follower":
	case "candidate":
		problem("holds an election")
	default:
		problem("its raft state is %q", printable.Clip(st.State, 40))
	}
	switch {
	case st.Term < term && st.State == "leader":
		problem("answers as leader of term %d, but term %d has begun", st.Term, term)
	case st.Term < term:
		problem("in term %d, a member is in term %d", st.Term, term)
	case leaderID == "":
		if st.State != "leader" {
			problem("no member answered as the leader")
		}
	case st.ID == leaderID:
	case st.Leader.ID == "":
		problem("knows no leader")
	case st.Leader.ID != leaderID:
		problem("follows %s, not the leader %s", printable.Clip(st.Leader.ID, 80), leaderID)
	}
	if st.State == "follower" {
		switch {
		case st.LastContact < 0:
			problem("has not heard from a leader since it started")
		case st.LastContact > HealthyMaxContact:
			problem("last heard from the leader %s ago", st.LastContact.Round(time.Millisecond))
		}
		if st.CaughtUp < 0 {
			// It sends tenant requests to the leader until it has.
			problem("has not caught up with the leader since it started")
		}
	}
	if leader != nil && leader.CommitIndex > st.AppliedIndex {
		n.Lag = leader.CommitIndex - st.AppliedIndex
		if n.Lag > HealthyMaxLag {
			problem("%d committed entries behind the leader", n.Lag)
		}
	}
	n.Healthy = len(n.Problems) == 0
	return n
}
