package httpapi_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// stalledImport starts a chunked import over a raw connection, sends one
// chunk of lines and then nothing more: the body stays open.
func stalledImport(t *testing.T, e *env, key string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	lines := ndjsonLines(3, 16)
	fmt.Fprintf(conn, "POST /v1/tenants/acme/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", key, len(lines), lines)
	return conn, bufio.NewReader(conn)
}

// readStatus reads the status of the response on rd within d.
func readStatus(t *testing.T, conn net.Conn, rd *bufio.Reader, d time.Duration) (int, string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	res, err := http.ReadResponse(rd, nil)
	if err != nil {
		t.Fatalf("no response within %v: %v", d, err)
	}
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestStalledImportEndsWhenAccessEnds: an import whose body has stalled
// ends as soon as its key is revoked, not when the client sends more:
// it answers 401 at once, and the tenant can then be deleted (its store
// is no longer held) and created again.
func TestStalledImportEndsWhenAccessEnds(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	conn, rd := stalledImport(t, e, k["admin"])
	time.Sleep(200 * time.Millisecond) // the import is reading its body
	e.must(e.req("DELETE", "/v1/admin/tenants/acme/keys/"+k["admin_id"], opToken, nil), 204)
	if st, body := readStatus(t, conn, rd, 5*time.Second); st != 401 {
		t.Fatalf("stalled import after its key was revoked: %d %s", st, body)
	}
	began := time.Now()
	e.must(e.req("DELETE", "/v1/admin/tenants/acme?confirm=acme", opToken, nil), 204)
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("deleting the tenant took %v", d)
	}
	e.tenant("acme")
}

// TestStalledImportDoesNotOutliveItsTenant: deleting a tenant ends its
// stalled import at once, and the deletion completes.
func TestStalledImportDoesNotOutliveItsTenant(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	conn, rd := stalledImport(t, e, k["admin"])
	time.Sleep(200 * time.Millisecond)
	began := time.Now()
	e.must(e.req("DELETE", "/v1/admin/tenants/acme?confirm=acme", opToken, nil), 204)
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("deleting the tenant under a stalled import took %v", d)
	}
	if st, body := readStatus(t, conn, rd, 5*time.Second); st < 400 {
		t.Fatalf("stalled import of a deleted tenant: %d %s", st, body)
	}
	e.tenant("acme")
}

// TestIdleImportBodyTimesOut: an import body that sends nothing for
// server.read_timeout is cut off with 408, which frees its connection;
// the events of its lines so far are not half-written (an import writes
// whole batches).
func TestIdleImportBodyTimesOut(t *testing.T) {
	e := start(t, func(c *server.Config) { c.ReadTimeout = 500 * time.Millisecond })
	k := e.tenant("acme")
	conn, rd := stalledImport(t, e, k["admin"])
	began := time.Now()
	st, body := readStatus(t, conn, rd, 10*time.Second)
	if st != 408 || !strings.Contains(body, "read_timeout") {
		t.Fatalf("idle import body: %d %s", st, body)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("an idle import with read_timeout 500ms answered after %v", d)
	}
	if n := e.count("acme", k["admin"]); n != 0 {
		t.Fatalf("the cut-off import left %v events", n)
	}
}

// TestImportsCountAsStreams: an import holds its connection for as long
// as its body lasts, so it counts against max_subscriptions like a long
// read: one key cannot hold every connection with stalled imports.
func TestImportsCountAsStreams(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"max_subscriptions": 1}), 200)
	conn, _ := stalledImport(t, e, k["admin"])
	time.Sleep(200 * time.Millisecond)
	r := e.req("POST", "/v1/tenants/acme/import", k["admin"], ndjsonLines(1, 8), "Content-Type", "application/x-ndjson")
	if r.status != 429 || !strings.Contains(string(r.body), "max_subscriptions") {
		t.Fatalf("an import with another import open under max_subscriptions 1: %d %s", r.status, r.body)
	}
	conn.Close()
	importEventually(t, e, k["admin"], "the slot did not come back after the stalled import's client left")
}

// TestImportKeepsMaxPayload: every imported event keeps to the tenant's
// max_payload_bytes, as an append does; the refusal names the quota and
// the line, and the refused batch writes nothing.
func TestImportKeepsMaxPayload(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"max_payload_bytes": 100}), 200)
	body := ndjsonLines(2, 8) + strings.SplitAfter(ndjsonLines(3, 200), "\n")[2]
	r := e.req("POST", "/v1/tenants/acme/import", k["admin"], body, "Content-Type", "application/x-ndjson")
	if r.status != 413 || r.code() != "QUOTA_EXCEEDED" || !strings.Contains(string(r.body), "max_payload_bytes") || !strings.Contains(string(r.body), "line 3") {
		t.Fatalf("an import with a payload over max_payload_bytes: %d %s", r.status, r.body)
	}
	if n := e.count("acme", k["admin"]); n != 0 {
		t.Fatalf("the refused import left %v events", n)
	}
	// A line far longer than the quota is refused before it is read
	// whole.
	r = e.req("POST", "/v1/tenants/acme/import", k["admin"], ndjsonLines(1, 4<<20), "Content-Type", "application/x-ndjson")
	if r.status != 413 || r.code() != "QUOTA_EXCEEDED" || !strings.Contains(string(r.body), "max_payload_bytes") || !strings.Contains(string(r.body), "line 1") {
		t.Fatalf("an import line of 4 MiB under max_payload_bytes 100: %d %s", r.status, r.body)
	}
	e.must(e.req("POST", "/v1/tenants/acme/import", k["admin"], ndjsonLines(2, 8), "Content-Type", "application/x-ndjson"), 200)
}

// TestOversizedBatchRefusedWhileDecoding: a batch body of more events
// than the tenant's max_batch_events is refused naming the quota without
// decoding them all: the refusal costs about the body's own bytes, not a
// decoded request many times its size.
func TestOversizedBatchRefusedWhileDecoding(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	var b strings.Builder
	b.WriteString(`{"events":[`)
	ev := `{"entity":"e:1","scope":"s","kind":"1:1","payload":1}`
	for i := 0; b.Len() < 30<<20; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(ev)
	}
	b.WriteString(`]}`)
	body := b.String()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	req, _ := http.NewRequest("POST", e.base+"/v1/tenants/acme/batches", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+k["writer"])
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(res.Body)
	res.Body.Close()
	runtime.ReadMemStats(&after)
	if res.StatusCode != 413 || !strings.Contains(string(out), "max_batch_events") {
		t.Fatalf("a batch of 550k events under max_batch_events 4096: %d %s", res.StatusCode, out)
	}
	// The body (30 MiB, read into a buffer that may double once) and
	// 4096 decoded events; decoding all 550k would take about 150 MiB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 110<<20 {
		t.Fatalf("refusing a 30 MiB batch allocated %d MiB", alloc>>20)
	}
	if n := e.count("acme", k["admin"]); n != 0 {
		t.Fatalf("the refused batch left %v events", n)
	}
}

// TestPacedImportOutlastsReadTimeout: the read timeout bounds each read
// of an import's body, not the import: a body read to its end whose
// paced writes take longer than read_timeout is imported whole (the
// server clears the deadline once the body has ended).
func TestPacedImportOutlastsReadTimeout(t *testing.T) {
	e := start(t, func(c *server.Config) { c.ReadTimeout = 300 * time.Millisecond })
	k := e.tenant("acme")
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"events_per_second": 100, "events_burst": 100}), 200)
	// Small enough to arrive in one read: the body has ended before the
	// first batch is written, and the second waits for the first's debt.
	began := time.Now()
	r := e.must(e.req("POST", "/v1/tenants/acme/import", k["admin"], ndjsonLines(300, 1), "Content-Type", "application/x-ndjson"), 200)
	if got := r.json(t)["imported"]; got != float64(300) {
		t.Fatalf("imported %v of 300: %s", got, r.body)
	}
	if d := time.Since(began); d < 4*300*time.Millisecond {
		t.Fatalf("300 events at 100/s took %v: not paced past the read timeout, the test proves nothing", d)
	}
}

// TestImportPaysBeforeItWrites: each batch of an import is charged to the
// tenant's rates before it is written, so imports whose clients hang up
// while they wait for their rate write nothing they did not pay for, one
// after another or many at once.
func TestImportPaysBeforeItWrites(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{
		"events_per_second": 10, "events_burst": 10, "bytes_per_second": 64 << 10, "bytes_burst": 64 << 10, "max_subscriptions": 16}), 200)
	body := ndjsonLines(256, 64)
	hangUp := func() {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Error(err)
			return
		}
		fmt.Fprintf(conn, "POST /v1/tenants/acme/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n%s", k["admin"], len(body), body)
		time.Sleep(300 * time.Millisecond)
		conn.Close()
	}
	for range 4 {
		hangUp()
	}
	done := make(chan struct{})
	for range 16 {
		go func() { hangUp(); done <- struct{}{} }()
	}
	for range 16 {
		<-done
	}
	time.Sleep(200 * time.Millisecond) // the imports have seen their clients go
	// 2.5 s at 10 events/s with a burst of 10: at most 35 events paid for;
	// none of these imports paid for a whole batch of 256.
	if n := e.count("acme", k["admin"]); n != 0 {
		t.Fatalf("imports that hung up while paced stored %v events", n)
	}
}

// TestVerifiesRunOneAtATime: a verify reads the tenant's whole log and
// holds state per entity, so a tenant runs one at a time: verifies sent
// together get either the report or 503 BUSY with Retry-After, never
// several runs at once.
func TestVerifiesRunOneAtATime(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	fill(e, "acme", k["writer"])
	for round := 0; ; round++ {
		const n = 8
		results := make(chan resp, n)
		for range n {
			go func() { results <- e.req("POST", "/v1/tenants/acme/verify", k["admin"], nil) }()
		}
		ok, busy := 0, 0
		for range n {
			r := <-results
			switch {
			case r.status == 200 && r.json(t)["ok"] == true:
				ok++
			case r.status == 503 && r.code() == "BUSY" && r.header.Get("Retry-After") != "":
				busy++
			default:
				t.Fatalf("verify: %d %s", r.status, r.body)
			}
		}
		if ok == 0 {
			t.Fatalf("%d verifies sent together: none ran", n)
		}
		if busy > 0 {
			break
		}
		if round == 5 {
			t.Fatalf("%d verifies sent together, 6 times: all ran, none was refused", n)
		}
	}
}

// TestImportsIntoOneTenantRunOneAtATime: each import holds the storage
// quota against the usage when it began plus what it has read, so two at
// once would each miss the other's bytes; a second import into the same
// tenant while one runs is refused (503 BUSY, retry), another tenant's
// import is not, and the tenant's next import runs once the first ends.
func TestImportsIntoOneTenantRunOneAtATime(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	other := e.tenant("globex")
	conn, _ := stalledImport(t, e, k["admin"])
	time.Sleep(200 * time.Millisecond)
	r := e.req("POST", "/v1/tenants/acme/import", k["admin"], ndjsonLines(1, 8), "Content-Type", "application/x-ndjson")
	if r.status != 503 || !strings.Contains(string(r.body), "BUSY") || !strings.Contains(string(r.body), "import into this tenant is running") {
		t.Fatalf("a second import into acme while one runs: %d %s, want 503 BUSY naming the running import", r.status, r.body)
	}
	r = e.req("POST", "/v1/tenants/globex/import", other["admin"], ndjsonLines(1, 8), "Content-Type", "application/x-ndjson")
	if r.status != 200 {
		t.Fatalf("an import into another tenant meanwhile: %d %s", r.status, r.body)
	}
	conn.Close()
	importEventually(t, e, k["admin"], "acme's next import after the first ended")
}

// importEventually imports one line into acme with key until it is
// accepted, within 5 s (else fails with what, and the last answer).
func importEventually(t *testing.T, e *env, key, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := e.req("POST", "/v1/tenants/acme/import", key, ndjsonLines(1, 8), "Content-Type", "application/x-ndjson")
		if r.status == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %s", what, r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
