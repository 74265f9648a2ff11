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
		{"32 MiB, length known", 32 << 20, 32 << 20},
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
			if limit := max(2*int64(tc.body), 512, min(tc.declared+1, bodyStart)); int64(cap(b)) > limit {
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

// TestReadAllGrowsToTheLengthOnce: a body of a known length ends in a
// buffer of exactly length+1 bytes, without a last growth (and copy) of
// one byte to find its end.
func TestReadAllGrowsToTheLengthOnce(t *testing.T) {
	for _, length := range []int64{1 << 20, 32 << 20, 100000} {
		var last int64
		b, err := readAll(bytes.NewReader(make([]byte, length)), length, 32<<20+1, func(n int64) error { last = n; return nil })
		if err != nil || int64(len(b)) != length || int64(cap(b)) != length+1 {
			t.Fatalf("length %d: read %d into %d, err %v; want a buffer of length+1", length, len(b), cap(b), err)
		}
		if last <= 1 {
			t.Fatalf("length %d: the last growth charged %d bytes (a growth for the EOF alone)", length, last)
		}
	}
}

// TestRequestBudgetIsShared: room charged by one request is not
// available to another until the first ends; one tenant holds at most its
// share, the others still get room; past either a request gets 503 BUSY
// with Retry-After.
func TestRequestBudgetIsShared(t *testing.T) {
	a := &API{requests: &requestBudget{sem: semaphore.NewWeighted(100 << 10), perOwner: 70 << 10, held: map[string]int64{}}}
	busy := func(err error) bool {
		var ae *apiError
		return errors.As(err, &ae) && ae.status == http.StatusServiceUnavailable && ae.code == "BUSY" && ae.retryAfter > 0
	}
	acme1, acme2, other := &call{a: a, tenant: "acme"}, &call{a: a, tenant: "acme"}, &call{a: a, tenant: "other"}
	if err := acme1.chargeBody(60 << 10); err != nil {
		t.Fatal(err)
	}
	if err := acme2.chargeBody(20 << 10); !busy(err) {
		t.Fatalf("a tenant's second body past its share: %v, want 503 BUSY with Retry-After", err)
	}
	if err := other.chargeBody(30 << 10); err != nil {
		t.Fatalf("another tenant, within the budget: %v", err)
	}
	if err := other.chargeBody(20 << 10); !busy(err) {
		t.Fatalf("past the whole budget: %v, want 503 BUSY", err)
	}
	acme1.releaseBody()
	if err := acme2.chargeBody(60 << 10); err != nil {
		t.Fatalf("after the first request ended: %v", err)
	}
	acme2.releaseBody()
	other.releaseBody()
	if !a.requests.sem.TryAcquire(100<<10) || len(a.requests.held) != 0 {
		t.Fatalf("the budget did not come back whole: %v", a.requests.held)
	}
}
