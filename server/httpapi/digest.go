package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/wire"
)

// replicaDigest is the answer of GET /v1/admin/tenants/{t}/digest.
type replicaDigest struct {
	Tenant string `json:"tenant"`
	Upto   uint64 `json:"upto"`   // the events before this global sequence
	Events uint64 `json:"events"` // how many there were (read before Damaged)
	Digest string `json:"digest"` // hex SHA-256; empty with Damaged
	// Damaged says why this node could not read its copy (a damaged
	// segment, a broken chain): the answer for a damaged replica, not an
	// error of the request.
	Damaged string `json:"damaged,omitempty"`
}

// digest answers a digest of the tenant's events before sequence upto on
// this node: SHA-256 over each event's global sequence (8 bytes, little
// endian) and chain hash, in order. The chain hash covers the event's
// header, coordinate, idempotency key and payload digest, so replicas
// holding the same events give the same digest, and one that holds any
// other gives another. Without upto, every event the node holds. On a
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
		return err
	}
	held := s.Usage().GlobalSequence // the sequence the next event gets
	upto := held
	if v := c.r.URL.Query().Get("upto"); v != "" {
		if upto, err = strconv.ParseUint(v, 10, 64); err != nil {
			return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: "upto=" + strconv.Quote(clipName(v)) + ": want a global sequence (0 or more)", p: wire.Problem{Field: "upto"}}
		}
	}
	if upto > held {
		if a.opts.Cluster == nil {
			return &apiError{status: 400, code: wire.CodeInvalidRequest, p: wire.Problem{Field: "upto"},
				detail: "upto=" + strconv.FormatUint(upto, 10) + ": the tenant holds only " + strconv.FormatUint(held, 10) + " events"}
		}
		cl := a.opts.Cluster
		ctx, cancel := context.WithTimeout(c.r.Context(), cl.ReadWait())
		err := cl.WaitSequence(ctx, c.tenant, s, upto-1)
		cancel()
		if err != nil {
			if c.r.Context().Err() != nil {
				return err
			}
			return &apiError{status: 503, code: wire.CodeNotCaughtUp, retryAfter: time.Second,
				detail: "this node does not hold the tenant's events before " + strconv.FormatUint(upto, 10) + " within " + cl.ReadWait().String() + "; retry"}
		}
	}
	if !a.digesting.CompareAndSwap(false, true) {
		return &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second, detail: "this node computes one digest at a time; retry"}
	}
	defer a.digesting.Store(false)
	h := sha256.New()
	var buf [8 + len(core.Hash{})]byte
	var n uint64
	for ev, err := range s.Events(core.All()) {
		if err != nil {
			if errors.Is(err, core.ErrCorrupt) || errors.Is(err, core.ErrChainBroken) || errors.Is(err, core.ErrLogTruncated) {
				return writeJSON(c.w, http.StatusOK, replicaDigest{Tenant: c.tenant, Upto: upto, Events: n, Damaged: err.Error()})
			}
			return err
		}
		if ctxErr := c.r.Context().Err(); ctxErr != nil {
			return ctxErr
		}
		if ev.GlobalSequence >= upto {
			break // in global order: none after it is before upto
		}
		binary.LittleEndian.PutUint64(buf[:8], ev.GlobalSequence)
		copy(buf[8:], ev.Header.Hash[:])
		h.Write(buf[:])
		n++
	}
	return writeJSON(c.w, http.StatusOK, replicaDigest{Tenant: c.tenant, Upto: upto, Events: n, Digest: hex.EncodeToString(h.Sum(nil))})
}
