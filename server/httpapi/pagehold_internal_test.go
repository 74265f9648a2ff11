package httpapi

import (
	"context"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/follow"
)

// TestPageRoomFollowsWhatIsRead: the room a page or a causal walk holds
// follows the bytes it reads — a walk of a small conversation and a page
// of small events hold little of the tenant's share, so many of them run
// at once — and a page of one event larger than the share holds it alone.
func TestPageRoomFollowsWhatIsRead(t *testing.T) {
	s, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	c, _ := core.NewCoordinate("order:1", "shop")
	var first, last core.EventID
	for i := range 300 {
		opts := core.AppendOptions{}
		if i > 0 && i < 3 {
			opts.CausationID, opts.CorrelationID = last, first
		}
		r, err := s.AppendWithOptions(ctx, c, core.MustKind(1, 1), []byte(`{"note":"a small order event of about a hundred bytes, like most of them"}`), opts)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = r.ID
		}
		last = r.ID
	}
	hold := func() *pageHold { return &pageHold{budget: newBodyBudget(nil), ctx: ctx, owner: "acme"} }

	h := hold()
	res, err := walkHeld(h, core.CausalLimits{MaxEvents: 100}, func(l core.CausalLimits) (core.CausalResult, error) { return s.Descendants(first, l) })
	if err != nil || len(res.Events) != 3 {
		t.Fatalf("walk: %d events, %v", len(res.Events), err)
	}
	if h.held > 128<<10 {
		t.Errorf("a walk of 3 small events holds %d KiB", h.held>>10)
	}
	h.release()

	h = hold()
	evs, more, _, err := readPage(s.Cursor(core.All()), 1000, 0, h)
	if err != nil || len(evs) != 300 || more {
		t.Fatalf("page: %d events, more %v, %v", len(evs), more, err)
	}
	if read := heldBytesOf(evs); h.held > int64(pageHoldBase+pageHoldFactor*2*read) {
		t.Errorf("a page of %d KiB of events holds %d KiB", read>>10, h.held>>10)
	}
	h.release()
}

// A paced event stream sends, for one request, as many events from the
// store as a page holds: the two bounds are one.
func TestStreamStepIsAPage(t *testing.T) {
	if follow.StoreEventsStep != MaxPageLimit {
		t.Fatalf("follow.StoreEventsStep %d, MaxPageLimit %d: a stream's step and a page differ", follow.StoreEventsStep, MaxPageLimit)
	}
}
