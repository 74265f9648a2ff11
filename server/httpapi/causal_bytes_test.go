package httpapi_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/batpak-go/batpak/server/httpapi"
)

// TestCausalPagesBoundedInBytes: the causal routes (descendants,
// correlation, ancestors) stop at MaxPageBytes of payload like a query
// page, saying so with "truncated", instead of reading and sending up to
// 1000 large events (1 GiB at the default max_payload_bytes) at once.
func TestCausalPagesBoundedInBytes(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	pad := strings.Repeat("x", 900<<10)
	const n = 16 // ≈ 14 MiB in one causation chain, one conversation
	var ids []string
	for i := range n {
		body := map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{"pad": pad}}
		if i > 0 {
			body["causation_id"] = ids[i-1]
			body["correlation_id"] = ids[0]
		}
		r := e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], body), 201)
		ids = append(ids, r.json(t)["id"].(string))
	}
	for _, path := range []string{ids[0] + "/descendants", ids[0] + "/correlation", ids[n-1] + "/ancestors"} {
		r := e.must(e.req("GET", "/v1/tenants/acme/events/"+path+"?limit=1000", k["reader"], nil), 200)
		m := r.json(t)
		got := len(m["events"].([]any))
		if len(r.body) > httpapi.MaxPageBytes+2<<20 {
			t.Errorf("%s: %d events, %d MiB in one response", path, got, len(r.body)>>20)
		}
		if got == 0 || got >= n || m["truncated"] != true {
			t.Errorf("%s: %d events, truncated %v; want fewer than %d, truncated", path, got, m["truncated"], n)
		}
		// A walk is tried at 256 KiB first (room taken before reading),
		// then again at MaxPageBytes: the answer still holds about that.
		if want := httpapi.MaxPageBytes/(900<<10) - 1; got < want {
			t.Errorf("%s: %d events; want at least %d (a page of MaxPageBytes)", path, got, want)
		}
	}
}

// TestSmallCausalWalksHoldLittle: a causal walk takes room for what it
// may read before it reads, first for a small bound, so many concurrent
// walks of small conversations all answer (a first bound of 2 MiB held
// 6 MiB each: 11 of 30 concurrent walks were refused 503 BUSY).
func TestSmallCausalWalksHoldLittle(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	var ids []string
	for i := range 3 {
		body := map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{"n": i}}
		if i > 0 {
			body["causation_id"], body["correlation_id"] = ids[i-1], ids[0]
		}
		ids = append(ids, e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], body), 201).json(t)["id"].(string))
	}
	const n = 60
	var wg sync.WaitGroup
	var busy atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := []string{ids[2] + "/ancestors", ids[0] + "/descendants", ids[1] + "/correlation"}[i%3]
			r := e.req("GET", "/v1/tenants/acme/events/"+path, k["reader"], nil)
			switch {
			case r.status == 503:
				busy.Add(1)
			case r.status != 200:
				t.Errorf("%s: %d", path, r.status)
			}
		}()
	}
	wg.Wait()
	if b := busy.Load(); b > 0 {
		t.Errorf("%d of %d concurrent walks of a 3-event conversation refused busy", b, n)
	}
}
