package core_test

import (
	"context"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// proposalRecorder admits every write and keeps the last proposal's
// entity state.
type proposalRecorder struct {
	exists bool
	clock  uint64
}

func (r *proposalRecorder) Admit(_ context.Context, p *core.Proposal) error {
	r.exists, r.clock = p.EntityExists, p.EntityClock
	return nil
}

// Store.EntityClock is the entity state a write proposed now carries to
// admission (what a policy dry run fills in): none before the entity's
// first event, then its latest event's clock; another entity's events
// do not count.
func TestEntityClockIsWhatAProposalCarries(t *testing.T) {
	rec := &proposalRecorder{}
	s := openStore(t, func(c *core.Config) { c.Admission = rec })
	c := mustCoord(t, "clock:1", "s")
	for i := range 3 {
		clock, exists := s.EntityClock("clock:1")
		mustAppend(t, s, c, kindA, `{}`)
		if clock != rec.clock || exists != rec.exists || exists != (i > 0) {
			t.Fatalf("before write %d: EntityClock %d, %v; the write's proposal carried %d, %v", i, clock, exists, rec.clock, rec.exists)
		}
	}
	mustAppend(t, s, mustCoord(t, "clock:2", "s"), kindA, `{}`)
	if clock, exists := s.EntityClock("clock:1"); clock != 2 || !exists {
		t.Fatalf("after three events: EntityClock %d, %v, want 2, true", clock, exists)
	}
	if clock, exists := s.EntityClock("clock:3"); clock != 0 || exists {
		t.Fatalf("an entity with no events: EntityClock %d, %v, want 0, false", clock, exists)
	}
}
