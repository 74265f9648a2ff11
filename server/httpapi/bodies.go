package httpapi

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/server/wire"
	"golang.org/x/sync/semaphore"
)

// Large JSON responses (pages of events, causal walks, cursor polls) are
// built whole before they are written, and a client that does not read
// holds one in the server's memory until the write timeout. So the bytes
// of the large ones written at once are bounded, all tenants together
// and each tenant alone: a response of largeBody bytes or more holds
// twice its size of MaxResponseBytes while it is written (the body, and
// the events it was built from), and one tenant's responses hold at most
// MaxResponseBytesPerTenant of it (or one response, when it holds none),
// so one tenant's slow readers cannot keep the others' pages out. A
// response that finds no room within bodyWait is answered 503 BUSY with
// Retry-After instead. Pages of events take their room before they read
// their events, step by step (pagehold.go), so that concurrent pages
// cannot be built past the budget first.
const (
	largeBody                 = 64 << 10
	MaxResponseBytes          = 256 << 20
	MaxResponseBytesPerTenant = MaxResponseBytes / 4
	bodyWait                  = time.Second
)

// bodyBudget is the server's MaxResponseBytes, with each tenant's share.
type bodyBudget struct {
	sem *semaphore.Weighted
	// stalls holds the responses holding memory; a take that finds no
	// room cuts off those whose clients stopped reading (stallSet.cut).
	stalls *stallSet

	mu   sync.Mutex
	held map[string]int64 // by tenant, while > 0
}

func newBodyBudget(stalls *stallSet) *bodyBudget {
	return &bodyBudget{sem: semaphore.NewWeighted(MaxResponseBytes), held: map[string]int64{}, stalls: stalls}
}

// take takes w bytes of the budget (at most all of it) for owner's
// response rec (nil: none to cut off), waiting up to bodyWait within ctx
// for room; release gives them back. Past the tenant owner's share it
// refuses at once; owner "" (the operator's routes, and the parts of a
// cluster-wide answer, which MaxMemberAsks bounds per tenant) has no
// share. A take that finds no room first cuts off the responses holding
// the budget whose clients have taken nothing for stallAfter (see
// stallSet): tenants whose clients stop reading cannot keep the others'
// responses out for longer than that.
func (b *bodyBudget) take(ctx context.Context, owner string, w int64, rec *recorder) (release func(), err error) {
	w = min(w, MaxResponseBytes)
	b.mu.Lock()
	if h := b.held[owner]; owner != "" && h > 0 && h+w > MaxResponseBytesPerTenant {
		b.mu.Unlock()
		return nil, &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "this tenant's responses in flight (slow readers, or many large pages at once) hold its share of the server's response memory; retry, or ask for smaller pages (?limit)"}
	}
	b.held[owner] += w
	b.mu.Unlock()
	give := func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.held[owner] -= w; b.held[owner] <= 0 {
			delete(b.held, owner)
		}
	}
	if !b.sem.TryAcquire(w) && !b.wait(ctx, w) {
		give()
		return nil, &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "the server's responses in flight (slow readers, or many large pages at once) hold all its response memory; retry, or ask for smaller pages (?limit)"}
	}
	if rec != nil && b.stalls != nil {
		b.stalls.add(rec)
	}
	return func() {
		if rec != nil && b.stalls != nil {
			b.stalls.remove(rec)
		}
		b.sem.Release(w)
		give()
	}, nil
}

// wait waits for w bytes of room within ctx: up to bodyWait, and while
// a response holding room is blocked writing (it may be a client that
// stopped reading) until it has been for stallAfter and a step more (at
// most stallAfter+bodyWait in all), cutting off, every step, the
// responses that have stalled for stallAfter. It reports whether it got
// the room.
func (b *bodyBudget) wait(ctx context.Context, w int64) bool {
	const step = 250 * time.Millisecond
	start := time.Now()
	for {
		until := start.Add(bodyWait).UnixNano()
		if b.stalls != nil {
			b.stalls.cut()
			if since := b.stalls.writingSince(); since != 0 {
				until = max(until, min(since+int64(stallAfter+step), start.Add(stallAfter+bodyWait).UnixNano()))
			}
		}
		left := time.Until(time.Unix(0, until))
		if left <= 0 {
			return false
		}
		sctx, cancel := context.WithTimeout(ctx, min(left, step))
		err := b.sem.Acquire(sctx, w)
		cancel()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
	}
}

// stallAfter is how long a response's write may take nothing while
// another waits for the memory it holds: a client that reads nothing for
// that long then is cut off (its response ends, broken), so that clients
// which stop reading — of tenants sharing the budget between them —
// hold the server's response memory for at most that long, not the
// write timeout. A client reading more slowly than stallPiece bytes in
// that time counts as not reading.
const stallAfter = 2 * time.Second

// stallPiece is the most a response writes at once (recorder.Write): its
// progress is seen a piece at a time.
const stallPiece = 64 << 10

// stallSet is the responses that hold memory while they are written —
// large JSON bodies, NDJSON pages, exports, event streams — each with
// how many holds it has.
type stallSet struct {
	mu      sync.Mutex
	recs    map[*recorder]int
	lastCut time.Time
	// cutOff counts the responses cut off (batpak_slow_readers_cut_total).
	cutOff atomic.Uint64
}

func newStallSet() *stallSet { return &stallSet{recs: map[*recorder]int{}} }

func (s *stallSet) add(rec *recorder) {
	s.mu.Lock()
	s.recs[rec]++
	s.mu.Unlock()
}

func (s *stallSet) remove(rec *recorder) {
	s.mu.Lock()
	if s.recs[rec]--; s.recs[rec] <= 0 {
		delete(s.recs, rec)
	}
	s.mu.Unlock()
}

// writingSince is when the response of the set blocked in a write the
// longest began it (UnixNano; 0: none is blocked in a write now, so none
// may stall).
func (s *stallSet) writingSince() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first int64
	for rec := range s.recs {
		if at := rec.stalledSince.Load(); at != 0 && (first == 0 || at < first) {
			first = at
		}
	}
	return first
}

// cut cuts off every response of the set whose write has taken nothing
// for stallAfter (recorder.stalledSince), and returns how many; it looks
// at most every 50 ms (a crowd of waiting takes looks once).
func (s *stallSet) cut() int {
	now := time.Now()
	s.mu.Lock()
	if now.Sub(s.lastCut) < 50*time.Millisecond {
		s.mu.Unlock()
		return 0
	}
	s.lastCut = now
	var stalled []*recorder
	for rec := range s.recs {
		if since := rec.stalledSince.Load(); since != 0 && now.Sub(time.Unix(0, since)) >= stallAfter {
			stalled = append(stalled, rec)
		}
	}
	s.mu.Unlock()
	for _, rec := range stalled {
		rec.cutOff(0)
	}
	s.cutOff.Add(uint64(len(stalled)))
	return len(stalled)
}

// CutStalledReaders cuts off the responses holding the server's memory
// whose clients have taken nothing for stallAfter (2 s), and returns how
// many: what something waiting for that memory calls (the server's event
// subscriptions, follow.Options.Starved). It looks at most every 50 ms.
func (a *API) CutStalledReaders() int { return a.stalls.cut() }
