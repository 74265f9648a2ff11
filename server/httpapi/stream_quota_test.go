package httpapi_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestLongReadsCountAsStreams: an NDJSON query and an export hold their
// connection for as long as the client reads, like an event stream, so
// they count against the tenant's max_subscriptions: past it one more is
// refused 429 QUOTA_EXCEEDED naming the quota, and one key cannot take
// every connection the server has with slow reads. The slot comes back
// when the response ends.
func TestLongReadsCountAsStreams(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"max_subscriptions": 2}), 200)
	fill(e, "acme", k["writer"]) // ≈ 20 MB: more than the socket buffers hold
	d := net.Dialer{Control: smallReceiveBuffer}
	stall := func(path string) net.Conn {
		conn, err := d.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nAccept: application/x-ndjson\r\n\r\n", path, k["admin"])
		return conn
	}
	c1 := stall("/v1/tenants/acme/events")
	c2 := stall("/v1/tenants/acme/export")
	time.Sleep(300 * time.Millisecond) // both under way and stalled
	for _, path := range []string{"/v1/tenants/acme/events", "/v1/tenants/acme/export", "/v1/tenants/acme/subscribe"} {
		r := e.req("GET", path, k["admin"], nil, "Accept", "application/x-ndjson")
		if r.status != 429 || r.code() != "QUOTA_EXCEEDED" || !strings.Contains(string(r.body), "max_subscriptions") {
			t.Fatalf("GET %s with 2 long reads open under max_subscriptions 2: %d %.200s", path, r.status, r.body)
		}
	}
	// A JSON page is not a stream: still served.
	e.must(e.req("GET", "/v1/tenants/acme/events?limit=1", k["reader"], nil), 200)
	c1.Close()
	c2.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := e.req("GET", "/v1/tenants/acme/events?limit=1", k["reader"], nil, "Accept", "application/x-ndjson")
		if r.status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slots did not come back after the clients left: %d %.200s", r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
