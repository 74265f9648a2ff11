package core_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/batpak-go/batpak/core"
)

func TestCompactSmoke(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	var ids []core.EventID
	for i := 0; i < 2000; i++ {
		r := mustAppend(t, s, mustCoord(t, fmt.Sprintf("c:%d", i%10), "s"), kindA, fmt.Sprintf(`{"i":%d,"pad":"%0100d"}`, i, i))
		ids = append(ids, r.ID)
	}
	before := s.Stats()
	rep, err := s.Compact(ctx, core.CompactConfig{Merge: true, MaxPerEntity: 50, Tombstone: func(ev core.StoredEvent) bool { return ev.Coordinate.Entity == "c:3" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v before %+v after %+v", rep, before, s.Stats())
	if _, err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	evs, err := s.Stream("c:1")
	if err != nil {
		t.Fatal(err)
	}
	t.Log("c:1 events", len(evs))
	last := ids[len(ids)-1]
	if _, err := s.Get(last); err != nil {
		t.Fatal(err)
	}
	r := mustAppend(t, s, mustCoord(t, "c:1", "s"), kindA, `{}`)
	t.Log("next", r.GlobalSequence, r.Clock)
	s2 := reopen(t, s)
	if _, err := s2.Verify(); err != nil {
		t.Fatal(err)
	}
	evs2, _ := s2.Stream("c:1")
	if len(evs2) != len(evs)+1 {
		t.Fatal(len(evs2), len(evs))
	}
	t.Log(s2.Diagnostics().Open)
}
