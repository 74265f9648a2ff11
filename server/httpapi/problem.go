package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/hostedworker"
	"github.com/batpak-go/batpak/server/quota"
	"github.com/batpak-go/batpak/server/tenancy"
	"github.com/batpak-go/batpak/server/tenantpolicy"
	"github.com/batpak-go/batpak/server/wire"
)

// apiError is a problem the API answers with.
type apiError struct {
	status     int
	code       string
	detail     string
	retryAfter time.Duration
	p          wire.Problem // extension members
}

func (e *apiError) Error() string { return e.code + ": " + e.detail }

var errUnauthenticated = &apiError{status: 401, code: wire.CodeUnauthenticated, detail: "the credential is not valid: unknown, revoked, expired or mistyped"}

// credentialProblem is the 401 of a request whose Authorization header h
// did not authenticate: it names a missing header or scheme (the usual
// mistakes), and says nothing more of a credential that was sent.
func credentialProblem(h string) *apiError {
	t := strings.TrimSpace(h)
	scheme, _, _ := strings.Cut(t, " ")
	switch {
	case t == "":
		return &apiError{status: 401, code: wire.CodeUnauthenticated, detail: "no credential: send it as Authorization: Bearer <key>"}
	case len(t) > 6 && strings.EqualFold(t[:6], "Bearer") && t[6] != ' ':
		return &apiError{status: 401, code: wire.CodeUnauthenticated, detail: "put one space between Bearer and the credential: Authorization: Bearer <key>"}
	case !strings.EqualFold(scheme, "Bearer"):
		return &apiError{status: 401, code: wire.CodeUnauthenticated, detail: "the Authorization header has no Bearer scheme: send Authorization: Bearer <key>"}
	}
	return errUnauthenticated
}

func errForbidden(detail string) *apiError {
	return &apiError{status: 403, code: wire.CodeForbidden, detail: detail}
}

func errInvalid(field, detail string) *apiError {
	return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: detail, p: wire.Problem{Field: field}}
}

func errNotFound(detail string) *apiError {
	return &apiError{status: 404, code: wire.CodeNotFound, detail: detail}
}

var titles = map[string]string{
	wire.CodePolicyDenied:        "Denied by policy",
	wire.CodeConflict:            "Conflict",
	wire.CodeIdempotencyMismatch: "Idempotency key reused for a different event",
	wire.CodeQuotaExceeded:       "Quota exceeded",
	wire.CodePayloadTooLarge:     "Payload too large",
	wire.CodeInvalidJSON:         "Invalid JSON",
	wire.CodeInvalidCoordinate:   "Invalid coordinate",
	wire.CodeInvalidKind:         "Invalid kind",
	wire.CodeInvalidRequest:      "Invalid request",
	wire.CodeUnsupportedMedia:    "Unsupported media type",
	wire.CodeNotFound:            "Not found",
	wire.CodeMethodNotAllowed:    "Method not allowed",
	wire.CodeTenantSuspended:     "Tenant suspended",
	wire.CodeUnauthenticated:     "Unauthenticated",
	wire.CodeForbidden:           "Forbidden",
	wire.CodeBusy:                "Busy, retry",
	wire.CodeInternal:            "Internal error",
	wire.CodeBundleInvalid:       "Policy bundle refused",
	wire.CodeBundleRejected:      "Policy bundle does not compile or fails its tests",
	wire.CodePluginRejected:      "Plugin refused",
	wire.CodePluginFault:         "Plugin fault",
	wire.CodePluginQuarantined:   "Plugin quarantined",
	wire.CodeNotImplemented:      "Not implemented by this server",
	wire.CodeNotLeader:           "Not the leader",
	wire.CodeOutcomeUnknown:      "Outcome unknown, retry with the same idempotency key",
	wire.CodeNotCaughtUp:         "Not caught up",
	wire.CodeNotAMember:          "This node is not a member of the cluster",
	wire.CodeTooManyConnections:  "Too many connections from this address",
	wire.CodeStoreDamaged:        "The tenant's store is damaged",
}

// writeProblem writes e as application/problem+json.
func writeProblem(w http.ResponseWriter, requestID string, e *apiError) {
	p := e.p
	p.Type = wire.ProblemTypeBase + strings.ToLower(e.code)
	p.Title = titles[e.code]
	if p.Title == "" {
		p.Title = http.StatusText(e.status)
	}
	p.Status = e.status
	p.Detail = e.detail
	p.Code = e.code
	p.RequestID = requestID
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	if e.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="batpak"`)
	}
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(e.retryAfter.Seconds()))))
	}
	w.WriteHeader(e.status)
	b, _ := json.Marshal(p)
	_, _ = w.Write(append(b, '\n'))
}

// jsonType is the Content-Type of JSON answers (net/http only reads it).
var jsonType = []string{"application/json"}

// bodyPool keeps response buffers of JSON answers written by hand.
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writeAppended writes the JSON that fill appends (and a newline) with
// status, as writeJSON would write the same value.
func writeAppended(w http.ResponseWriter, status int, fill func([]byte) []byte) error {
	bp := bodyPool.Get().(*[]byte)
	b := append(fill((*bp)[:0]), '\n')
	h := w.Header()
	h["Content-Type"] = jsonType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	_, err := w.Write(b)
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		bodyPool.Put(bp)
	}
	return err
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	return writeJSONHolding(w, status, v, 0)
}

// writeJSONHolding writes v with status, its parts already holding held
// bytes of the response budget: a large body takes only what it needs
// beyond them (twice its size in all).
func writeJSONHolding(w http.ResponseWriter, status int, v any, held int64) error {
	// Not HTML-escaped: a payload's "<" stays one byte (escaped it is
	// six, and a page six times its bound).
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // with its newline
		return err
	}
	b := buf.Bytes()
	if rec, ok := w.(*recorder); ok && rec.bodies != nil && len(b) >= largeBody {
		if more := min(2*int64(len(b)), MaxResponseBytes) - held; more > 0 {
			owner := ""
			if rec.info != nil {
				owner = rec.info.tenant
			}
			release, err := rec.bodies.take(rec.ctx, owner, more, rec)
			if err != nil {
				return err
			}
			defer release()
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	// A known length: no chunked encoding for bodies past the server's
	// 2 KiB buffer (batch receipts, pages).
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, err := w.Write(b)
	return err
}

// fail answers the call with err's problem, unless the response has
// begun (then the error is only logged).
func (a *API) fail(c *call, err error) {
	e := a.problemFor(c, err)
	if rec, ok := c.w.(*recorder); ok && rec.status != 0 {
		a.log.Warn("error after the response began", "request_id", c.info.id, "route", c.info.route, "error", a.scrub(c, err.Error()))
		return
	}
	writeProblem(c.w, c.info.id, e)
}

// scrub removes the tenant store's directory from a message: messages
// never carry a file path.
func (a *API) scrub(c *call, msg string) string {
	if c.lease != nil {
		if dir := c.lease.Store().Dir(); dir != "" {
			msg = strings.ReplaceAll(msg, dir, "<store>")
		}
	}
	if a.opts.BackupDir != "" {
		msg = strings.ReplaceAll(msg, a.opts.BackupDir, "<backups>")
	}
	return strings.TrimPrefix(msg, "batpak: ")
}

// problemFor maps an error to its problem: the one place where errors of
// core, policy, quota, tenancy and control become codes and statuses.
func (a *API) problemFor(c *call, err error) *apiError {
	var (
		ae  *apiError
		we  *wire.Error
		ex  *quota.Exceeded
		den *policy.Denial
		ce  *core.ConflictError
		ie  *core.IdempotencyError
		pe  *core.PayloadError
		ke  *core.KindError
		coe *core.CoordinateError
		re  *core.RetryError
		bie *core.BatchItemError
		be  *tenantpolicy.BundleError
		rj  *tenantpolicy.RejectedError
		wpe *hostedworker.PluginError
		dle *hostedworker.DefinedLimitError
	)
	var index *int
	if errors.As(err, &bie) {
		i := bie.Index
		index = &i
	}
	var out *apiError
	pp := pluginProblem(err)
	cp := clusterProblem(a, err)
	switch {
	case cp != nil && !errors.As(err, &ae):
		out = cp
	case pp != nil && !errors.As(err, &ae):
		out = pp
	case errors.As(err, &ae):
		out = ae
	case errors.As(err, &we):
		out = &apiError{status: 400, code: we.Code, detail: we.Error(), p: wire.Problem{Field: we.Field}}
		if we.Code == wire.CodeInvalidJSON && we.Field == "" {
			out.detail = we.Detail
		}
	case errors.As(err, &ex):
		out = quotaProblem(ex)
	case errors.As(err, &den):
		a.metrics.denials.Inc()
		reasons := make([]wire.Reason, 0, len(den.Reasons))
		for _, r := range den.Reasons {
			reasons = append(reasons, wire.Reason{Code: r.Code, Message: r.Message, Gate: den.Gate})
		}
		if len(reasons) == 0 {
			reasons = append(reasons, wire.Reason{Code: den.Code, Message: den.Message, Gate: den.Gate})
		}
		out = &apiError{status: 403, code: wire.CodePolicyDenied, detail: den.Message,
			p: wire.Problem{Reasons: reasons, Revision: den.Revision, Layer: den.Layer, DecisionID: den.DecisionID}}
	case errors.As(err, &wpe):
		if errors.Is(wpe, hostedworker.ErrPluginNotFound) {
			out = &apiError{status: 404, code: wire.CodeNotFound, detail: a.scrub(c, wpe.Error()), p: wire.Problem{Field: "plugin"}}
		} else {
			out = &apiError{status: 400, code: wire.CodeInvalidRequest, detail: a.scrub(c, wpe.Error()), p: wire.Problem{Field: "plugin"}}
		}
	case errors.As(err, &dle):
		// A count that lasts until workers are deleted: no retry clears
		// it, so not a 429.
		lim := float64(dle.Limit)
		out = &apiError{status: http.StatusConflict, code: wire.CodeConflict, detail: dle.Error(), p: wire.Problem{Limit: &lim}}
	case errors.As(err, &be):
		out = bundleProblem(be)
	case errors.As(err, &rj):
		out = &apiError{status: 422, code: wire.CodeBundleRejected, detail: rj.Error(), p: wire.Problem{Stage: rj.Stage, Errors: rj.Errors}}
	case errors.As(err, &ce):
		out = &apiError{status: 409, code: wire.CodeConflict, detail: a.scrub(c, ce.Error()),
			p: wire.Problem{Expected: wire.ExpectationJSON(ce.Expected), Actual: wire.ExpectationJSON(ce.Actual)}}
		if out.p.Actual == nil {
			out.p.Actual = "no_events"
		}
	case errors.As(err, &ie):
		out = &apiError{status: 409, code: wire.CodeIdempotencyMismatch, detail: a.scrub(c, ie.Error()), p: wire.Problem{Field: "idempotency_key"}}
	case errors.As(err, &pe):
		out = &apiError{status: 400, code: wire.CodeInvalidJSON, detail: "payload: " + a.scrub(c, pe.Error()), p: wire.Problem{Field: "payload"}}
	case errors.Is(err, core.ErrPayloadTooLarge):
		out = &apiError{status: 413, code: wire.CodePayloadTooLarge, detail: a.scrub(c, err.Error()), p: wire.Problem{Field: "payload"}}
	case errors.As(err, &ke):
		out = &apiError{status: 400, code: wire.CodeInvalidKind, detail: a.scrub(c, ke.Error()), p: wire.Problem{Field: "kind"}}
	case errors.As(err, &coe):
		out = &apiError{status: 400, code: wire.CodeInvalidCoordinate, detail: a.scrub(c, coe.Error()), p: wire.Problem{Field: coe.Part}}
	case errors.Is(err, core.ErrInvalidPayload):
		out = &apiError{status: 400, code: wire.CodeInvalidJSON, detail: a.scrub(c, err.Error())}
	case errors.Is(err, core.ErrInvalidOptions), errors.Is(err, core.ErrBatchTooLarge), errors.Is(err, core.ErrBatchMixedKeys),
		errors.Is(err, core.ErrInvalidCursorName), errors.Is(err, core.ErrNotSystemKind), errors.Is(err, core.ErrInvalidKind),
		errors.Is(err, core.ErrInvalidCoordinate):
		out = &apiError{status: 400, code: wire.CodeInvalidRequest, detail: a.scrub(c, err.Error())}
	case errors.Is(err, core.ErrDuplicateID):
		out = &apiError{status: 409, code: wire.CodeConflict, detail: a.scrub(c, err.Error())}
	case errors.As(err, &re):
		detail := "the tenant's writer is under pressure; retry"
		if re.Reason != "" {
			detail = "the tenant's write must wait: " + clip(re.Reason) + "; retry"
		}
		out = &apiError{status: 503, code: wire.CodeBusy, detail: detail, retryAfter: max(re.After, time.Second)}
	case errors.Is(err, core.ErrCorrupt), errors.Is(err, core.ErrLogTruncated), errors.Is(err, core.ErrChainBroken):
		// The tenant is told what kind of damage, not the path; the
		// operator's log has the file.
		a.log.Error("request failed: the tenant's store is damaged", "request_id", c.info.id, "route", c.info.route, "tenant", c.info.tenant, "error", err.Error())
		kind := "a segment holds bytes that fail their checks"
		switch {
		case errors.Is(err, core.ErrLogTruncated):
			kind = "its log is shorter than it recorded: acknowledged events are missing"
		case errors.Is(err, core.ErrChainBroken):
			kind = "a hash chain is broken"
		}
		out = &apiError{status: 500, code: wire.CodeStoreDamaged, detail: "the tenant's store is damaged (" + kind + "); nothing was read or written; the server's operator must recover it"}
	case errors.Is(err, core.ErrWriterStopped):
		// The store is reopened by the next request a second or more
		// after it stopped (tenancy.ReopenAfter); the cause is the
		// operator's to fix, and the tenant is told which kind it is,
		// not the path or the device.
		cause := "a write to its disk failed"
		if errors.Is(err, syscall.ENOSPC) {
			cause = "its disk is full"
		}
		a.log.Warn("request failed: the tenant store's writer stopped", "request_id", c.info.id, "route", c.info.route, "tenant", c.info.tenant, "error", err.Error())
		out = &apiError{status: 503, code: wire.CodeBusy, detail: "the tenant's store stopped taking writes (" + cause + "); nothing was written; retry", retryAfter: tenancy.ReopenAfter}
	case errors.Is(err, syscall.ENOSPC):
		// Anything else that found no room: a tenant store's open, say.
		a.log.Warn("request failed: no space left on the server's disk", "request_id", c.info.id, "route", c.info.route, "tenant", c.info.tenant, "error", err.Error())
		out = &apiError{status: 503, code: wire.CodeBusy, detail: "the server's disk is full; retry", retryAfter: tenancy.ReopenAfter}
	case errors.Is(err, core.ErrRetry), errors.Is(err, tenancy.ErrTooManyOpen), errors.Is(err, core.ErrFenceActive),
		errors.Is(err, core.ErrCancelled), errors.Is(err, core.ErrClosed), errors.Is(err, hostedworker.ErrClosed):
		out = &apiError{status: 503, code: wire.CodeBusy, detail: "the server is busy; retry", retryAfter: time.Second}
	case errors.Is(err, core.ErrNotFound):
		out = errNotFound("no such event")
	case errors.Is(err, tenancy.ErrUnknownTenant):
		out = errNotFound("no such tenant")
	case errors.Is(err, control.ErrAccessLost):
		out = &apiError{status: 401, code: wire.CodeUnauthenticated, detail: "the credential lost its access (revoked, or its tenant deleted or suspended) before the change was recorded; nothing was changed"}
	case errors.Is(err, control.ErrNotFound):
		out = errNotFound(a.scrub(c, strings.TrimPrefix(err.Error(), "control: ")))
	case errors.Is(err, control.ErrLimit):
		out = &apiError{status: 429, code: wire.CodeQuotaExceeded, detail: strings.TrimPrefix(err.Error(), "control: limit reached: ")}
	case errors.Is(err, control.ErrExists):
		out = &apiError{status: 409, code: wire.CodeConflict, detail: strings.TrimPrefix(err.Error(), "control: ")}
	case errors.Is(err, control.ErrInvalid):
		out = &apiError{status: 400, code: wire.CodeInvalidRequest, detail: strings.TrimPrefix(err.Error(), "control: ")}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		out = &apiError{status: 503, code: wire.CodeBusy, detail: "the request was cancelled before it completed; retry", retryAfter: time.Second}
	default:
		a.log.Error("request failed", "request_id", c.info.id, "route", c.info.route, "tenant", c.info.tenant, "error", err.Error())
		out = &apiError{status: 500, code: wire.CodeInternal, detail: "internal error; quote request id " + c.info.id}
	}
	if index != nil && out.p.Index == nil {
		cp := *out
		cp.p.Index = index
		out = &cp
	}
	if out.code == wire.CodeQuotaExceeded {
		a.metrics.quotaRejection(out.p.Quota, c.tenant)
	}
	return out
}

// bundleProblem: a bundle past its size limit → 413 (quota
// "policy_bundle_max_bytes"); any other refused archive → 400
// BUNDLE_INVALID naming the entry (and the limit, when one was passed).
func bundleProblem(be *tenantpolicy.BundleError) *apiError {
	if be.Limit == "" {
		return &apiError{status: 400, code: wire.CodeBundleInvalid, detail: be.Error(), p: wire.Problem{Entry: be.Entry}}
	}
	lim := float64(be.Value)
	quota := "policy_bundle_" + be.Limit // policy_bundle_max_bytes, …_max_files, …_max_file_bytes
	if be.Limit == "max_bundle_bytes" {
		quota = "policy_bundle_max_bytes"
		return &apiError{status: 413, code: wire.CodePayloadTooLarge, detail: be.Error() + " (server." + quota + ")", p: wire.Problem{Quota: quota, Limit: &lim}}
	}
	return &apiError{status: 400, code: wire.CodeBundleInvalid, detail: be.Error() + " (server." + quota + ")", p: wire.Problem{Entry: be.Entry, Quota: quota, Limit: &lim}}
}

// quotaProblem: rates → 429 (Retry-After), storage → 507, one request's
// size (payload, batch) → 413, counts (subscriptions, cursors) → 429.
func quotaProblem(ex *quota.Exceeded) *apiError {
	status := http.StatusTooManyRequests
	switch ex.Quota {
	case "storage_bytes", "index_bytes":
		status = http.StatusInsufficientStorage
	case "max_payload_bytes", "max_batch_events":
		status = http.StatusRequestEntityTooLarge
	}
	lim := ex.Limit
	return &apiError{status: status, code: wire.CodeQuotaExceeded, retryAfter: ex.RetryAfter,
		detail: "quota " + ex.Quota + " exceeded (limit " + strconv.FormatFloat(ex.Limit, 'f', -1, 64) + ")",
		p:      wire.Problem{Quota: ex.Quota, Limit: &lim}}
}
