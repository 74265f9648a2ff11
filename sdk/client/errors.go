package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Problem codes the server answers with (the "code" member of its
// application/problem+json responses).
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
	CodeBundleInvalid       = "BUNDLE_INVALID"       // a policy bundle's archive is refused (see Error.Entry)
	CodeBundleRejected      = "BUNDLE_REJECTED"      // a policy bundle does not compile or fails its tests
	CodePluginRejected      = "PLUGIN_REJECTED"      // an uploaded plugin is refused (see Error.Detail)
	CodePluginFault         = "PLUGIN_FAULT"         // a plugin call failed (see Error.Fault)
	CodePluginQuarantined   = "PLUGIN_QUARANTINED"   // the plugin refuses calls until reset or swapped
	CodeNotImplemented      = "NOT_IMPLEMENTED"      // the server does not offer the feature (hosted workers without a plugin source)
	CodeNotLeader           = "NOT_LEADER"           // a cluster node that does not lead did nothing (see Error.Leader); the client follows and retries
	CodeNotAMember          = "NOT_A_MEMBER"         // the node was removed from its cluster (421): send requests to a member; not retried
	CodeOutcomeUnknown      = "OUTCOME_UNKNOWN"      // a cluster lost its leader after proposing the write: it may be written; retried only with an idempotency key
	CodeNotCaughtUp         = "NOT_CAUGHT_UP"        // a cluster node had not applied min_seq in time; retried
	CodeTooManyConnections  = "TOO_MANY_CONNECTIONS" // this address has server.max_connections_per_source connections open: refused unread, so any request is retried (after Retry-After)
	CodeTooManyRequests     = "TOO_MANY_REQUESTS"    // this address made more requests without a valid credential (or to routes that read none) than server.anonymous_requests_per_second allows: nothing was done; safe requests are retried after Retry-After
	CodeStoreDamaged        = "STORE_DAMAGED"        // the tenant's store is damaged on the server's disk (500): nothing was read or written; not retried, the operator must recover it
)

// Sentinels for errors.Is: an *Error matches the sentinel with its Code.
var (
	ErrPolicyDenied        = &Error{Code: CodePolicyDenied}
	ErrConflict            = &Error{Code: CodeConflict}
	ErrIdempotencyMismatch = &Error{Code: CodeIdempotencyMismatch}
	ErrQuotaExceeded       = &Error{Code: CodeQuotaExceeded}
	ErrPayloadTooLarge     = &Error{Code: CodePayloadTooLarge}
	ErrInvalidJSON         = &Error{Code: CodeInvalidJSON}
	ErrInvalidCoordinate   = &Error{Code: CodeInvalidCoordinate}
	ErrInvalidKind         = &Error{Code: CodeInvalidKind}
	ErrInvalidRequest      = &Error{Code: CodeInvalidRequest}
	ErrNotFound            = &Error{Code: CodeNotFound}
	ErrMethodNotAllowed    = &Error{Code: CodeMethodNotAllowed}
	ErrTenantSuspended     = &Error{Code: CodeTenantSuspended}
	ErrUnauthenticated     = &Error{Code: CodeUnauthenticated}
	ErrForbidden           = &Error{Code: CodeForbidden}
	ErrBusy                = &Error{Code: CodeBusy}
	ErrBundleInvalid       = &Error{Code: CodeBundleInvalid}
	ErrBundleRejected      = &Error{Code: CodeBundleRejected}
	ErrPluginRejected      = &Error{Code: CodePluginRejected}
	ErrPluginFault         = &Error{Code: CodePluginFault}
	ErrPluginQuarantined   = &Error{Code: CodePluginQuarantined}
	ErrNotImplemented      = &Error{Code: CodeNotImplemented}
	ErrNotLeader           = &Error{Code: CodeNotLeader}
	ErrOutcomeUnknown      = &Error{Code: CodeOutcomeUnknown}
	ErrNotCaughtUp         = &Error{Code: CodeNotCaughtUp}
	ErrTooManyConnections  = &Error{Code: CodeTooManyConnections}
	ErrTooManyRequests     = &Error{Code: CodeTooManyRequests}
	ErrStoreDamaged        = &Error{Code: CodeStoreDamaged}
)

// OutcomeUnknownError is a write whose answer was lost: its request went
// out, then the connection broke, its answer's body was cut short, a
// gateway answered 502 or 504, a cluster lost its leader after proposing
// it (OUTCOME_UNKNOWN), or the caller's context ended while it was out —
// and no retry brought an answer (Options.MaxRetries, Options.RetryFor,
// the context). It may have been written. Sending it again with the same
// idempotency keys (IdempotencyKeys, the keys Append or AppendBatch
// gave it when the request carried none) writes it at most once and
// returns its receipts; a write without them might be written twice.
// errors.Is(err, ErrOutcomeUnknown) matches it; Err is the last
// attempt's error.
type OutcomeUnknownError struct {
	// IdempotencyKeys are the write's keys, one per event (Append: one;
	// AppendBatch: each item's); nil for a write that carries none.
	IdempotencyKeys []string
	Err             error
}

func (e *OutcomeUnknownError) Error() string {
	msg := "batpak client: the write's outcome is unknown (sent, its answer lost; it may have been written)"
	if len(e.IdempotencyKeys) > 0 {
		msg += ": send it again with idempotency key " + e.IdempotencyKeys[0]
		if len(e.IdempotencyKeys) > 1 {
			msg += fmt.Sprintf(" (and the batch's %d others)", len(e.IdempotencyKeys)-1)
		}
	}
	return msg + ": " + e.Err.Error()
}

// Unwrap returns the last attempt's error.
func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// Is matches ErrOutcomeUnknown.
func (e *OutcomeUnknownError) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == CodeOutcomeUnknown
}

// withKeys names the write's idempotency keys on err when it is an
// *OutcomeUnknownError.
func withKeys(err error, keys ...string) error {
	var ou *OutcomeUnknownError
	if errors.As(err, &ou) {
		ou.IdempotencyKeys = keys
	}
	return err
}

// Error is a request the server refused: its problem document.
type Error struct {
	Status     int           // HTTP status
	Code       string        // stable problem code (Code* constants)
	Title      string        // short summary
	Detail     string        // what was wrong
	RequestID  string        // the server's X-Request-Id, for its logs
	RetryAfter time.Duration // from Retry-After (seconds, at most what a Duration holds); 0 when absent
	// Extensions holds the problem's other members: "reasons", "layer"
	// and "revision" of a denial, "entry", "stage" and "errors" of a
	// refused policy bundle, "expected" and "actual" of a conflict,
	// "quota" and "limit" of a quota refusal.
	Extensions map[string]json.RawMessage
}

func (e *Error) Error() string {
	msg := e.Detail
	if msg == "" {
		msg = e.Title
	}
	if e.Code == "" {
		return fmt.Sprintf("batpak server: HTTP %d: %s", e.Status, msg)
	}
	return fmt.Sprintf("batpak server: %s (HTTP %d): %s", e.Code, e.Status, msg)
}

// Is matches another *Error with the same Code (the sentinels).
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Code != "" && t.Code == e.Code
}

// Reasons returns a POLICY_DENIED error's reasons (nil for other errors).
func (e *Error) Reasons() []DenialReason {
	var rs []DenialReason
	if raw, ok := e.Extensions["reasons"]; ok {
		_ = json.Unmarshal(raw, &rs)
	}
	return rs
}

// DenialReason is one reason a policy refused a write.
type DenialReason struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Gate    string `json:"gate,omitempty"`
	// Context is what the policy attached; its numbers are json.Number,
	// exactly as the policy gave them (a number past float64's range
	// included).
	Context map[string]any `json:"context,omitempty"`
}

// UnmarshalJSON decodes a reason keeping its context's numbers exact
// (json.Number).
func (r *DenialReason) UnmarshalJSON(b []byte) error {
	type plain DenialReason
	return decodeExact(b, (*plain)(r))
}

// decodeExact decodes b into v with numbers in interface values kept as
// json.Number.
func decodeExact(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

// retryable reports whether a request that failed with err may be sent
// again (given that it is safe to repeat at all).
func retryable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		// A transport error: the request may not have arrived. A server
		// that went silent for Options.IdleTimeout is not waited on again.
		var idle *IdleError
		return !errors.As(err, &idle)
	}
	if e.Code == CodeOutcomeUnknown {
		return true // only safe requests are retried at all (see send)
	}
	switch {
	case e.Code == CodeBusy, e.Status == 503, e.Status == 502, e.Status == 504:
		return true
	case e.Code == CodeQuotaExceeded && e.RetryAfter > 0, e.Code == CodeTooManyRequests:
		return true
	case e.Code == CodeTooManyConnections:
		return true // refused before the request was read (see send)
	}
	return false
}

// limit returns the "limit" member of a quota or size refusal (0 when it
// has none).
func (e *Error) limit() int64 {
	var f float64
	if raw, ok := e.Extensions["limit"]; !ok || json.Unmarshal(raw, &f) != nil || f <= 0 || f > math.MaxInt64/2 {
		return 0
	}
	return int64(f)
}
