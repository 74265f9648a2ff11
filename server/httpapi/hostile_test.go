package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
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
				done := make(chan resp, 1)
				go func() { done <- e.req("DELETE", "/v1/admin/tenants/"+id+"?confirm="+id, opToken, nil) }()
				select {
				case r := <-done:
					if r.status != 204 {
						t.Fatalf("delete: %d %s", r.status, r.body)
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
