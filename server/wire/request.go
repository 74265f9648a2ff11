package wire

import (
	"bytes"
	"strconv"
	"unicode/utf8"

	"github.com/batpak-go/batpak/ijson"
)

// DecodeAppend reads the body of an append request into req: exactly what
// Decode(body, req, maxDepth) accepts, into the same request, refused with
// the same errors. Bodies of the usual shape (member names as documented,
// strings without escapes, payloads that are I-JSON) are read in one pass
// that validates each payload once; req's raw members then share body's
// bytes (body must not change while req is in use). Any other body,
// invalid ones included, is read by Decode.
func DecodeAppend(body []byte, req *AppendRequest, maxDepth int) error {
	if maxDepth > 1 {
		s := reqScanner{b: body}
		if s.item(req, maxDepth-1) && s.end() {
			return nil
		}
		*req = AppendRequest{}
	}
	return Decode(body, req, maxDepth)
}

// DecodeBatch reads the body of a batch request into req as DecodeAppend
// reads an append: what Decode accepts, with Decode's errors, in one pass
// for bodies of the usual shape. A batch of more than maxItems events
// (maxItems > 0) is refused with a *TooManyItemsError before more than
// maxItems+1 of them are decoded, so an oversized body costs its own
// bytes, not a decoded request many times their size. The bound counts
// the values of every array directly under the body's object, so a body
// naming "events" twice (which Decode refuses) is held to it by both
// together, and no later member can make Decode read more than the bound.
func DecodeBatch(body []byte, req *BatchRequest, maxDepth, maxItems int) error {
	// A batch's payloads sit three levels down: object, events, item.
	if maxDepth > 3 {
		s := reqScanner{b: body, maxItems: maxItems}
		if s.batch(req, maxDepth-3) && s.end() {
			return nil
		}
		*req = BatchRequest{}
		if s.tooMany {
			return &TooManyItemsError{Limit: maxItems}
		}
	}
	if maxItems > 0 && batchItems(body, maxItems) > maxItems {
		return &TooManyItemsError{Limit: maxItems}
	}
	return Decode(body, req, maxDepth)
}

// TooManyItemsError: a batch body holds more than Limit events.
type TooManyItemsError struct{ Limit int }

func (e *TooManyItemsError) Error() string {
	return "events: the batch holds more than " + strconv.Itoa(e.Limit) + " events"
}

// batchItems counts the values in the arrays directly under body's
// top-level object (a batch's "events"), stopping once past limit. It
// reads bytes only: body may be any text.
func batchItems(b []byte, limit int) int {
	depth, n := 0, 0
	inArray, expect := false, false // depth 2 is an array; a value is due there
	for i := 0; i < len(b) && n <= limit; i++ {
		c := b[i]
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		if depth == 2 && inArray && expect && c != ']' && c != ',' {
			n++
			expect = false
		}
		switch c {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			depth++
			if depth == 2 {
				inArray, expect = c == '[', c == '['
			}
		case '}', ']':
			depth--
		case ',':
			if depth == 2 && inArray {
				expect = true
			}
		}
	}
	return n
}

// reqScanner reads a request body of the usual shape; each method reports
// false at the first thing it does not take (which Decode then reads).
type reqScanner struct {
	b []byte
	i int
	// the last entity and scope read: a batch's items mostly repeat them,
	// and then share one string.
	entity, scope string
	// maxItems > 0 bounds a batch's events; tooMany reports it was passed.
	maxItems int
	tooMany  bool
}

func (s *reqScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// tok consumes c after optional whitespace.
func (s *reqScanner) tok(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (s *reqScanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// str reads a string without escapes or control bytes, in valid UTF-8,
// and returns its contents.
func (s *reqScanner) str() ([]byte, bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	ascii := true
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			v := s.b[start:j]
			if !ascii && !utf8.Valid(v) {
				return nil, false
			}
			s.i = j + 1
			return v, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, false
}

// digits reads a JSON integer (an optional minus when neg, no leading
// zeros, no fraction or exponent) of at most 18 digits.
func (s *reqScanner) digits(neg bool) (int64, bool) {
	s.ws()
	i, minus := s.i, false
	if neg && i < len(s.b) && s.b[i] == '-' {
		i, minus = i+1, true
	}
	start := i
	var n int64
	for i < len(s.b) && s.b[i] >= '0' && s.b[i] <= '9' {
		n = n*10 + int64(s.b[i]-'0')
		i++
	}
	d := i - start
	if d == 0 || d > 18 || d > 1 && s.b[start] == '0' {
		return 0, false
	}
	if i < len(s.b) {
		switch s.b[i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	s.i = i
	if minus {
		n = -n
	}
	return n, true
}

// raw reads one JSON value nested at most depth deep and returns its
// bytes: a plain string or integer directly, anything else read and
// checked by ijson in one pass (it refuses what encoding/json refuses, and
// repeated member names too: those bodies go to Decode, which takes them).
func (s *reqScanner) raw(depth int) ([]byte, bool) {
	v, _, ok := s.checked(depth)
	return v, ok
}

// checked is raw that also returns ijson's record of the value's check:
// the zero record for a plain string or integer, read directly (checking
// those again is cheap).
func (s *reqScanner) checked(depth int) ([]byte, ijson.Checked, bool) {
	s.ws()
	if s.i >= len(s.b) {
		return nil, ijson.Checked{}, false
	}
	start := s.i
	switch c := s.b[start]; {
	case c == '"':
		if _, ok := s.str(); ok {
			return s.b[start:s.i], ijson.Checked{}, true
		}
		s.i = start
	case c >= '0' && c <= '9':
		if _, ok := s.digits(false); ok && s.delim() {
			return s.b[start:s.i], ijson.Checked{}, true
		}
		s.i = start
	}
	c, n, err := ijson.CheckPrefix(s.b[start:], depth)
	if err != nil {
		return nil, c, false
	}
	s.i = start + n
	return c.Bytes(), c, true
}

// The members of an append request, for telling repeats apart.
const (
	mEntity = 1 << iota
	mScope
	mKind
	mPayload
	mExpected
	mCorrelation
	mCausation
	mIdempotency
	mFlags
	mCauseItem
)

// item reads one append request object; payloads may nest depth deep.
func (s *reqScanner) item(req *AppendRequest, depth int) bool {
	if !s.tok('{') {
		return false
	}
	if s.tok('}') {
		return true
	}
	seen := 0
	for {
		name, ok := s.str()
		if !ok || !s.tok(':') {
			return false
		}
		var m int
		switch string(name) {
		case "entity":
			m = mEntity
			v, ok := s.str()
			if !ok {
				return false
			}
			if string(v) != s.entity {
				s.entity = string(v)
			}
			req.Entity = s.entity
		case "scope":
			m = mScope
			v, ok := s.str()
			if !ok {
				return false
			}
			if string(v) != s.scope {
				s.scope = string(v)
			}
			req.Scope = s.scope
		case "kind":
			m = mKind
			if req.Kind, ok = s.raw(depth); !ok {
				return false
			}
		case "payload":
			m = mPayload
			if req.Payload, req.checked, ok = s.checked(depth); !ok {
				return false
			}
		case "expected_clock":
			m = mExpected
			if req.ExpectedClock, ok = s.raw(depth); !ok {
				return false
			}
		case "correlation_id":
			m = mCorrelation
			if req.CorrelationID, ok = s.strPtr(); !ok {
				return false
			}
		case "causation_id":
			m = mCausation
			if req.CausationID, ok = s.strPtr(); !ok {
				return false
			}
		case "idempotency_key":
			m = mIdempotency
			if req.IdempotencyKey, ok = s.strPtr(); !ok {
				return false
			}
		case "flags":
			m = mFlags
			n, ok := s.digits(false)
			if !ok || n > 0xFFFF {
				return false
			}
			req.Flags = uint16(n)
		case "cause_item":
			m = mCauseItem
			n, ok := s.digits(true)
			if !ok || n > 1<<31-1 || n < -(1<<31) {
				return false
			}
			ci := int(n)
			req.CauseItem = &ci
		default:
			// Decode matches names without regard to case, and names
			// unknown ones in its error.
			return false
		}
		if seen&m != 0 {
			return false // repeated: Decode refuses it
		}
		seen |= m
		if s.tok('}') {
			return true
		}
		if !s.tok(',') {
			return false
		}
	}
}

func (s *reqScanner) strPtr() (*string, bool) {
	v, ok := s.str()
	if !ok {
		return nil, false
	}
	p := string(v)
	return &p, true
}

// batch reads a batch request object.
func (s *reqScanner) batch(req *BatchRequest, depth int) bool {
	if !s.tok('{') {
		return false
	}
	name, ok := s.str()
	if !ok || !bytes.Equal(name, []byte("events")) || !s.tok(':') || !s.tok('[') {
		return false
	}
	// A first guess at the item count from the body's size saves most of
	// the slice's regrowth.
	req.Events = make([]AppendRequest, 0, min(len(s.b)/128+1, 1024))
	if !s.tok(']') {
		for {
			if s.maxItems > 0 && len(req.Events) == s.maxItems {
				s.tooMany = true
				return false
			}
			req.Events = append(req.Events, AppendRequest{})
			if !s.item(&req.Events[len(req.Events)-1], depth) {
				return false
			}
			if s.tok(']') {
				break
			}
			if !s.tok(',') {
				return false
			}
		}
	}
	return s.tok('}')
}

// delim reports whether the next byte ends a value.
func (s *reqScanner) delim() bool {
	if s.i == len(s.b) {
		return true
	}
	switch s.b[s.i] {
	case ',', '}', ']', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}
