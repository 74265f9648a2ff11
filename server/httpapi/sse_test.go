package httpapi_test

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

type sseEvent struct{ id, event, data string }

// openStream subscribes and returns a reader of its events.
func (e *env) openStream(ctx context.Context, path, token, lastID string) (func() (sseEvent, bool), *http.Response) {
	e.t.Helper()
	r, _ := http.NewRequestWithContext(ctx, "GET", e.base+path, nil)
	r.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		r.Header.Set("Last-Event-ID", lastID)
	}
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		e.t.Fatalf("subscribe: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	next := func() (sseEvent, bool) {
		var ev sseEvent
		for sc.Scan() {
			l := sc.Text()
			switch {
			case l == "":
				if ev.event != "" {
					return ev, true
				}
			case strings.HasPrefix(l, "id: "):
				ev.id = l[4:]
			case strings.HasPrefix(l, "event: "):
				ev.event = l[7:]
			case strings.HasPrefix(l, "data: "):
				ev.data = l[6:]
			}
		}
		return ev, false
	}
	return next, res
}

// TestSSEResumeNoGapNoRepeat: events arrive with id = global sequence;
// after a disconnect, Last-Event-ID resumes with the next event of the
// region, nothing skipped or repeated; at shutdown the stream ends with
// "event: shutdown" and its resumable position.
func TestSSEResumeNoGapNoRepeat(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:"+strconv.Itoa(i))), 201)
		e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("user:"+strconv.Itoa(i))), 201)
	}
	c1, cancel1 := context.WithCancel(ctx)
	next, res := e.openStream(c1, "/v1/tenants/acme/subscribe?entity=order:", k["reader"], "")
	var got []string
	for len(got) < 3 {
		ev, ok := next()
		if !ok {
			t.Fatal("stream ended")
		}
		if ev.event != "event" || !strings.Contains(ev.data, `"entity":"order:`) {
			t.Fatalf("unexpected %+v", ev)
		}
		got = append(got, ev.id)
	}
	// Live: one more arrives.
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:9")), 201)
	ev, _ := next()
	got = append(got, ev.id)
	cancel1()
	res.Body.Close()
	if strings.Join(got, ",") != "0,2,4,6" {
		t.Fatalf("ids %v", got)
	}
	// While disconnected, more events.
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("user:9")), 201)
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:10")), 201)
	next, res = e.openStream(ctx, "/v1/tenants/acme/subscribe?entity=order:", k["reader"], "6")
	defer res.Body.Close()
	ev, _ = next()
	if ev.id != "8" {
		t.Fatalf("resumed at %+v, want id 8", ev)
	}
	// Shutdown ends the stream with its position.
	go e.shutdown()
	ev, ok := next()
	if !ok || ev.event != "shutdown" || !strings.Contains(ev.data, `"resume_after":8`) {
		t.Fatalf("at shutdown: %+v %v", ev, ok)
	}
}

func TestSSEBadStart(t *testing.T) {
	e := start(t, nil)
	k := e.tenant("acme")
	if r := e.req("GET", "/v1/tenants/acme/subscribe?after=99", k["reader"], nil); r.status != 400 {
		t.Fatalf("start past the end: %d %s", r.status, r.body)
	}
	if r := e.req("GET", "/v1/tenants/acme/subscribe", k["reader"], nil, "Last-Event-ID", "x"); r.status != 400 {
		t.Fatalf("bad Last-Event-ID: %d %s", r.status, r.body)
	}
	// The refusal names where the start came from.
	if r := e.req("GET", "/v1/tenants/acme/subscribe", k["reader"], nil, "Last-Event-ID", "99"); r.status != 400 || r.json(t)["field"] != "Last-Event-ID" {
		t.Fatalf("Last-Event-ID past the end: %d %s", r.status, r.body)
	}
}
