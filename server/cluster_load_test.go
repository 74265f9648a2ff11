package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestClusterFollowerServesReadsUnderWriteLoad: a follower keeping up
// with a leader busy taking writes serves its tenant's reads itself: it
// does not count as behind (and redirect them) merely because commits
// keep arriving.
func TestClusterFollowerServesReadsUnderWriteLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	n2 := startClusterServer(t, root, "n2", false, n1.base)
	n3 := startClusterServer(t, root, "n3", false, n1.base)
	waitFollowerOf(t, n3, 3)
	_ = n2
	token, _ := clusterTenantKey(t, n1.base, "acme", `["writer","reader"]`)
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	readOn := func(n *clusterServer) int {
		req, _ := http.NewRequest("GET", n.base+"/v1/tenants/acme/events?entity=order-0&limit=1", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := noFollow.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	waitFor(t, 10*time.Second, "n3 serves the key", func() bool { return readOn(n3) == 200 })

	stop := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	var writes atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var items []string
			for i := 0; i < 50; i++ {
				items = append(items, fmt.Sprintf(`{"entity":"order-%d","scope":"s","kind":"1:1","payload":{"n":%d}}`, w, i))
			}
			body := `{"events":[` + strings.Join(items, ",") + `]}`
			for time.Now().Before(stop) {
				req, _ := http.NewRequest("POST", n1.base+"/v1/tenants/acme/batches", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Content-Type", "application/json")
				res, err := noFollow.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				res.Body.Close()
				if res.StatusCode == http.StatusTooManyRequests { // the tenant's rate: wait a little
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if res.StatusCode/100 != 2 {
					t.Errorf("batch: %d", res.StatusCode)
					return
				}
				{
					writes.Add(1)
				}
			}
		}(w)
	}
	reads, other := 0, map[int]int{}
	for time.Now().Before(stop) {
		if c := readOn(n3); c != 200 {
			other[c]++
		}
		reads++
		time.Sleep(2 * time.Millisecond)
	}
	wg.Wait()
	t.Logf("%d batches written; %d reads on a follower, refused or redirected: %v", writes.Load(), reads, other)
	if writes.Load() == 0 {
		t.Fatal("no write taken")
	}
	if len(other) > 0 {
		t.Fatalf("a follower keeping up redirected or refused %v of %d reads", other, reads)
	}
}
