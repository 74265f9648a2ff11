package client

import (
	"context"
	"net/http"
	"strings"
)

// UnconfirmedHeader is the header in which a cluster's leader names the
// members that had not confirmed, within its bound (2 s), that they
// applied a change taking access away: a key revoked, a tenant
// suspended or deleted (Answer.UnconfirmedMembers).
const UnconfirmedHeader = "Batpak-Unconfirmed-Members"

// Answer receives what the server said about a call beside its result:
// pass it with WithAnswer. It is filled only when the call succeeds, from
// the answer that succeeded.
type Answer struct {
	// RequestID is the server's X-Request-Id for the request, for its
	// logs.
	RequestID string
	// UnconfirmedMembers names (node ids) the cluster members that had
	// not confirmed, when the leader answered, that they applied the
	// change the call made — only a key's revocation, a tenant's
	// suspension or deletion are confirmed. The change is made all the
	// same: each such member applies it as soon as it catches up, and
	// one cut off from the leader stops serving the tenant on its own
	// say-so within 5 heartbeat timeouts (README, "Revoking on a
	// cluster"). Empty when every member confirmed, on a single server,
	// and when the call's first answer was lost and a retry found the
	// change already made.
	UnconfirmedMembers []string
}

// answerKey holds a call's *Answer in its context.
type answerKey struct{}

// WithAnswer returns ctx carrying a, which the call made with it fills
// when it succeeds (see Answer); a is written by that call alone, so
// give each concurrent call its own.
func WithAnswer(ctx context.Context, a *Answer) context.Context {
	return context.WithValue(ctx, answerKey{}, a)
}

// noteAnswer fills the *Answer ctx carries, if any, from a successful
// response.
func noteAnswer(ctx context.Context, resp *http.Response) {
	a, ok := ctx.Value(answerKey{}).(*Answer)
	if !ok || a == nil {
		return
	}
	a.RequestID = resp.Header.Get("X-Request-Id")
	a.UnconfirmedMembers = nil
	for _, v := range resp.Header.Values(UnconfirmedHeader) {
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); id != "" {
				a.UnconfirmedMembers = append(a.UnconfirmedMembers, id)
			}
		}
	}
}
