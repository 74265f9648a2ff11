package httpapi_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// neverRead sends GET path on n connections whose clients never read.
func neverRead(t *testing.T, e *env, key, path string, n int) []net.Conn {
	t.Helper()
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", path, key)
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// responses reads the response head on each of conns (waiting up to 10 s
// for each) and closes them.
func responses(t *testing.T, conns []net.Conn) []*http.Response {
	t.Helper()
	var out []*http.Response
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no response: %v", err)
		}
		c.Close()
		out = append(out, res)
	}
	return out
}

// TestPagesOfSlowReadersBounded: a JSON page is built whole before it is
// written, so pages whose clients never read are held in memory: their
// bytes, all tenants together, stay within MaxResponseBytes; past it a
// page is answered 503 BUSY with Retry-After. A payload's "<" is one
// byte in the page, as stored (HTML-escaped it was six: a page six times
// its bound).
func TestPagesOfSlowReadersBounded(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	big := strings.Repeat("<", 900<<10)
	for range 10 {
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], `{"entity":"blob","scope":"s","kind":"1:1","payload":{"s":"`+big+`"}}`), 201)
	}
	r := e.must(e.req("GET", "/v1/tenants/acme/entities/blob/events?limit=1", k["reader"], nil), 200)
	if len(r.body) > 1<<20 || !strings.Contains(string(r.body), "<<<<") {
		t.Fatalf("a page of one event of 900 KiB of \"<\" is %d bytes", len(r.body))
	}
	base := int64(heapInUse())
	const n = 48 // pages of 8 MiB
	conns := neverRead(t, e, k["reader"], "/v1/tenants/acme/entities/blob/events?limit=1000", n)
	// Those refused have waited their second and gone; those written
	// hold their pages (about 22 MiB each, the page and the events it
	// was built from) until the write timeout (60 s). On a loaded machine
	// requests still being built (each reads its events first) add to
	// the heap for a while: the least of a few readings until 12 s is
	// what the held pages keep.
	time.Sleep(6 * time.Second)
	grew := int64(heapInUse()) - base
	for i := 0; i < 12 && grew > 400<<20; i++ {
		time.Sleep(500 * time.Millisecond)
		grew = min(grew, int64(heapInUse())-base)
	}
	busy := 0
	for _, res := range responses(t, conns) {
		switch {
		case res.StatusCode == 503 && res.Header.Get("Retry-After") != "":
			busy++
		case res.StatusCode != 200:
			t.Fatalf("a page: %d", res.StatusCode)
		}
	}
	t.Logf("heap grew %d MiB; %d of %d pages refused busy", grew>>20, busy, n)
	if busy == 0 {
		t.Errorf("%d never-read pages of 8 MiB: all were held, none refused", n)
	}
	// The budget counts each written page twice: one tenant's share
	// (MaxResponseBytesPerTenant, 64 MiB) holds about 4, all tenants
	// together (MaxResponseBytes, 256 MiB) about 16; unbounded, the 48
	// took 450 MiB (4 GiB HTML-escaped).
	// The rest of the bound is slack for the race detector's runs.
	if grew > 400<<20 {
		t.Errorf("%d never-read pages of 8 MiB hold %d MiB", n, grew>>20)
	}
}

// TestStreamsOfSlowReadersHoldLittle: an event stream catching up reads
// a step of about 1 MiB at a time, so one whose client never reads holds
// that much, not a backlog of 16 MiB.
func TestStreamsOfSlowReadersHoldLittle(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	big := strings.Repeat("a", 900<<10)
	for i := range 24 {
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], map[string]any{"entity": fmt.Sprint("blob:", i), "scope": "s", "kind": "1:1", "payload": map[string]any{"s": big}}), 201)
	}
	base := int64(heapInUse())
	const n = 40
	neverRead(t, e, k["reader"], "/v1/tenants/acme/subscribe", n)
	time.Sleep(3 * time.Second)
	if per := (int64(heapInUse()) - base) / n; per > 4<<20 {
		t.Errorf("each never-read stream holds %d MiB", per>>20)
	}
}

// TestSlowReadersShareIsPerTenant: one tenant's never-read pages hold at
// most its share of the response budget (MaxResponseBytesPerTenant), so
// another tenant's large pages are still written; past its share the
// tenant's own pages are answered 503 BUSY at once.
func TestSlowReadersShareIsPerTenant(t *testing.T) {
	e := start(t, nil)
	acme, globex := e.tenant("acme"), e.tenant("globex")
	big := strings.Repeat("a", 900<<10)
	for i := range 10 {
		body := `{"entity":"blob","scope":"s","kind":"1:1","payload":{"s":"` + big + `","i":` + fmt.Sprint(i) + `}}`
		e.must(e.req("POST", "/v1/tenants/acme/events", acme["writer"], body), 201)
		e.must(e.req("POST", "/v1/tenants/globex/events", globex["writer"], body), 201)
	}
	// 24 pages of 8 MiB, each holding 16 MiB while written: unshared,
	// they took the whole budget (256 MiB).
	conns := neverRead(t, e, acme["reader"], "/v1/tenants/acme/entities/blob/events?limit=1000", 24)
	time.Sleep(3 * time.Second)
	r := e.req("GET", "/v1/tenants/globex/entities/blob/events?limit=1000", globex["reader"], nil)
	if r.status != 200 || len(r.body) < 8e6 {
		t.Fatalf("globex's page while acme's slow readers hold theirs: %d, %d bytes: %.200s", r.status, len(r.body), r.body)
	}
	busy := 0
	for _, res := range responses(t, conns) {
		if res.StatusCode == 503 {
			busy++
		}
	}
	// Its share holds 4 such pages (64 MiB); a fifth may be in flight.
	if busy < 24-5 {
		t.Errorf("%d of acme's 24 never-read pages refused busy; want all but its share (about 4)", busy)
	}
}
