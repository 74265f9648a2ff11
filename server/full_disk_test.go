//go:build linux

package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testenv"
)

// appendRaw posts one event of ~2 KiB to tenant acme and returns the
// status, the Retry-After header and the problem's code and detail.
func appendRaw(t *testing.T, hc *http.Client, base, key string, i int) (status int, retryAfter, code, detail string) {
	t.Helper()
	body := fmt.Appendf(nil, `{"entity":"disk:%d","scope":"s","kind":"1:1","payload":{"p":"%s"}}`, i, strings.Repeat("d", 2000))
	req, _ := http.NewRequest("POST", base+"/v1/tenants/acme/events", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	var p struct{ Code, Detail string }
	_ = json.Unmarshal(out, &p)
	return res.StatusCode, res.Header.Get("Retry-After"), p.Code, p.Detail
}

// reopens is the server's batpak_tenant_store_reopens_total.
func reopens(t *testing.T, ps policyServer) int {
	t.Helper()
	for _, ln := range strings.Split(scrape(t, ps), "\n") {
		if v, ok := strings.CutPrefix(ln, "batpak_tenant_store_reopens_total "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("metric line %q", ln)
			}
			return n
		}
	}
	t.Fatal("/metrics has no batpak_tenant_store_reopens_total")
	return 0
}

// A tenant whose disk fills up gets 503 BUSY with Retry-After for its
// writes, saying the disk is full (not a 500), keeps what was
// acknowledged readable, and writes again by itself once the operator
// makes room: the server closes the stopped store and opens it afresh,
// ending the event streams that held it so that they resume there.
func TestFullDiskTenantWritesAgainOnceThereIsRoom(t *testing.T) {
	mnt := t.TempDir()
	testenv.MountTmpfs(t, mnt, "size=12m")
	ps := startTunedServer(t, mnt, nil)
	key := ps.newTenant(t, "acme", "w", "writer", "reader")
	stream := openSSE(t, ps.base, key, "")
	streamDone := make(chan struct{})
	go func() { defer close(streamDone); stream.read() }()

	hc := keepAliveClient(1)
	acked := 0
	// fill appends until a write fails, which must say the disk is full.
	fill := func(what string) {
		t.Helper()
		for limit := acked + 10000; ; acked++ {
			if acked > limit {
				t.Fatalf("%s: 10,000 more events of 2 KiB were acknowledged", what)
			}
			status, retry, code, detail := appendRaw(t, hc, ps.base, key, acked)
			if status == http.StatusCreated {
				continue
			}
			if status != http.StatusServiceUnavailable || code != "BUSY" || retry != "1" || !strings.Contains(detail, "disk is full") {
				t.Fatalf("%s: the write that found the disk full: %d %s %q (Retry-After %q), want 503 BUSY saying the disk is full, Retry-After 1", what, status, code, detail, retry)
			}
			return
		}
	}
	fill("filling the disk")
	firstFull := acked
	if acked < 1000 {
		t.Fatalf("only %d events of 2 KiB were acknowledged before the disk was full", acked)
	}
	if n := statEvents(t, ps.base, "acme", key); n != acked {
		t.Fatalf("stats while the disk is full: %d events; want the %d acknowledged", n, acked)
	}

	// While the disk stays full, writes keep coming: the stopped store
	// is not reopened (it would stop again, or fail to open and take the
	// tenant's reads with it); it goes on serving reads.
	before := reopens(t, ps)
	start := time.Now()
	for time.Since(start) < 2500*time.Millisecond {
		status, _, code, detail := appendRaw(t, hc, ps.base, key, acked)
		if status != http.StatusServiceUnavailable || !strings.Contains(detail, "disk is full") {
			t.Fatalf("a write while the disk stays full: %d %s %q", status, code, detail)
		}
	}
	elapsed := time.Since(start)
	if n := reopens(t, ps) - before; n != 0 {
		t.Fatalf("the store was reopened %d times in %v of writes to a full disk, want none while it stays full", n, elapsed)
	}
	if n := statEvents(t, ps.base, "acme", key); n != acked {
		t.Fatalf("stats while the disk stays full: %d events; want the %d acknowledged", n, acked)
	}

	testenv.ResizeTmpfs(t, mnt, "size=64m")
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, _, code, detail := appendRaw(t, hc, ps.base, key, acked)
		if status == http.StatusCreated {
			break
		}
		if status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("a write once there is room again: %d %s %q", status, code, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := statEvents(t, ps.base, "acme", key); n != acked+1 {
		t.Fatalf("stats after the store reopened: %d events; want %d", n, acked+1)
	}
	select {
	case <-streamDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the event stream that held the stopped store did not end")
	}
	if len(stream.seqs) != firstFull || stream.err == nil || !strings.Contains(stream.err.Error(), "cut off") {
		t.Fatalf("the stream got %d events and ended with %v; want the %d acknowledged before the first reopen, then a cutoff to resume from", len(stream.seqs), stream.err, firstFull)
	}
	// Resumed after its last event, the stream gets the rest.
	last := stream.seqs[len(stream.seqs)-1]
	resumed := openSSE(t, ps.base, key, fmt.Sprintf("?after=%d", last))
	go resumed.read()
	for deadline := time.Now().Add(10 * time.Second); resumed.n.Load() < int64(acked+1-firstFull); {
		if time.Now().After(deadline) {
			t.Fatalf("the resumed stream got %d of the %d events after %d", resumed.n.Load(), acked+1-firstFull, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resumed.c.Close()
}
