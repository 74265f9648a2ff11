package httpapi

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/batpak-go/batpak/server/wire"
	"golang.org/x/sync/semaphore"
)

// Large JSON responses (pages of events, causal walks, cursor polls) are
// built whole before they are written, and a client that does not read
// holds one in the server's memory until the write timeout. So the bytes
// of the large ones written at once are bounded, all tenants together
// and each tenant alone: a response of largeBody bytes or more holds
// twice its size of MaxResponseBytes while it is written (the body, and
// the events it was built from), and one tenant's responses hold at most
// MaxResponseBytesPerTenant of it (or one response, when it holds none),
// so one tenant's slow readers cannot keep the others' pages out. A
// response that finds no room within bodyWait is answered 503 BUSY with
// Retry-After instead. Pages of events take their room before they read
// their events, step by step (pagehold.go), so that concurrent pages
// cannot be built past the budget first.
const (
	largeBody                 = 64 << 10
	MaxResponseBytes          = 256 << 20
	MaxResponseBytesPerTenant = MaxResponseBytes / 4
	bodyWait                  = time.Second
)

// bodyBudget is the server's MaxResponseBytes, with each tenant's share.
type bodyBudget struct {
	sem *semaphore.Weighted

	mu   sync.Mutex
	held map[string]int64 // by tenant, while > 0
}

func newBodyBudget() *bodyBudget {
	return &bodyBudget{sem: semaphore.NewWeighted(MaxResponseBytes), held: map[string]int64{}}
}

// take takes w bytes of the budget (at most all of it) for owner's
// response, waiting up to bodyWait within ctx for room; release gives
// them back. Past the tenant owner's share it refuses at once; owner ""
// (the operator's routes, and the parts of a cluster-wide answer, which
// MaxMemberAsks bounds per tenant) has no share.
func (b *bodyBudget) take(ctx context.Context, owner string, w int64) (release func(), err error) {
	w = min(w, MaxResponseBytes)
	b.mu.Lock()
	if h := b.held[owner]; owner != "" && h > 0 && h+w > MaxResponseBytesPerTenant {
		b.mu.Unlock()
		return nil, &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "this tenant's responses in flight (slow readers, or many large pages at once) hold its share of the server's response memory; retry, or ask for smaller pages (?limit)"}
	}
	b.held[owner] += w
	b.mu.Unlock()
	give := func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.held[owner] -= w; b.held[owner] <= 0 {
			delete(b.held, owner)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, bodyWait)
	defer cancel()
	if err := b.sem.Acquire(ctx, w); err != nil {
		give()
		return nil, &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "the server's responses in flight (slow readers, or many large pages at once) hold all its response memory; retry, or ask for smaller pages (?limit)"}
	}
	return func() { b.sem.Release(w); give() }, nil
}
