package httpapi

import (
	"context"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/follow"
)

// A JSON page of events (a query, an entity's stream, a cursor poll, a
// causal walk) is built whole before it is written: the events read, their
// wire form and the encoded body are in memory at once. So a page takes
// its room in the response budget (bodies.go) before it reads, step by
// step as it grows, and never reads what it holds no room for: many
// concurrent page reads are refused (503 BUSY) or end their pages early
// instead of allocating first and asking afterwards.
const (
	// pageHoldFactor is the memory a page holds per byte of events read
	// (core.StoredEvent.HeldBytes): the events, and the encoded body,
	// which may be twice its length while its buffer grows.
	pageHoldFactor = 3
	// pageHoldBase is held besides: the wire forms' slices and the
	// response writer's buffer.
	pageHoldBase = 16 << 10
	// pageFirstStep is how many bytes of events a page's first read
	// takes; each further read takes twice the one before, up to
	// pageMaxStep. A small page holds little; a page of MaxPageBytes
	// takes a few steps.
	pageFirstStep = 16 << 10
	pageMaxStep   = 2 << 20
)

// pageHold is the response budget one page holds. Its holds are given
// back by release, after the page is written.
type pageHold struct {
	budget   *bodyBudget
	rec      *recorder // the response (nil: none)
	ctx      context.Context
	owner    string
	held     int64
	releases []func()
}

func (a *API) newPageHold(c *call) *pageHold {
	return &pageHold{budget: a.bodies, rec: recorderOf(c.w), ctx: c.r.Context(), owner: c.tenant}
}

// room makes the hold cover a page of n bytes of events (HeldBytes),
// taking what it lacks; the error is 503 BUSY when the server or the
// tenant's share has no room within a second.
func (h *pageHold) room(n int) error {
	want := min(pageHoldBase+pageHoldFactor*int64(n), MaxResponseBytes)
	if want <= h.held {
		return nil
	}
	rel, err := h.budget.take(h.ctx, h.owner, want-h.held, h.rec)
	if err != nil {
		return err
	}
	h.releases = append(h.releases, rel)
	h.held = want
	return nil
}

// alone makes the hold cover n bytes of events as one response of its
// own: what it held is given back and taken again in one piece, which the
// budget grants a tenant holding nothing else even past its share (an
// event larger than a third of the share could never be read otherwise).
func (h *pageHold) alone(n int) error {
	h.release()
	return h.room(n)
}

func (h *pageHold) release() {
	for _, r := range h.releases {
		r()
	}
	h.releases, h.held = nil, 0
}

// heldBytesOf sums HeldBytes over evs.
func heldBytesOf(evs []core.StoredEvent) int {
	n := 0
	for i := range evs {
		n += evs[i].HeldBytes()
	}
	return n
}

// PageExamine bounds the index entries one page of events examines
// (GET …/events, GET …/cursors/{name}/events): the posting-list or log
// entries it decides, matching the region or not. A page that reaches it
// ends there, perhaps with no events, its next_after (next_position)
// saying where to go on, so that a request costs about the same CPU, and
// holds the tenant's index about as briefly, whatever the tenant's log
// holds and however rarely the region matches (a category alone, which
// no index list narrows, walks the log). It is the step an event stream
// walks the index in (follow.ScanStep), so a page, an NDJSON query's step
// and a stream's step each cost one request.
const PageExamine = follow.ScanStep

// readPage polls cur for up to limit events, in steps that first take
// their room in h, and stops once the page holds MaxPageBytes of payload
// (it always holds at least one event): a page of large events must not
// take the server's memory. It examines at most examine index entries
// in all (core.Cursor.ExamineAtMost; 0: no bound): a region few events
// match ends the page there, perhaps with no events, so a page costs
// about the same whatever the log holds. more reports that it stopped at
// the limit, the byte bound, the examine bound or the budget rather than
// at the end of the region; next is then the sequence to continue from
// (one past the last event returned, or past what was examined when the
// examine bound stopped it): the cursor may have moved past it. Only a
// page that could not take room for its first event fails (503 BUSY).
func readPage(cur *core.Cursor, limit, examine int, h *pageHold) (out []core.StoredEvent, more bool, next uint64, err error) {
	size, read, step := 0, 0, pageFirstStep
	base := cur.Examined()
	// upTo ends the page early after out: the events polled past its
	// last one are read again by the next page.
	upTo := func() ([]core.StoredEvent, bool, uint64, error) {
		return out, true, out[len(out)-1].GlobalSequence + 1, nil
	}
	for len(out) < limit {
		if examine > 0 {
			left := examine - int(min(cur.Examined()-base, uint64(examine)))
			if left == 0 {
				return out, true, cur.Position(), nil
			}
			cur.ExamineAtMost(left)
		}
		bound := min(step, max(MaxPageBytes-size, 1))
		if err := h.room(read + bound); err != nil {
			if len(out) > 0 {
				return upTo()
			}
			return nil, false, 0, err
		}
		evs, full, err := cur.PollBytes(min(ndjsonPage, limit-len(out)), bound)
		if err != nil {
			return nil, false, 0, err
		}
		if len(evs) == 0 {
			return out, full, cur.Position(), nil // full: the examine bound, entries left
		}
		stepRead := 0
		for _, ev := range evs {
			if len(out) > 0 && size+len(ev.Payload) > MaxPageBytes {
				return upTo()
			}
			// An event larger than the step comes alone: its room is
			// taken once it is read (bounded by the largest payload); the
			// first of a page, alone if need be.
			if n := ev.HeldBytes(); n > bound {
				err := h.room(read + n)
				if err != nil && len(out) == 0 {
					err = h.alone(n)
				}
				if err != nil {
					if len(out) > 0 {
						return upTo()
					}
					return nil, false, 0, err
				}
			}
			size += len(ev.Payload)
			read += ev.HeldBytes()
			stepRead += ev.HeldBytes()
			out = append(out, ev)
		}
		if full && size >= MaxPageBytes {
			return out, true, cur.Position(), nil
		}
		// The next step: twice this one when the bytes bounded it, else
		// twice what it read (a poll takes at most ndjsonPage events, so
		// small events never need a large step's room).
		if full {
			step = min(2*step, pageMaxStep)
		} else {
			step = min(max(2*stepRead, pageFirstStep), pageMaxStep)
		}
	}
	return out, true, cur.Position(), nil
}

// walkHeld runs a causal walk (limits lim, except its byte bound) with
// its room in h: bounded first at walkSteps[0], which most walks fit, and
// walked again at the next bound, its room held first, while the bound
// may have cut it short (a walk cut short by its depth is walked again
// too: the result does not say which bound cut it), up to MaxPageBytes. A
// walk that finds no room for a larger bound answers the last one
// (marked truncated); one that finds none for the first fails with 503
// BUSY.
func walkHeld(h *pageHold, lim core.CausalLimits, walk func(core.CausalLimits) (core.CausalResult, error)) (core.CausalResult, error) {
	var res core.CausalResult
	for i, bound := range walkSteps {
		if err := h.room(bound + heldBytesOf(res.Events)); err != nil {
			if i == 0 {
				return res, err
			}
			return res, nil
		}
		lim.MaxBytes = bound
		next, err := walk(lim)
		if err != nil {
			return res, err
		}
		// Its events are read: their room, alone if one is larger than
		// the tenant's share.
		if err := h.room(heldBytesOf(next.Events)); err != nil {
			if i > 0 {
				return res, nil
			}
			if len(next.Events) != 1 || h.alone(heldBytesOf(next.Events)) != nil {
				return res, err
			}
		}
		res = next
		if !res.Truncated || len(res.Events) >= lim.MaxEvents {
			return res, nil // whole, or cut short by its count
		}
	}
	return res, nil
}

// walkSteps are the byte bounds a causal walk is tried at (walkHeld).
var walkSteps = []int{pageFirstStep, 256 << 10, pageMaxStep, MaxPageBytes}
