package httpapi

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/tenantpolicy"
	"github.com/batpak-go/batpak/server/wire"
)

// policies is the tenant policy manager, or the 404 of a server without
// one.
func (a *API) policies() error {
	if a.opts.Policies == nil {
		return errNotFound("this server keeps no tenant policies")
	}
	return nil
}

// pushPolicy takes a bundle (gzip-compressed tar) and makes it the
// tenant's active policy once it compiles and its tests pass.
func (a *API) pushPolicy(c *call) error {
	if err := a.policies(); err != nil {
		return err
	}
	if err := checkMedia(c.r, c.route.Body, false); err != nil {
		return err
	}
	max := a.opts.Policies.Limits().MaxBundleBytes
	if c.r.ContentLength > max {
		lim := float64(max)
		return &apiError{status: 413, code: wire.CodePayloadTooLarge,
			detail: "the policy bundle is larger than " + strconv.FormatInt(max, 10) + " bytes (server.policy_bundle_max_bytes)",
			p:      wire.Problem{Quota: "policy_bundle_max_bytes", Limit: &lim}}
	}
	// One byte past the limit is read, so the manager can tell "too
	// large" from "exactly the limit". The bundle is read whole first, to
	// be charged to the tenant's upload quota before it is checked.
	b, err := readAll(http.MaxBytesReader(c.w, c.r.Body, max+1), c.r.ContentLength, max+2, c.chargeBody)
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if err != nil && int64(len(b)) <= max {
		return err
	}
	// The bundle may have taken long to arrive: the credential must still
	// hold now (and the control plane checks again as it records the
	// revision, after the bundle's compile and tests).
	if err := a.recheck(c); err != nil {
		return err
	}
	if ex := a.quotaOf(c).AllowUpload(len(b)); ex != nil {
		return ex
	}
	tp, err := a.opts.Policies.Push(c.writeCtx(), c.tenant, bytes.NewReader(b))
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, tp)
}

// listPolicies answers the tenant's revisions and the active one.
func (a *API) listPolicies(c *call) error {
	if err := a.policies(); err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, a.opts.Policies.Policies(c.tenant))
}

// rollbackPolicy makes an earlier revision active again.
func (a *API) rollbackPolicy(c *call) error {
	if err := a.policies(); err != nil {
		return err
	}
	var body struct {
		Revision string `json:"revision"`
	}
	if err := a.decode(c, &body, false); err != nil {
		return err
	}
	if err := control.ValidPolicyRevision(body.Revision); err != nil {
		return errInvalid("revision", "revision must be 64 lower-case hex digits (a revision GET …/policy lists)")
	}
	tp, err := a.opts.Policies.Rollback(c.writeCtx(), c.tenant, body.Revision)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, tp)
}

// policyDecisions answers a page of the tenant's policy decision log,
// newest first. Query: limit (default DefaultPageLimit, at most
// MaxPageLimit), cursor (the previous page's "next"), since (RFC 3339),
// decision_id, result ("denied" or "allowed"), revision.
func (a *API) policyDecisions(c *call) error {
	if err := a.policies(); err != nil {
		return err
	}
	v := c.r.URL.Query()
	q := tenantpolicy.DecisionQuery{Limit: DefaultPageLimit, Cursor: v.Get("cursor"), ID: v.Get("decision_id"),
		Result: v.Get("result"), Revision: v.Get("revision")}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return errInvalid("limit", "limit must be a positive integer")
		}
		q.Limit = min(n, MaxPageLimit)
	}
	if s := v.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return errInvalid("since", "since must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z")
		}
		q.Since = t
	}
	switch q.Result {
	case "", tenantpolicy.ResultDenied, tenantpolicy.ResultAllowed:
	default:
		return errInvalid("result", "result must be denied or allowed")
	}
	if q.Revision != "" {
		if err := control.ValidPolicyRevision(q.Revision); err != nil {
			return errInvalid("revision", "revision must be 64 lower-case hex digits (a revision GET …/policy lists)")
		}
	}
	if len(q.ID) > 64 || len(q.Cursor) > 64 {
		return errInvalid("decision_id", "decision_id and cursor are at most 64 bytes")
	}
	page, err := a.opts.Policies.QueryDecisions(c.r.Context(), c.tenant, q)
	if errors.Is(err, tenantpolicy.ErrBadCursor) {
		return errInvalid("cursor", "cursor must be the next of a previous page")
	}
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, page)
}
