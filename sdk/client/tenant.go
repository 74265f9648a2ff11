package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
)

// Tenant is the client's view of one tenant's data (/v1/tenants/{id}).
type Tenant struct {
	c  *Client
	id string
}

// Tenant returns the handle for tenant id's data routes; the credential
// must belong to that tenant.
func (c *Client) Tenant(id string) *Tenant { return &Tenant{c: c, id: id} }

// WithMinSequence returns a copy of t whose reads wait until the node
// serving them has applied the tenant's global sequence seq (a receipt's
// GlobalSequence): see Client.WithMinSequence.
func (t *Tenant) WithMinSequence(seq uint64) *Tenant {
	return &Tenant{c: t.c.WithMinSequence(seq), id: t.id}
}

func (t *Tenant) path(p string) string { return "/v1/tenants/" + seg(t.id) + p }

// Append writes one event and returns its receipt. A request without an
// idempotency key gets a fresh one, so that retries are safe.
func (t *Tenant) Append(ctx context.Context, req AppendRequest) (Receipt, error) {
	if len(req.Payload) == 0 {
		return Receipt{}, errNoPayload("AppendRequest.Payload")
	}
	if req.IdempotencyKey == "" {
		req.IdempotencyKey = newKey()
	}
	body, err := jsonBody(req)
	if err != nil {
		return Receipt{}, err
	}
	var r Receipt
	// The key goes in the header too: net/http then knows the request may
	// be sent again on a fresh connection if a kept-alive one was closed
	// under it. A key a header cannot carry (a line feed) goes in the
	// body only, for the server to judge.
	var h http.Header
	if headerValue(req.IdempotencyKey) {
		h = http.Header{"Idempotency-Key": {req.IdempotencyKey}}
	}
	err = t.c.do(ctx, request{method: "POST", path: t.path("/events"), body: body, header: h, safe: true}, &r)
	if err == nil && r.ID == "" {
		// A success without a receipt is no acknowledgement: the write
		// may or may not be there.
		err = &OutcomeUnknownError{Err: fmt.Errorf("POST %s: the server's answer carries no receipt (no event id)", t.path("/events"))}
	}
	if err != nil {
		return Receipt{}, withKeys(err, req.IdempotencyKey)
	}
	t.c.sawReceipts(t.id, r)
	return r, nil
}

// AppendBatch writes events atomically: all or none. Items without an
// idempotency key get "<batch key>/<index>" from one fresh batch key, so
// that a retried batch returns the original receipts.
func (t *Tenant) AppendBatch(ctx context.Context, events []AppendRequest) ([]Receipt, error) {
	items := make([]AppendRequest, len(events))
	copy(items, events)
	for i := range items {
		if len(items[i].Payload) == 0 {
			return nil, errNoPayload(fmt.Sprintf("events[%d].Payload", i))
		}
	}
	batchKey := newKey()
	for i := range items {
		if items[i].IdempotencyKey == "" {
			items[i].IdempotencyKey = batchKey + "/" + strconv.Itoa(i)
		}
	}
	body, err := jsonBody(map[string]any{"events": items})
	if err != nil {
		return nil, err
	}
	var out struct {
		Receipts []Receipt `json:"receipts"`
	}
	err = t.c.do(ctx, request{method: "POST", path: t.path("/batches"), body: body, safe: true}, &out)
	if err == nil {
		// A success must carry a receipt, with its event id, per item.
		if len(out.Receipts) != len(items) {
			err = fmt.Errorf("POST %s: the server's answer carries %d receipts for %d events", t.path("/batches"), len(out.Receipts), len(items))
		} else if i := slices.IndexFunc(out.Receipts, func(r Receipt) bool { return r.ID == "" }); i >= 0 {
			err = fmt.Errorf("POST %s: the server's receipt %d carries no event id", t.path("/batches"), i)
		}
		if err != nil {
			err = &OutcomeUnknownError{Err: err}
		}
	}
	if err != nil {
		keys := make([]string, len(items))
		for i := range items {
			keys[i] = items[i].IdempotencyKey
		}
		return nil, withKeys(err, keys...)
	}
	t.c.sawReceipts(t.id, out.Receipts...)
	return out.Receipts, nil
}

// Import writes an export stream (NDJSON, as Export produces) into the
// tenant, in requests of at most DefaultImportChunkBytes: it is
// ImportWithOptions with the default options; see there.
func (t *Tenant) Import(ctx context.Context, ndjson io.Reader) (ImportStats, error) {
	return t.ImportWithOptions(ctx, ndjson, ImportOptions{})
}

// DefaultImportChunkBytes is the most bytes of an export one import
// request carries unless ImportOptions.ChunkBytes says otherwise: a
// quarter of the server's default max_body_bytes (32 MiB).
const DefaultImportChunkBytes = 8 << 20

// ImportOptions tune Tenant.ImportWithOptions.
type ImportOptions struct {
	// ChunkBytes bounds one request's body (0: DefaultImportChunkBytes).
	// The stream is cut only at line ends: a line longer than this is
	// sent alone, in a request of its own.
	ChunkBytes int
	// Progress, when set, is called after each request the server
	// acknowledged, with the bytes of the stream acknowledged so far and
	// the stats so far (the sums over the requests).
	Progress func(acked int64, st ImportStats)
	// MaxLineBytes bounds one line of the stream (0:
	// DefaultImportMaxLineBytes): a longer line fails the import before
	// it is sent, the client having held at most this many of its bytes.
	MaxLineBytes int
}

// DefaultImportMaxLineBytes bounds one line of an import's stream unless
// ImportOptions.MaxLineBytes says otherwise: twice the largest event a
// store takes by default (16 MiB) and 1 MiB more, as the server's own
// import does, past every tenant's max_payload_bytes by default.
const DefaultImportMaxLineBytes = 33 << 20

// ImportWithOptions writes an export stream (NDJSON, as Export produces)
// into the tenant. Needs the admin role.
//
// The stream is read as it is sent, in requests (POST …/import) of at
// most opts.ChunkBytes, each cut at a line's end; a line longer than that
// goes alone. The client holds about one request's bytes (and the line
// that ends it), not the stream: an export of any size imports, however
// large the server's max_body_bytes. A request the server refuses as
// larger than its max_body_bytes (413 PAYLOAD_TOO_LARGE, or a 413
// without a problem document, as a proxy answers) is sent again
// in halves (at most the server's limit when it names it), down to a
// line alone, and later requests keep the smaller size; a line alone
// larger than the limit fails the import. Each request is one import on
// the server: events already present with the same id and content are
// skipped, so a request sent again (like any safe request when its
// answer may have been lost) or an import run again writes each event
// once.
//
// The stats are summed over the requests. On a failure — a request the
// server refused, the stream's read, ctx — ImportWithOptions returns the
// stats of the requests acknowledged before it and an *ImportError
// saying how many events they imported, which lines of the stream the
// failed request carried, and that running the import again resumes
// (what is there is skipped); errors.As and errors.Is reach the cause
// (an *Error for a refusal). An empty stream is sent as one empty
// request.
func (t *Tenant) ImportWithOptions(ctx context.Context, ndjson io.Reader, opts ImportOptions) (ImportStats, error) {
	chunk := opts.ChunkBytes
	if chunk <= 0 {
		chunk = DefaultImportChunkBytes
	}
	maxLine := opts.MaxLineBytes
	if maxLine <= 0 {
		maxLine = DefaultImportMaxLineBytes
	}
	br := bufio.NewReaderSize(ndjson, 64<<10)
	var (
		total ImportStats
		acked int64
		buf   []byte // whole lines read and not yet acknowledged
		ends  []int  // the end of each line in buf
		first = 1    // the stream's line number of buf's first line
		eof   bool
		sent  bool
	)
	fail := func(err error, lines int) error {
		ie := &ImportError{Stats: total, Err: err}
		if lines > 0 {
			ie.FirstLine, ie.LastLine = first, first+lines-1
			var e *Error
			if errors.As(err, &e) {
				if m := importLineRE.FindStringSubmatch(e.Detail); m != nil {
					if n, perr := strconv.Atoi(m[1]); perr == nil && n >= 1 && n <= lines {
						ie.Line = first + n - 1
					}
				}
			}
		}
		return ie
	}
	for {
		// Read until a whole request's lines are here (a line more than
		// it holds), or the stream ends.
		for !eof && (len(buf) <= chunk) {
			n := len(buf)
			var err error
			buf, err = readLine(br, buf, n+maxLine)
			if errors.Is(err, errLineTooLong) {
				return total, fail(fmt.Errorf("client: import: line %d of the stream is longer than %d bytes, the bound on one line of an import: no event of an export is that long; is it an export (NDJSON, one event a line)?", first+len(ends), maxLine), 0)
			}
			if len(buf) > n {
				ends = append(ends, len(buf))
			}
			if err == io.EOF {
				eof = true
			} else if err != nil {
				return total, fail(fmt.Errorf("client: import: reading line %d of the stream: %w", first+len(ends), err), 0)
			}
		}
		if len(ends) == 0 && sent {
			return total, nil
		}
		// The request: the most whole lines within chunk, at least one.
		k := sort.Search(len(ends), func(i int) bool { return ends[i] > chunk })
		if k == 0 && len(ends) > 0 {
			k = 1
		}
		size := 0
		if k > 0 {
			size = ends[k-1]
		}
		body := buf[:size:size]
		var st ImportStats
		err := t.c.do(ctx, request{method: "POST", path: t.path("/import"), body: body, ctype: "application/x-ndjson", safe: true, slow: true}, &st)
		sent = true
		if err != nil {
			var e *Error
			if errors.As(err, &e) && e.Status == http.StatusRequestEntityTooLarge && (e.Code == CodePayloadTooLarge || e.Code == "") && k > 1 {
				// Over the server's max_body_bytes (or a proxy's bound on
				// bodies; not a line over the tenant's max_payload_bytes,
				// QUOTA_EXCEEDED): send less.
				chunk = max(size/2, 1)
				if lim := e.limit(); lim > 0 && lim < int64(chunk) {
					chunk = int(lim)
				}
				continue
			}
			return total, fail(err, k)
		}
		total.Imported += st.Imported
		total.Skipped += st.Skipped
		acked += int64(size)
		if opts.Progress != nil {
			opts.Progress(acked, total)
		}
		// What is left goes into a new buffer: the one sent is the
		// transport's until it is done with it.
		rest := make([]byte, len(buf)-size, max(len(buf)-size, min(chunk, 1<<20)))
		copy(rest, buf[size:])
		buf = rest
		n := copy(ends, ends[k:])
		ends = ends[:n]
		for i := range ends {
			ends[i] -= size
		}
		first += k
		if eof && len(ends) == 0 {
			return total, nil
		}
	}
}

// importLineRE finds the line a server's import refusal names.
var importLineRE = regexp.MustCompile(`import line (\d+)`)

// errLineTooLong is a line of an import's stream past its bound.
var errLineTooLong = errors.New("line too long")

// readLine appends the stream's next line, its line feed included, to
// buf; at the stream's end it returns io.EOF (with the last line when it
// has no line feed). Once buf would pass limit bytes with the line not
// ended, it returns errLineTooLong.
func readLine(br *bufio.Reader, buf []byte, limit int) ([]byte, error) {
	for {
		frag, err := br.ReadSlice('\n')
		size := len(buf) + len(frag)
		if len(frag) > 0 && frag[len(frag)-1] == '\n' {
			size-- // the line feed is not the line's
		}
		if size > limit {
			return buf, errLineTooLong
		}
		buf = append(buf, frag...)
		if err != bufio.ErrBufferFull {
			return buf, err
		}
	}
}

// ImportError is an import that failed part way (Tenant.ImportWithOptions):
// the requests before the failed one were acknowledged, and running the
// import again resumes, skipping the events already there.
type ImportError struct {
	// Stats are what the requests acknowledged before the failure
	// imported and skipped (the failed request may have imported some of
	// its own first: the server's refusal says so).
	Stats ImportStats
	// FirstLine and LastLine are the lines (from 1) of the stream the
	// failed request carried; 0 when no request failed (the stream could
	// not be read).
	FirstLine, LastLine int
	// Line is the stream's line the server's refusal named (it counts
	// the request's lines), 0 when it named none.
	Line int
	// Err is the cause: an *Error for the server's refusal, the
	// stream's read error, or the context's.
	Err error
}

func (e *ImportError) Error() string {
	where := ""
	if lines, one := e.Lines(); one {
		where = " at " + lines + " of the stream"
	} else if lines != "" {
		where = " in " + lines + " of the stream"
	}
	return fmt.Sprintf("%v; the import failed%s after %s", e.Err, where, e.Resume())
}

// Lines names where the import failed: "line N" when the server named
// the refused line (one), else "lines A-B" the refused request carried,
// else "" (the stream could not be read).
func (e *ImportError) Lines() (lines string, one bool) {
	switch {
	case e.Line > 0:
		return fmt.Sprintf("line %d", e.Line), true
	case e.FirstLine > 0:
		return fmt.Sprintf("lines %d-%d", e.FirstLine, e.LastLine), false
	}
	return "", false
}

// Resume says how far the import came and how to go on: how many events
// the acknowledged requests imported (and skipped), and that running it
// again resumes.
func (e *ImportError) Resume() string {
	return fmt.Sprintf("%d events were imported (%d already present skipped): run the import again to resume (events already there are skipped)", e.Stats.Imported, e.Stats.Skipped)
}

// Unwrap returns the cause.
func (e *ImportError) Unwrap() error { return e.Err }

// Get returns the event with this id (ErrNotFound if there is none).
func (t *Tenant) Get(ctx context.Context, id string) (Event, error) {
	var ev Event
	err := t.c.do(ctx, request{method: "GET", path: t.path("/events/" + seg(id)), safe: true}, &ev)
	return ev, err
}

func (q Query) values() url.Values {
	v := url.Values{}
	if q.Entity != "" {
		v.Set("entity", q.Entity)
	}
	if q.Scope != "" {
		v.Set("scope", q.Scope)
	}
	if q.Kind != "" {
		v.Set("kind", q.Kind)
	}
	if q.Category != nil {
		v.Set("category", strconv.Itoa(*q.Category))
	}
	if q.After != nil {
		v.Set("after", strconv.FormatUint(*q.After, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// QueryPage returns one page of q.
func (t *Tenant) QueryPage(ctx context.Context, q Query) (Page, error) {
	var p Page
	err := t.c.do(ctx, request{method: "GET", path: t.path("/events"), query: q.values(), safe: true}, &p)
	return p, err
}

// Query yields every event of q in global order, fetching page after page;
// it stops at the first error (yielded once).
func (t *Tenant) Query(ctx context.Context, q Query) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		for {
			p, err := t.QueryPage(ctx, q)
			if err != nil {
				yield(Event{}, err)
				return
			}
			for _, ev := range p.Events {
				if !yield(ev, nil) {
					return
				}
			}
			if p.NextAfter == nil {
				return
			}
			after := *p.NextAfter
			if q.After != nil && after <= *q.After {
				// A server that does not move on would be asked for the
				// same page for ever.
				yield(Event{}, fmt.Errorf("client: the server's next page starts after %d, not past the page before (after %d)", after, *q.After))
				return
			}
			q.After = &after
		}
	}
}

// Stream returns an entity's events in clock order, those after afterClock
// when it is non-nil, at most limit (0: the server's page size). A page
// may hold fewer than limit events before the stream's end (at most 8 MiB
// of payload, and what the server's response memory has room for):
// continue after the last clock returned until a page comes back empty,
// or use StreamPage, which says where the next page starts.
func (t *Tenant) Stream(ctx context.Context, entity string, afterClock *uint64, limit int) ([]Event, error) {
	p, err := t.StreamPage(ctx, entity, afterClock, limit)
	return p.Events, err
}

// EntityPage is one page of an entity's events (StreamPage).
type EntityPage struct {
	Events []Event `json:"events"`
	// NextAfterClock is the after clock of the next page; nil when this
	// page reached the end of the stream.
	NextAfterClock *uint64 `json:"next_after_clock"`
}

// StreamPage is Stream with the server's word on where the next page
// starts.
func (t *Tenant) StreamPage(ctx context.Context, entity string, afterClock *uint64, limit int) (EntityPage, error) {
	v := url.Values{}
	if afterClock != nil {
		v.Set("after_clock", strconv.FormatUint(*afterClock, 10))
	}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var out EntityPage
	err := t.c.do(ctx, request{method: "GET", path: t.path("/entities/" + seg(entity) + "/events"), query: v, safe: true}, &out)
	return out, err
}

// Ancestors returns the causal ancestors of event id, nearest first, at
// most limit (0: the server's default).
func (t *Tenant) Ancestors(ctx context.Context, id string, limit int) ([]Event, error) {
	v := url.Values{}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Events []Event `json:"events"`
	}
	err := t.c.do(ctx, request{method: "GET", path: t.path("/events/" + seg(id) + "/ancestors"), query: v, safe: true}, &out)
	return out.Events, err
}

// CausalPage is what Descendants and Correlation return: events in global
// order, and whether the bounds left some out.
type CausalPage struct {
	Events    []Event `json:"events"`
	Truncated bool    `json:"truncated"`
}

// Descendants returns event id and what it caused, transitively, in global
// order: at most limit events (0: the server's default, 100; capped at
// 1000) and depth causation links below id (0: the server's default, 64;
// capped at 1024). Truncated says the bounds left events out.
func (t *Tenant) Descendants(ctx context.Context, id string, limit, depth int) (CausalPage, error) {
	v := url.Values{}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	if depth > 0 {
		v.Set("depth", strconv.Itoa(depth))
	}
	var out CausalPage
	err := t.c.do(ctx, request{method: "GET", path: t.path("/events/" + seg(id) + "/descendants"), query: v, safe: true}, &out)
	return out, err
}

// Correlation returns every event of event id's conversation (the same
// correlation id) in global order, the earliest limit of them (0: the
// server's default, 100; capped at 1000). Truncated says more exist.
func (t *Tenant) Correlation(ctx context.Context, id string, limit int) (CausalPage, error) {
	v := url.Values{}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var out CausalPage
	err := t.c.do(ctx, request{method: "GET", path: t.path("/events/" + seg(id) + "/correlation"), query: v, safe: true}, &out)
	return out, err
}

// Stats returns the tenant's store summary, quotas and usage.
func (t *Tenant) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := t.c.do(ctx, request{method: "GET", path: t.path("/stats"), safe: true}, &st)
	return st, err
}

// Verify re-checks the tenant's whole hash chain on the server (admin
// role); the report says whether it holds and where the first break is.
func (t *Tenant) Verify(ctx context.Context) (map[string]any, error) {
	var rep map[string]any
	err := t.c.do(ctx, request{method: "POST", path: t.path("/verify"), safe: true, slow: true, readOnly: true}, &rep)
	return rep, err
}

// Export streams the tenant's events as NDJSON into w (admin role) and
// returns the bytes copied. It is as large as the tenant's events and
// not bounded by Options.MaxResponseBytes: bound it with ctx, or with a
// w that refuses past a size (its error ends the export).
func (t *Tenant) Export(ctx context.Context, w io.Writer) (int64, error) {
	resp, err := t.c.send(ctx, request{method: "GET", path: t.path("/export"), accept: "application/x-ndjson", safe: true})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return io.Copy(w, resp.Body)
}

// DefineCursor creates the named cursor over region (the same definition
// again is a no-op).
func (t *Tenant) DefineCursor(ctx context.Context, name string, region CursorRegion) error {
	body, err := jsonBody(map[string]any{"region": region})
	if err != nil {
		return err
	}
	var def struct {
		ID *string `json:"id"`
	}
	if err := t.c.do(ctx, request{method: "PUT", path: t.path("/cursors/" + seg(name)), body: body, safe: true}, &def); err != nil {
		return err
	}
	if s := t.c.session; s != nil {
		s.cursorAt(t.cursorKey(name), def.ID, 0, true)
	}
	return nil
}

// cursorKey names a cursor of t in the session's memory.
func (t *Tenant) cursorKey(name string) string { return seg(t.id) + "/" + seg(name) }

// Cursors lists the tenant's named cursors with their lag.
func (t *Tenant) Cursors(ctx context.Context) ([]CursorInfo, error) {
	var out struct {
		Cursors []CursorInfo `json:"cursors"`
	}
	err := t.c.do(ctx, request{method: "GET", path: t.path("/cursors"), safe: true}, &out)
	return out.Cursors, err
}

// PollCursor returns up to limit events after the cursor's committed
// position; commit with CommitCursor once they are processed. With
// Consistency "session" it carries the position this Client last
// committed (min_position) and the definition it knows (cursor_id): a
// cluster follower whose copy of the cursor is behind it, or holds no
// such definition yet, sends the poll to the leader, so no event the
// Client committed, nor another definition's, comes back.
//
// A server examines at most 65,536 entries of the log for one poll: a
// region with no events in that stretch gives an empty page that goes on
// (CursorPage.More). PollCursor then commits the page's NextPosition —
// none of the region's events lies before it — and polls again, until it
// has events or reaches the region's end; use PollCursorPage to decide
// yourself.
func (t *Tenant) PollCursor(ctx context.Context, name string, limit int) ([]Event, error) {
	for {
		p, err := t.PollCursorPage(ctx, name, limit)
		if err != nil || len(p.Events) > 0 || !p.More || p.NextPosition <= p.Committed {
			return p.Events, err
		}
		// Only if the cursor is still the one read, where it was read: a
		// cursor defined again or committed meanwhile is polled again.
		err = t.commitCursor(ctx, name, p.NextPosition, p.CursorID, &p.Committed)
		if err != nil && !errors.Is(err, ErrConflict) {
			return nil, err
		}
	}
}

// CursorPage is one poll of a named cursor (Tenant.PollCursorPage).
type CursorPage struct {
	Events []Event `json:"events"`
	// Committed is the cursor's committed position the poll read from.
	Committed uint64 `json:"committed"`
	// NextPosition is the position to commit once Events are processed:
	// one past the last event, or past the stretch of the log the server
	// examined and found none of the region's events in.
	NextPosition uint64 `json:"next_position"`
	// More: the page stopped before the region's end (its limit, its
	// bytes, or the entries one poll examines). With no Events, commit
	// NextPosition and poll again.
	More bool `json:"more"`
	// CursorID is the id of the cursor's definition.
	CursorID *string `json:"cursor_id"`
}

// PollCursorPage is one poll of the cursor as the server answers it:
// PollCursor without going on over empty pages (see CursorPage).
func (t *Tenant) PollCursorPage(ctx context.Context, name string, limit int) (CursorPage, error) {
	v := url.Values{}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	s := t.c.session
	if s != nil {
		if m, ok := s.cursor(t.cursorKey(name)); ok {
			v.Set("min_position", strconv.FormatUint(m.pos, 10))
			if m.idKnown {
				v.Set("cursor_id", m.id)
			}
		}
	}
	var out CursorPage
	err := t.c.do(ctx, request{method: "GET", path: t.path("/cursors/" + seg(name) + "/events"), query: v, safe: true}, &out)
	if err == nil && s != nil {
		s.cursorAt(t.cursorKey(name), out.CursorID, out.Committed, true)
	}
	return out, err
}

// CommitCursor records position (the global sequence after the last event
// processed: that event's GlobalSequence+1) as the cursor's committed
// position. Committing the same position again is a no-op.
func (t *Tenant) CommitCursor(ctx context.Context, name string, position uint64) error {
	return t.commitCursor(ctx, name, position, nil, nil)
}

// commitCursor is CommitCursor, refused (ErrConflict, nothing committed)
// when id is set and the cursor's definition is another, or from is set
// and the cursor's committed position is another.
func (t *Tenant) commitCursor(ctx context.Context, name string, position uint64, id *string, from *uint64) error {
	body, _ := jsonBody(map[string]any{"position": position, "cursor_id": id, "from": from})
	if err := t.c.do(ctx, request{method: "POST", path: t.path("/cursors/" + seg(name) + "/commit"), body: body, safe: true}, nil); err != nil {
		return err
	}
	if s := t.c.session; s != nil {
		s.cursorAt(t.cursorKey(name), nil, position, false)
	}
	return nil
}

// DeleteCursor removes a named cursor and its position: a cursor or a
// hosted worker that takes the name up later starts at the log's
// beginning.
func (t *Tenant) DeleteCursor(ctx context.Context, name string) error {
	err := t.c.do(ctx, request{method: "DELETE", path: t.path("/cursors/" + seg(name)), safe: true}, nil)
	if s := t.c.session; err == nil && s != nil {
		s.forgetCursor(t.cursorKey(name))
	}
	return err
}

// IssueKey issues a key for this tenant (admin role). The secret is in the
// result only.
func (t *Tenant) IssueKey(ctx context.Context, name string, roles ...string) (IssuedKey, error) {
	body, _ := jsonBody(map[string]any{"name": name, "roles": roles})
	var k IssuedKey
	err := t.c.do(ctx, request{method: "POST", path: t.path("/keys"), body: body}, &k)
	return k, err
}

// Keys lists the tenant's live keys (admin role).
func (t *Tenant) Keys(ctx context.Context) ([]Key, error) {
	var out struct {
		Keys []Key `json:"keys"`
	}
	err := t.c.do(ctx, request{method: "GET", path: t.path("/keys"), safe: true}, &out)
	return out.Keys, err
}

// RevokeKey revokes one of the tenant's keys; it stops working at once.
func (t *Tenant) RevokeKey(ctx context.Context, id string) error {
	return t.c.do(ctx, request{method: "DELETE", path: t.path("/keys/" + seg(id)), safe: true}, nil)
}

// errNoPayload refuses an event without a payload before it is sent: a
// nil json.RawMessage would be written as the JSON null.
func errNoPayload(field string) error {
	return fmt.Errorf("client: %s is empty: give the event's JSON payload (json.RawMessage(`null`) for a null one)", field)
}

// headerValue reports whether v can be sent as an HTTP header's value:
// no control byte but a tab.
func headerValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
