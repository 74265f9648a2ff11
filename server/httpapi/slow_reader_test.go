package httpapi_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// neverRead sends GET path on n connections whose clients never read;
// hdr are extra header lines ("Accept: application/x-ndjson").
func neverRead(t *testing.T, e *env, key, path string, n int, hdr ...string) []net.Conn {
	t.Helper()
	extra := ""
	for _, h := range hdr {
		extra += h + "\r\n"
	}
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s\r\n", path, key, extra)
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// writeBlobs writes n events of about 900 KiB to entity "blob" of each
// tenant of tenantWriters (a tenant, its writer key, …).
func writeBlobs(e *env, n int, tenantWriters ...string) {
	e.t.Helper()
	big := strings.Repeat("a", 900<<10)
	for i := range n {
		body := `{"entity":"blob","scope":"s","kind":"1:1","payload":{"s":"` + big + `","i":` + fmt.Sprint(i) + `}}`
		for j := 0; j+1 < len(tenantWriters); j += 2 {
			e.must(e.req("POST", "/v1/tenants/"+tenantWriters[j]+"/events", tenantWriters[j+1], body), 201)
		}
	}
}

// refusedBusy reads the responses on conns (see responses) and counts
// those refused 503 BUSY with Retry-After; any other answer but 200 fails
// the test.
func refusedBusy(t *testing.T, conns []net.Conn, what string) int {
	t.Helper()
	busy := 0
	for _, res := range responses(t, conns) {
		switch {
		case res.StatusCode == 503 && res.Header.Get("Retry-After") != "":
			busy++
		case res.StatusCode != 200:
			t.Fatalf("one of the %s: %d", what, res.StatusCode)
		}
	}
	return busy
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
	busy := refusedBusy(t, conns, "pages")
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
	writeBlobs(e, 10, "acme", acme["writer"], "globex", globex["writer"])
	// 24 pages of 8 MiB, each holding 16 MiB while written: unshared,
	// they took the whole budget (256 MiB).
	conns := neverRead(t, e, acme["reader"], "/v1/tenants/acme/entities/blob/events?limit=1000", 24)
	time.Sleep(3 * time.Second)
	r := e.req("GET", "/v1/tenants/globex/entities/blob/events?limit=1000", globex["reader"], nil)
	if r.status != 200 || len(r.body) < 8e6 {
		t.Fatalf("globex's page while acme's slow readers hold theirs: %d, %d bytes: %.200s", r.status, len(r.body), r.body)
	}
	busy, held := 0, int64(0)
	for _, res := range responses(t, conns) {
		switch res.StatusCode {
		case 503:
			busy++
		case 200:
			held += res.ContentLength // a page cut short by the budget is shorter
		}
	}
	// Its share holds about 4 such pages (64 MiB, each page's bytes
	// counted about three times while it is built and written); a fifth
	// may be in flight. Pages reading concurrently share it: some are
	// cut short (next_after), the rest refused.
	t.Logf("acme's 24 never-read pages: %d refused busy, %d MiB of pages held", busy, held>>20)
	if busy == 0 || held > 5*9<<20 {
		t.Errorf("acme's 24 never-read pages: %d refused busy, %d MiB held; want its share (about 4 pages of 8 MiB) held, the rest refused", busy, held>>20)
	}
}

// queryNDJSON sends an NDJSON query as key and returns its lines.
func queryNDJSON(t *testing.T, e *env, key, path string) []map[string]any {
	t.Helper()
	r := e.must(e.req("GET", path, key, nil, "Accept", "application/x-ndjson"), 200)
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(r.body)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("a line of the NDJSON answer is not an object: %.100s", line)
		}
		out = append(out, m)
	}
	return out
}

// TestNDJSONQueriesOfSlowReadersBounded: each step of an NDJSON query
// holds its room in the response budget while it is written, so one
// tenant's never-read queries hold at most its share
// (MaxResponseBytesPerTenant): past it, its queries are answered 503 BUSY
// with Retry-After at once, and another tenant's queries are streamed
// whole meanwhile.
func TestNDJSONQueriesOfSlowReadersBounded(t *testing.T) {
	e := start(t, nil)
	acme, globex := e.tenant("acme"), e.tenant("globex")
	// More than the sockets' buffers take, so that the queries stall.
	writeBlobs(e, 16, "acme", acme["writer"], "globex", globex["writer"])
	// A step (one event here) holds about 2 MiB: acme's share (64 MiB)
	// holds 31 stalled queries.
	const n = 40
	conns := neverRead(t, e, acme["reader"], "/v1/tenants/acme/events", n, "Accept: application/x-ndjson")
	time.Sleep(3 * time.Second)
	lines := queryNDJSON(t, e, globex["reader"], "/v1/tenants/globex/events")
	if len(lines) != 17 || lines[16]["next_after"] != nil || lines[15]["global_sequence"] == nil {
		t.Fatalf("globex's NDJSON query while acme's slow readers hold theirs: %d lines, last %v", len(lines), lines[len(lines)-1])
	}
	busy := refusedBusy(t, conns, "NDJSON queries")
	t.Logf("%d of acme's %d never-read NDJSON queries refused busy", busy, n)
	if busy < n-34 || busy > n-20 {
		t.Errorf("%d of acme's %d never-read NDJSON queries refused busy; want all but its share (about 31)", busy, n)
	}
}

// TestNDJSONQueryEndsEarlyForWantOfRoom: a step that cannot have its room
// (here, one event larger than the step while the tenant's other
// queries hold most of its share) ends the stream early, its last line's
// next_after the last event sent, so that the client goes on from there;
// the rest is read once there is room.
func TestNDJSONQueryEndsEarlyForWantOfRoom(t *testing.T) {
	e := start(t, nil)
	acme := e.tenant("acme")
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"max_payload_bytes": 8 << 20}), 200)
	pad := strings.Repeat("a", 900<<10)
	for range 16 {
		e.must(e.req("POST", "/v1/tenants/acme/events", acme["writer"], `{"entity":"pad","scope":"s","kind":"1:1","payload":{"s":"`+pad+`"}}`), 201)
	}
	e.must(e.req("POST", "/v1/tenants/acme/events", acme["writer"], `{"entity":"big","scope":"s","kind":"1:1","payload":{"n":0}}`), 201)
	huge := strings.Repeat("b", 6<<20)
	e.must(e.req("POST", "/v1/tenants/acme/events", acme["writer"], `{"entity":"big","scope":"s","kind":"1:1","payload":{"s":"`+huge+`"}}`), 201)
	// 28 stalled queries hold about 58 MiB of acme's 64: the 6 MiB
	// event's step (about 12 MiB) finds no room.
	conns := neverRead(t, e, acme["reader"], "/v1/tenants/acme/events?entity=pad", 28, "Accept: application/x-ndjson")
	time.Sleep(3 * time.Second)
	lines := queryNDJSON(t, e, acme["reader"], "/v1/tenants/acme/events?entity=big")
	if len(lines) != 2 || lines[0]["global_sequence"] == nil {
		t.Fatalf("want the small event, then the end line; got %d lines: %.300v", len(lines), lines)
	}
	first := lines[0]["global_sequence"].(float64)
	if lines[1]["next_after"] != first {
		t.Fatalf("ended early: next_after %v, want %v (the last event sent)", lines[1]["next_after"], first)
	}
	for _, c := range conns {
		c.Close()
	}
	// Once the stalled queries are gone, the rest is read from there.
	var rest []map[string]any
	// (The stalled queries' room comes back once the server's writes to
	// them fail: until then a query may still be refused 503 BUSY.)
	path := fmt.Sprintf("/v1/tenants/acme/events?entity=big&after=%d", int(first))
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if r := e.req("GET", path, acme["reader"], nil, "Accept", "application/x-ndjson"); r.status == 503 {
			continue
		}
		rest = queryNDJSON(t, e, acme["reader"], path)
		if len(rest) == 2 {
			break
		}
	}
	if len(rest) != 2 || rest[1]["next_after"] != nil || len(fmt.Sprint(rest[0]["payload"])) < 6<<20 {
		t.Fatalf("after the stalled queries closed: %d lines, want the large event and the end", len(rest))
	}
}

// TestExportsOfSlowReadersBounded: an export holds its read step's room
// in the response budget while it runs, so one tenant's never-read
// exports hold at most its share: past it they are answered 503 BUSY.
func TestExportsOfSlowReadersBounded(t *testing.T) {
	e := start(t, nil)
	acme := e.tenant("acme")
	writeBlobs(e, 16, "acme", acme["writer"])
	// An export holds about 2 MiB: acme's share holds 30.
	const n = 40
	conns := neverRead(t, e, acme["admin"], "/v1/tenants/acme/export", n)
	time.Sleep(3 * time.Second)
	busy := refusedBusy(t, conns, "exports")
	if busy < n-34 || busy > n-20 {
		t.Errorf("%d of acme's %d never-read exports refused busy; want all but its share (about 30)", busy, n)
	}
	// Their room is back once they are gone.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		r := e.req("GET", "/v1/tenants/acme/export", acme["admin"], nil)
		if r.status == 200 && strings.Count(string(r.body), "\n") == 16 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("an export after the stalled ones closed: %d, %d bytes", r.status, len(r.body))
		}
	}
}

// TestNDJSONPayloadsAsStored: an NDJSON query writes a payload's "<" as
// one byte, as a page does, so that a step's encoding stays within the
// room it holds (twice its payloads); HTML-escaped it was six.
func TestNDJSONPayloadsAsStored(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], `{"entity":"e","scope":"s","kind":"1:1","payload":{"s":"<<<&>>>"}}`), 201)
	r := e.must(e.req("GET", "/v1/tenants/acme/events", k["reader"], nil, "Accept", "application/x-ndjson"), 200)
	if !strings.Contains(string(r.body), `"<<<&>>>"`) {
		t.Fatalf("the payload in an NDJSON answer: %s", r.body)
	}
}

// TestConcurrentPagesTakeRoomBeforeReading: a page takes its room in the
// response budget before it reads its events, step by step, so many
// concurrent reads of pages of large events are refused (503 BUSY) or
// cut short (next_after) instead of each building its page first and
// asking afterwards. Measured: without it, 40 concurrent 8 MiB pages
// took the heap ~1 GiB higher at their peak (a hostile reader key took
// a server to 10 GB); with it, about the tenant's share.
func TestConcurrentPagesTakeRoomBeforeReading(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	writeBlobs(e, 10, "acme", k["writer"])
	base := heapInUse()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	const n = 40
	paths := []string{"/v1/tenants/acme/entities/blob/events?limit=1000", "/v1/tenants/acme/events?limit=1000"}
	var wg sync.WaitGroup
	var ok, busy atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", e.base+paths[i%2], nil)
			req.Header.Set("Authorization", "Bearer "+k["reader"])
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer res.Body.Close()
			var page struct {
				Events []json.RawMessage `json:"events"`
			}
			switch {
			case res.StatusCode == 200 && json.NewDecoder(res.Body).Decode(&page) == nil && len(page.Events) > 0:
				ok.Add(1)
			case res.StatusCode == 503 && res.Header.Get("Retry-After") != "":
				busy.Add(1)
			default:
				t.Errorf("a page: %d", res.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	grew := int64(peak.Load()) - int64(base)
	t.Logf("%d pages of 8 MiB at once: %d answered, %d refused busy; the heap's peak %d MiB above the start", n, ok.Load(), busy.Load(), grew>>20)
	if ok.Load() == 0 {
		t.Error("no page was answered")
	}
	// The tenant's share is 64 MiB of holds (3 bytes per byte read); the
	// rest is garbage not yet collected and the race detector's slack.
	if grew > 450<<20 {
		t.Errorf("%d concurrent pages of 8 MiB took the heap %d MiB higher", n, grew>>20)
	}
}

// TestEventLargerThanAShareIsRead: a page's room is three times its
// events, so one event of 24 MB needs more than a tenant's share (64 MiB):
// a page that starts with it takes its room alone (as the budget grants a
// tenant holding nothing else), and it is read through every route.
func TestEventLargerThanAShareIsRead(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"max_payload_bytes": 30 << 20}), 200)
	big := strings.Repeat("b", 24_000_000)
	id := e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], `{"entity":"big:1","scope":"s","kind":"1:1","payload":{"s":"`+big+`"}}`), 201).json(t)["id"].(string)
	for _, path := range []string{"/events?limit=10", "/entities/big:1/events", "/events/" + id + "/ancestors", "/events/" + id + "/descendants"} {
		r := e.req("GET", "/v1/tenants/acme"+path, k["reader"], nil)
		if r.status != 200 || len(r.body) < 24_000_000 {
			t.Errorf("%s: %d, %d bytes; want the 24 MB event", path, r.status, len(r.body))
		}
	}
}
