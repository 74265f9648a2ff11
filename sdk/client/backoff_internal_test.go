package client

import (
	"testing"
	"time"
)

// TestBackoffBounded: however many attempts came before, the wait is
// positive and at most 2 s (a shift past 38 doublings made it negative,
// then zero, and a subscription asked a down server thousands of times a
// second).
func TestBackoffBounded(t *testing.T) {
	for _, i := range []int{1, 2, 7, 8, 39, 40, 58, 64, 1000, 1 << 30} {
		if d := backoff(i, nil); d <= 0 || d > 2*time.Second {
			t.Fatalf("backoff(%d) = %v", i, d)
		}
	}
}
