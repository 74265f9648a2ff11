package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
	"github.com/batpak-go/batpak/server/wire"
)

// digest answers a digest of the tenant's events from sequence from
// (default 0) to before sequence upto on this node (cluster.Digest:
// SHA-256 over each event's global sequence and chain hash, in order), so
// replicas holding the same events give the same digest, and one that
// holds any other gives another. Without upto, every event the node holds. On a
// cluster node it first waits (ReadWait) until the node holds the events
// before upto (and answers 503 NOT_CAUGHT_UP while it has not caught up
// with the leader at all, rather than "no such tenant" for a tenant it
// has not heard of yet), without taking one of the tenant's subscription slots (an
// operator's check must not depend on what the tenant holds open). One
// digest runs at a time (503 BUSY): it reads every event it covers. A
// copy this node cannot read (core.ErrCorrupt, a broken chain) is
// answered 200 with Damaged: that is what a replica check looks for.
func (a *API) digest(c *call) error {
	if cl := a.opts.Cluster; cl != nil && !cl.Current() {
		// Restarted or cut off, it may not know a tenant the leader
		// holds yet: "no such tenant" would read as a missing copy.
		return &apiError{status: 503, code: wire.CodeNotCaughtUp, retryAfter: time.Second,
			detail: "this node has not caught up with the leader (it restarted, or has not heard from it lately); retry"}
	}
	if _, err := a.adminTenant(c); err != nil {
		return err
	}
	s, err := c.store()
	if err != nil {
		if cluster.Damaged(err) {
			// A copy this node cannot even open is a damaged one, for a
			// replica check as much as one it cannot read.
			var d cluster.ReplicaDigest
			q := c.r.URL.Query()
			d.From, _ = strconv.ParseUint(q.Get("from"), 10, 64)
			d.Upto, _ = strconv.ParseUint(q.Get("upto"), 10, 64)
			d.Damaged = err.Error()
			if cl := a.opts.Cluster; cl != nil {
				d.Born = cl.StoreBorn(c.tenant)
			}
			return writeJSON(c.w, http.StatusOK, replicaDigest{Tenant: c.tenant, ReplicaDigest: d})
		}
		return err
	}
	return a.serveDigest(c, s, c.tenant, "the tenant", func() uint64 {
		if cl := a.opts.Cluster; cl != nil {
			return cl.StoreBorn(c.tenant)
		}
		return 0
	})
}

// controlDigest answers GET /v1/cluster/digest: the digest of this
// cluster node's copy of the control plane's replicated store (tenants,
// keys, quotas, cursors, policy and plugin revisions, members), as digest
// answers a tenant's, so a replica check finds a node whose control plane
// differs (one that would take a key the others revoked). Never
// redirected; operator only; 404 on a single server.
func (a *API) controlDigest(c *call) error {
	cl := a.opts.Cluster
	if cl == nil {
		return errNotFound("this server is not a cluster node")
	}
	if !cl.Current() {
		return &apiError{status: 503, code: wire.CodeNotCaughtUp, retryAfter: time.Second,
			detail: "this node has not caught up with the leader (it restarted, or has not heard from it lately); retry"}
	}
	s := cl.ControlStore()
	return a.serveDigest(c, s, ControlStoreLabel, "the control plane", func() uint64 { return cl.StoreBorn(cluster.SystemStore) })
}

// MaxDigestRequests bounds the digest requests a node holds at once, those
// waiting (at most cluster.read_wait) for the events they cover included;
// one past it is answered 503 BUSY at once. One digest is computed at a
// time.
const MaxDigestRequests = 8

// ControlStoreLabel names the control plane's store where a tenant's name
// would be (a digest's tenant field, a replica check's alarms): no tenant
// id can be it.
const ControlStoreLabel = "(control plane)"

// serveDigest answers the digest of s (the store of what, named label in
// the answer) for the request's from and upto; born reads the store's
// birth index.
func (a *API) serveDigest(c *call, s *core.Store, label, what string, born func() uint64) error {
	if a.digestRequests.Add(1) > MaxDigestRequests {
		a.digestRequests.Add(-1)
		return &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "this node has " + strconv.Itoa(MaxDigestRequests) + " digest requests in hand already; retry"}
	}
	defer a.digestRequests.Add(-1)
	var err error
	held := s.Usage().GlobalSequence // the sequence the next event gets
	upto := held
	if v := c.r.URL.Query().Get("upto"); v != "" {
		if upto, err = strconv.ParseUint(v, 10, 64); err != nil {
			return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: "upto=" + strconv.Quote(clipName(v)) + ": want a global sequence (0 or more)", p: wire.Problem{Field: "upto"}}
		}
	}
	var from uint64
	if v := c.r.URL.Query().Get("from"); v != "" {
		if from, err = strconv.ParseUint(v, 10, 64); err != nil {
			return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: "from=" + strconv.Quote(clipName(v)) + ": want a global sequence (0 or more)", p: wire.Problem{Field: "from"}}
		}
		if from > upto {
			return &apiError{status: 400, code: wire.CodeInvalidRequest, p: wire.Problem{Field: "from"},
				detail: "from=" + strconv.FormatUint(from, 10) + " is past upto=" + strconv.FormatUint(upto, 10) + ": the digest covers from <= sequence < upto"}
		}
	}
	if upto > held {
		if a.opts.Cluster == nil {
			return &apiError{status: 400, code: wire.CodeInvalidRequest, p: wire.Problem{Field: "upto"},
				detail: "upto=" + strconv.FormatUint(upto, 10) + ": " + what + " holds only " + strconv.FormatUint(held, 10) + " events"}
		}
		cl := a.opts.Cluster
		ctx, cancel := context.WithTimeout(c.r.Context(), cl.ReadWait())
		err := cl.WaitSequence(ctx, label, s, upto-1)
		cancel()
		if err != nil {
			if c.r.Context().Err() != nil {
				return err
			}
			return &apiError{status: 503, code: wire.CodeNotCaughtUp, retryAfter: time.Second,
				detail: "this node does not hold " + what + "'s events before " + strconv.FormatUint(upto, 10) + " within " + cl.ReadWait().String() + "; retry"}
		}
	}
	if !a.digesting.CompareAndSwap(false, true) {
		return &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second, detail: "this node computes one digest at a time; retry"}
	}
	defer a.digesting.Store(false)
	before := born()
	d, err := cluster.Digest(c.r.Context(), s, from, upto)
	if err != nil {
		return err
	}
	if d.Born = born(); d.Born != before {
		// Dropped and created again while it was read: the digest is of
		// neither incarnation.
		return &apiError{status: 503, code: wire.CodeNotCaughtUp, retryAfter: time.Second,
			detail: "the store of " + what + " on this node was deleted and created again while the digest read it; retry"}
	}
	return writeJSON(c.w, http.StatusOK, replicaDigest{Tenant: label, ReplicaDigest: d})
}

// replicaDigest is the answer of GET /v1/admin/tenants/{t}/digest.
type replicaDigest struct {
	Tenant string `json:"tenant"`
	cluster.ReplicaDigest
}
