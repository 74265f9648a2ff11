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
// nothing. Another tenant's response waiting for room waits while they
// are blocked writing; once they have taken nothing for stallAfter (not
// sooner: a slow client is not cut off at once) it cuts off those —
// their responses end, broken — and gets the room.
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
	// The budget is full. The next take waits while the holders are
	// blocked writing, cuts them off once they have taken nothing for
	// stallAfter (not sooner: a slow client is not cut off at once), and
	// gets the room.
	full := time.Now()
	release, err := budget.take(context.Background(), "victim", 1<<20, nil)
	if err != nil {
		t.Fatalf("a take while four stalled responses held the whole budget: %v; want them cut off and the room had", err)
	}
	if waited := time.Since(full); waited < stallAfter-200*time.Millisecond {
		t.Fatalf("room had after %v: the holders were cut off before they had stalled for %v", waited, stallAfter)
	}
	release()
	n := int(stalls.cutOff.Load())
	if n < 1 {
		t.Fatal("room had with no response counted cut off")
	}
	for range n {
		select {
		case err := <-ended:
			if err == nil || errors.Is(err, context.Canceled) {
				t.Errorf("a stalled response ended with %v; want its write cut off", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d responses counted cut off, and one of them has not ended", n)
		}
	}
}
