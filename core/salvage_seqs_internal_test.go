package core

import "testing"

// TestWalkedSeqsAnyOrder: a salvage records the sequences it walked in any
// order — ascending runs, then lower ones (a copied or crafted segment),
// descending or interleaved — and tells a sequence walked twice, without
// shifting its ranges for each (the evens, then the odds from the top, of
// 200,000 sequences).
func TestWalkedSeqsAnyOrder(t *testing.T) {
	const n = 200_000
	var w walkedSeqs
	for q := uint64(0); q < n; q += 2 {
		if !w.insert(q) {
			t.Fatalf("%d reported walked before", q)
		}
	}
	for q := uint64(n - 1); q < n; q -= 2 {
		if !w.insert(q) {
			t.Fatalf("%d reported walked before", q)
		}
	}
	for _, q := range []uint64{0, 1, 2, n - 1, n / 2} {
		if w.insert(q) {
			t.Fatalf("%d walked twice not told", q)
		}
	}
	if gaps := w.all().gaps(n, "the test"); len(gaps) != 0 {
		t.Fatalf("every sequence walked, yet gaps %v", gaps[:1])
	}
	if gaps := w.all().gaps(n+5, "the test"); len(gaps) != 1 || gaps[0].From != n || gaps[0].To != n+5 {
		t.Fatalf("gaps past the end: %v", gaps)
	}
}
