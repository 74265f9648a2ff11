package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server/httpapi"
)

// commitHookTransport runs hook once, before the first request whose method and path
// suffix match, then forwards it.
type commitHookTransport struct {
	rt     http.RoundTripper
	method string
	suffix string
	once   sync.Once
	hook   func()
}

func (h *commitHookTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == h.method && strings.HasSuffix(r.URL.Path, h.suffix) {
		h.once.Do(h.hook)
	}
	return h.rt.RoundTrip(r)
}

// PollCursor's commit past an empty page holds only for the definition
// and the position the page was read from: a cursor deleted and defined
// again (another region, position 0) between the page and the commit is
// not moved past events of its own region, and the poll goes on over the
// new definition.
func TestPollCursorCommitsOnlyTheCursorItRead(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t))
	ctx := context.Background()
	op, err := client.New(srv.URL, srv.Token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Admin().CreateTenant(ctx, "t", &client.Quotas{EventsPerSecond: -1, BytesPerSecond: -1, RequestsPerSecond: -1}, nil); err != nil {
		t.Fatal(err)
	}
	k, err := op.Admin().IssueKey(ctx, "t", "app", "admin")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(srv.URL, k.Key)
	if err != nil {
		t.Fatal(err)
	}
	tn := admin.Tenant("t")
	// seq 0: category 2; then PageExamine+100 of category 1; then category 2.
	total := httpapi.PageExamine + 102
	batch := make([]client.AppendRequest, 0, 4096)
	for seq := 0; seq < total; seq++ {
		kind := "1:1"
		if seq == 0 || seq == total-1 {
			kind = "2:1"
		}
		batch = append(batch, client.AppendRequest{Entity: fmt.Sprintf("e:%d", seq%100), Scope: "s", Kind: kind, Payload: json.RawMessage(`{}`)})
		if len(batch) == cap(batch) || seq == total-1 {
			if _, err := tn.AppendBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	two, one := 2, 1
	if err := tn.DefineCursor(ctx, "c", client.CursorRegion{Category: &two}); err != nil {
		t.Fatal(err)
	}
	// The consumer: its PollCursor's implicit commit is held until the
	// cursor is redefined by an administrator.
	rt := &commitHookTransport{rt: http.DefaultTransport, method: "POST", suffix: "/cursors/c/commit"}
	rt.hook = func() {
		if err := tn.DeleteCursor(ctx, "c"); err != nil {
			t.Error(err)
		}
		if err := tn.DefineCursor(ctx, "c", client.CursorRegion{Category: &one}); err != nil {
			t.Error(err)
		}
	}
	consumerClient, err := client.New(srv.URL, k.Key, client.Options{HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		t.Fatal(err)
	}
	consumer := consumerClient.Tenant("t")
	// First poll: the event at 0, committed explicitly (ordinary use) via
	// the admin client so the hook does not fire on it.
	evs, err := consumer.PollCursor(ctx, "c", 10)
	if err != nil || len(evs) != 1 || evs[0].GlobalSequence != 0 {
		t.Fatalf("first poll: %v %v", evs, err)
	}
	if err := tn.CommitCursor(ctx, "c", 1); err != nil {
		t.Fatal(err)
	}
	// Second poll: an empty page at the examine bound, then the implicit
	// commit (the redefine happens just before it reaches the server).
	evs, err = consumer.PollCursor(ctx, "c", 10)
	t.Logf("second poll: %d events (first %v), err %v", len(evs), firstSeq(evs), err)
	cs, err := tn.Cursors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		t.Logf("cursor %+v", c)
	}
	// The redefined cursor (category 1, from the log's beginning) must
	// deliver its first event, at 1.
	p, err := tn.PollCursorPage(ctx, "c", 10)
	if err != nil {
		t.Fatal(err)
	}
	if p.Committed != 0 || len(p.Events) == 0 || p.Events[0].GlobalSequence != 1 {
		t.Errorf("the cursor defined anew over category 1 (position 0): committed %d, first event %v; want committed 0 and the event at 1 — PollCursor's implicit commit for the old definition skipped %d of its events", p.Committed, firstSeq(p.Events), p.Committed-1)
	}
}

func firstSeq(evs []client.Event) any {
	if len(evs) == 0 {
		return nil
	}
	return evs[0].GlobalSequence
}
