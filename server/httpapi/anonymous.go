package httpapi

import (
	"net/http"
	"reflect"
	"strconv"

	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/quota"
	"github.com/batpak-go/batpak/server/wire"
)

// Requests that no tenant is charged for — no valid credential, a JWT
// naming a tenant the server does not hold, the routes that read no
// credential, a path no route has — are charged to their source's bucket
// (Options.Sources): so one address cannot make the server answer such
// requests past a rate, whatever credential it invents. A request with a
// valid tenant credential is charged to its tenant instead
// (chargeRequest), and the operator's to nobody.

// redirectType is the type of the handlers http.ServeMux answers a path
// to clean (or a subtree without its slash) with.
var redirectType = reflect.TypeOf(http.RedirectHandler("/", http.StatusMovedPermanently))

// IsRedirect reports whether h, as an http.ServeMux's Handler returned
// it, is the mux's own redirect (to a cleaned path, or to a subtree's
// slash) rather than a registered handler: such a request reaches no
// route's checks, and whoever serves the mux charges it to its source.
func IsRedirect(h http.Handler) bool { return reflect.TypeOf(h) == redirectType }

// chargeSource takes a token from the bucket of c's source; past it the
// request is refused, held Options.RateRefusalDelay first, with 429
// TOO_MANY_REQUESTS.
func (a *API) chargeSource(c *call) error {
	if c.charged || quota.RequestCharged(c.r.Context()) {
		// Charged already: by an earlier check, or to its tenant by the
		// web console that passed it on (whose address would be charged
		// here, not the browser's).
		return nil
	}
	c.charged = true
	client, _, ok := a.opts.TrustedProxies.Client(c.r)
	if !ok {
		return nil
	}
	ex := a.opts.Sources.AllowAddr(client)
	if ex == nil {
		return nil
	}
	a.metrics.sourceRefusals.Inc()
	return a.holdRefusal(c, sourceProblem(ex))
}

// sourceProblem is the refusal of a request past its source's rate.
func sourceProblem(ex *quota.Exceeded) *apiError {
	lim := ex.Limit
	return &apiError{status: http.StatusTooManyRequests, code: wire.CodeTooManyRequests, retryAfter: ex.RetryAfter,
		detail: "this address made more requests that no tenant is charged for (without a valid credential, or to routes that take none) than the server allows (server.anonymous_requests_per_second: " +
			strconv.FormatFloat(lim, 'f', -1, 64) + " a second); requests with a valid credential to routes that take one are not counted",
		p: wire.Problem{Quota: ex.Quota, Limit: &lim}}
}

// chargeCaller charges c to whom it is made by: p's tenant when p
// authenticated (authErr nil) as a tenant the server holds, nobody for
// the operator or a request the web console charged already, c's
// source otherwise.
func (a *API) chargeCaller(c *call, p auth.Principal, authErr error) error {
	switch {
	case authErr != nil:
		return a.chargeSource(c)
	case p.Operator || quota.RequestCharged(c.r.Context()):
		return nil
	}
	if _, ok := a.opts.Plane.Tenant(p.Tenant); !ok || p.Tenant == "" {
		return a.chargeSource(c)
	}
	return a.chargeRequest(c, p)
}

// ChargeSource charges a request that another handler serves without a
// tenant to charge (the web console's pages, its sign-in, a request
// with no session) to its source's bucket: true when it may go on;
// false when it was refused, after the refusal was held
// Options.RateRefusalDelay and answered 429 TOO_MANY_REQUESTS with
// Retry-After on w.
func (a *API) ChargeSource(w http.ResponseWriter, r *http.Request) bool {
	c := &call{a: a, w: w, r: r, info: infoFrom(w)}
	err := a.chargeSource(c)
	if err == nil {
		return true
	}
	a.fail(c, err)
	return false
}
