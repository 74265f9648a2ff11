package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/quota"
	"github.com/batpak-go/batpak/server/wire"
)

// readPacer charges a long read (an NDJSON query, an export) to its
// tenant's request rate as the pages of the same read would be: one
// request for each MaxPageLimit events it sends and for each PageExamine
// index entries it examines, whichever is more, past the first (the
// request's own), waiting for them before it reads on.
type readPacer struct {
	ctx    context.Context
	charge func(steps int) time.Duration
	paid   uint64
	flush  func() // when set, called before a wait: what is sent so far goes out first
}

// owe charges what sending events and examining examined entries in all
// owes past what was paid, and waits it out: ctx's error if ctx ends
// first, or has ended (then nothing more is charged).
func (p *readPacer) owe(events, examined uint64) error {
	if err := p.ctx.Err(); err != nil {
		return err
	}
	owed := max(events/MaxPageLimit, examined/PageExamine)
	if owed <= p.paid {
		return nil
	}
	wait := p.charge(int(owed - p.paid))
	p.paid = owed
	if wait > 0 && p.flush != nil {
		p.flush()
	}
	if wait > 0 && !sleep(p.ctx, wait) {
		return p.ctx.Err()
	}
	return nil
}

// scanCharge is what charges a long read's extra steps (a step of
// PageExamine entries walked, or of MaxPageLimit events sent, past the
// first) to the call's tenant's request rate: it takes the steps' tokens
// and says how long the read waits for them
// (quota.Tenant.ReserveRequests). The operator's reads are charged to
// nothing, as its requests are not.
func (a *API) scanCharge(c *call) func(steps int) time.Duration {
	if c.principal.Operator {
		return func(int) time.Duration { return 0 }
	}
	return a.quotaOf(c).ReserveRequests
}

// quotaOf is the call's tenant's quota state, under its effective
// quotas.
func (a *API) quotaOf(c *call) *quota.Tenant {
	return a.opts.Quotas.Tenant(c.tenant, a.opts.Plane.Effective(c.tenant))
}

// admitWrite checks the write quotas qt of the call's tenant for events
// totalling bytes of payload, largest the biggest one, and names bytes of
// entity, scope and idempotency-key names: payload size, batch size,
// storage, the index's memory, then the rate buckets (which take tokens
// only when everything else passed).
func (a *API) admitWrite(c *call, s *core.Store, qt *quota.Tenant, events, bytes, largest, names int, batch bool) error {
	if ex := qt.CheckPayload(largest); ex != nil {
		return ex
	}
	if batch {
		if ex := qt.CheckBatch(events); ex != nil {
			return ex
		}
	}
	// Usage, not Stats: Stats walks the index (work per entity).
	u := s.Usage()
	a.metrics.noteFsyncs(c.tenant, u.Fsyncs)
	if ex := qt.CheckStorage(u.Bytes, bytes); ex != nil {
		return ex
	}
	if ex := qt.CheckIndex(u.IndexBytes, quota.IndexCost(events, names)); ex != nil {
		return ex
	}
	if ex := qt.AllowWrite(events, bytes); ex != nil {
		if ex.RetryAfter > 0 {
			return a.holdRefusal(c, ex)
		}
		return ex
	}
	return nil
}

// overRate refuses a write when the tenant's events bucket is empty and
// stays so for at least a millisecond, before its body is read: a tenant
// flooding beyond its rate costs the others as little as possible. A
// bucket about to refill is left to admitWrite (which checks the sizes
// first).
func (a *API) overRate(c *call) error {
	if ex := a.quotaOf(c).Exhausted(1); ex != nil && ex.RetryAfter >= time.Millisecond {
		return a.holdRefusal(c, ex)
	}
	return nil
}

// holdRefusal returns ex (a rate's refusal) after
// Options.RateRefusalDelay (or until the request ends). After half of it,
// the connection's slot may be taken for a new client
// (Options.YieldConn): then ex is returned at once, and the connection
// closed after it.
func (a *API) holdRefusal(c *call, ex error) error {
	d := a.opts.RateRefusalDelay
	if d <= 0 {
		return ex
	}
	ctx := c.r.Context()
	if !sleep(ctx, d/2) || a.opts.YieldConn == nil {
		sleep(ctx, d-d/2)
		return ex
	}
	woken := make(chan struct{})
	var once sync.Once
	release := a.opts.YieldConn(c.r, func() { once.Do(func() { close(woken) }) })
	defer release()
	t := time.NewTimer(d - d/2)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-woken:
		c.w.Header().Set("Connection", "close")
	}
	return ex
}

// sleep waits d or until ctx ends: true when d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// idempotencyHeader is the request's Idempotency-Key ("" when none). A
// request carrying the header more than once is refused: a proxy or a
// client reading another of them than the server would dedupe against
// another key.
func idempotencyHeader(c *call) (string, error) {
	if vs := c.r.Header.Values("Idempotency-Key"); len(vs) > 1 {
		return "", errInvalid("Idempotency-Key", "the header is given "+itoa(len(vs))+" times: give it once")
	}
	return c.r.Header.Get("Idempotency-Key"), nil
}

func (a *API) appendOne(c *call) error {
	if err := a.overRate(c); err != nil {
		return err
	}
	var req wire.AppendRequest
	if err := a.decode(c, &req, false); err != nil {
		return err
	}
	hk, err := idempotencyHeader(c)
	if err != nil {
		return err
	}
	it, err := req.Item(-1, hk)
	if err != nil {
		return err
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	if err := a.admitWrite(c, s, a.quotaOf(c), 1, len(it.Payload), len(it.Payload), itemNames(it), false); err != nil {
		return err
	}
	a.metrics.queueDepth.Observe(float64(s.WriterPressure().QueueLen))
	ctx := c.writeCtx()
	t, err := s.TrySubmitWithOptions(ctx, it.Coordinate, it.Kind, it.Payload, it.Options)
	if err != nil {
		return err
	}
	rec, err := t.Wait(ctx)
	if err != nil {
		return err
	}
	a.metrics.appended(c.tenant, 1)
	status := http.StatusCreated
	if rec.Deduplicated {
		status = http.StatusOK
	}
	return writeAppended(c.w, status, func(b []byte) []byte { return wire.AppendReceipt(b, rec) })
}

func (a *API) appendBatch(c *call) error {
	if err := a.overRate(c); err != nil {
		return err
	}
	// The bound on events holds while the body is decoded: a body of
	// many small events would otherwise cost many times its size before
	// it is refused.
	qt := a.quotaOf(c)
	c.maxBatch = control.MaxBatchEventsLimit
	if ex := qt.CheckBatch(c.maxBatch); ex != nil {
		c.maxBatch = int(ex.Limit)
	}
	var req wire.BatchRequest
	if err := a.decode(c, &req, false); err != nil {
		var tm *wire.TooManyItemsError
		if errors.As(err, &tm) {
			if ex := qt.CheckBatch(tm.Limit + 1); ex != nil {
				return ex
			}
			return &apiError{status: 400, code: wire.CodeInvalidRequest, p: wire.Problem{Field: "events"},
				detail: "events: a batch holds at most " + itoa(tm.Limit) + " events (a store's batch limit)"}
		}
		return err
	}
	if len(req.Events) == 0 {
		return errInvalid("events", "a batch needs at least one event")
	}
	hk, err := idempotencyHeader(c)
	if err != nil {
		return err
	}
	if room := core.MaxIdempotencyKeyBytes - len("/"+itoa(len(req.Events)-1)); hk != "" && len(hk) > room {
		return errInvalid("Idempotency-Key", "a batch's Idempotency-Key names its items <key>/<i>, so for "+itoa(len(req.Events))+
			" events it may be at most "+itoa(room)+" bytes; it is "+itoa(len(hk)))
	}
	items := make([]core.BatchItem, len(req.Events))
	bytes, largest, names := 0, 0, 0
	for i := range req.Events {
		// The header key names the batch: item i gets "<key>/<i>".
		key := ""
		if hk != "" {
			key = hk + "/" + itoa(i)
		}
		it, err := req.Events[i].Item(i, key)
		if err != nil {
			i := i
			return withIndex(err, i)
		}
		items[i] = it
		bytes += len(it.Payload)
		largest = max(largest, len(it.Payload))
		names += itemNames(it)
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	if err := a.admitWrite(c, s, qt, len(items), bytes, largest, names, true); err != nil {
		return err
	}
	a.metrics.queueDepth.Observe(float64(s.WriterPressure().QueueLen))
	ctx := c.writeCtx()
	t, err := s.TrySubmitBatch(ctx, items)
	if err != nil {
		return err
	}
	recs, err := t.Wait(ctx)
	if err != nil {
		return err
	}
	a.metrics.appended(c.tenant, len(recs))
	status := http.StatusOK
	for _, r := range recs {
		if !r.Deduplicated {
			status = http.StatusCreated
		}
	}
	return writeAppended(c.w, status, func(b []byte) []byte { return wire.AppendReceipts(b, recs) })
}

// withIndex names the batch item a request error belongs to.
func withIndex(err error, i int) error {
	var we *wire.Error
	if errors.As(err, &we) {
		return &apiError{status: 400, code: we.Code, detail: "events[" + itoa(i) + "]: " + we.Error(),
			p: wire.Problem{Field: "events[" + itoa(i) + "]." + we.Field, Index: &i}}
	}
	return err
}

// importEnvelopeBytes is how much longer than the tenant's
// max_payload_bytes an import line may be: room for the event's envelope
// (ids, coordinate, kind, keys) around its payload.
const importEnvelopeBytes = 64 << 10

func (a *API) importEvents(c *call) error {
	if err := checkMedia(c.r, c.route.Body, false); err != nil {
		return err
	}
	if err := a.overRate(c); err != nil {
		return err
	}
	if err := a.limitBody(c); err != nil {
		return err
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	n := int(max(c.r.ContentLength, 0))
	eff := a.opts.Plane.Effective(c.tenant)
	st := s.Usage()
	qt := a.opts.Quotas.Tenant(c.tenant, eff)
	if ex := qt.CheckStorage(st.Bytes, n); ex != nil {
		return ex
	}
	// An import holds its connection for as long as its body lasts, like
	// a long read: it counts against max_subscriptions.
	release, err := a.holdStream(c)
	if err != nil {
		return err
	}
	defer release()
	// One import into a tenant runs at a time: each holds the storage
	// quota against the usage when it started plus the bytes it has read,
	// which would not see another import's bytes.
	done, err := a.startImport(c.tenant)
	if err != nil {
		return err
	}
	defer done()
	// The body is held to the storage quota, and the credential
	// rechecked, as it is read: a chunked body declares no length, and a
	// long import must stop when its key is revoked. An import also keeps
	// to the tenant's rates: each batch of it is charged its events and
	// NDJSON bytes before it is written, and waits until the buckets have
	// paid for it (the tenant's other writes are refused meanwhile). The server then
	// reads the body at the tenant's pace, so the read timeout does not
	// bound the whole body; it bounds each read instead (a client that
	// sends nothing for that long is cut off), and a read under way ends
	// at once when the call loses access or its client goes.
	rc := http.NewResponseController(c.w)
	_ = rc.SetReadDeadline(time.Time{})
	ctx := c.writeCtx()
	body := &importBody{r: c.r.Body, ctx: ctx, idle: a.opts.ReadTimeout, deadline: rc.SetReadDeadline, check: func(read int) error {
		// The tenant's other writes meanwhile count too (the usage now
		// holds them and what this import has written so far).
		if ex := qt.CheckStorage(max(st.Bytes+int64(read), s.Usage().Bytes), 0); ex != nil {
			return ex
		}
		return a.recheck(c)
	}}
	stop := context.AfterFunc(ctx, body.interrupt)
	defer stop()
	// Each batch is charged to the rates before it is written, and waits
	// until the buckets have paid for it: an import that ends (its client
	// gone) leaves no batch it has not paid for.
	read := 0
	charge := func(items []core.BatchItem, _ int) error {
		names := 0
		for _, it := range items {
			names += itemNames(it)
		}
		if ex := qt.CheckIndex(s.Usage().IndexBytes, quota.IndexCost(len(items), names)); ex != nil {
			return ex
		}
		err := qt.PaceWrite(ctx, len(items), body.read-read)
		read = body.read
		return err
	}
	// Each event keeps to the tenant's max_payload_bytes, as an append
	// does, and a line is not buffered far past it.
	// An event may carry a hosted worker's key only as a reaction of
	// that worker's does (an export of a tenant that ran workers): one
	// planted under a worker's key would make it skip its reactions.
	check := func(it core.BatchItem) error {
		if ex := qt.CheckPayload(len(it.Payload)); ex != nil {
			return ex
		}
		return wire.CheckImportedKey(it.Options.IdempotencyKey, it.Options.CausationID)
	}
	maxLine := 0
	if eff.MaxPayloadBytes > 0 {
		maxLine = eff.MaxPayloadBytes + importEnvelopeBytes
	}
	stats, err := s.ImportWithOptions(ctx, bufio.NewReader(body), core.ImportOptions{BeforeBatch: charge, Check: check, MaxLineBytes: maxLine})
	a.metrics.appended(c.tenant, stats.Imported)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			e := a.tooLarge()
			e.detail += "; " + itoa(stats.Imported) + " events were imported before the limit (an import can be run again: events already stored are skipped)"
			return e
		}
		if errors.Is(err, bufio.ErrTooLong) {
			lim := float64(eff.MaxPayloadBytes)
			return &apiError{status: http.StatusRequestEntityTooLarge, code: wire.CodeQuotaExceeded, p: wire.Problem{Quota: "max_payload_bytes", Limit: &lim},
				detail: a.scrub(c, strings.TrimPrefix(err.Error(), "batpak: ")) + ": a line holds at most max_payload_bytes (" + itoa(eff.MaxPayloadBytes) + ") and " + itoa(importEnvelopeBytes) + " bytes of envelope" +
					"; " + itoa(stats.Imported) + " events of earlier batches were imported"}
		}
		e := a.problemFor(c, err)
		var ex *quota.Exceeded
		var we *wire.Error
		switch {
		case e.status == 500 && strings.Contains(err.Error(), "import line"):
			e = &apiError{status: 400, code: wire.CodeInvalidJSON, detail: a.scrub(c, err.Error())}
		case errors.As(err, &ex), errors.As(err, &we), strings.HasPrefix(err.Error(), "batpak: import line "):
			// Name the line: "batpak: import line N: …".
			cp := *e
			cp.detail = a.scrub(c, strings.TrimPrefix(err.Error(), "batpak: "))
			e = &cp
		}
		if stats.Imported > 0 {
			cp := *e
			cp.detail += " (" + itoa(stats.Imported) + " events of earlier batches were imported; run the import again to continue: stored events are skipped)"
			e = &cp
		}
		return e
	}
	return writeJSON(c.w, http.StatusOK, map[string]int{"imported": stats.Imported, "skipped": stats.Skipped})
}

func (a *API) getEvent(c *call) error {
	id, err := core.ParseEventID(c.r.PathValue("id"))
	if err != nil {
		return errInvalid("id", "not an event id (a UUID)")
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	ev, err := s.Get(id)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, wire.FromStored(ev))
}

// wantsNDJSON reports whether the client asked for newline-delimited JSON.
func wantsNDJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(mt), "application/x-ndjson") {
			return true
		}
	}
	return false
}

func (a *API) queryEvents(c *call) error {
	q := c.r.URL.Query()
	region, err := wire.ParseRegion(q.Get("entity"), q.Get("scope"), q.Get("kind"), q.Get("category"))
	if err != nil {
		return err
	}
	after, hasAfter, err := queryUint(c.r, "after")
	if err != nil {
		return err
	}
	nd := wantsNDJSON(c.r)
	var limit int
	if nd {
		limit, err = pageLimit(c.r, 0, 0)
	} else {
		limit, err = pageLimit(c.r, DefaultPageLimit, MaxPageLimit)
	}
	if err != nil {
		return err
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	cur := s.Cursor(region)
	start := uint64(0)
	if hasAfter {
		start = after + 1
	}
	end := s.Usage().GlobalSequence
	atEnd := start > end || hasAfter && after == math.MaxUint64 // start wrapped
	if !atEnd {
		cur.Seek(start)
	}
	if !nd {
		out := []wire.Event{}
		full := false
		h := a.newPageHold(c)
		defer h.release()
		var resume uint64
		if !atEnd {
			evs, more, n, err := readPage(cur, limit, PageExamine, h)
			if err != nil {
				return err
			}
			full, resume = more, n
			out = wire.FromStoredAll(evs)
		}
		var next *uint64
		if full {
			n := resume - 1 // resume > start: the page read or examined something
			next = &n
		}
		return writeJSONHolding(c.w, http.StatusOK, map[string]any{"events": out, "next_after": next}, h.held)
	}
	release, err := a.holdStream(c)
	if err != nil {
		return err
	}
	defer release()
	// Each step holds its room in the response budget while it is read,
	// encoded and written (see ndjsonStepHold).
	var hold func()
	defer func() {
		if hold != nil {
			hold()
		}
	}()
	sent := 0
	// Each poll examines at most PageExamine index entries; the query is
	// charged to the tenant's request rate as its pages would be (a
	// request for each PageExamine entries examined or MaxPageLimit
	// events sent past the first, readPacer), waiting for it.
	cur.ExamineAtMost(PageExamine)
	pacer := &readPacer{ctx: c.r.Context(), charge: a.scanCharge(c)}
	readStep := func() (evs []core.StoredEvent, more bool, err error) {
		if err := pacer.owe(uint64(sent), cur.Examined()); err != nil {
			return nil, false, err
		}
		if hold, err = a.bodies.take(c.r.Context(), c.tenant, ndjsonStepHold, recorderOf(c.w)); err != nil {
			return nil, false, err
		}
		page := ndjsonPage // events held in memory at once
		if limit > 0 {
			page = min(page, limit-sent)
		}
		if evs, more, err = cur.PollBytes(page, ndjsonStepBytes); err != nil {
			return nil, false, err
		}
		more = more || len(evs) == page
		if need := stepHold(evs); need > ndjsonStepHold {
			// One event larger than the step: room for it alone, as a
			// page of it would take (a tenant's share admits one such
			// when it holds nothing else).
			hold()
			if hold, err = a.bodies.take(c.r.Context(), c.tenant, need, recorderOf(c.w)); err != nil {
				return nil, false, err
			}
		}
		return evs, more, nil
	}
	// The first step is read, and its room had, before the response
	// begins: a server (or tenant) out of room answers 503 BUSY.
	var evs []core.StoredEvent
	more := false
	if !atEnd {
		if evs, more, err = readStep(); err != nil {
			return err
		}
	}
	c.w.Header().Set("Content-Type", "application/x-ndjson")
	c.w.WriteHeader(http.StatusOK)
	// Writes fail once the request's context ends (the client went away,
	// or the tenant's access was lost: then the stream is cut, not ended
	// as if complete).
	bw := bufio.NewWriterSize(ctxWriter{c.w, c.r.Context()}, 64<<10)
	enc := json.NewEncoder(bw)
	// Not HTML-escaped, as pages are not: a payload's "<" stays one byte,
	// so a step's encoding stays within what it holds (stepHold).
	enc.SetEscapeHTML(false)
	var last *uint64
	early := false // ended for want of room: next_after says where to go on
	for {
		for _, ev := range evs {
			if err := enc.Encode(wire.FromStored(ev)); err != nil {
				if errors.Is(context.Cause(c.r.Context()), errAccessLost) {
					panic(http.ErrAbortHandler)
				}
				return nil // the client went away
			}
			n := ev.GlobalSequence
			last = &n
		}
		sent += len(evs)
		if !more || limit > 0 && sent >= limit {
			break
		}
		if err := bw.Flush(); err != nil {
			return nil
		}
		http.NewResponseController(c.w).Flush()
		if c.r.Context().Err() != nil {
			return nil
		}
		hold()
		hold = nil
		if evs, more, err = readStep(); err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.code != wire.CodeBusy {
				return err // logged: the response has begun
			}
			if errors.Is(context.Cause(c.r.Context()), errAccessLost) || last == nil {
				// The tenant's access was lost while the step waited, or
				// there is nothing to continue after: cut the stream, so
				// that it is not taken for a complete answer.
				panic(http.ErrAbortHandler)
			}
			if c.r.Context().Err() != nil {
				return nil // the client went away
			}
			early = true
			break
		}
	}
	var next *uint64
	if early || limit > 0 && sent == limit {
		next = last
	}
	_ = enc.Encode(map[string]any{"next_after": next})
	_ = bw.Flush()
	return nil
}

// ndjsonPage is how many events an NDJSON query reads at once, fewer when
// they hold more than ndjsonStepBytes of payload (at least one): a
// stalled client holds about that much (or one event), not ndjsonPage
// large events.
//
// While a step is read, encoded and written it holds ndjsonStepHold of
// the response budget (MaxResponseBytes, of which the tenant's share),
// or stepHold of its events when one event alone is larger: a client
// that stops reading keeps its step until the write timeout, so stalled
// queries, all tenants together and each tenant alone, hold what the
// budget allows and no more. A query that finds no room for its first
// step is answered 503 BUSY; one that finds none for a later step
// within a second ends early, its last line's next_after saying where
// to continue.
const (
	ndjsonPage      = 100
	ndjsonStepBytes = 1 << 20
	ndjsonStepHold  = 2*ndjsonStepBytes + 64<<10
)

// stepHold is what a step of evs holds while written: its payloads
// twice (the events and their encoding) and the write buffer.
func stepHold(evs []core.StoredEvent) int64 {
	n := int64(64 << 10)
	for i := range evs {
		n += 2 * int64(len(evs[i].Payload))
	}
	return n
}

func (a *API) entityEvents(c *call) error {
	entity := c.r.PathValue("entity")
	if _, err := core.NewCoordinate(entity, "x"); err != nil {
		return err
	}
	afterClock, hasAfter, err := queryUint(c.r, "after_clock")
	if err != nil {
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
	// Read page by page (an entity's whole stream can be far larger than
	// one response), walking only this entity's events (not those of the
	// entities its name is a prefix of).
	if hasAfter && afterClock == math.MaxUint64 {
		return writeJSON(c.w, http.StatusOK, map[string]any{"events": []wire.Event{}})
	}
	region := core.All().WithExactEntity(entity)
	if hasAfter {
		region = region.WithClockRange(afterClock+1, math.MaxUint64)
	}
	h := a.newPageHold(c)
	defer h.release()
	// Unbounded: one entity's events are walked from the clock asked
	// for, each in the region (core seeks its clock range).
	evs, more, _, err := readPage(s.Cursor(region), limit, 0, h)
	if err != nil {
		return err
	}
	// next_after_clock: the page stopped before the stream's end (its
	// limit, MaxPageBytes, or the response budget); continue after it.
	var next *uint64
	if more && len(evs) > 0 {
		n := evs[len(evs)-1].Header.Clock
		next = &n
	}
	return writeJSONHolding(c.w, http.StatusOK, map[string]any{"events": wire.FromStoredAll(evs), "next_after_clock": next}, h.held)
}

// ancestors serves GET …/events/{id}/ancestors?limit=N: the event, its
// cause, that one's cause and so on, at most limit events
// (DefaultPageLimit, capped at MaxPageLimit; fewer when they pass
// MaxPageBytes of payload); "truncated" says a bound stopped the walk.
func (a *API) ancestors(c *call) error {
	id, err := core.ParseEventID(c.r.PathValue("id"))
	if err != nil {
		return errInvalid("id", "not an event id (a UUID)")
	}
	limit, err := pageLimit(c.r, DefaultPageLimit, MaxPageLimit)
	if err != nil {
		return err
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	h := a.newPageHold(c)
	defer h.release()
	res, err := walkHeld(h, core.CausalLimits{MaxEvents: limit}, func(lim core.CausalLimits) (core.CausalResult, error) {
		return s.AncestorsLimited(id, lim)
	})
	if err != nil {
		return err
	}
	out := wire.FromStoredAll(res.Events)
	return writeJSONHolding(c.w, http.StatusOK, map[string]any{"events": out, "truncated": res.Truncated}, h.held)
}

func (a *API) stats(c *call) error {
	s, err := c.store()
	if err != nil {
		return err
	}
	st := s.StatsEstimated() // a walk of the index would cost with the tenant's log
	eff := a.opts.Plane.Effective(c.tenant)
	out := map[string]any{
		"events": st.Events, "global_sequence": st.GlobalSequence, "entities": st.Entities,
		"segments": st.Segments, "bytes": st.Bytes, "index_bytes": st.IndexBytes, "fsyncs": st.Fsyncs,
		"quotas": eff,
		"usage": map[string]any{"storage_bytes": st.Bytes, "index_bytes": s.Usage().IndexBytes,
			"cursors": len(a.opts.Plane.Cursors(c.tenant))},
	}
	a.pluginUsage(c.tenant, out["usage"].(map[string]any))
	if a.opts.Policies != nil {
		// Per tenant here rather than as metric labels: a server holds
		// thousands of tenants.
		out["policy_decisions"] = a.opts.Policies.DecisionCounts(c.tenant)
	}
	return writeJSON(c.w, http.StatusOK, out)
}

// maxVerifies is how many verifies the server runs at once, across
// tenants: each reads its tenant's whole log and holds state for every
// entity (about 0.5 KiB each) while it runs.
const maxVerifies = 2

// startImport marks an import into tenant as running, or refuses it
// (503 BUSY) while another one is.
func (a *API) startImport(tenant string) (done func(), err error) {
	return a.startOne(&a.imports, tenant, 0, "imports", "an import into this tenant is running; imports into one tenant run one at a time")
}

// startVerify claims a verify run for tenant: one per tenant at a time,
// maxVerifies in all. Past either: 503 BUSY with Retry-After. done gives
// the run back.
func (a *API) startVerify(tenant string) (done func(), err error) {
	return a.startOne(&a.verifies, tenant, maxVerifies, "verifies", "a verify of this tenant is running; one runs at a time (its answer holds for this one too)")
}

// startOne marks tenant in *running (guarded by verifyMu), or refuses it
// (503 BUSY with Retry-After, saying busy) while it is marked there, or
// while limit (0: none) tenants are (what names the work then).
func (a *API) startOne(running *map[string]bool, tenant string, limit int, what, busy string) (done func(), err error) {
	a.verifyMu.Lock()
	defer a.verifyMu.Unlock()
	switch {
	case (*running)[tenant]:
		return nil, &apiError{status: 503, code: wire.CodeBusy, retryAfter: 5 * time.Second, detail: busy}
	case limit > 0 && len(*running) >= limit:
		return nil, &apiError{status: 503, code: wire.CodeBusy, retryAfter: 5 * time.Second,
			detail: "the server runs " + itoa(limit) + " " + what + " at a time; retry"}
	}
	if *running == nil {
		*running = map[string]bool{}
	}
	(*running)[tenant] = true
	return func() {
		a.verifyMu.Lock()
		delete(*running, tenant)
		a.verifyMu.Unlock()
	}, nil
}

func (a *API) verify(c *call) error {
	s, err := c.store()
	if err != nil {
		return err
	}
	release, err := a.holdStream(c)
	if err != nil {
		return err
	}
	defer release()
	done, err := a.startVerify(c.tenant)
	if err != nil {
		return err
	}
	defer done()
	rep, err := s.Verify()
	if err != nil {
		if errors.Is(err, core.ErrChainBroken) || errors.Is(err, core.ErrCorrupt) {
			return writeJSON(c.w, http.StatusOK, map[string]any{"ok": false, "error": a.scrub(c, err.Error())})
		}
		return err
	}
	return writeJSON(c.w, http.StatusOK, map[string]any{"ok": true, "segments": rep.Segments, "events": rep.Events,
		"hidden": rep.Hidden, "entities": rep.Entities, "removed": rep.Removed})
}

func (a *API) export(c *call) error {
	s, err := c.store()
	if err != nil {
		return err
	}
	release, err := a.holdStream(c)
	if err != nil {
		return err
	}
	defer release()
	// An export reads the store a step at a time (core.Export) and a
	// client that stops reading keeps its step until the write timeout:
	// it holds exportHold of the response budget while it runs.
	hold, err := a.bodies.take(c.r.Context(), c.tenant, exportHold(a.opts.Plane.Effective(c.tenant).MaxPayloadBytes), recorderOf(c.w))
	if err != nil {
		return err
	}
	defer hold()
	c.w.Header().Set("Content-Type", "application/x-ndjson")
	c.w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(ctxWriter{c.w, c.r.Context()}, 64<<10)
	// At the tenant's request rate, a request per MaxPageLimit events
	// past the first (a client gone ends the export at its next write).
	pacer := &readPacer{ctx: c.r.Context(), charge: a.scanCharge(c), flush: func() {
		_ = bw.Flush()
		_ = http.NewResponseController(c.w).Flush()
	}}
	progress := func(n int) { _ = pacer.owe(uint64(n), uint64(n)) } // a client gone: its error at the next write
	if _, err := s.Export(bw, core.All(), progress); err != nil {
		a.log.Warn("export ended early", "request_id", c.info.id, "tenant", c.tenant, "error", a.scrub(c, err.Error()))
		// Cut the response so the client sees a broken stream, not a
		// short but well-formed one.
		panic(http.ErrAbortHandler)
	}
	return bw.Flush()
}

// exportHold is what an export holds of the response budget while it
// runs, for a tenant whose events hold at most maxPayload bytes:
// core.Export's read step (1 MiB of payload, or one larger event) twice,
// and its and the handler's write buffers.
func exportHold(maxPayload int) int64 {
	return 2*int64(max(maxPayload, 1<<20)) + 128<<10
}

// importBody counts the bytes of an import body as they are read and
// fails the read once check refuses the count. Each read may take idle
// (set on the connection through deadline); interrupt ends the read under
// way and every later one.
type importBody struct {
	r        io.Reader
	ctx      context.Context // the import's: interrupt is called when it ends
	read     int
	check    func(read int) error
	idle     time.Duration
	deadline func(time.Time) error

	mu          sync.Mutex
	interrupted bool
}

func (b *importBody) Read(p []byte) (int, error) {
	began := time.Now()
	b.mu.Lock()
	if !b.interrupted {
		_ = b.deadline(began.Add(b.idle))
	}
	b.mu.Unlock()
	n, err := b.r.Read(p)
	b.read += n
	if cerr := b.check(b.read); cerr != nil {
		return 0, cerr
	}
	// The server cancels the request when a read fails, so interrupt may
	// have run after an idle timeout: the time the read took tells them
	// apart.
	if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(began) < b.idle {
		return n, context.Cause(b.ctx)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return n, &apiError{status: http.StatusRequestTimeout, code: wire.CodeInvalidRequest,
			detail: "the import body sent nothing for " + b.idle.String() + " (server.read_timeout)"}
	}
	return n, err
}

// interrupt makes the read under way, and every later one, fail now.
func (b *importBody) interrupt() {
	b.mu.Lock()
	b.interrupted = true
	_ = b.deadline(time.Now())
	b.mu.Unlock()
}

// ctxWriter fails its writes once ctx has ended (the client went away, or
// the tenant's access was lost).
type ctxWriter struct {
	w   io.Writer
	ctx context.Context
}

func (w ctxWriter) Write(p []byte) (int, error) {
	if w.ctx.Err() != nil {
		return 0, context.Cause(w.ctx)
	}
	return w.w.Write(p)
}

// itemNames is the bytes of an item's names the store's index may keep:
// its entity, scope and idempotency key.
func itemNames(it core.BatchItem) int {
	return len(it.Coordinate.Entity) + len(it.Coordinate.Scope) + len(it.Options.IdempotencyKey)
}
