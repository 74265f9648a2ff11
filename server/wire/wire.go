package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/ijson"
	"github.com/batpak-go/batpak/server/control"
)

// Problem codes (the "code" member of every error response).
const (
	CodePolicyDenied        = "POLICY_DENIED"
	CodeConflict            = "CONFLICT"
	CodeIdempotencyMismatch = "IDEMPOTENCY_MISMATCH"
	CodeQuotaExceeded       = "QUOTA_EXCEEDED"
	CodePayloadTooLarge     = "PAYLOAD_TOO_LARGE"
	CodeInvalidJSON         = "INVALID_JSON"
	CodeInvalidCoordinate   = "INVALID_COORDINATE"
	CodeInvalidKind         = "INVALID_KIND"
	CodeInvalidRequest      = "INVALID_REQUEST"
	CodeUnsupportedMedia    = "UNSUPPORTED_MEDIA_TYPE"
	CodeNotFound            = "NOT_FOUND"
	CodeMethodNotAllowed    = "METHOD_NOT_ALLOWED"
	CodeTenantSuspended     = "TENANT_SUSPENDED"
	CodeUnauthenticated     = "UNAUTHENTICATED"
	CodeForbidden           = "FORBIDDEN"
	CodeBusy                = "BUSY"
	CodeInternal            = "INTERNAL"
	// CodeBundleInvalid: an uploaded policy bundle is not an archive the
	// server takes (400; "entry" names the entry at fault).
	CodeBundleInvalid = "BUNDLE_INVALID"
	// CodeBundleRejected: an uploaded policy bundle does not compile or
	// fails its tests (422; "stage" and "errors" say which and why).
	CodeBundleRejected = "BUNDLE_REJECTED"
	// CodePluginRejected: an uploaded plugin's manifest or module is
	// refused (422; "plugin" and "errors" say which and why).
	CodePluginRejected = "PLUGIN_REJECTED"
	// CodePluginFault: a plugin call failed (424; "fault" is its kind:
	// trap, timeout, memory, … or not-loaded).
	CodePluginFault = "PLUGIN_FAULT"
	// CodePluginQuarantined: the plugin refuses calls after too many
	// consecutive faults until it is reset or swapped (424).
	CodePluginQuarantined = "PLUGIN_QUARANTINED"
	// CodeNotImplemented: this server does not offer the route's feature
	// (501; hosted workers on a server without a plugin source).
	CodeNotImplemented = "NOT_IMPLEMENTED"
	// CodeNotLeader: a cluster node that does not lead refused a write
	// (or a linearizable read) without doing anything; send it to the
	// leader (Problem.Leader, also the Location of a 307), retry later
	// when no leader is known.
	CodeNotLeader = "NOT_LEADER"
	// CodeOutcomeUnknown: the write was proposed, then the node lost
	// leadership or stopped before it learned the outcome: it may or may
	// not be written. Retry with the same Idempotency-Key.
	CodeOutcomeUnknown = "OUTCOME_UNKNOWN"
	// CodeNotCaughtUp: a read asked for a sequence (min_seq) this node had
	// not applied within server.cluster.read_wait; retry, or read from
	// the leader.
	CodeNotCaughtUp = "NOT_CAUGHT_UP"
	// CodeNotAMember: the node was removed from the cluster (421): it
	// serves no tenant request and is not to be retried; send requests to
	// a member.
	CodeNotAMember = "NOT_A_MEMBER"
	// CodeTooManyConnections: the client's address (an IPv4 address, an
	// IPv6 /64) already has server.max_connections_per_source connections
	// open; the new one was answered with 429 (Retry-After) and closed
	// before any request was read. Reuse a connection, or close one.
	CodeTooManyConnections = "TOO_MANY_CONNECTIONS"
	// CodeTooManyRequests: the client's address (an IPv4 address, an IPv6
	// /64) made more requests that no tenant is charged for — without a
	// valid credential, or to routes that read none — than
	// server.anonymous_requests_per_second allows (429, Retry-After);
	// nothing was done. A request with a valid tenant credential is
	// never refused so.
	CodeTooManyRequests = "TOO_MANY_REQUESTS"
	// CodeStoreDamaged: the tenant's store is damaged on the server's disk
	// (a frame fails its checks, the log is shorter than it recorded, a
	// hash chain is broken): nothing was read or written. Not to be
	// retried until the operator has recovered it (batpak verify,
	// export --salvage); the server's log names the file.
	CodeStoreDamaged = "STORE_DAMAGED"
)

// ProblemTypeBase prefixes a problem's "type": the code in lower case follows.
const ProblemTypeBase = "https://batpak.dev/problems/"

// Error is a request the server refuses before it reaches a store: Code is
// the problem code, Field the request member or query parameter at fault
// (empty when the body as a whole is), Detail a message for people.
type Error struct {
	Code   string
	Field  string
	Detail string
	Err    error // the cause (a core error), if any
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Detail
	}
	return e.Detail
}

func (e *Error) Unwrap() error { return e.Err }

func errorf(code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Detail: fmt.Sprintf(format, args...)}
}

// Reason is one reason of a policy denial.
type Reason struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Gate    string `json:"gate,omitempty"`
}

// Problem is an RFC 9457 problem document (application/problem+json) with
// batpak's extension members.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Code      string `json:"code"`
	RequestID string `json:"request_id,omitempty"`
	// Field names the request member or parameter at fault (INVALID_*).
	Field string `json:"field,omitempty"`
	// Index is the batch item at fault, when one is.
	Index *int `json:"index,omitempty"`
	// POLICY_DENIED.
	Reasons  []Reason `json:"reasons,omitempty"`
	Revision string   `json:"revision,omitempty"`
	// Layer is the policy layer that refused: "platform" or "tenant".
	Layer string `json:"layer,omitempty"`
	// DecisionID names the denial in the tenant's decision log.
	DecisionID string `json:"decision_id,omitempty"`
	// BUNDLE_INVALID: the archive entry at fault ("" for the whole).
	Entry string `json:"entry,omitempty"`
	// BUNDLE_REJECTED: "compile" or "tests", and the errors.
	Stage  string   `json:"stage,omitempty"`
	Errors []string `json:"errors,omitempty"`
	// CONFLICT: a clock number or "no_events".
	Expected any `json:"expected,omitempty"`
	Actual   any `json:"actual,omitempty"`
	// QUOTA_EXCEEDED, PAYLOAD_TOO_LARGE: which limit and its value.
	Quota string   `json:"quota,omitempty"`
	Limit *float64 `json:"limit,omitempty"`
	// PLUGIN_*: the plugin, and the kind of fault.
	Plugin string `json:"plugin,omitempty"`
	Fault  string `json:"fault,omitempty"`
	// NOT_LEADER: the leader's API URL, when known, and its node id.
	Leader   string `json:"leader,omitempty"`
	LeaderID string `json:"leader_id,omitempty"`
}

// Event is an event as the API shows it.
type Event struct {
	ID             string          `json:"id"`
	GlobalSequence uint64          `json:"global_sequence"`
	Entity         string          `json:"entity"`
	Scope          string          `json:"scope"`
	Kind           string          `json:"kind"`
	Clock          uint64          `json:"clock"`
	Timestamp      string          `json:"timestamp"`
	TimestampUS    int64           `json:"timestamp_us"`
	CorrelationID  string          `json:"correlation_id"`
	CausationID    *string         `json:"causation_id"`
	IdempotencyKey *string         `json:"idempotency_key"`
	Flags          uint16          `json:"flags"`
	Payload        json.RawMessage `json:"payload"`
	Redacted       bool            `json:"redacted"`
}

// FromStoredAll renders stored events (an empty slice, never nil, for none:
// a JSON list).
func FromStoredAll(evs []core.StoredEvent) []Event {
	out := make([]Event, len(evs))
	for i, ev := range evs {
		out[i] = FromStored(ev)
	}
	return out
}

// FromStored renders a stored event.
func FromStored(ev core.StoredEvent) Event {
	h := ev.Header
	out := Event{
		ID:             h.ID.String(),
		GlobalSequence: ev.GlobalSequence,
		Entity:         ev.Coordinate.Entity,
		Scope:          ev.Coordinate.Scope,
		Kind:           FormatKind(h.Kind),
		Clock:          h.Clock,
		Timestamp:      time.UnixMicro(h.Timestamp).UTC().Format(time.RFC3339Nano),
		TimestampUS:    h.Timestamp,
		CorrelationID:  h.CorrelationID.String(),
		Flags:          h.Flags,
		Payload:        ev.Payload,
		Redacted:       ev.Redacted,
	}
	if h.CausationID != (core.EventID{}) {
		s := h.CausationID.String()
		out.CausationID = &s
	}
	if ev.IdempotencyKey != "" {
		k := ev.IdempotencyKey
		out.IdempotencyKey = &k
	}
	if out.Payload == nil {
		out.Payload = json.RawMessage("null")
	}
	return out
}

// Receipt acknowledges a write.
type Receipt struct {
	ID             string `json:"id"`
	CorrelationID  string `json:"correlation_id"`
	GlobalSequence uint64 `json:"global_sequence"`
	Clock          uint64 `json:"clock"`
	TimestampUS    int64  `json:"timestamp_us"`
	Deduplicated   bool   `json:"deduplicated"`
}

// FromReceipt renders a core receipt.
func FromReceipt(r core.Receipt) Receipt {
	return Receipt{ID: r.ID.String(), CorrelationID: r.CorrelationID.String(), GlobalSequence: r.GlobalSequence,
		Clock: r.Clock, TimestampUS: r.Timestamp, Deduplicated: r.Deduplicated}
}

// FormatKind renders a kind as "category:type" in decimal ("1:1").
func FormatKind(k core.Kind) string {
	return strconv.Itoa(int(k.Category())) + ":" + strconv.Itoa(int(k.Type()))
}

// ExpectationJSON renders an expectation as the API writes it: a clock
// number, "no_events", or nil when unset.
func ExpectationJSON(e core.Expectation) any {
	if e.NoEvents() {
		return "no_events"
	}
	if c, ok := e.Clock(); ok {
		return c
	}
	return nil
}

// AppendRequest is the body of POST /v1/tenants/{t}/events and one item of
// a batch.
type AppendRequest struct {
	Entity  string          `json:"entity"`
	Scope   string          `json:"scope"`
	Kind    json.RawMessage `json:"kind"`    // "1:1", "0x1:0x1" or a number (4097 = 1:1)
	Payload json.RawMessage `json:"payload"` // any JSON value
	// ExpectedClock is a clock number or "no_events"; absent: no condition.
	ExpectedClock  json.RawMessage `json:"expected_clock,omitempty"`
	CorrelationID  *string         `json:"correlation_id,omitempty"`
	CausationID    *string         `json:"causation_id,omitempty"`
	IdempotencyKey *string         `json:"idempotency_key,omitempty"`
	Flags          uint16          `json:"flags,omitempty"`
	// CauseItem (batches only) names an earlier item of the same batch as
	// this event's cause.
	CauseItem *int `json:"cause_item,omitempty"`
	// checked is the record of the payload's check when DecodeAppend or
	// DecodeBatch read it in their one pass: the store then does not
	// check the same bytes again.
	checked ijson.Checked
}

// BatchRequest is the body of POST /v1/tenants/{t}/batches.
type BatchRequest struct {
	Events []AppendRequest `json:"events"`
}

// Item turns the request into a core batch item. index is the item's place
// in its batch, or -1 for a single append (where cause_item is refused).
// headerKey is the Idempotency-Key header ("" if absent): it sets the key,
// and differing from a body key is an error. Errors are *Error.
func (a *AppendRequest) Item(index int, headerKey string) (core.BatchItem, error) {
	var it core.BatchItem
	coord, err := core.NewCoordinate(a.Entity, a.Scope)
	if err != nil {
		var ce *core.CoordinateError
		field := "entity"
		if errors.As(err, &ce) {
			field = ce.Part
		}
		return it, &Error{Code: CodeInvalidCoordinate, Field: field, Detail: trimCore(err), Err: err}
	}
	it.Coordinate = coord
	if len(a.Kind) == 0 {
		return it, errorf(CodeInvalidKind, "kind", "kind is required: \"category:type\" (\"1:1\") or a number")
	}
	if it.Kind, err = ParseKind(a.Kind); err != nil {
		return it, err
	}
	if len(a.Payload) == 0 {
		return it, errorf(CodeInvalidRequest, "payload", "payload is required (any JSON value)")
	}
	it.Payload = a.Payload
	it.Options.PayloadChecked = a.checked
	if len(a.ExpectedClock) > 0 && string(a.ExpectedClock) != "null" {
		if it.Options.ExpectedClock, err = parseExpectation(a.ExpectedClock); err != nil {
			return it, err
		}
	}
	if a.CorrelationID != nil {
		id, err := core.ParseEventID(*a.CorrelationID)
		if err != nil {
			return it, errorf(CodeInvalidRequest, "correlation_id", "not an event id (a UUID): %q", clip(*a.CorrelationID))
		}
		it.Options.CorrelationID = id
	}
	if a.CausationID != nil {
		id, err := core.ParseEventID(*a.CausationID)
		if err != nil {
			return it, errorf(CodeInvalidRequest, "causation_id", "not an event id (a UUID): %q", clip(*a.CausationID))
		}
		it.Options.CausationID = id
		it.Causation = core.CausedBy(id)
	}
	key := ""
	if a.IdempotencyKey != nil {
		key = *a.IdempotencyKey
	}
	if headerKey != "" {
		if key != "" && key != headerKey {
			return it, errorf(CodeInvalidRequest, "idempotency_key", "the Idempotency-Key header and the body's idempotency_key differ")
		}
		key = headerKey
	}
	if len(key) > core.MaxIdempotencyKeyBytes {
		return it, errorf(CodeInvalidRequest, "idempotency_key", "longer than %d bytes", core.MaxIdempotencyKeyBytes)
	}
	if strings.HasPrefix(key, WorkerKeyPrefix) {
		return it, errorf(CodeInvalidRequest, "idempotency_key", "keys beginning %q are the hosted workers' own (their reactions'): choose another", WorkerKeyPrefix)
	}
	it.Options.IdempotencyKey = key
	it.Options.Flags = a.Flags
	if a.CauseItem != nil {
		switch {
		case index < 0:
			return it, errorf(CodeInvalidRequest, "cause_item", "only batch items may name a cause_item")
		case a.CausationID != nil:
			return it, errorf(CodeInvalidRequest, "cause_item", "give causation_id or cause_item, not both")
		case *a.CauseItem < 0 || *a.CauseItem >= index:
			return it, errorf(CodeInvalidRequest, "cause_item", "%d is not an earlier item of the batch (item %d)", *a.CauseItem, index)
		}
		it.Causation = core.PriorItem(*a.CauseItem)
	}
	return it, nil
}

// WorkerKeyPrefix begins the idempotency keys of hosted workers'
// reactions ("worker:<cursor>:<source id>:<n>"). A write through the API
// may not use it: a key written first under a worker's name would make
// the worker take its reactions to that source for written.
const WorkerKeyPrefix = "worker:"

// WorkerKey is the idempotency key of a hosted worker's n-th reaction
// (from 0) to the source event under cursor:
// "worker:<cursor>:<source id>:<n>". The reaction's causation id is the
// source's id.
func WorkerKey(cursor string, source core.EventID, n int) string {
	return WorkerKeyPrefix + cursor + ":" + source.String() + ":" + strconv.Itoa(n)
}

// CheckImportedKey judges an imported event's idempotency key: a key
// beginning WorkerKeyPrefix is accepted only in the form a hosted worker
// gives its reactions (WorkerKey), naming the event's own causation id as
// the source, as an export of a tenant that ran hosted workers carries
// them. Any other such key is refused (CodeInvalidRequest, field
// idempotency_key): an event imported under it first would make a worker
// take its reactions to that source for written and skip them. Keys
// without the prefix are not judged here.
func CheckImportedKey(key string, causation core.EventID) error {
	rest, ok := strings.CutPrefix(key, WorkerKeyPrefix)
	if !ok {
		return nil
	}
	if !causation.IsZero() {
		if i := strings.LastIndexByte(rest, ':'); i >= 0 {
			n, err := strconv.Atoi(rest[i+1:])
			src := ":" + causation.String()
			if err == nil && n >= 0 && strconv.Itoa(n) == rest[i+1:] &&
				strings.HasSuffix(rest[:i], src) && len(rest[:i]) > len(src) {
				return nil
			}
		}
	}
	return errorf(CodeInvalidRequest, "idempotency_key", "keys beginning %q are the hosted workers' own: an imported event may carry one only as a worker's reaction does (%q, its causation id the source's id), not %q",
		WorkerKeyPrefix, WorkerKeyPrefix+"<cursor>:<causation id>:<n>", clip(key))
}

func parseExpectation(raw json.RawMessage) (core.Expectation, error) {
	if string(raw) == `"no_events"` {
		return core.ExpectNoEvents(), nil
	}
	if plainUint(raw) {
		if n, err := strconv.ParseUint(string(raw), 10, 64); err == nil {
			return core.ExpectClock(n), nil
		}
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "no_events" {
			return core.ExpectNoEvents(), nil
		}
		return core.Expectation{}, errorf(CodeInvalidRequest, "expected_clock", "want a clock number or \"no_events\", got %q", clip(s))
	}
	var n uint64
	if err := json.Unmarshal(raw, &n); err != nil {
		return core.Expectation{}, errorf(CodeInvalidRequest, "expected_clock", "want a clock number (0 or more) or \"no_events\"")
	}
	return core.ExpectClock(n), nil
}

// ParseKind reads a kind given in JSON: a string "category:type" (decimal
// or 0x hex: "1:1", "0xF:0x2a") or a number (the 16-bit kind: category<<12 | type, 4097 = 1:1).
// Reserved categories (0x0 system, 0xD effects) are refused. The error is
// an *Error with Code INVALID_KIND.
func ParseKind(raw json.RawMessage) (core.Kind, error) {
	if s, ok := plainString(raw); ok {
		return ParseKindString(s)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return ParseKindString(s)
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, errorf(CodeInvalidKind, "kind", "want \"category:type\" (\"1:1\") or a number (4097 = 1:1)")
	}
	if f != math.Trunc(f) || f < 0 || f > math.MaxUint16 {
		return 0, errorf(CodeInvalidKind, "kind", "%v is not a kind number (0..65535)", f)
	}
	return checkKind(core.Kind(uint16(f)))
}

// plainString returns the contents of raw when it is a JSON string of
// printable ASCII without escapes (what encoding/json would decode it to).
func plainString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	for _, c := range in {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return "", false
		}
	}
	return string(in), true
}

// plainUint reports whether raw is a JSON integer of decimal digits
// without a sign or leading zeros.
func plainUint(raw []byte) bool {
	if len(raw) == 0 || len(raw) > 1 && raw[0] == '0' {
		return false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ParseKindString reads a kind from text: "category:type" or a number.
func ParseKindString(s string) (core.Kind, error) {
	if !strings.Contains(s, ":") {
		n, err := core.ParseKindNumber(s)
		if err != nil {
			return 0, errorf(CodeInvalidKind, "kind", "%q is not a kind: want \"category:type\" (\"1:1\") or a number (4097 = 1:1)", clip(s))
		}
		return checkKind(core.Kind(uint16(n)))
	}
	k, err := core.ParseKind(s)
	if err != nil {
		return 0, &Error{Code: CodeInvalidKind, Field: "kind", Detail: trimCore(err), Err: err}
	}
	return k, nil
}

// checkKind checks a kind given as a bare number: the 16-bit kind value,
// category in the top 4 bits. A number below 4096 (category 0, the store's
// own kinds) is most often meant as a category, so its refusal says how
// to write one.
func checkKind(k core.Kind) (core.Kind, error) {
	k2, err := core.CustomKind(k.Category(), k.Type())
	if err != nil {
		detail := trimCore(err)
		if k.Category() == 0 {
			detail += fmt.Sprintf(`; a bare number is the whole 16-bit kind (%d = 0x0:%#x): write "category:type", such as "1:%d", or %d for it`, uint16(k), k.Type(), k.Type(), 1<<12|uint16(k.Type()))
		}
		return 0, &Error{Code: CodeInvalidKind, Field: "kind", Detail: detail, Err: err}
	}
	return k2, nil
}

// parseFilterKind reads a kind to filter on: "category:type" or a number,
// as ParseKindString, but any category (a store holds effect kinds, 0xD,
// written as reactions, and system kinds, 0x0, besides user kinds).
func parseFilterKind(s string) (core.Kind, error) {
	bad := errorf(CodeInvalidKind, "kind", "%q is not a kind: want \"category:type\" (category 0..15, type 0..0xFFF; \"1:1\") or a number (4097 = 1:1)", clip(s))
	cat, typ, ok := strings.Cut(s, ":")
	if !ok {
		n, err := core.ParseKindNumber(s)
		if err != nil {
			return 0, bad
		}
		return core.Kind(n), nil
	}
	c, err1 := core.ParseKindNumber(cat)
	t, err2 := core.ParseKindNumber(typ)
	if err1 != nil || err2 != nil || c > 0xF || t > core.MaxKindType {
		return 0, bad
	}
	return core.Kind(c<<12 | t), nil
}

// ParseRegion builds a region from query parameters: entity (a prefix),
// scope (exact), kind (any category) and category (0..15). Empty parameters are absent;
// none at all is the whole log. Errors are *Error naming the parameter.
func ParseRegion(entity, scope, kind, category string) (core.Region, error) {
	r := core.All()
	for _, p := range []struct{ name, v string }{{"entity", entity}, {"scope", scope}} {
		if len(p.v) > core.MaxCoordinatePartBytes {
			return r, errorf(CodeInvalidCoordinate, p.name, "longer than %d bytes", core.MaxCoordinatePartBytes)
		}
		if !utf8.ValidString(p.v) || strings.IndexByte(p.v, 0) >= 0 {
			return r, errorf(CodeInvalidCoordinate, p.name, "not valid UTF-8 without NUL bytes")
		}
	}
	if entity != "" {
		r = r.WithEntity(entity)
	}
	if scope != "" {
		r = r.WithScope(scope)
	}
	if kind != "" {
		k, err := parseFilterKind(kind)
		if err != nil {
			return r, err
		}
		r = r.WithKind(k)
	}
	if category != "" {
		c, err := core.ParseKindNumber(category)
		if err != nil || c > 15 {
			return r, errorf(CodeInvalidKind, "category", "%q is not a category (0..15)", clip(category))
		}
		r = r.WithCategory(uint16(c))
	}
	return r, nil
}

// RegionFromControl builds the region a stored definition describes,
// checking it as ParseRegion does.
func RegionFromControl(cr control.Region) (core.Region, error) {
	cat := ""
	if cr.Category != nil {
		if *cr.Category < 0 || *cr.Category > 15 {
			return core.All(), errorf(CodeInvalidKind, "region.category", "%d is not a category (0..15)", *cr.Category)
		}
		cat = strconv.Itoa(*cr.Category)
	}
	return ParseRegion(cr.Entity, cr.Scope, cr.Kind, cat)
}

// trimCore drops core's "batpak: " prefix from an error's message.
func trimCore(err error) string { return strings.TrimPrefix(err.Error(), "batpak: ") }

// clip shortens a refused value for a message.
func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// AppendReceipt appends r's JSON to b: byte for byte what encoding/json
// writes for FromReceipt(r), without its allocations.
func AppendReceipt(b []byte, r core.Receipt) []byte {
	b = append(b, `{"id":"`...)
	b = appendUUID(b, r.ID)
	b = append(b, `","correlation_id":"`...)
	b = appendUUID(b, r.CorrelationID)
	b = append(b, `","global_sequence":`...)
	b = strconv.AppendUint(b, r.GlobalSequence, 10)
	b = append(b, `,"clock":`...)
	b = strconv.AppendUint(b, r.Clock, 10)
	b = append(b, `,"timestamp_us":`...)
	b = strconv.AppendInt(b, r.Timestamp, 10)
	b = append(b, `,"deduplicated":`...)
	b = strconv.AppendBool(b, r.Deduplicated)
	return append(b, '}')
}

// AppendReceipts appends {"receipts":[…]} for rs to b, as encoding/json
// writes it for a map of that one key to the receipts FromReceipt renders.
func AppendReceipts(b []byte, rs []core.Receipt) []byte {
	b = append(b, `{"receipts":[`...)
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendReceipt(b, r)
	}
	return append(b, "]}"...)
}

// appendUUID appends id in the canonical 8-4-4-4-12 lower-case hex form
// (what EventID.String writes).
func appendUUID(b []byte, id core.EventID) []byte {
	const digits = "0123456789abcdef"
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, digits[c>>4], digits[c&0xF])
	}
	return b
}
