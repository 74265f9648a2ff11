package httpapi_test

import (
	"strings"
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
