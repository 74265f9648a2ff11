package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/wire"
)

// Named cursors: the definition (name, region) lives in the control plane;
// the committed position lives in the tenant's store as the core named
// cursor of the same name. Lag is counted in global sequences: the log end
// minus the committed position (an upper bound on the region's unread
// events).

func (a *API) cursorDef(c *call) (control.CursorDef, core.Region, error) {
	name := c.r.PathValue("name")
	if d, ok := a.opts.Plane.Cursor(c.tenant, name); ok {
		r, err := wire.RegionFromControl(d.Region)
		return d, r, err
	}
	return control.CursorDef{}, core.Region{}, errNotFound("no such cursor")
}

func (a *API) listCursors(c *call) error {
	defs := a.opts.Plane.Cursors(c.tenant)
	out := make([]map[string]any, 0, len(defs))
	var s *core.Store
	if len(defs) > 0 {
		var err error
		if s, err = c.store(); err != nil {
			return err
		}
	}
	for _, d := range defs {
		r, err := wire.RegionFromControl(d.Region)
		if err != nil {
			return err
		}
		cur, err := s.NamedCursor(d.Name, r)
		if cursorDamaged(err) {
			a.logDamagedCursor(c, d.Name, err)
			out = append(out, map[string]any{"name": d.Name, "region": d.Region, "damaged": damagedCursorAdvice})
			continue
		}
		if err != nil {
			return err
		}
		committed := cur.Committed()
		end := s.Usage().GlobalSequence
		out = append(out, map[string]any{"name": d.Name, "region": d.Region, "committed": committed, "lag": end - min(committed, end)})
	}
	return writeJSON(c.w, http.StatusOK, map[string]any{"cursors": out})
}

// CursorWriteCost is how many events of the tenant's write rate a cursor
// change takes: defining, deleting and committing a cursor each write a
// record of their own (to the control plane, or the cursor's position:
// a file written atomically and, on a cluster, a raft entry every node
// applies alone), where appends share their write and sync with
// others. At the default write rate (20,000 events/s) that is 312
// cursor changes a second, far above a consumer committing after each
// page.
const CursorWriteCost = 64

// cursorWrite takes CursorWriteCost events of the tenant's write rate
// (at most its events_burst) for a cursor change, so a tenant cannot make
// them faster than it could make the writes they cost as much as.
func (a *API) cursorWrite(c *call) error {
	ex := a.quotaOf(c).AllowWriteCost(CursorWriteCost)
	if ex == nil {
		return nil
	}
	if ex.RetryAfter > 0 {
		return a.holdRefusal(c, ex)
	}
	return ex
}

func (a *API) defineCursor(c *call) error {
	if err := a.cursorWrite(c); err != nil {
		return err
	}
	var body struct {
		Region control.Region `json:"region"`
	}
	if err := a.decode(c, &body, false); err != nil {
		return err
	}
	r, err := wire.RegionFromControl(body.Region)
	if err != nil {
		return err
	}
	name := c.r.PathValue("name")
	// An existing definition of the name answers the request: the same
	// region is the same cursor (200), another is a conflict.
	var defs []control.CursorDef
	existing := func() (bool, error) {
		defs = a.opts.Plane.Cursors(c.tenant)
		for _, d := range defs {
			if d.Name == name {
				if sameRegion(d.Region, body.Region) {
					return true, writeJSON(c.w, http.StatusOK, d)
				}
				return true, &apiError{status: 409, code: wire.CodeConflict, detail: "cursor " + strconv.Quote(name) + " exists with another region; delete it first"}
			}
		}
		return false, nil
	}
	if done, err := existing(); done {
		return err
	}
	// A hosted worker's cursor is the worker's alone (checked again,
	// atomically, by DefineCursorMax).
	if w, ok := a.opts.Plane.WorkerOfCursor(c.tenant, name); ok {
		return &apiError{status: 409, code: wire.CodeConflict, detail: "cursor " + strconv.Quote(name) + " is hosted worker " + strconv.Quote(w) + "'s; give the cursor another name"}
	}
	qt := a.quotaOf(c)
	if ex := qt.CheckCursors(len(defs) + 1); ex != nil {
		return ex
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	// Checks the name before anything is recorded. A position that
	// cannot be read is reset below, as any other is.
	if _, err := s.NamedCursor(name, r); err != nil && !cursorDamaged(err) {
		return err
	}
	// The definition is recorded first, and only once it is the
	// cursor's does the position start at the log's beginning (one left
	// by a deleted hosted worker of the same cursor is reset): a define
	// refused because a worker took the name meanwhile leaves that
	// worker's position alone. The commits' lock keeps a commit from
	// landing between the two.
	defer a.commitLock(c.tenant, name)()
	// Defines of one name take the lock in turn: one that lost the race
	// answers as the first look would have, and resets nothing.
	if done, err := existing(); done {
		return err
	}
	def := control.CursorDef{Name: name, Tenant: c.tenant, Region: body.Region}
	maxDefs, _ := qt.MaxCursors()
	if err := a.opts.Plane.DefineCursorMax(c.r.Context(), def, maxDefs); err != nil {
		return err
	}
	if err := rewindCursor(s, name); err != nil {
		// Not left defined at a position it never had: the server's own
		// undo, made even if the key lost its access meanwhile.
		undo := policy.PrincipalFrom(c.r.Context())
		undo.KeyID = ""
		_ = a.opts.Plane.DeleteCursor(policy.WithPrincipal(context.WithoutCancel(c.r.Context()), undo), c.tenant, name)
		return err
	}
	if d, ok := a.opts.Plane.Cursor(c.tenant, name); ok {
		def = d // with the id the plane drew
	}
	return writeJSON(c.w, http.StatusCreated, def)
}

func sameRegion(x, y control.Region) bool {
	if x.Entity != y.Entity || x.Scope != y.Scope || x.Kind != y.Kind || (x.Category == nil) != (y.Category == nil) {
		return false
	}
	return x.Category == nil || *x.Category == *y.Category
}

func (a *API) deleteCursor(c *call) error {
	if err := a.cursorWrite(c); err != nil {
		return err
	}
	d, _, err := a.cursorDef(c)
	if err != nil {
		return err
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	// The position goes with the definition (rewound to the log's
	// beginning, under the commits' lock), so that whatever takes the
	// name up later — a cursor or a hosted worker — starts afresh.
	defer a.commitLock(c.tenant, d.Name)()
	if err := rewindCursor(s, d.Name); err != nil {
		return err
	}
	if err := a.opts.Plane.DeleteCursor(c.r.Context(), c.tenant, d.Name); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// maxCursorIDBytes bounds a poll's cursor_id (an id is 16 hex digits).
const maxCursorIDBytes = 64

// pollCursor answers GET …/cursors/{name}/events. With min_position=P
// (the position the caller last committed, or 0 once it defined the
// cursor) and cursor_id=ID (the definition's id it knows), a cluster
// follower that has not applied that definition (none, or an earlier
// one of the name), or whose copy of its position is behind P, sends the
// call to the leader (307), whose copy is current, instead of handing out
// events the caller has already processed or another definition's. The
// leader and a single server serve it as it is: there, a committed
// position below P means the cursor was reset, and another id that it
// was defined again. The answer names the definition's id (cursor_id).
func (a *API) pollCursor(c *call) error {
	var minPos uint64
	hasMin := false
	if v := c.r.URL.Query().Get("min_position"); v != "" {
		p, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return errInvalid("min_position", "min_position="+strconv.Quote(clipName(v))+": want the position last committed (a global sequence, 0 or more)")
		}
		minPos, hasMin = p, true
	}
	wantID, hasID := c.r.URL.Query().Get("cursor_id"), c.r.URL.Query().Has("cursor_id")
	if len(wantID) > maxCursorIDBytes {
		return errInvalid("cursor_id", "cursor_id: at most "+strconv.Itoa(maxCursorIDBytes)+" bytes (the id a cursor's definition answered)")
	}
	askLeader := func() bool { return (hasMin || hasID) && a.opts.Cluster != nil && !a.opts.Cluster.IsLeader() }
	d, r, err := a.cursorDef(c)
	if err != nil {
		if askLeader() {
			return a.toLeader(c)
		}
		return err
	}
	limit, err := pageLimit(c.r, DefaultPageLimit, MaxPageLimit)
	if err != nil {
		return err
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	cur, err := s.NamedCursor(d.Name, r)
	if cursorDamaged(err) {
		a.logDamagedCursor(c, d.Name, err)
		return &apiError{status: http.StatusInternalServerError, code: wire.CodeInternal, detail: "cursor " + strconv.Quote(d.Name) + ": " + damagedCursorAdvice}
	}
	if err != nil {
		return err
	}
	if (cur.Committed() < minPos || hasID && d.ID != wantID) && askLeader() {
		return a.toLeader(c)
	}
	h := a.newPageHold(c)
	defer h.release()
	evs, more, resume, err := readPage(cur, limit, PageExamine, h)
	if err != nil {
		return err
	}
	out := wire.FromStoredAll(evs)
	next := cur.Position()
	if more {
		next = resume // the page stopped early: continue from there
	}
	// more: the page stopped before the region's end. Empty and more, it
	// stopped at PageExamine with none of the region's events before
	// next_position: commit it and poll again.
	return writeJSONHolding(c.w, http.StatusOK, map[string]any{"events": out, "committed": cur.Committed(), "next_position": next, "more": more, "cursor_id": d.ID}, h.held)
}

func (a *API) commitCursor(c *call) error {
	if err := a.cursorWrite(c); err != nil {
		return err
	}
	var body struct {
		Position *uint64 `json:"position"`
		// Optional preconditions: the definition and the committed
		// position a page was read from (its cursor_id and committed).
		CursorID *string `json:"cursor_id"`
		From     *uint64 `json:"from"`
	}
	if err := a.decode(c, &body, false); err != nil {
		return err
	}
	if body.Position == nil {
		return errInvalid("position", "position is required: the global sequence after the last event processed")
	}
	d, r, err := a.cursorDef(c)
	if err != nil {
		return err
	}
	if body.CursorID != nil && *body.CursorID != d.ID {
		return &apiError{status: 409, code: wire.CodeConflict,
			detail: "the cursor was defined again since the page was read (its definition is now " + strconv.Quote(d.ID) + "): nothing committed; poll it again"}
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	pos := *body.Position
	if end := s.Usage().GlobalSequence; pos > end {
		return errInvalid("position", "position "+strconv.FormatUint(pos, 10)+" is past the end of the log ("+strconv.FormatUint(end, 10)+")")
	}
	defer a.commitLock(c.tenant, d.Name)()
	cur, err := s.NamedCursor(d.Name, r)
	if cursorDamaged(err) {
		a.logDamagedCursor(c, d.Name, err)
		return &apiError{status: http.StatusInternalServerError, code: wire.CodeInternal, detail: "cursor " + strconv.Quote(d.Name) + ": " + damagedCursorAdvice}
	}
	if err != nil {
		return err
	}
	switch committed := cur.Committed(); {
	case body.From != nil && *body.From != committed:
		return &apiError{status: 409, code: wire.CodeConflict, detail: "the cursor was committed since the page was read (from " + strconv.FormatUint(*body.From, 10) + "; committed is " + strconv.FormatUint(committed, 10) + "): nothing committed; poll it again",
			p: wire.Problem{Expected: *body.From, Actual: committed}}
	case pos < committed:
		return &apiError{status: 409, code: wire.CodeConflict, detail: "a cursor never moves backwards: committed is " + strconv.FormatUint(committed, 10),
			p: wire.Problem{Expected: pos, Actual: committed}}
	case pos > committed:
		cur.Seek(pos)
		if err := cur.Commit(); err != nil {
			return err
		}
	}
	return writeJSON(c.w, http.StatusOK, map[string]any{"name": d.Name, "committed": pos})
}

// damagedCursorAdvice is what a tenant is told of a cursor whose saved
// position cannot be read (the operator's log names the file).
const damagedCursorAdvice = "its saved position is damaged on this server (unreadable, or past the end of the log); delete the cursor and define it again, then skip the events its consumer had processed (commit their position)"

// cursorDamaged reports whether err is NamedCursor's for a saved position
// that cannot be used: a damaged file, or a position past the log's end.
func cursorDamaged(err error) bool {
	var ahead *core.CursorAheadError
	return errors.Is(err, core.ErrCorrupt) || errors.As(err, &ahead)
}

// logDamagedCursor tells the operator which cursor's position is damaged.
func (a *API) logDamagedCursor(c *call, name string, err error) {
	a.log.Error("a cursor's saved position is damaged", "tenant", c.tenant, "cursor", name, "error", err)
}

// rewindCursor moves the named cursor back to the log's beginning. It
// always writes the position (on a cluster, every replica writes it), so
// a copy damaged on any node is overwritten too.
func rewindCursor(s *core.Store, name string) error { return s.ResetCursor(name) }

// commitLock serialises the commits (and the definition and deletion)
// of one cursor of one tenant, and no other: a lock per cursor in use
// (keylock), so no tenant's cursor names can make another tenant's
// commits wait. It returns the unlock.
func (a *API) commitLock(tenant, name string) (unlock func()) {
	return a.commitLocks.Lock(tenant + "/" + name)
}
