package httpapi

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/sync/semaphore"
)

// trickle reads like a slow client: at most n bytes a read.
type trickle struct {
	r io.Reader
	n int
}

func (t trickle) Read(p []byte) (int, error) { return t.r.Read(p[:min(len(p), t.n)]) }

// TestReadAllRoomFollowsTheBytes: a body's buffer starts at most
// largeBody bytes whatever its Content-Length declares, grows as bytes
// arrive, and asks the budget for every byte of room past largeBody.
func TestReadAllRoomFollowsTheBytes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		body     int   // bytes sent
		declared int64 // Content-Length (≤ 0: unknown)
	}{
		{"a declared 32 MiB that sends 5 bytes", 5, 32 << 20},
		{"small, length known", 700, 700},
		{"1 MiB, length known", 1 << 20, 1 << 20},
		{"200 KiB, chunked", 200 << 10, -1},
		{"exactly largeBody", largeBody, largeBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := bytes.Repeat([]byte("x"), tc.body)
			var charged int64
			b, err := readAll(trickle{bytes.NewReader(want), 16 << 10}, tc.declared, 32<<20+1, func(n int64) error {
				if n < 0 {
					t.Fatalf("charged %d", n)
				}
				charged += n
				return nil
			})
			if err != nil || !bytes.Equal(b, want) {
				t.Fatalf("read %d bytes, err %v; want the %d sent", len(b), err, len(want))
			}
			if got := max(int64(cap(b))-largeBody, 0); charged != got {
				t.Fatalf("charged %d bytes for a buffer of %d, want %d", charged, cap(b), got)
			}
			if limit := max(2*int64(tc.body), 512, min(tc.declared+1, largeBody)); int64(cap(b)) > limit {
				t.Fatalf("a body of %d bytes (declared %d) took a buffer of %d, want at most %d", tc.body, tc.declared, cap(b), limit)
			}
		})
	}
}

// TestReadAllStopsWhenTheBudgetRefuses: a refused charge ends the read
// with its error before the buffer grows.
func TestReadAllStopsWhenTheBudgetRefuses(t *testing.T) {
	refused := errors.New("no room")
	b, err := readAll(strings.NewReader(strings.Repeat("x", 300<<10)), 300<<10, 32<<20+1, func(n int64) error {
		if n > 0 {
			return refused
		}
		return nil
	})
	if !errors.Is(err, refused) {
		t.Fatalf("err %v, want the budget's refusal", err)
	}
	if cap(b) > largeBody {
		t.Fatalf("buffer grew to %d past a refused charge", cap(b))
	}
}

// TestRequestBudgetIsShared: room charged by one request is not
// available to another until the first ends; past the budget a request
// gets 503 BUSY with Retry-After.
func TestRequestBudgetIsShared(t *testing.T) {
	a := &API{requests: &requestBudget{sem: semaphore.NewWeighted(100 << 10)}}
	c1, c2 := &call{a: a}, &call{a: a}
	if err := c1.chargeBody(60 << 10); err != nil {
		t.Fatal(err)
	}
	err := c2.chargeBody(60 << 10)
	var ae *apiError
	if !errors.As(err, &ae) || ae.status != http.StatusServiceUnavailable || ae.code != "BUSY" || ae.retryAfter <= 0 {
		t.Fatalf("second body past the budget: %v, want 503 BUSY with Retry-After", err)
	}
	c1.releaseBody()
	if err := c2.chargeBody(60 << 10); err != nil {
		t.Fatalf("after the first request ended: %v", err)
	}
	c2.releaseBody()
	if !a.requests.sem.TryAcquire(100 << 10) {
		t.Fatal("the budget did not come back whole")
	}
}
