package cluster_test

import (
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/cluster"
)

func view(id, state string, term uint64, leader string, applied, commit uint64, contact time.Duration) cluster.MemberView {
	return cluster.MemberView{ID: id, Voter: true, Status: &cluster.Status{ID: id, State: state, Term: term,
		Leader: cluster.Member{ID: leader}, AppliedIndex: applied, CommitIndex: commit, LastContact: contact}}
}

// TestAssess: a member is healthy when it answered, is not halted,
// follows the leader in the leader's term, heard from it lately and has
// applied nearly all it committed; the cluster's failure tolerance is its
// healthy voters beyond a quorum.
func TestAssess(t *testing.T) {
	ms := 50 * time.Millisecond
	for _, tc := range []struct {
		name      string
		views     []cluster.MemberView
		leader    string
		tolerance int
		problem   map[string]string // member → a problem it must have ("" none)
	}{
		{"all healthy",
			[]cluster.MemberView{view("n1", "leader", 3, "n1", 100, 100, 0), view("n2", "follower", 3, "n1", 99, 100, ms), view("n3", "follower", 3, "n1", 100, 100, ms)},
			"n1", 1, map[string]string{"n1": "", "n2": "", "n3": ""}},
		{"one unreachable",
			[]cluster.MemberView{view("n1", "leader", 3, "n1", 100, 100, 0), view("n2", "follower", 3, "n1", 100, 100, ms), {ID: "n3", Voter: true, Error: "unreachable"}},
			"n1", 0, map[string]string{"n1": "", "n2": "", "n3": "unreachable"}},
		{"far behind",
			[]cluster.MemberView{view("n1", "leader", 3, "n1", 5000, 5000, 0), view("n2", "follower", 3, "n1", 4000, 4000, ms), view("n3", "follower", 3, "n1", 4990, 5000, ms)},
			"n1", 0, map[string]string{"n2": "1000 committed entries behind", "n3": ""}},
		{"an old term and another leader",
			[]cluster.MemberView{view("n1", "leader", 4, "n1", 10, 10, 0), view("n2", "follower", 3, "n3", 10, 10, ms), view("n3", "follower", 4, "n2", 10, 10, ms)},
			"n1", -1, map[string]string{"n2": "in term 3, a member is in term 4", "n3": "follows n2, not the leader n1"}},
		{"a deposed leader, the new one unanswered",
			[]cluster.MemberView{view("a", "leader", 5, "a", 10, 10, 0), view("c", "follower", 6, "b", 12, 12, ms), {ID: "b", Voter: true, Error: "unreachable"}},
			"b", -1, map[string]string{"a": "answers as leader of term 5, but term 6 has begun", "c": "", "b": "unreachable"}},
		{"no leader answered",
			[]cluster.MemberView{view("n1", "candidate", 5, "", 10, 10, 3*time.Second), view("n2", "follower", 4, "", 10, 10, -1), {ID: "n3", Voter: true, Error: "unreachable"}},
			"", -2, map[string]string{"n1": "holds an election", "n2": "has not heard from a leader since it started"}},
		{"restarted, not caught up yet",
			[]cluster.MemberView{view("n1", "leader", 3, "n1", 10, 10, 0), func() cluster.MemberView {
				v := view("n2", "follower", 3, "n1", 0, 0, ms)
				v.Status.CaughtUp = -1
				return v
			}(), view("n3", "follower", 3, "n1", 10, 10, ms)},
			"n1", 0, map[string]string{"n2": "has not caught up with the leader since it started", "n3": ""}},
		{"silent leader",
			[]cluster.MemberView{view("n1", "leader", 3, "n1", 10, 10, 0), view("n2", "follower", 3, "n1", 10, 10, 5*time.Second), view("n3", "follower", 3, "n1", 10, 10, ms)},
			"n1", 0, map[string]string{"n2": "last heard from the leader 5s ago"}},
		{"halted",
			[]cluster.MemberView{view("n1", "leader", 3, "n1", 10, 10, 0), func() cluster.MemberView {
				v := view("n2", "follower", 3, "n1", 10, 10, ms)
				v.Status.Halted = "cannot apply entry 9"
				return v
			}(), view("n3", "follower", 3, "n1", 10, 10, ms)},
			"n1", 0, map[string]string{"n2": "halted: cannot apply entry 9"}},
		{"a nonvoter is not counted",
			[]cluster.MemberView{view("n1", "leader", 3, "n1", 10, 10, 0), view("n2", "follower", 3, "n1", 10, 10, ms), view("n3", "follower", 3, "n1", 10, 10, ms), func() cluster.MemberView {
				v := view("n4", "follower", 3, "n1", 10, 10, ms)
				v.Voter = false
				return v
			}()},
			"n1", 1, map[string]string{"n4": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := cluster.Assess(tc.views)
			if h.Leader != tc.leader || h.FailureTolerance != tc.tolerance || len(h.Nodes) != len(tc.views) {
				t.Fatalf("leader %q, tolerance %d, %d nodes; want %q, %d, %d: %+v", h.Leader, h.FailureTolerance, len(h.Nodes), tc.leader, tc.tolerance, len(tc.views), h)
			}
			for _, n := range h.Nodes {
				want, ok := tc.problem[n.ID]
				if !ok {
					continue
				}
				got := strings.Join(n.Problems, "; ")
				if want == "" && (!n.Healthy || got != "") || want != "" && (n.Healthy || !strings.Contains(got, want)) {
					t.Fatalf("%s: healthy %v, problems %q; want %q", n.ID, n.Healthy, got, want)
				}
			}
		})
	}
}

// TestReadView: a member's answer is its view only when it is a status
// naming that member.
func TestReadView(t *testing.T) {
	for body, want := range map[string]string{
		`{"id":"n2","state":"follower","term":3,"url":"http://x"}`: "",
		`{"id":"n3","state":"follower"}`:                           `answered as node "n3"`,
		`{"state":"follower"}`:                                     "names no node",
		`not json`:                                                 "not a cluster status",
	} {
		v := cluster.ReadView("n2", true, []byte(body))
		if want == "" && (v.Status == nil || v.Status.Term != 3 || v.Error != "") || want != "" && (v.Status != nil || !strings.Contains(v.Error, want)) {
			t.Fatalf("%s: %+v, want %q", body, v, want)
		}
	}
}
