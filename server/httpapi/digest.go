package httpapi

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
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
	Events uint64 `json:"events"` // how many there were
	Digest string `json:"digest"` // hex SHA-256
}

// digest answers a digest of the tenant's events before sequence upto on
// this node: SHA-256 over each event's global sequence (8 bytes, little
// endian) and chain hash, in order. The chain hash covers the event's
// header, coordinate, idempotency key and payload digest, so replicas
// holding the same events give the same digest, and one that holds any
// other gives another. Without upto, every event the node holds. On a
// cluster node it first waits (ReadWait) until the node holds the events
// before upto. One digest runs at a time (503 BUSY): it reads every
// event it covers.
func (a *API) digest(c *call) error {
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
		if err := a.clusterWaitSequence(c, s, upto-1); err != nil {
			return err
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
			return err
		}
		if ctxErr := c.r.Context().Err(); ctxErr != nil {
			return ctxErr
		}
		if ev.GlobalSequence >= upto {
			continue
		}
		binary.LittleEndian.PutUint64(buf[:8], ev.GlobalSequence)
		copy(buf[8:], ev.Header.Hash[:])
		h.Write(buf[:])
		n++
	}
	return writeJSON(c.w, http.StatusOK, replicaDigest{Tenant: c.tenant, Upto: upto, Events: n, Digest: hex.EncodeToString(h.Sum(nil))})
}
