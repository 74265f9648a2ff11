package server_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// TestClusterIdleTenantStores: on a three-node cluster with a 1s tenant
// idle timeout, a tenant written and then left alone has its store closed
// by the nodes (/metrics counts the idle closes) — but not on the node
// serving a live event stream of it, which keeps delivering; reading the
// tenant again on any node reopens its store with every event there and
// Verify passing.
func TestClusterIdleTenantStores(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	nodes := startCluster3(t, t.TempDir(), func(c *server.Config) { c.TenantIdleTimeout = time.Second })
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	if code, body := call(t, "POST", n1.base+"/v1/admin/tenants", clusterOperator, `{"id":"acme"}`); code != 201 {
		t.Fatalf("create tenant: %d %v", code, body)
	}
	code, key := call(t, "POST", n1.base+"/v1/admin/tenants/acme/keys", clusterOperator, `{"roles":["admin"]}`)
	if code != 201 {
		t.Fatalf("issue key: %d %v", code, key)
	}
	token := key["key"].(string)
	var last float64
	for i := 0; i < 5; i++ {
		code, rc := call(t, "POST", n1.base+"/v1/tenants/acme/events", token, fmt.Sprintf(`{"entity":"order-%d","scope":"s","kind":"1:1","payload":{"n":%d}}`, i, i))
		if code != 201 {
			t.Fatalf("append %d: %d %v", i, code, rc)
		}
		last = rc["global_sequence"].(float64)
	}
	stats := func(n *clusterServer) {
		t.Helper()
		code, st := call(t, "GET", fmt.Sprintf("%s/v1/tenants/acme/stats?min_seq=%d", n.base, int(last)), token, "")
		if code != 200 || st["events"].(float64) != last+1 {
			t.Fatalf("%s stats: %d %v, want %v events", n.id, code, st, last+1)
		}
	}
	for _, n := range nodes {
		stats(n) // every node's store opened through its registry
	}
	// The leader counts the entries its writes went in (the tenant's
	// creation, its key and the five appends at least, one by one here).
	if e, w := metricValue(t, n1.base, "batpak_cluster_write_entries_total"), metricValue(t, n1.base, "batpak_cluster_writes_proposed_total"); e < 7 || w < e {
		t.Fatalf("leader's write entries %v carrying %v writes, want at least 7 and writes ≥ entries", e, w)
	}

	// A live stream on n2 holds its store (the request's lease).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", n2.base+"/v1/tenants/acme/subscribe", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("subscribe on n2: %d", res.StatusCode)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		br := bufio.NewReader(res.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			lines <- line
		}
	}()

	for _, n := range []*clusterServer{n1, n3} {
		waitFor(t, 20*time.Second, n.id+" closes the idle tenant store", func() bool {
			return metricValue(t, n.base, "batpak_cluster_store_idle_closes_total") >= 1
		})
	}
	if got := metricValue(t, n2.base, "batpak_cluster_store_idle_closes_total"); got != 0 {
		t.Fatalf("n2 closed %v stores while a stream held its only tenant", got)
	}
	if code, rc := call(t, "POST", n1.base+"/v1/tenants/acme/events", token, `{"entity":"after-idle","scope":"s","kind":"1:1","payload":{}}`); code != 201 {
		t.Fatalf("append after the idle close: %d %v", code, rc)
	} else {
		last = rc["global_sequence"].(float64)
	}
	for delivered := false; !delivered; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("the stream on n2 ended")
			}
			delivered = strings.Contains(line, "after-idle")
		case <-time.After(10 * time.Second):
			t.Fatal("the stream on n2 did not deliver the write made after the others' idle closes")
		}
	}
	cancel()
	waitFor(t, 20*time.Second, "n2 closes the store once the stream ended", func() bool {
		return metricValue(t, n2.base, "batpak_cluster_store_idle_closes_total") >= 1
	})

	for _, n := range nodes {
		stats(n)
		code, rep := call(t, "POST", n.base+"/v1/tenants/acme/verify", token, "")
		if code != 200 || rep["ok"] != true || rep["events"].(float64) != last+1 {
			t.Fatalf("verify on %s after the reopen: %d %v", n.id, code, rep)
		}
		if got := metricValue(t, n.base, "batpak_cluster_store_opens_total"); got < 3 {
			t.Fatalf("%s opened %v stores, want the system store and acme twice", n.id, got)
		}
	}
}
