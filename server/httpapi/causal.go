package httpapi

import (
	"net/http"
	"strconv"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/wire"
)

// MaxCausalDepth caps the depth parameter of the descendants route (how
// many causation links below the event are followed); a larger depth is
// capped to it. Without the parameter core.DefaultCausalMaxDepth applies.
const MaxCausalDepth = 1024

// descendants serves GET …/events/{id}/descendants?limit=N&depth=D: the
// event and what it caused, transitively, in global order, at most limit
// events (DefaultPageLimit, capped at MaxPageLimit; fewer when they pass
// MaxPageBytes of payload) and depth levels; "truncated" says the bounds
// left events out.
func (a *API) descendants(c *call) error {
	return a.causal(c, true)
}

// correlation serves GET …/events/{id}/correlation?limit=N: every event
// of the event's conversation (same correlation id), in global order, at
// most limit (DefaultPageLimit, capped at MaxPageLimit; fewer when they
// pass MaxPageBytes of payload), the earliest first; "truncated" says
// more exist.
func (a *API) correlation(c *call) error {
	return a.causal(c, false)
}

func (a *API) causal(c *call, down bool) error {
	id, err := core.ParseEventID(c.r.PathValue("id"))
	if err != nil {
		return errInvalid("id", "not an event id (a UUID)")
	}
	limit, err := pageLimit(c.r, DefaultPageLimit, MaxPageLimit)
	if err != nil {
		return err
	}
	lim := core.CausalLimits{MaxEvents: limit}
	if down {
		if lim.MaxDepth, err = causalDepth(c.r); err != nil {
			return err
		}
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	h := a.newPageHold(c)
	defer h.release()
	res, err := walkHeld(h, lim, func(lim core.CausalLimits) (core.CausalResult, error) {
		if down {
			return s.Descendants(id, lim)
		}
		return s.Correlation(id, lim)
	})
	if err != nil {
		return err
	}
	return writeJSONHolding(c.w, http.StatusOK, map[string]any{"events": wire.FromStoredAll(res.Events), "truncated": res.Truncated}, h.held)
}

func causalDepth(r *http.Request) (int, error) {
	s := r.URL.Query().Get("depth")
	if s == "" {
		return core.DefaultCausalMaxDepth, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, errInvalid("depth", "depth must be a whole number ≥ 1, got "+strconv.Quote(clip(s)))
	}
	return min(n, MaxCausalDepth), nil
}
