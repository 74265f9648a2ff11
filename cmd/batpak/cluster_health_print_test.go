package main

import (
	"strings"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
)

// TestShowMembersHealth: cluster status prints each member's state,
// applied index, lag and verdict, the reasons of the unhealthy, and how
// many more voters may fail; without health, the members alone.
func TestShowMembersHealth(t *testing.T) {
	st := client.ClusterStatus{
		Members: []client.ClusterMember{
			{ID: "n1", Address: "127.0.0.1:7071", Suffrage: "voter", Leader: true, URL: "http://127.0.0.1:7070"},
			{ID: "n2", Address: "127.0.0.1:7081", Suffrage: "voter", URL: "http://127.0.0.1:7080"},
			{ID: "n3", Address: "127.0.0.1:7091", Suffrage: "voter", URL: "http://127.0.0.1:7090"},
		},
		Health: &client.ClusterHealth{Leader: "n1", Voters: 3, Quorum: 2, HealthyVoters: 2, FailureTolerance: 0, Answered: 2, Unanswered: 1,
			Nodes: []client.ClusterNodeHealth{
				{ID: "n1", Reachable: true, Voter: true, State: "leader", AppliedIndex: 40, Healthy: true},
				{ID: "n2", Reachable: true, Voter: true, State: "follower", AppliedIndex: 39, Lag: 1, Healthy: true},
				{ID: "n3", Voter: true, Error: "unreachable", Problems: []string{"unreachable"}},
			}},
	}
	var b strings.Builder
	if err := showMembers(&b, st); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	flat := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{
		"ID ROLE RAFT ADDRESS URL STATE APPLIED LAG HEALTH",
		"n1 leader 127.0.0.1:7071 http://127.0.0.1:7070 leader 40 0 healthy",
		"n2 voter 127.0.0.1:7081 http://127.0.0.1:7080 follower 39 1 healthy",
		"n3 voter 127.0.0.1:7091 http://127.0.0.1:7090 - - - UNREACHABLE",
		"node n3: unreachable",
		"health: leader n1; 2 of 3 voters healthy, a quorum is 2: none more may fail",
	} {
		if !strings.Contains(flat, want) {
			t.Fatalf("printed:\n%s\nwant %q", out, want)
		}
	}
	st.Health.HealthyVoters, st.Health.FailureTolerance = 1, -1
	b.Reset()
	showMembers(&b, st)
	if !strings.Contains(b.String(), "NO QUORUM: writes cannot commit") {
		t.Fatalf("printed:\n%s\nwant NO QUORUM", b.String())
	}
	st.Health = nil
	b.Reset()
	showMembers(&b, st)
	if out := b.String(); strings.Contains(out, "HEALTH") || strings.Contains(out, "health:") || !strings.Contains(out, "n3") {
		t.Fatalf("without health, printed:\n%s", out)
	}
	if strings.Contains(b.String(), "note:") {
		t.Fatalf("three voters printed a note:\n%s", b.String())
	}
	// Four voters are no more forgiving than three: said.
	st.Members = append(st.Members, client.ClusterMember{ID: "n4", Address: "127.0.0.1:7101", Suffrage: "voter"})
	b.Reset()
	showMembers(&b, st)
	if !strings.Contains(b.String(), "note: 4 voters tolerate as many failures as 3 do (a quorum is 3): run 3 or 5") {
		t.Fatalf("four voters printed:\n%s", b.String())
	}
}
