package server_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/httpapi"
)

// TestClusterReplicaDigests: after writes through the leader, every node
// answers the leader's digest of a tenant's events for the leader's
// upto — served where it is asked, never redirected — and a follower
// asked for events it does not hold yet waits for them rather than
// answering a shorter digest; a node cut off from a leader says it is not
// caught up.
func TestClusterReplicaDigests(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	nodes := startCluster3(t, t.TempDir())
	key, _ := clusterTenantKey(t, nodes[0].base, "acme", `["writer"]`)
	for i := range 20 {
		body := fmt.Sprintf(`{"entity":"order:%d","scope":"shop","kind":"1:1","payload":{"n":%d}}`, i%3, i)
		if code, r := call(t, "POST", nodes[0].base+"/v1/tenants/acme/events", key, body); code != 201 {
			t.Fatalf("append %d: %d %v", i, code, r)
		}
	}
	code, ref := call(t, "GET", nodes[0].base+"/v1/admin/tenants/acme/digest", clusterOperator, "")
	if code != 200 || ref["events"] != float64(20) {
		t.Fatalf("the leader's digest: %d %v", code, ref)
	}
	noRedirect := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, n := range nodes[1:] {
		req, _ := http.NewRequest("GET", n.base+"/v1/admin/tenants/acme/digest?upto=20", nil)
		req.Header.Set("Authorization", "Bearer "+clusterOperator)
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s: digest %d, want it served there", n.id, res.StatusCode)
		}
		if code, d := call(t, "GET", n.base+"/v1/admin/tenants/acme/digest?upto=20", clusterOperator, ""); code != 200 || d["digest"] != ref["digest"] || d["events"] != ref["events"] {
			t.Fatalf("%s: %d %v, want the leader's %v", n.id, code, d, ref)
		}
	}
	// Past what any node holds: a follower waits (read_wait), then says
	// it is not caught up.
	if code, d := call(t, "GET", nodes[2].base+"/v1/admin/tenants/acme/digest?upto=21", clusterOperator, ""); code != 503 || d["code"] != "NOT_CAUGHT_UP" {
		t.Fatalf("a digest past the log: %d %v, want 503 NOT_CAUGHT_UP", code, d)
	}
	// Requests waiting for events are bounded: past MaxDigestRequests
	// at once, one is refused BUSY at once rather than held.
	results := make(chan string, httpapi.MaxDigestRequests+1)
	for range httpapi.MaxDigestRequests + 1 {
		go func() {
			code, d := call(t, "GET", nodes[2].base+"/v1/admin/tenants/acme/digest?upto=1000000", clusterOperator, "")
			results <- fmt.Sprint(code, " ", d["code"])
		}()
	}
	select {
	case got := <-results:
		if got != "503 BUSY" {
			t.Fatalf("the first answer among %d waiting digests: %s, want 503 BUSY", httpapi.MaxDigestRequests+1, got)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("%d digest requests all held waiting", httpapi.MaxDigestRequests+1)
	}
	for range httpapi.MaxDigestRequests {
		if got := <-results; got != "503 NOT_CAUGHT_UP" {
			t.Fatalf("a waiting digest: %s, want 503 NOT_CAUGHT_UP", got)
		}
	}
	// A node that has not heard from a leader lately (here: the other two
	// stopped) says it is not caught up instead of answering from what it
	// holds — after a restart it may not even know every tenant yet.
	nodes[0].stop()
	nodes[1].stop()
	waitFor(t, 15*time.Second, "n3 no longer current", func() bool {
		code, d := call(t, "GET", nodes[2].base+"/v1/admin/tenants/acme/digest", clusterOperator, "")
		return code == 503 && d["code"] == "NOT_CAUGHT_UP"
	})
}
