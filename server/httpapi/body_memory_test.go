package httpapi_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestDeclaredBodyLengthReservesNothing: requests that declare the
// largest body allowed (max_body_bytes, 32 MiB) and send a few bytes of
// it make the server allocate room for what arrived, not for what was
// declared: a writer key holding many such requests open cannot make the
// server reserve gigabytes with headers alone.
func TestDeclaredBodyLengthReservesNothing(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	const conns = 48
	before := allocated()
	for range conns {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/tenants/acme/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"a\":",
			k["writer"], 32<<20)
	}
	time.Sleep(500 * time.Millisecond) // every request is admitted and waiting for its body
	took := allocated() - before
	t.Logf("%d requests declaring 32 MiB bodies allocated %d KiB", conns, took>>10)
	if took > conns<<20 {
		t.Fatalf("%d requests declaring 32 MiB and sending 5 bytes allocated %d MiB, want at most 1 MiB each", conns, took>>20)
	}
	// The server still answers.
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{"n": 1}}), 201)
}
