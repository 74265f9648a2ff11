package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestStalledReadersCutOffWhenOthersWait: four tenants' responses hold
// the whole response budget, written to clients over loopback that read
// nothing. Another tenant's response waiting for room is refused while
// they have stalled for less than stallAfter (a slow client is not cut
// off at once); once they have stalled longer, the next wait cuts them
// off — their responses end, broken — and gets the room.
func TestStalledReadersCutOffWhenOthersWait(t *testing.T) {
	stalls := newStallSet()
	budget := newBodyBudget(stalls)
	ended := make(chan error, 4)
	held := make(chan struct{}, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w, writeTimeout: time.Minute}
		release, err := budget.take(r.Context(), r.URL.Query().Get("tenant"), MaxResponseBytesPerTenant, rec)
		if err != nil {
			ended <- err
			return
		}
		defer release()
		held <- struct{}{}
		_, err = rec.Write(make([]byte, 64<<20)) // more than loopback's socket buffers: blocks
		ended <- err
	}))
	defer srv.Close()
	for i := range 4 {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close() // and never read from
		fmt.Fprintf(conn, "GET /?tenant=t%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
	}
	for range 4 {
		select {
		case <-held:
		case err := <-ended:
			t.Fatalf("a holder ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("the four holders did not take the budget")
		}
	}
	// Not stalled for long yet: the budget is full, nobody is cut off.
	if _, err := budget.take(context.Background(), "victim", 1<<20, nil); err == nil {
		t.Fatal("room found while four responses held the whole budget")
	}
	select {
	case err := <-ended:
		t.Fatalf("a response cut off before it had stalled for %v: %v", stallAfter, err)
	default:
	}
	time.Sleep(stallAfter + 100*time.Millisecond)
	release, err := budget.take(context.Background(), "victim", 1<<20, nil)
	if err != nil {
		t.Fatalf("after the holders stalled for %v: %v; want them cut off and the room had", stallAfter, err)
	}
	release()
	for range 4 {
		select {
		case err := <-ended:
			if err == nil || errors.Is(err, context.Canceled) {
				t.Errorf("a stalled response ended with %v; want its write cut off", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a stalled response was not cut off")
		}
	}
	if n := stalls.cutOff.Load(); n != 4 {
		t.Fatalf("%d responses counted cut off, want 4", n)
	}
}
