package core

import "testing"

// The writer yields for company while yields bring requests, and once in
// 16 groups after four in a row brought none.
func TestYielderBacksOffAndComesBack(t *testing.T) {
	var y yielder
	for i := 0; i < 4; i++ {
		if !y.worth() {
			t.Fatalf("yield %d refused before four misses", i)
		}
		y.paid(false)
	}
	yields := 0
	for i := 0; i < 64; i++ {
		if y.worth() {
			yields++
			y.paid(false)
		}
	}
	if yields != 4 {
		t.Fatalf("after four misses: %d yields in 64 groups, want 4", yields)
	}
	// A yield that finds a request brings back a yield per group.
	for !y.worth() {
	}
	y.paid(true)
	for i := 0; i < 8; i++ {
		if !y.worth() {
			t.Fatalf("group %d after a paying yield: no yield", i)
		}
		y.paid(true)
	}
}
