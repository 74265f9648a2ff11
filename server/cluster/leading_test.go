package cluster_test

import (
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// TestLeadingWaitsForEarlierTerms: a node counts as Leading (what the
// server judges requests on) only once it has applied every entry
// committed before its term — after the leader that acknowledged writes
// stops, the next one says it leads only when those writes are in its
// stores; a follower never does.
func TestLeadingWaitsForEarlierTerms(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(5 * time.Second)
	waitLeading := func() {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !l.Leading(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s leads but is not Leading within 5s", l.ID())
			}
		}
	}
	waitLeading()
	var last uint64
	for i := range 50 {
		rs := mustAppend(t, l, "acme", item("e:"+string(rune('a'+i%26)), `{"n":1}`, core.AppendOptions{}))
		last = rs[0].Index
	}
	for _, n := range c.list() {
		if n != l && n.Leading() {
			t.Fatalf("follower %s says it is Leading", n.ID())
		}
	}
	c.stop(l.ID())
	l = c.leader(10 * time.Second)
	waitLeading()
	if got := l.AppliedIndex(); got < last {
		t.Fatalf("%s is Leading with index %d applied, before the write the previous leader acknowledged at %d", l.ID(), got, last)
	}
}
