package httpapi_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// streamEnd reads a stream until it ends or within d; it reports the event
// frames seen, the last non-event frame ("cutoff", "shutdown") and whether
// the stream ended in time.
func streamEnd(next func() (sseEvent, bool), d time.Duration) (events int, last sseEvent, ended bool) {
	type res struct {
		events int
		last   sseEvent
	}
	done := make(chan res, 1)
	go func() {
		var r res
		for {
			ev, ok := next()
			if !ok {
				done <- r
				return
			}
			if ev.event == "event" {
				r.events++
			} else {
				r.last = ev
			}
		}
	}()
	select {
	case r := <-done:
		return r.events, r.last, true
	case <-time.After(d):
		return 0, sseEvent{}, false
	}
}

// TestStreamEndsWhenCredentialOrTenantGoes: an open event stream is cut
// off, with its resumable position, as soon as its key is revoked, its
// tenant suspended or deleted; it never delivers an event written after
// the revocation.
func TestStreamEndsWhenCredentialOrTenantGoes(t *testing.T) {
	e := start(t, nil)
	for _, how := range []string{"revoke", "suspend", "delete"} {
		t.Run(how, func(t *testing.T) {
			id := "t-" + how
			k := e.tenant(id)
			e.must(e.req("POST", "/v1/tenants/"+id+"/events", k["writer"], appendBody("order:1")), 201)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			next, res := e.openStream(ctx, "/v1/tenants/"+id+"/subscribe", k["reader"], "")
			defer res.Body.Close()
			first, ok := next()
			if !ok || first.event != "event" {
				t.Fatalf("first frame %+v %v", first, ok)
			}
			switch how {
			case "revoke":
				e.must(e.req("DELETE", "/v1/admin/tenants/"+id+"/keys/"+k["reader_id"], opToken, nil), 204)
				e.must(e.req("POST", "/v1/tenants/"+id+"/events", k["writer"], appendBody("order:2")), 201)
			case "suspend":
				e.must(e.req("POST", "/v1/admin/tenants/"+id+"/suspend", opToken, map[string]any{"reason": "abuse"}), 200)
			case "delete":
				done := make(chan int, 1)
				go func() { done <- statusOf("DELETE", e.base+"/v1/admin/tenants/"+id+"?confirm="+id, opToken) }()
				select {
				case st := <-done:
					if st != 204 {
						t.Fatalf("delete: %d", st)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("deleting a tenant with an open stream did not finish in 5s")
				}
			}
			events, last, ended := streamEnd(next, 5*time.Second)
			if !ended {
				t.Fatalf("the stream is still open 5s after the %s", how)
			}
			if events != 0 {
				t.Fatalf("the stream delivered %d events after the %s", events, how)
			}
			if last.event != "cutoff" || !strings.Contains(last.data, `"resume_after":`+first.id) {
				t.Fatalf("stream ended with %+v, want a cutoff resuming after %s", last, first.id)
			}
		})
	}
}

// TestRevokedKeyCannotFinishSlowBody: a write whose credential is revoked
// while its body is still arriving is refused, and nothing is written.
func TestRevokedKeyCannotFinishSlowBody(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	body := `{"entity":"order:1","scope":"shop","kind":"1:1","payload":{"n":1}}`
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/tenants/acme/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		k["writer"], len(body), body[:10])
	time.Sleep(200 * time.Millisecond) // the request is admitted and reading its body
	e.must(e.req("DELETE", "/v1/admin/tenants/acme/keys/"+k["writer_id"], opToken, nil), 204)
	io.WriteString(conn, body[10:])
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("write with a key revoked mid-body: %d, want 401", res.StatusCode)
	}
	if n := e.count("acme", k["admin"]); n != 0 {
		t.Fatalf("%v events written with a revoked key", n)
	}
}

// TestRecreatedTenantStartsEmpty: a tenant whose deletion was recorded
// but whose data was not removed (a crash, or a removal that failed) is
// not reachable again when a tenant of the same id is created: the new
// tenant starts empty and the old keys stay dead.
func TestRecreatedTenantStartsEmpty(t *testing.T) {
	e := start(t, nil)
	old := e.tenant("acme")
	e.must(e.req("POST", "/v1/tenants/acme/events", old["writer"], appendBody("order:1")), 201)
	// The deletion is recorded; the data stays where it was.
	if err := e.srv.Plane().DeleteTenant(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	k := e.tenant("acme")
	if n := e.count("acme", k["admin"]); n != 0 {
		t.Fatalf("the re-created tenant sees %v events of the deleted one", n)
	}
	e.must(e.req("GET", "/v1/tenants/acme/stats", old["admin"], nil), 401)
}

// TestRepeatedDeleteFinishesRemoval: a tenant whose deletion was recorded
// but whose data was not removed (a cluster's leadership moved between
// the record and the store's drop; the server stopped) has it removed by
// the DELETE repeated, which answers 404 (the tenant is gone). Without
// ?confirm= nothing is removed.
func TestRepeatedDeleteFinishesRemoval(t *testing.T) {
	root := t.TempDir()
	e := start(t, func(c *server.Config) { c.Root = root })
	k := e.tenant("acme")
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:1")), 201)
	if err := e.srv.Plane().DeleteTenant(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "tenants", "acme")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the interrupted deletion's data: %v, want it still there", err)
	}
	e.must(e.req("DELETE", "/v1/admin/tenants/acme", opToken, nil), 404)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("a DELETE without confirm removed the data: %v", err)
	}
	e.must(e.req("DELETE", "/v1/admin/tenants/acme?confirm=acme", opToken, nil), 404)
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after the repeated DELETE the tenant's directory: %v, want it gone", err)
	}
	// A tenant that never was: 404, nothing else.
	e.must(e.req("DELETE", "/v1/admin/tenants/never?confirm=never", opToken, nil), 404)
}

// TestStalledReaderReleasesStream: a client that asks for a large
// streaming response and never reads it is disconnected once a write has
// waited server.write_timeout; it does not hold its handler (and tenant)
// forever: here, a graceful shutdown does not have to wait it out.
func TestStalledReaderReleasesStream(t *testing.T) {
	e := start(t, func(c *server.Config) { c.WriteTimeout = 3 * time.Second; c.ShutdownTimeout = 15 * time.Second })
	k := e.tenant("acme")
	fill(e, "acme", k["writer"]) // ≈ 20 MB: more than the socket buffers hold
	d := net.Dialer{Control: smallReceiveBuffer}
	for _, path := range []string{"/v1/tenants/acme/events", "/v1/tenants/acme/export"} {
		conn, err := d.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nAccept: application/x-ndjson\r\n\r\n", path, k["admin"])
	}
	time.Sleep(500 * time.Millisecond) // both responses are under way and stalled
	began := time.Now()
	if err := e.shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(began); d > 9*time.Second {
		t.Fatalf("shutdown took %v: stalled responses held it (write timeout 3s)", d)
	}
}

// ndjsonLines is an import body of n events of about size bytes each.
func ndjsonLines(n, size int) string {
	var b strings.Builder
	pad := strings.Repeat("x", size)
	for i := range n {
		fmt.Fprintf(&b, `{"id":"0190a2b4-0000-7000-8000-%012x","entity":"x:%d","scope":"s","kind":"0x1:0x1","clock":0,"global_sequence":%d,"correlation_id":"0190a2b4-0000-7000-8000-%012x","causation_id":null,"timestamp_us":1,"payload":{"p":"%s"}}`+"\n", i+1, i, i, i+1, pad)
	}
	return b.String()
}

// TestImportChunkedKeepsStorageQuota: an import whose body has no
// Content-Length (chunked) is held to the storage quota as it is read,
// like one that declares its length.
func TestImportChunkedKeepsStorageQuota(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	const limit = 64 << 10
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"storage_bytes": limit}), 200)
	body := ndjsonLines(256, 4<<10) // ≈ 1 MiB
	for _, chunked := range []bool{false, true} {
		var rd io.Reader = strings.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd) // hides the length: sent chunked
		}
		r, _ := http.NewRequest("POST", e.base+"/v1/tenants/acme/import", rd)
		r.Header.Set("Authorization", "Bearer "+k["admin"])
		r.Header.Set("Content-Type", "application/x-ndjson")
		if code, b := sendRaw(t, r); code != 507 || !strings.Contains(string(b), "storage_bytes") {
			t.Fatalf("chunked=%v: import past the storage quota: %d %s", chunked, code, b)
		}
		st := e.must(e.req("GET", "/v1/tenants/acme/stats", k["admin"], nil), 200).json(t)
		if got := st["bytes"].(float64); got > 2*limit {
			t.Fatalf("chunked=%v: the store holds %v bytes, the quota is %d", chunked, got, limit)
		}
	}
}

// TestQueryAfterLastSequence: paging after the largest possible sequence
// is past the end of the log (an empty page), not a wrap to its start.
func TestQueryAfterLastSequence(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:1")), 201)
	r := e.must(e.req("GET", "/v1/tenants/acme/events?after=18446744073709551615", k["reader"], nil), 200)
	if evs := r.json(t)["events"].([]any); len(evs) != 0 {
		t.Fatalf("after the last possible sequence: %d events", len(evs))
	}
	r = e.must(e.req("GET", "/v1/tenants/acme/events?after=18446744073709551615", k["reader"], nil, "Accept", "application/x-ndjson"), 200)
	if lines := strings.Count(string(r.body), "\n"); lines != 1 {
		t.Fatalf("NDJSON after the last possible sequence: %d lines: %s", lines, r.body)
	}
}

// TestEntityPageReadsOnlyThePage: a page of an entity's stream costs the
// page, not the whole stream (a long stream must not let one request take
// the server's memory); it holds only that entity (not one it is a prefix
// of), in clock order from after_clock.
func TestEntityPageReadsOnlyThePage(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	pad := strings.Repeat("x", 28<<10)
	events := make([]any, 36)
	for i := range events {
		ent := "order:1"
		if i%2 == 1 {
			ent = "order:10"
		}
		events[i] = map[string]any{"entity": ent, "scope": "shop", "kind": "1:1", "payload": map[string]any{"pad": pad}}
	}
	for range 20 { // ≈ 20 MB, half of it order:1
		e.must(e.req("POST", "/v1/tenants/acme/batches", k["writer"], map[string]any{"events": events}), 201)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := e.must(e.req("GET", "/v1/tenants/acme/entities/order:1/events?limit=2&after_clock=5", k["reader"], nil), 200)
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
		t.Errorf("a 2-event page allocated %d KiB", got>>10)
	} else {
		t.Logf("a 2-event page allocated %d KiB", got>>10)
	}
	evs := r.json(t)["events"].([]any)
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2", len(evs))
	}
	for i, ev := range evs {
		m := ev.(map[string]any)
		if m["entity"] != "order:1" || m["clock"].(float64) != float64(6+i) {
			t.Fatalf("event %d: entity %v clock %v, want order:1 clock %d", i, m["entity"], m["clock"], 6+i)
		}
	}
	// The page stopped at its limit: it says where the next one starts;
	// the stream's last page says it is the end.
	if next := r.json(t)["next_after_clock"]; next != float64(7) {
		t.Fatalf("next_after_clock %v, want 7 (the last clock of the page)", next)
	}
	last := e.must(e.req("GET", "/v1/tenants/acme/entities/order:1/events?after_clock=355", k["reader"], nil), 200).json(t)
	if evs := last["events"].([]any); len(evs) != 4 || last["next_after_clock"] != nil {
		t.Fatalf("the stream's last page: %d events, next_after_clock %v; want 4 and null", len(evs), last["next_after_clock"])
	}
}

// fill writes about 20 MB to a tenant (in batches within core's 1 MiB).
func fill(e *env, tenant, writer string) {
	e.t.Helper()
	pad := strings.Repeat("x", 28<<10)
	events := make([]any, 36)
	for i := range events {
		events[i] = map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{"pad": pad}}
	}
	for range 20 {
		e.must(e.req("POST", "/v1/tenants/"+tenant+"/batches", writer, map[string]any{"events": events}), 201)
	}
}

// TestDeleteEndsSlowStreams: a tenant's long responses (an export, an
// NDJSON query) read slowly but steadily end when the tenant is deleted
// (or its key revoked): they cannot hold its deletion off.
func TestDeleteEndsSlowStreams(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	fill(e, "acme", k["writer"])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan error, 2)
	var fast atomic.Bool
	for _, path := range []string{"/v1/tenants/acme/export", "/v1/tenants/acme/events"} {
		r, _ := http.NewRequestWithContext(ctx, "GET", e.base+path, nil)
		r.Header.Set("Authorization", "Bearer "+k["admin"])
		r.Header.Set("Accept", "application/x-ndjson")
		res, err := http.DefaultClient.Do(r)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, res.StatusCode, err)
		}
		go func() { // 16 KiB every 100 ms (20 MB would take two minutes), then at full speed
			defer res.Body.Close()
			buf := make([]byte, 16<<10)
			total := 0
			for {
				n, err := io.ReadFull(res.Body, buf)
				total += n
				if err != nil {
					ended <- fmt.Errorf("%s: %d bytes, then %w", path, total, err)
					return
				}
				if !fast.Load() {
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	done := make(chan int, 1)
	go func() { done <- statusOf("DELETE", e.base+"/v1/admin/tenants/acme?confirm=acme", opToken) }()
	select {
	case st := <-done:
		if st != 204 {
			t.Fatalf("delete: %d", st)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("slowly read responses still hold the tenant's deletion 4s later")
	}
	fast.Store(true) // what is still in the socket buffers drains, then the cut shows
	for range 2 {
		select {
		case err := <-ended:
			// A cut stream: not the whole 20 MB, and not a clean end.
			if !strings.Contains(err.Error(), "unexpected EOF") {
				t.Errorf("the response ended as if complete: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a response of the deleted tenant is still streaming")
		}
	}
}

// statusOf sends a request without a body (safe from any goroutine) and
// returns its status, or 0 if it failed.
func statusOf(method, url, token string) int {
	r, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0
	}
	r.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// TestQueryPageBoundedInBytes: a JSON page of large events stops at
// MaxPageBytes of payload (with next_after set) instead of building the
// whole limit in memory (17 MB in one page cost ≈ 125 MiB of allocations;
// an 8 MiB page ≈ 50); paging on still returns every event once.
func TestQueryPageBoundedInBytes(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	pad := strings.Repeat("x", 700<<10)
	const n = 24 // ≈ 17 MB
	for range n {
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], map[string]any{"entity": "order:1", "scope": "shop", "kind": "1:1", "payload": map[string]any{"pad": pad}}), 201)
	}
	r := e.must(e.req("GET", "/v1/tenants/acme/events?limit=1000", k["reader"], nil), 200)
	if len(r.body) > 10<<20 {
		t.Errorf("the first page is %d MiB", len(r.body)>>20)
	}
	seen, pages := 0, 0
	for {
		m := r.json(t)
		pages++
		for _, ev := range m["events"].([]any) {
			if g := ev.(map[string]any)["global_sequence"].(float64); int(g) != seen {
				t.Fatalf("page %d: sequence %v, want %d", pages, g, seen)
			}
			seen++
		}
		next, ok := m["next_after"].(float64)
		if !ok {
			break
		}
		r = e.must(e.req("GET", fmt.Sprintf("/v1/tenants/acme/events?limit=1000&after=%d", int(next)), k["reader"], nil), 200)
	}
	if seen != n || pages < 2 {
		t.Fatalf("%d events in %d pages, want %d in several", seen, pages, n)
	}
}

// TestLongNamesKeepTheIndexQuota: a writer sending events with long
// entity and scope names, within every size and storage quota, fills the
// store's in-memory index as fast as its disk: index_bytes refuses the
// batch (507 QUOTA_EXCEEDED naming it) that would pass it, writing none
// of it, and so does an import; another tenant writes on.
func TestLongNamesKeepTheIndexQuota(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	other := e.tenant("globex")
	const limit = 2 << 20
	e.must(e.req("PUT", "/v1/admin/tenants/acme/quotas", opToken, map[string]any{"index_bytes": limit}), 200)
	long := strings.Repeat("n", 1000)
	batch := func(from int) map[string]any {
		evs := make([]map[string]any, 100)
		for i := range evs {
			evs[i] = map[string]any{"entity": fmt.Sprintf("e:%d:%s", from+i, long), "scope": fmt.Sprintf("s:%d:%s", from+i, long), "kind": "1:1", "payload": map[string]any{}}
		}
		return map[string]any{"events": evs}
	}
	refused := false
	for i := 0; i < 100 && !refused; i++ {
		r := e.req("POST", "/v1/tenants/acme/batches", k["writer"], batch(i*100))
		switch {
		case r.status == 201:
		case r.status == 507 && strings.Contains(string(r.body), "index_bytes"):
			refused = true
		default:
			t.Fatalf("batch %d: %d %s", i, r.status, r.body)
		}
	}
	if !refused {
		t.Fatalf("10,000 events with 2 KB of names each were all taken under an index quota of %d bytes", limit)
	}
	st := e.must(e.req("GET", "/v1/tenants/acme/stats", k["admin"], nil), 200).json(t)
	usage := st["usage"].(map[string]any)
	if used := usage["index_bytes"].(float64); used > limit || used < limit/2 {
		t.Fatalf("the index holds an estimated %v bytes after the refusal, the quota is %d", used, limit)
	}
	if events := st["events"].(float64); int(events)%100 != 0 {
		t.Fatalf("%v events stored: a refused batch left part of itself", events)
	}
	var imp strings.Builder
	for i := range 50 {
		fmt.Fprintf(&imp, `{"id":"0190a2b4-0000-7000-8000-%012x","entity":"imp:%d:%s","scope":"s","kind":"0x1:0x1","clock":0,"global_sequence":0,"correlation_id":"0190a2b4-0000-7000-8000-%012x","causation_id":null,"timestamp_us":1,"payload":{}}`+"\n", i+1, i, long, i+1)
	}
	r := e.req("POST", "/v1/tenants/acme/import", k["admin"], imp.String(), "Content-Type", "application/x-ndjson")
	if r.status != 507 || !strings.Contains(string(r.body), "index_bytes") {
		t.Fatalf("an import past the index quota: %d %s", r.status, r.body)
	}
	e.must(e.req("POST", "/v1/tenants/globex/events", other["writer"], appendBody("order:1")), 201)
}
