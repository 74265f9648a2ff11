package client

import (
	"context"
	"encoding/json"
	"io"
	"net/url"
	"strconv"
	"time"
)

// PolicyRevision is one accepted policy bundle of a tenant.
type PolicyRevision struct {
	// Revision is the hex SHA-256 of the bundle as uploaded; every
	// decision of the bundle (and every denial's "revision") carries it.
	Revision string          `json:"revision"`
	Bytes    int64           `json:"bytes"`
	Uploaded time.Time       `json:"uploaded"`
	By       json.RawMessage `json:"by"` // the uploader's principal
}

// TenantPolicy is a tenant's policy bundles: Active is the revision in
// force ("" when none is), Revisions every accepted one, oldest first.
type TenantPolicy struct {
	Active      string           `json:"active"`
	Activated   time.Time        `json:"activated"`              // zero when none is active
	ActivatedBy json.RawMessage  `json:"activated_by,omitempty"` // who made Active active
	Revisions   []PolicyRevision `json:"revisions"`
}

// PushPolicy uploads a policy bundle (a gzip-compressed tar of .rego,
// .json and .manifest files) as the tenant's own policy (admin role). The
// server runs the bundle's Rego tests and compiles it; when both pass it
// becomes the active revision, and from the next write on, the tenant's
// writes need both the platform policy and this bundle to allow them.
// Errors: ErrBundleInvalid (an entry the server refuses: see Entry),
// ErrBundleRejected (compile or test errors: see BundleErrors; the
// previous revision stays active), ErrPayloadTooLarge, ErrForbidden for a
// key without the admin role. Not retried (the body is a stream).
func (t *Tenant) PushPolicy(ctx context.Context, tarGz io.Reader) (TenantPolicy, error) {
	body, err := io.ReadAll(tarGz)
	if err != nil {
		return TenantPolicy{}, err
	}
	var tp TenantPolicy
	// Safe to send again: the same bytes are the same revision.
	err = t.c.do(ctx, request{method: "PUT", path: t.path("/policy"), body: body, ctype: "application/gzip", safe: true, slow: true}, &tp)
	return tp, err
}

// Policies lists the tenant's policy revisions and the active one.
func (t *Tenant) Policies(ctx context.Context) (TenantPolicy, error) {
	var tp TenantPolicy
	err := t.c.do(ctx, request{method: "GET", path: t.path("/policy"), safe: true}, &tp)
	return tp, err
}

// RollbackPolicy makes an earlier revision (from Policies) the tenant's
// active policy again (admin role). ErrNotFound if the tenant has no such
// revision.
func (t *Tenant) RollbackPolicy(ctx context.Context, revision string) (TenantPolicy, error) {
	body, _ := jsonBody(map[string]string{"revision": revision})
	var tp TenantPolicy
	err := t.c.do(ctx, request{method: "POST", path: t.path("/policy/rollback"), body: body, safe: true}, &tp)
	return tp, err
}

func (e *Error) str(member string) string {
	var s string
	if raw, ok := e.Extensions[member]; ok {
		_ = json.Unmarshal(raw, &s)
	}
	return s
}

// Layer is the policy layer that refused a POLICY_DENIED write:
// "platform" (the server's policy) or "tenant" (the tenant's own bundle);
// "" for other errors.
func (e *Error) Layer() string { return e.str("layer") }

// Revision is the revision of the policy bundle that refused a
// POLICY_DENIED write ("" for other errors).
func (e *Error) Revision() string { return e.str("revision") }

// Entry is the archive entry a BUNDLE_INVALID refusal names ("" when the
// archive as a whole is at fault).
func (e *Error) Entry() string { return e.str("entry") }

// BundleErrors are a BUNDLE_REJECTED refusal's stage ("compile" or
// "tests") and errors (compile errors as "file:line: code: message", or
// the failed tests).
func (e *Error) BundleErrors() (stage string, errs []string) {
	if raw, ok := e.Extensions["errors"]; ok {
		_ = json.Unmarshal(raw, &errs)
	}
	return e.str("stage"), errs
}

// PolicyDecision is one recorded policy decision about the tenant's
// writes: a denial, or an allowed write its decision_allow_sample
// setting picked.
type PolicyDecision struct {
	ID     string    `json:"decision_id"`
	Time   time.Time `json:"time"`
	Result string    `json:"result"` // "denied" or "allowed"
	// Layer is "platform" or "tenant": the layer that refused, or for an
	// allowed write the last that judged it.
	Layer string `json:"layer"`
	// Revision is the tenant bundle revision active when the write was
	// judged ("" when only the platform policy judged it).
	Revision  string          `json:"revision"`
	Principal json.RawMessage `json:"principal"`
	Action    string          `json:"action"`
	Reasons   []DenialReason  `json:"reasons,omitempty"`
	// Input holds the input fields the deciding policies read, by path
	// ("event.entity": …), each bounded by the server's
	// policy_decision_max_bytes; numbers are json.Number, exactly as
	// recorded.
	Input map[string]any `json:"input,omitempty"`
	// SuppressedBefore is how many of the same principal's decisions the
	// server did not record, since its previous recorded one, because
	// the principal had used its share of the log
	// (server.policy_decision_principal_refill).
	SuppressedBefore uint64 `json:"suppressed_before,omitempty"`
}

// UnmarshalJSON decodes a decision keeping its numbers exact
// (json.Number).
func (d *PolicyDecision) UnmarshalJSON(b []byte) error {
	type plain PolicyDecision
	return decodeExact(b, (*plain)(d))
}

// PolicyDecisions returns up to limit (0: the server's default page) of
// the tenant's recorded policy decisions, newest first (admin role).
func (t *Tenant) PolicyDecisions(ctx context.Context, limit int) ([]PolicyDecision, error) {
	p, err := t.QueryPolicyDecisions(ctx, PolicyDecisionQuery{Limit: limit})
	return p.Decisions, err
}

// PolicyDecisionQuery selects decisions of the tenant's log; zero fields
// select everything.
type PolicyDecisionQuery struct {
	Since    time.Time // only decisions at or after this time
	ID       string    // only the decision with this id
	Result   string    // "denied" or "allowed"; "" both
	Revision string    // only decisions of this bundle revision
	Limit    int       // most decisions in the page (0: server default 100, at most 1000)
	Cursor   string    // a previous page's Next
}

// PolicyDecisionPage is one page of the decision log, newest first; Next
// is the cursor of the following (older) page, "" at the end.
type PolicyDecisionPage struct {
	Decisions []PolicyDecision `json:"decisions"`
	Next      string           `json:"next,omitempty"`
}

// QueryPolicyDecisions returns a page of the tenant's policy decision log
// (admin role), newest first. The server keeps the log on disk across
// restarts, the newest server.policy_decision_log_size decisions within
// server.policy_decision_log_bytes. ErrInvalidRequest for a malformed filter or
// cursor.
func (t *Tenant) QueryPolicyDecisions(ctx context.Context, q PolicyDecisionQuery) (PolicyDecisionPage, error) {
	v := url.Values{}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	for k, s := range map[string]string{"decision_id": q.ID, "result": q.Result, "revision": q.Revision, "cursor": q.Cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	var out PolicyDecisionPage
	err := t.c.do(ctx, request{method: "GET", path: t.path("/policy/decisions"), query: v, safe: true}, &out)
	return out, err
}

// DecisionID is a POLICY_DENIED error's id in the tenant's decision log
// ("" for other errors, or when the server keeps no log).
func (e *Error) DecisionID() string { return e.str("decision_id") }
