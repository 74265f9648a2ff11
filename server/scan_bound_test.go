package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server/httpapi"
)

// A read of a region few events match — a category alone, which no
// index list narrows — costs about what a page costs however large the
// log: a page examines at most httpapi.PageExamine index entries and
// says where to go on (perhaps with no events), the SDK's Query goes on
// over such pages and finds every event, and the long reads (an NDJSON
// query, an event stream catching up) walk on at the tenant's request
// rate, a request for each PageExamine entries past the first.
func TestReadsOfARareRegionAreBoundedPerRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 200,000 events")
	}
	cfg := servertest.Config(t)
	// Heartbeats more often than a paced step's wait (half a second at
	// 2 requests a second): the wait goes on across them.
	cfg.SSEHeartbeat = 300 * time.Millisecond
	srv := servertest.Start(t, cfg)
	ctx := context.Background()
	op, err := client.New(srv.URL, srv.Token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Admin().CreateTenant(ctx, "big", &client.Quotas{EventsPerSecond: -1, BytesPerSecond: -1}, nil); err != nil {
		t.Fatal(err)
	}
	k, err := op.Admin().IssueKey(ctx, "big", "app", "admin")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.URL, k.Key)
	if err != nil {
		t.Fatal(err)
	}
	big := c.Tenant("big")
	// Category 2 at sequence 10 and at the end of 3 pages' worth of
	// category 1.
	total := 3*httpapi.PageExamine + 1000
	rare := map[int]bool{10: true, total - 2: true, total - 1: true}
	batch := make([]client.AppendRequest, 0, 4096)
	for seq := 0; seq < total; seq++ {
		kind := "1:1"
		if rare[seq] {
			kind = "2:1"
		}
		batch = append(batch, client.AppendRequest{Entity: fmt.Sprintf("e:%d", seq%500), Scope: "s", Kind: kind, Payload: json.RawMessage(`{}`)})
		if len(batch) == cap(batch) || seq == total-1 {
			if _, err := big.AppendBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	cat := 2
	q := client.Query{Category: &cat}

	// One page: the event at 10, then the rest of its share of the log.
	p, err := big.QueryPage(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 1 || p.Events[0].GlobalSequence != 10 || p.NextAfter == nil || *p.NextAfter >= httpapi.PageExamine {
		t.Fatalf("first page of category 2: %d events, next_after %v; want the event at 10 and a next_after within the first %d entries", len(p.Events), p.NextAfter, httpapi.PageExamine)
	}
	// The next page finds none in its share and says where to go on.
	q2 := q
	q2.After = p.NextAfter
	p2, err := big.QueryPage(ctx, q2)
	if err != nil {
		t.Fatal(err)
	}
	if len(p2.Events) != 0 || p2.NextAfter == nil || *p2.NextAfter != *p.NextAfter+httpapi.PageExamine {
		t.Fatalf("second page: %d events, next_after %v; want none and next_after %d", len(p2.Events), p2.NextAfter, *p.NextAfter+httpapi.PageExamine)
	}
	var seqs []uint64
	for ev, err := range big.Query(ctx, q) {
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ev.GlobalSequence)
	}
	if want := []uint64{10, uint64(total - 2), uint64(total - 1)}; fmt.Sprint(seqs) != fmt.Sprint(want) {
		t.Fatalf("Query over category 2: %v, want %v", seqs, want)
	}

	// A named cursor over the region: PollCursor commits past the empty
	// stretches and delivers every event once.
	if err := big.DefineCursor(ctx, "rare", client.CursorRegion{Category: &cat}); err != nil {
		t.Fatal(err)
	}
	seqs = seqs[:0]
	for range 10 {
		evs, err := big.PollCursor(ctx, "rare", 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			seqs = append(seqs, ev.GlobalSequence)
		}
		if len(evs) > 0 {
			if err := big.CommitCursor(ctx, "rare", evs[len(evs)-1].GlobalSequence+1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if want := []uint64{10, uint64(total - 2), uint64(total - 1)}; fmt.Sprint(seqs) != fmt.Sprint(want) {
		t.Fatalf("PollCursor over category 2: %v, want %v", seqs, want)
	}
	// One page as the server answers it: from the start of a cursor
	// defined again, none before the bound, more.
	if err := big.DefineCursor(ctx, "late", client.CursorRegion{Category: &cat}); err != nil {
		t.Fatal(err)
	}
	if err := big.CommitCursor(ctx, "late", 11); err != nil {
		t.Fatal(err)
	}
	cp, err := big.PollCursorPage(ctx, "late", 100)
	if err != nil || len(cp.Events) != 0 || !cp.More || cp.NextPosition != 11+httpapi.PageExamine {
		t.Fatalf("a cursor page from 11: %+v, %v; want none, more, next position %d", cp, err, 11+httpapi.PageExamine)
	}

	// The long reads walk at the request rate: 2 a second, a burst of 2.
	if _, err := op.Admin().SetQuotas(ctx, "big", client.Quotas{EventsPerSecond: -1, BytesPerSecond: -1, RequestsPerSecond: 2, RequestsBurst: 2}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the bucket full again
	req, _ := http.NewRequest("GET", srv.URL+"/v1/tenants/big/events?category=2", nil)
	req.Header.Set("Authorization", "Bearer "+k.Key)
	req.Header.Set("Accept", "application/x-ndjson")
	began := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	res.Body.Close()
	took := time.Since(began)
	if res.StatusCode != 200 || len(lines) != 4 || !strings.Contains(lines[3], `"next_after":null`) {
		t.Fatalf("NDJSON query: %d, %d lines: %q", res.StatusCode, len(lines), lines)
	}
	// About 200,000 entries: the request and 3 more (one a PageExamine
	// past the first), from a bucket of 2 at 2 a second: 1 s at least.
	if took < 900*time.Millisecond {
		t.Errorf("the NDJSON query walked the log in %s, faster than the tenant's request rate allows", took)
	}
	t.Logf("NDJSON query of category 2: %s", took)

	time.Sleep(2100 * time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	began = time.Now()
	sub := big.Subscribe(sctx, q, client.FromStart())
	defer sub.Close()
	seqs = seqs[:0]
	for ev, err := range sub.Events() {
		if err != nil {
			t.Fatal(err)
		}
		if seqs = append(seqs, ev.GlobalSequence); len(seqs) == 3 {
			break
		}
	}
	took = time.Since(began)
	if took < 900*time.Millisecond {
		t.Errorf("the event stream caught up over the log in %s, faster than the tenant's request rate allows", took)
	}
	t.Logf("event stream catching up on category 2: %s", took)
	// Charged once: the tenant owes nothing a second later.
	sub.Close()
	time.Sleep(1100 * time.Millisecond)
	if _, err := big.QueryPage(ctx, client.Query{Limit: 1}); err != nil {
		t.Errorf("a request a second after the stream caught up: %v", err)
	}

	// Reads that send every event — an export, an NDJSON query of them
	// all — take a request for each 1,000 events past the first 1,000,
	// as pages would: about 200 here, at 100 a second.
	if _, err := op.Admin().SetQuotas(ctx, "big", client.Quotas{EventsPerSecond: -1, BytesPerSecond: -1, RequestsPerSecond: 100, RequestsBurst: 1}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/tenants/big/export", "/v1/tenants/big/events"} {
		time.Sleep(100 * time.Millisecond)
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+k.Key)
		req.Header.Set("Accept", "application/x-ndjson")
		began := time.Now()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			n++
		}
		res.Body.Close()
		took := time.Since(began)
		if res.StatusCode != 200 || n < total {
			t.Fatalf("%s: %d, %d lines, want %d events", path, res.StatusCode, n, total)
		}
		if took < 1500*time.Millisecond {
			t.Errorf("%s sent %d events in %s, faster than the tenant's request rate allows", path, total, took)
		}
		t.Logf("%s of %d events at 100 requests a second: %s", path, total, took)
	}
	// So does an event stream catching up on every event.
	time.Sleep(100 * time.Millisecond)
	sctx2, cancel2 := context.WithTimeout(ctx, 60*time.Second)
	defer cancel2()
	began = time.Now()
	all := big.Subscribe(sctx2, client.Query{}, client.FromStart())
	defer all.Close()
	n := 0
	for _, err := range all.Events() {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == total {
			break
		}
	}
	if took := time.Since(began); took < 1500*time.Millisecond {
		t.Errorf("an event stream caught up on %d events in %s, faster than the tenant's request rate allows", total, took)
	} else {
		t.Logf("an event stream catching up on %d events at 100 requests a second: %s", total, took)
	}
}
