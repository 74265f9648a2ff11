package cluster

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Status is a node's view of the cluster, for the admin API and the CLI.
// It is a snapshot taken without coordination: fields read at slightly
// different moments may disagree by an entry or two.
type Status struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// State is "leader", "follower", "candidate" or "shutdown".
	State string `json:"state"`
	// Leader is the leader this node knows of (ID and Address only);
	// empty during an election.
	Leader Member `json:"leader"`
	Term   uint64 `json:"term"`
	// AppliedIndex is the last log index this node's stores reflect:
	// the last entry that reached them (Node.AppliedIndex) or, past it,
	// entries that write nothing (a new leader's no-op, barriers), so
	// that it reaches CommitIndex when the node is caught up. Entries
	// raft has only queued for the stores do not count (nor, on a halted
	// node, any after the halt). CommitIndex is the last this node knows committed;
	// LastLogIndex the last in its log (or snapshot).
	AppliedIndex      uint64 `json:"applied_index"`
	CommitIndex       uint64 `json:"commit_index"`
	LastLogIndex      uint64 `json:"last_log_index"`
	LastSnapshotIndex uint64 `json:"last_snapshot_index"`
	// LastContact is, on a follower or candidate, the time since it last
	// heard from a leader (-1 if it never has); 0 on the leader.
	LastContact time.Duration `json:"last_contact"`
	// CaughtUp is, on a follower or candidate, the time since it last
	// held everything its leader had committed (Node.CaughtUpAt; -1 if it
	// has not since it started); 0 on the leader. It grows past
	// LastContact while the leader is not replicating to this node.
	CaughtUp time.Duration `json:"caught_up"`
	// Servers is the latest cluster configuration this node knows (it may
	// not be committed yet); empty on a node never bootstrapped or joined.
	Servers []Member `json:"servers"`
	// RefusedConnections counts inbound connections a TLS or peer-key
	// node closed before raft saw them: failed or timed-out handshakes (a
	// certificate from another CA, a wrong or missing peer key, a
	// plain-TCP peer, silence) and connections beyond
	// MaxPendingHandshakes. Always 0 without Config.TLS or Config.PeerKey.
	RefusedConnections uint64 `json:"refused_connections"`
	// Halted is Node.Err's message when the node stopped applying the log.
	Halted string `json:"halted,omitempty"`
	// Removed: the latest configuration this node knows (Servers) does
	// not name it — it was removed from the cluster (Node.Removed).
	Removed bool `json:"removed,omitempty"`
}

// Member is one server of the cluster configuration.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Suffrage is "voter" or "nonvoter" ("staging" is unused by raft).
	Suffrage string `json:"suffrage,omitempty"`
	// Leader is set on the member this node knows as the leader.
	Leader bool `json:"leader,omitempty"`
}

// Status reports this node's raft state. It asks no other node (it waits
// only for this node's raft loop to hand over its configuration); on a
// closed node State is "shutdown" and Servers is empty.
func (n *Node) Status() Status {
	stats := n.raft.Stats()
	num := func(k string) uint64 {
		v, _ := strconv.ParseUint(stats[k], 10, 64)
		return v
	}
	addr, id := n.raft.LeaderWithID()
	st := Status{
		ID:                n.cfg.ID,
		Address:           n.Addr(),
		State:             strings.ToLower(n.raft.State().String()),
		Leader:            Member{ID: string(id), Address: string(addr)},
		Term:              num("term"),
		AppliedIndex:      n.state.index(),
		CommitIndex:       n.raft.CommitIndex(),
		LastLogIndex:      num("last_log_index"),
		LastSnapshotIndex: num("last_snapshot_index"),
		Servers:           []Member{},
	}
	switch state := n.raft.State(); {
	case state == raft.Leader:
	case n.raft.LastContact().IsZero():
		st.LastContact = -1
	default:
		st.LastContact = time.Since(n.raft.LastContact())
	}
	if n.raft.State() != raft.Leader {
		if at := n.CaughtUpAt(); at.IsZero() {
			st.CaughtUp = -1
		} else {
			st.CaughtUp = time.Since(at)
		}
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			m := Member{ID: string(s.ID), Address: string(s.Address), Leader: s.ID == id && id != ""}
			switch s.Suffrage {
			case raft.Voter:
				m.Suffrage = "voter"
			case raft.Nonvoter:
				m.Suffrage = "nonvoter"
			default:
				m.Suffrage = "staging"
			}
			st.Servers = append(st.Servers, m)
		}
	}
	st.Removed = n.Removed()
	if n.stream != nil {
		st.RefusedConnections = n.stream.refused.Load()
	}
	if err := n.Err(); err != nil {
		st.Halted = err.Error()
	}
	return st
}

// Removed reports whether this node was removed from the cluster: it has
// been a member (Dir/member: the latest configuration named it while it
// led, or once it had caught up with a leader) and the latest
// configuration it knows names other members and not it. Such a node
// takes no part in elections or commits (its peers refuse its votes) and
// learns nothing new; only joining it again (an empty Dir, then Join)
// makes it a member. A node that never joined is not removed, nor one
// joining with an empty Dir while it catches up: the configurations it
// applies first may be from before its addition (one of them may name a
// node that had its id and was removed).
func (n *Node) Removed() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	if namesID(f.Configuration(), n.cfg.ID) {
		if n.IsLeader() || !n.CaughtUpAt().IsZero() {
			n.member.note()
		}
		return false
	}
	return n.member.seen.Load() && len(f.Configuration().Servers) > 0
}

// noteMember marks the node a member once it has caught up with a leader
// while the latest configuration names it (catchUp calls it).
func (n *Node) noteMember() {
	if n.member.seen.Load() {
		return
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil && namesID(f.Configuration(), n.cfg.ID) {
		n.member.note()
	}
}

// namesID reports whether configuration c names server id.
func namesID(c raft.Configuration, id string) bool {
	for _, s := range c.Servers {
		if string(s.ID) == id {
			return true
		}
	}
	return false
}

// memberFile, in a node's Dir, records that the node has been a member.
const memberFile = "member"

// memberMark remembers that this node has been a member of the cluster,
// across restarts (its file), so that a latest configuration without it
// means it was removed, not that it is still catching up.
type memberMark struct {
	path string
	seen atomic.Bool
}

// open reads the mark from path, or removes it when fresh (the node has
// no raft state: a membership starts anew).
func (m *memberMark) open(path string, fresh bool) error {
	m.path = path
	if fresh {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if _, err := os.Stat(path); err == nil {
		m.seen.Store(true)
	}
	return nil
}

// note records that the node is a member (once; a failed write leaves
// the mark in memory for this process).
func (m *memberMark) note() {
	if m.seen.Load() || m.path == "" {
		return
	}
	m.seen.Store(true)
	_ = os.WriteFile(m.path, []byte("this node has been a member of its cluster\n"), 0o600)
}
