package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/batpak-go/batpak/server/wire"
	"golang.org/x/sync/semaphore"
)

// Large JSON responses (pages of events, causal walks, cursor polls) are
// built whole before they are written, and a client that does not read
// holds one in the server's memory until the write timeout. So the bytes
// of the large ones written at once, all tenants together, are bounded:
// a response of largeBody bytes or more holds twice its size of
// MaxResponseBytes while it is written (the body, and the events it was
// built from); one that finds no room within bodyWait is answered 503
// BUSY with Retry-After instead.
const (
	largeBody        = 64 << 10
	MaxResponseBytes = 256 << 20
	bodyWait         = time.Second
)

// bodyBudget is the server's MaxResponseBytes.
type bodyBudget struct{ sem *semaphore.Weighted }

func newBodyBudget() *bodyBudget { return &bodyBudget{sem: semaphore.NewWeighted(MaxResponseBytes)} }

// take takes w bytes of the budget (at most all of it), waiting up to
// bodyWait within ctx; release gives them back.
func (b *bodyBudget) take(ctx context.Context, w int64) (release func(), err error) {
	w = min(w, MaxResponseBytes)
	ctx, cancel := context.WithTimeout(ctx, bodyWait)
	defer cancel()
	if err := b.sem.Acquire(ctx, w); err != nil {
		return nil, &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "the server is writing as many large responses as it holds at once (slow readers); retry, or ask for smaller pages (?limit)"}
	}
	return func() { b.sem.Release(w) }, nil
}
