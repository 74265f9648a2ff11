package httpapi_test

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestStalledNDJSONQueryHoldsLittle: an NDJSON query of large events
// whose client stops reading holds a bounded amount of memory (about
// one event or the NDJSON byte budget), not a whole read step of events
// (100 × max_payload_bytes = 100 MiB by default; 1 MiB steps now), so that one tenant's
// reader key cannot pin the server's memory with a few stalled queries.
func TestStalledNDJSONQueryHoldsLittle(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	pad := strings.Repeat("x", 900<<10)
	// A few small events first, then large ones: a read step sized by
	// the average so far must not load many large ones at once.
	for i := range 120 {
		p := "s"
		if i >= 20 {
			p = pad
		}
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{"pad": p}}), 201)
	}
	before := heapInUse()
	d := net.Dialer{Control: smallReceiveBuffer}
	const streams = 4
	for range streams {
		conn, err := d.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /v1/tenants/acme/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nAccept: application/x-ndjson\r\n\r\n", k["reader"])
	}
	// The responses are under way and stall. What a stalled query holds
	// stays; a step still being read or encoded on a loaded machine is
	// passing: the least of a few samples is what they hold.
	time.Sleep(time.Second)
	held := int64(heapInUse()) - int64(before)
	for range 3 {
		time.Sleep(500 * time.Millisecond)
		held = min(held, int64(heapInUse())-int64(before))
	}
	t.Logf("%d stalled NDJSON queries hold %d MiB", streams, held>>20)
	if held > streams*4<<20 {
		t.Fatalf("%d stalled NDJSON queries hold %d MiB of heap, want at most 4 MiB each", streams, held>>20)
	}
}

// allocated is the bytes allocated so far by the process.
func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// TestSSECatchUpReadsInBytes: an event stream catching up over large
// events reads the store in steps of about the backlog's byte bound, not
// MaxBacklogEvents (4096) events at once: subscribing from the start of
// 100 MiB of events costs tens of MiB, not the whole log.
func TestSSECatchUpReadsInBytes(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	pad := strings.Repeat("x", 900<<10)
	for range 120 {
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{"pad": pad}}), 201)
	}
	before := allocated()
	d := net.Dialer{Control: smallReceiveBuffer}
	conn, err := d.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/tenants/acme/subscribe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", k["reader"])
	time.Sleep(time.Second) // the stream is under way and stalled
	got := allocated() - before
	t.Logf("a stalled catch-up allocated %d MiB", got>>20)
	if got > 64<<20 {
		t.Fatalf("a stalled catch-up over 105 MiB of events allocated %d MiB, want at most 64", got>>20)
	}
}
