package httpapi_test

import (
	"strings"
	"sync"
	"testing"
)

// Defines of one new cursor name racing each other and a commit: one
// defines it, the others answer as for an existing cursor and reset
// nothing, so a position committed once the cursor exists is never
// rewound by a define that lost the race.
func TestRacingDefinesNeverRewindACommit(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	// Each commit tried takes CursorWriteCost of the write rate: on a fast
	// machine the commit loop below spent the default rate's burst, and
	// the defines were refused 429. The rate is not what is tested here.
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"events_per_second": -1}), 200)
	for i := 0; i < 6; i++ {
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], `{"entity":"e","scope":"s","kind":"1:1","payload":{}}`), 201)
	}
	for round := 0; round < 10; round++ { // within the control-change burst (100)
		var wg sync.WaitGroup
		created := 0
		var mu sync.Mutex
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := e.req("PUT", "/v1/tenants/acme/cursors/c", k["writer"], `{"region":{}}`)
				mu.Lock()
				defer mu.Unlock()
				switch r.status {
				case 201:
					created++
				case 200:
				default:
					t.Errorf("define: %d %s", r.status, r.body)
				}
			}()
		}
		committed := false
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200 && !committed; i++ {
				r := e.req("POST", "/v1/tenants/acme/cursors/c/commit", k["writer"], `{"position":5}`)
				committed = r.status == 200
			}
		}()
		wg.Wait()
		if created != 1 {
			t.Fatalf("round %d: %d defines created the cursor, want 1", round, created)
		}
		r := e.must(e.req("GET", "/v1/tenants/acme/cursors", k["reader"], nil), 200)
		if committed && !strings.Contains(string(r.body), `"committed":5`) {
			t.Fatalf("round %d: committed 5, then: %s", round, r.body)
		}
		e.must(e.req("DELETE", "/v1/tenants/acme/cursors/c", k["writer"], nil), 204)
	}
}
