package index

import (
	"iter"
	"slices"
)

// Causal links. Every visible event whose cause is a visible event of the
// store is a child of that event: Entry.Child names the newest child, and
// the sibling array (4 bytes per sequence) links each child to the next
// older one, so the children of an event are found without a scan. A
// child's sequence is always greater than its cause's (a cause is
// published before anything names it), so the links cannot form a cycle.
// An event that is later removed keeps its links; walks skip it and what
// it caused, as Ancestors stops at a removed cause. Events whose
// correlation id is not their own id are filed in a group per correlation
// id (Correlated flag; 4 bytes per member and one map entry per group).

// Sibling returns one more than the sequence of the next older event with
// the same cause as seq (0: none). Caller holds the lock.
func (ix *Index) Sibling(seq uint32) uint32 {
	return ix.sibling[seq>>chunkBits][seq&(chunkSize-1)]
}

// SetSibling sets Sibling(seq). Only Open calls it (restoring a
// checkpoint), on an index no one else sees yet.
func (ix *Index) SetSibling(seq, next uint32) {
	ix.sibling[seq>>chunkBits][seq&(chunkSize-1)] = next
}

// CorrelationGroups yields every correlation group: the correlation id and
// the sequences of its members other than the event with that id, in
// order. Caller holds the lock.
func (ix *Index) CorrelationGroups() iter.Seq2[[16]byte, []uint32] {
	return func(yield func([16]byte, []uint32) bool) {
		for k, seqs := range ix.corr {
			if !yield(k, seqs) {
				return
			}
		}
	}
}

// NumCorrelationGroups counts the correlation groups. Caller holds the
// lock.
func (ix *Index) NumCorrelationGroups() int { return len(ix.corr) }

// ReserveCorrelationGroups makes room for n correlation groups in an index
// that has none yet. Only Open calls it (restoring a checkpoint).
func (ix *Index) ReserveCorrelationGroups(n int) {
	if len(ix.corr) == 0 {
		ix.corr = make(map[[16]byte][]uint32, n)
	}
}

// SetCorrelationGroup files seqs (in order) under correlation id corr.
// Only Open calls it (restoring a checkpoint), on an index no one else
// sees yet.
func (ix *Index) SetCorrelationGroup(corr [16]byte, seqs []uint32) {
	old, had := ix.corr[corr]
	if !had {
		ix.names += estCorrBytes
	}
	ix.names += int64(len(seqs)-len(old)) * estCorrSeq
	ix.corr[corr] = seqs
}

// Descendants collects seq and the visible events it caused, transitively,
// level by level (each level in sequence order), stopping after maxDepth
// levels below seq or maxEvents events (seq included), and reports
// whether anything was left out. The result is in sequence order, which
// puts every cause before what it caused. seq must be a visible event.
// It holds memory for maxEvents sequences at most (beside the result);
// it steps through every child of the events it returns (the links run
// newest first, and a cut level keeps its earliest).
func (ix *Index) Descendants(seq uint32, maxEvents, maxDepth int) ([]Loc, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if seq >= ix.n || !ix.At(seq).Visible() || maxEvents <= 0 {
		return nil, false
	}
	got := []uint32{seq}
	level := []uint32{seq}
	var next []uint32
	truncated := false
	for depth := 0; len(level) > 0; depth++ {
		next = next[:0]
		// Only the room earliest children of a level are kept, and one
		// more to tell truncation: next is cut back to them whenever it
		// doubles, so a level of any size costs memory for the room only.
		room := maxEvents - len(got)
		keep := room + 1
		dropped := false
		for _, p := range level {
			for c := ix.At(p).Child; c != 0; c = ix.Sibling(c - 1) {
				if ix.At(c - 1).Visible() {
					if len(next) == 2*keep {
						slices.Sort(next)
						next, dropped = next[:keep], true
					}
					next = append(next, c-1)
				}
			}
		}
		if len(next) == 0 {
			break
		}
		if depth >= maxDepth {
			truncated = true
			break
		}
		slices.Sort(next)
		if len(next) > room || dropped {
			next = next[:min(room, len(next))]
			truncated = true
		}
		got = append(got, next...)
		if truncated {
			break
		}
		level, next = next, level
	}
	slices.Sort(got)
	return ix.locs(got), truncated
}

// Correlation collects the visible events of correlation id corr — the
// event with that id, when it is visible and its correlation id is its own,
// and every visible event carrying corr — in sequence order, at most
// maxEvents of them (the first ones), and reports whether any were left
// out.
func (ix *Index) Correlation(corr [16]byte, maxEvents int) ([]Loc, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	members := ix.corr[corr]
	var seqs []uint32
	if root, ok := ix.ids.find(ix, corr); ok && ix.At(root).Flags&Correlated == 0 {
		// Only the first maxEvents+1 are needed (one to tell truncation).
		i, _ := slices.BinarySearch(members, root)
		n := min(len(members)+1, max(maxEvents, 0)+1)
		seqs = make([]uint32, 0, n)
		seqs = append(seqs, members[:min(i, n)]...)
		if len(seqs) < n {
			seqs = append(seqs, root)
			seqs = append(seqs, members[i:i+(n-len(seqs))]...)
		}
	} else {
		seqs = members
	}
	truncated := false
	if len(seqs) > maxEvents {
		seqs, truncated = seqs[:max(maxEvents, 0)], true
	}
	return ix.locs(seqs), truncated
}

// locs returns where the events at seqs are. Caller holds the lock.
func (ix *Index) locs(seqs []uint32) []Loc {
	out := make([]Loc, len(seqs))
	for i, q := range seqs {
		e := ix.At(q)
		out[i] = Loc{Seq: q, Seg: e.Seg, Off: e.Off}
	}
	return out
}
