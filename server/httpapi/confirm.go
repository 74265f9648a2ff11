package httpapi

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/batpak-go/batpak/server/wire"
)

// On a cluster, each node judges a credential against its own copy of
// the control plane, which applies the leader's changes a moment after
// the leader has (tens of milliseconds). A change that takes access away
// — a key revoked, a tenant suspended or deleted — is therefore not
// answered as soon as the leader has recorded and applied it: the leader
// first waits, at most ConfirmWait, until every other member reports
// that its control plane has applied it too (confirmAccessChange). Once
// the answer comes, every member that confirmed refuses the credential
// (401 or a redirect to the leader for a key it no longer knows, 403
// TENANT_SUSPENDED, 404 or a redirect for a tenant gone). A member that
// did not confirm within the bound (down, cut off, or behind) is named
// in the answer's Unconfirmed-Members header and logged; the answer is
// still the change's success, since the change is committed and every
// member applies it as soon as it can. Such a member judges a tenant's
// requests itself only while it is current (Cluster.Current: it held
// everything a leader had committed within the last 5 heartbeat
// timeouts): cut off from the leader, it redirects them, or refuses them,
// from then on.
const (
	// ConfirmWait bounds the leader's wait for the other members'
	// confirmations of a change that takes access away.
	ConfirmWait = 2 * time.Second
	// UnconfirmedHeader names, in the answer to such a change, the
	// members that had not confirmed it within ConfirmWait (node ids,
	// comma-separated); absent when all did.
	UnconfirmedHeader = "Batpak-Unconfirmed-Members"
	// MaxAppliedWaits bounds the GET /v1/cluster/applied requests a node
	// holds waiting at once; one past it is answered 503 BUSY at once.
	MaxAppliedWaits = 64
)

// confirmAccessChange makes a change that takes access away (what names
// it, for the log), recorded and applied by this node, in force on the
// other members before it is answered: on a cluster node it waits at
// most ConfirmWait (less if the client hangs up) until every other
// member has applied the control plane as far as this node has, and
// names those that have not in UnconfirmedHeader and the log. A single
// server has nothing to wait for.
func (a *API) confirmAccessChange(c *call, what string) {
	cl := a.opts.Cluster
	if cl == nil {
		return
	}
	// Everything this node's plane has applied is committed (it applies
	// only what raft committed), so every member can reach it.
	seq := a.opts.Plane.Applied()
	ctx, cancel := context.WithTimeout(c.r.Context(), ConfirmWait)
	defer cancel()
	start := time.Now()
	missing := cl.ConfirmControl(ctx, seq)
	if len(missing) == 0 {
		return
	}
	ids := make([]string, 0, len(missing))
	for id := range missing {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	why := make([]string, len(ids))
	for i, id := range ids {
		why[i] = id + ": " + missing[id]
	}
	c.w.Header().Set(UnconfirmedHeader, strings.Join(ids, ", "))
	reqID := ""
	if c.info != nil {
		reqID = c.info.id
	}
	a.log.Warn("cluster: members did not confirm an access change in time: until they apply it, each serves the tenant's requests with what it knew before for as long as it counts as current",
		"change", what, "tenant", c.tenant, "members", strings.Join(ids, ","), "waited", time.Since(start).Round(time.Millisecond).String(),
		"why", strings.Join(why, "; "), "request_id", reqID)
}

// controlApplied answers GET /v1/cluster/applied?control=N (operator,
// any cluster node, never redirected; 404 on a single server): once this
// node's control plane has applied the control plane's store below
// global sequence N, 200 with control_applied (how far it has applied).
// It waits for that at most ConfirmWait: 503 NOT_CAUGHT_UP if it has not
// by then. A cluster's leader asks it of the other members before it
// answers a change that takes access away (confirmAccessChange).
func (a *API) controlApplied(c *call) error {
	if a.opts.Cluster == nil {
		return errNotFound("this server is not a cluster node")
	}
	v := c.r.URL.Query().Get("control")
	seq, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return &apiError{status: 400, code: wire.CodeInvalidRequest, p: wire.Problem{Field: "control"},
			detail: "control=" + strconv.Quote(clipName(v)) + ": want a global sequence of the control plane's store (0 or more)"}
	}
	p := a.opts.Plane
	if p.Applied() < seq {
		if a.appliedWaits.Add(1) > MaxAppliedWaits {
			a.appliedWaits.Add(-1)
			return &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
				detail: "this node has " + strconv.Itoa(MaxAppliedWaits) + " requests waiting for its control plane already; retry"}
		}
		defer a.appliedWaits.Add(-1)
		ctx, cancel := context.WithTimeout(c.r.Context(), ConfirmWait)
		err := p.WaitApplied(ctx, seq)
		cancel()
		if err != nil {
			if c.r.Context().Err() != nil {
				return err
			}
			if perr := a.planeStopped(); perr != nil {
				return perr
			}
			return &apiError{status: 503, code: wire.CodeNotCaughtUp, retryAfter: time.Second,
				detail: "this node's control plane has not applied the control plane's store below " + strconv.FormatUint(seq, 10) + " within " + ConfirmWait.String() + " (it has applied below " + strconv.FormatUint(p.Applied(), 10) + "); retry"}
		}
	}
	return writeJSON(c.w, http.StatusOK, map[string]any{"control_applied": p.Applied()})
}
