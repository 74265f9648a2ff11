package httpapi

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/batpak-go/batpak/server/wire"
)

// envelopeDepth is how many levels a request's own members add above a
// payload (a batch: object, events array, item object).
const envelopeDepth = 3

// checkMedia refuses a body whose Content-Type is not want, or that
// comes with a Content-Encoding (compressed: not read here), with 415. A
// route whose body is optional accepts an empty body without a type.
func checkMedia(r *http.Request, want string, optional bool) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" && optional && r.ContentLength <= 0 {
		return nil
	}
	for _, ce := range r.Header.Values("Content-Encoding") {
		if ce = strings.TrimSpace(ce); ce != "" && !strings.EqualFold(ce, "identity") {
			return &apiError{status: 415, code: wire.CodeUnsupportedMedia, detail: "Content-Encoding " + strconv.Quote(ce) + " is not supported; send the body as " + want + " without a Content-Encoding"}
		}
	}
	mt, params, err := mime.ParseMediaType(ct)
	ok := err == nil && mt == want
	if ok && want == "application/x-ndjson" {
		ok = true
	}
	if !ok && want == "application/x-ndjson" && (mt == "application/jsonl" || mt == "application/jsonlines") {
		ok = true
	}
	if ok {
		if cs, has := params["charset"]; has && !strings.EqualFold(cs, "utf-8") {
			return &apiError{status: 415, code: wire.CodeUnsupportedMedia, detail: "charset " + strconv.Quote(cs) + " is not supported; send UTF-8"}
		}
		return nil
	}
	shown := ct
	if shown == "" {
		shown = "none"
	}
	return &apiError{status: 415, code: wire.CodeUnsupportedMedia, detail: "Content-Type " + strconv.Quote(shown) + " is not accepted here; send " + want}
}

// tooLarge is the problem of a body past MaxBodyBytes.
func (a *API) tooLarge() *apiError {
	lim := float64(a.opts.MaxBodyBytes)
	return &apiError{status: 413, code: wire.CodePayloadTooLarge,
		detail: "the request body is larger than " + strconv.FormatInt(a.opts.MaxBodyBytes, 10) + " bytes (server.max_body_bytes)",
		p:      wire.Problem{Quota: "max_body_bytes", Limit: &lim}}
}

// limitBody bounds r's body: a Content-Length past the limit is refused
// before anything is read, and the read stops one byte past it.
func (a *API) limitBody(c *call) error {
	if c.r.ContentLength > a.opts.MaxBodyBytes {
		return a.tooLarge()
	}
	c.r.Body = http.MaxBytesReader(c.w, c.r.Body, a.opts.MaxBodyBytes)
	return nil
}

// Request bodies are read whole into memory before they are decoded, so
// the memory they take is bounded as it is taken: each body starts with
// at most bodyStart bytes of room, whatever its Content-Length says, and
// grows as its bytes arrive; room past the first largeBody bytes is
// charged to the server's request budget (MaxRequestBytes, all requests
// together) while the request runs, and one tenant's requests (the
// operator's count as one tenant) hold at most a quarter of it, so that
// one tenant's slow uploads cannot shut the others out. A body that finds
// no room is answered 503 BUSY with Retry-After, nothing done.
const MaxRequestBytes = 256 << 20

// bodyStart is the room a body starts with (it grows as it arrives).
const bodyStart = 4 << 10

// requestBudget is the server's request budget. It holds at least one
// body of the largest size a route takes, and so does a tenant's share,
// so that one always fits.
type requestBudget struct {
	sem      *semaphore.Weighted
	perOwner int64 // the most one tenant holds

	mu   sync.Mutex
	held map[string]int64 // by tenant ("" the operator), while > 0
}

func newRequestBudget(largest int64) *requestBudget {
	total := max(MaxRequestBytes, largest)
	return &requestBudget{sem: semaphore.NewWeighted(total), perOwner: max(total/4, largest), held: map[string]int64{}}
}

// take charges n bytes to owner's share and the whole budget, or reports
// false (nothing charged).
func (b *requestBudget) take(owner string, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held[owner]+n > b.perOwner || !b.sem.TryAcquire(n) {
		return false
	}
	b.held[owner] += n
	return true
}

// give gives back n bytes owner took.
func (b *requestBudget) give(owner string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sem.Release(n)
	if b.held[owner] -= n; b.held[owner] <= 0 {
		delete(b.held, owner)
	}
}

// chargeBody charges n more bytes of room for the call's request body to
// the request budget (given back when the call ends), or answers why not.
func (c *call) chargeBody(n int64) error {
	if n <= 0 {
		return nil
	}
	if !c.a.requests.take(c.tenant, n) {
		return &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "the server is reading as many large request bodies as it holds at once, or as many of this tenant's as one tenant may; retry"}
	}
	c.bodyOwner = c.tenant
	c.bodyHeld += n
	return nil
}

// releaseBody gives the call's request body room back to the budget.
func (c *call) releaseBody() {
	if c.bodyHeld > 0 {
		c.a.requests.give(c.bodyOwner, c.bodyHeld)
		c.bodyHeld = 0
	}
}

// readBody checks the media type and size and reads the whole body.
func (a *API) readBody(c *call, optional bool) ([]byte, error) {
	if err := checkMedia(c.r, c.route.Body, optional); err != nil {
		return nil, err
	}
	if err := a.limitBody(c); err != nil {
		return nil, err
	}
	b, err := readAll(c.r.Body, c.r.ContentLength, a.opts.MaxBodyBytes+1, c.chargeBody)
	if err != nil {
		var mbe *http.MaxBytesError
		var ae *apiError
		switch {
		case errors.As(err, &mbe):
			return nil, a.tooLarge()
		case errors.As(err, &ae):
			return nil, ae
		}
		return nil, &apiError{status: 400, code: wire.CodeInvalidRequest, detail: "the request body could not be read"}
	}
	return b, nil
}

// readAll reads r to its end. Its buffer starts with room for a body of
// length bytes (unknown when not positive) but at most bodyStart, and
// doubles as the bytes arrive, up to length+1 and limit bytes (r must
// stop by then: a MaxBytesReader, a known length); charge is asked for
// each growth's room past the first largeBody bytes, and its error ends
// the read. A declared length alone so reserves bodyStart bytes at most.
func readAll(r io.Reader, length, limit int64, charge func(n int64) error) ([]byte, error) {
	size := int64(512)
	if length > 0 {
		size = min(length+1, bodyStart) // the last read finds EOF without growing
	}
	charged := func(room int64) int64 { return max(room-largeBody, 0) }
	b := make([]byte, 0, size)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) < cap(b) {
			continue
		}
		room := int64(cap(b))
		next := 2 * room
		if length > 0 && next >= length {
			next = length + 1 // the whole body and its EOF: no later growth
		}
		next = min(next, limit)
		if next <= room {
			next = room + 512
		}
		if err := charge(charged(next) - charged(room)); err != nil {
			return b, err
		}
		nb := make([]byte, len(b), next)
		copy(nb, b)
		b = nb
	}
}

// decode reads a JSON body into v with the API's limits.
func (a *API) decode(c *call, v any, optional bool) error {
	b, err := a.readBody(c, optional)
	if err != nil {
		return err
	}
	// The body may have taken long to arrive: the credential must still
	// hold now.
	if err := a.recheck(c); err != nil {
		return err
	}
	if optional && len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	depth := a.opts.MaxJSONDepth + envelopeDepth
	switch v := v.(type) {
	case *wire.AppendRequest:
		return wire.DecodeAppend(b, v, depth)
	case *wire.BatchRequest:
		return wire.DecodeBatch(b, v, depth, c.maxBatch)
	}
	return wire.Decode(b, v, depth)
}

// queryUint reads an optional non-negative integer parameter.
func queryUint(r *http.Request, name string) (uint64, bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false, errInvalid(name, name+" must be a whole number ≥ 0, got "+strconv.Quote(clip(s)))
	}
	return n, true, nil
}

// pageLimit reads ?limit: default def, capped at max (0: no cap); 0 or
// less is refused.
func pageLimit(r *http.Request, def, max int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, errInvalid("limit", "limit must be a whole number ≥ 1, got "+strconv.Quote(clip(s)))
	}
	if max > 0 && n > max {
		n = max
	}
	return n, nil
}

func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
