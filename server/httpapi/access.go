package httpapi

import (
	"context"
	"errors"
	"time"

	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/wire"
)

// Access is checked when a request arrives (admit) and again where a
// request could outlive a revocation: after a request body has been read
// (a slow body must not carry a write past its key's revocation), while
// an import reads its body, and throughout an event stream (cut off as
// soon as its key is revoked, its JWT expires or its tenant is suspended
// or deleted, as KurrentDB and NATS drop such subscriptions).

// lostAccessGrace is how long a response that lost its access may still
// take to write its end (an event stream's cutoff).
const lostAccessGrace = time.Second

// errCredentialExpired: the call's JWT expired while the call went on.
var errCredentialExpired = &apiError{status: 401, code: wire.CodeUnauthenticated, detail: "the bearer credential expired"}

// errAccessLost is the cause a stream is cancelled with when its
// credential or tenant loses access.
var errAccessLost = errors.New("access lost")

// accessChanged wakes every watchAccess: call it after a key is revoked or
// a tenant suspended or deleted.
func (a *API) accessChanged() {
	a.accessMu.Lock()
	close(a.access)
	a.access = make(chan struct{})
	a.accessMu.Unlock()
}

func (a *API) accessWatch() <-chan struct{} {
	a.accessMu.Lock()
	defer a.accessMu.Unlock()
	return a.access
}

// recheck answers whether the call's tenant credential still has access:
// its key is live and of the tenant (its JWT not expired), and the tenant
// exists and is not suspended. It is nil for calls that are not on tenant
// data.
func (a *API) recheck(c *call) error {
	if c.route.Access != Tenant || c.tenant == "" {
		return nil
	}
	if c.principal.Expired(time.Now()) {
		return errCredentialExpired
	}
	t, ok := a.opts.Plane.Tenant(c.tenant)
	if !ok {
		return errNotFound("no such tenant")
	}
	if id := c.principal.KeyID; id != "" {
		if k, ok := a.opts.Plane.Key(id); !ok || k.Tenant != c.tenant {
			return errUnauthenticated
		}
	}
	if t.State == control.StateSuspended {
		return &apiError{status: 403, code: wire.CodeTenantSuspended, detail: "the tenant is suspended"}
	}
	return nil
}

// watchAccess cancels ctx with errAccessLost as soon as the call loses
// access (a change of keys or tenants, or its JWT's expiry), and returns
// when ctx ends.
func (a *API) watchAccess(ctx context.Context, cancel context.CancelCauseFunc, c *call) {
	for {
		ch := a.accessWatch() // before the check: no change is missed
		if a.recheck(c) != nil {
			cancel(errAccessLost)
			return
		}
		var expiry <-chan time.Time
		var timer *time.Timer
		if exp := c.principal.Expires; !exp.IsZero() {
			// Armed every round: the wall clock may have moved.
			timer = time.NewTimer(time.Until(exp))
			expiry = timer.C
		}
		select {
		case <-ch:
		case <-expiry:
		case <-ctx.Done():
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// accessReason says why a stream was cut off for lost access.
func accessReason(err error) string {
	var ae *apiError
	if err == errCredentialExpired {
		return "the credential expired"
	}
	if errors.As(err, &ae) {
		switch ae.code {
		case wire.CodeTenantSuspended:
			return "the tenant is suspended"
		case wire.CodeNotFound:
			return "the tenant was deleted"
		}
	}
	return "the credential was revoked"
}
