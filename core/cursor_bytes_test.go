package core_test

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// TestCursorPollBytes: PollBytes stops before the event that would take
// the bytes it holds (payload, names and 160 bytes each) past its bound
// (always returning one when there is one), says so with more, and moves
// past the events it returned only: polling on delivers every event of
// the region once, in order. Events with long names and empty payloads
// are bounded as surely as large payloads.
func TestCursorPollBytes(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "e:1", "s")
	for i := range 6 {
		mustAppend(t, s, c, kindA, fmt.Sprintf(`{"p":"%s"}`, strings.Repeat("x", 100*(i+1))))
	}
	cur := s.Cursor(core.All())
	var sizes []int
	var mores []bool
	var got []core.StoredEvent
	for range 6 {
		evs, more, err := cur.PollBytes(100, 650)
		if err != nil {
			t.Fatal(err)
		}
		sizes, mores, got = append(sizes, len(evs)), append(mores, more), append(got, evs...)
		if len(evs) > 1 {
			total := 0
			for _, ev := range evs {
				total += len(ev.Payload) + len(ev.Coordinate.Entity) + len(ev.Coordinate.Scope) + 160
			}
			if total > 650 {
				t.Fatalf("a poll of %d events holds %d bytes, bound 650", len(evs), total)
			}
		}
		if len(evs) == 0 {
			break
		}
	}
	// Payloads are 108, 208, …, 608 bytes, each event 164 bytes more:
	// 272+372, then one each.
	want := "[2 1 1 1 1 0] [true true true true false false]"
	if g := fmt.Sprint(sizes, mores); g != want {
		t.Fatalf("sizes and more %s, want %s", g, want)
	}
	sameEvents(t, "polled in bytes", got, mustQuery(t, s, core.All()))
	if cur.Position() != 6 {
		t.Fatalf("Position = %d, want 6", cur.Position())
	}

	named := openStore(t)
	for i := range 20 {
		mustAppend(t, named, mustCoord(t, fmt.Sprintf("e:%d:%s", i, strings.Repeat("n", 1000)), strings.Repeat("s", 1000)), kindA, `{}`)
	}
	if evs, more, err := named.Cursor(core.All()).PollBytes(100, 10_000); err != nil || len(evs) != 4 || !more {
		t.Fatalf("events of 2 KB of names and an empty payload, polled within 10,000 bytes: %d events, more %v, %v; want 4 and more", len(evs), more, err)
	}

	// A region, random bounds: every event once, in order.
	rng := rand.New(rand.NewSource(2))
	cursorFixture(t, s, rng, 60)
	for _, r := range cursorRegions {
		cur := s.Cursor(r)
		var got []core.StoredEvent
		for {
			evs, _, err := cur.PollBytes(1+rng.Intn(7), 1+rng.Intn(200))
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) == 0 {
				break
			}
			got = append(got, evs...)
		}
		sameEvents(t, fmt.Sprintf("cursor over %v in bytes", r), got, mustQuery(t, s, r))
	}
}
