package index

import (
	"math/rand"
	"slices"
	"testing"
)

// causalIndex inserts events with the given causes and correlations (by
// position; -1: none) and returns the index and the ids.
func causalIndex(t *testing.T, causes, corrs []int) (*Index, [][16]byte) {
	t.Helper()
	rng := rand.New(rand.NewSource(1))
	ix := New()
	ids := make([][16]byte, len(causes))
	for i := range causes {
		ids[i] = testID(rng)
		var l Links
		if causes[i] >= 0 {
			l.Cause = ids[causes[i]]
		}
		if corrs[i] >= 0 {
			l.Corr = ids[corrs[i]]
		}
		en := ix.EntityFor([]byte("e"))
		sc := ix.ScopeFor([]byte("s"))
		ix.Lock()
		ix.InsertLocked(uint32(i), Entry{ID: ids[i], Entity: en, Scope: sc}, "", l)
		ix.Unlock()
	}
	return ix, ids
}

func seqsOf(locs []Loc) []uint32 {
	var out []uint32
	for _, l := range locs {
		out = append(out, l.Seq)
	}
	return out
}

// A conversation whose root comes after some of its members (an import
// keeps ids), truncated before, at and after the root's place.
func TestCorrelationRootAmongMembers(t *testing.T) {
	// 0, 1: members of 2's conversation (written before 2); 2: the root;
	// 3: a member; 4: unrelated.
	rng := rand.New(rand.NewSource(2))
	ix := New()
	root := testID(rng)
	ids := [][16]byte{testID(rng), testID(rng), root, testID(rng), testID(rng)}
	corrs := [][16]byte{root, root, {}, root, {}}
	for i, id := range ids {
		en, sc := ix.EntityFor([]byte("e")), ix.ScopeFor([]byte("s"))
		ix.Lock()
		ix.InsertLocked(uint32(i), Entry{ID: id, Entity: en, Scope: sc}, "", Links{Corr: corrs[i]})
		ix.Unlock()
	}
	for max, want := range map[int][]uint32{1: {0}, 2: {0, 1}, 3: {0, 1, 2}, 4: {0, 1, 2, 3}, 5: {0, 1, 2, 3}} {
		locs, truncated := ix.Correlation(root, max)
		if got := seqsOf(locs); !slices.Equal(got, want) || truncated != (max < 4) {
			t.Errorf("max %d: %v truncated %v; want %v, %v", max, got, truncated, want, max < 4)
		}
	}
	if locs, _ := ix.Correlation(ids[4], 10); !slices.Equal(seqsOf(locs), []uint32{4}) {
		t.Errorf("a lone event's conversation: %v", seqsOf(locs))
	}
}

// Removing an event hides it and what it caused from walks through it;
// the removed event's children remain walkable on their own.
func TestDescendantsSkipRemoved(t *testing.T) {
	//            0
	//          /   \
	//         1     2
	//        / \     \
	//       3   4     5
	ix, _ := causalIndex(t, []int{-1, 0, 0, 1, 1, 2}, []int{-1, 0, 0, 0, 0, 0})
	if locs, tr := ix.Descendants(0, 100, 100); !slices.Equal(seqsOf(locs), []uint32{0, 1, 2, 3, 4, 5}) || tr {
		t.Fatalf("before: %v %v", seqsOf(locs), tr)
	}
	ix.Lock()
	ix.RemoveLocked(map[uint32]bool{1: true})
	ix.Unlock()
	if locs, _ := ix.Descendants(0, 100, 100); !slices.Equal(seqsOf(locs), []uint32{0, 2, 5}) {
		t.Fatalf("after removing 1: %v", seqsOf(locs))
	}
	if locs, _ := ix.Descendants(3, 100, 100); !slices.Equal(seqsOf(locs), []uint32{3}) {
		t.Fatalf("Descendants(3): %v", seqsOf(locs))
	}
	if locs, _ := ix.Descendants(1, 100, 100); locs != nil {
		t.Fatalf("Descendants of a removed event: %v", seqsOf(locs))
	}
	if locs, _ := ix.Correlation(ix.At(0).ID, 100); !slices.Equal(seqsOf(locs), []uint32{0, 2, 3, 4, 5}) {
		t.Fatalf("Correlation after removing 1: %v", seqsOf(locs))
	}
}

// TestRemovingConversationsTakesBackTheirEstimate: removing every event
// filed in correlation groups gives back what filing them added to the
// running estimate (EstimatedBytes), so compaction and erasure do not
// leave it growing.
func TestRemovingConversationsTakesBackTheirEstimate(t *testing.T) {
	const n = 300
	causes, corrs := make([]int, n), make([]int, n)
	for i := range n {
		causes[i], corrs[i] = -1, -1
		if i%3 != 0 {
			corrs[i] = i - i%3 // groups of three: the first and two members
		}
	}
	ix, _ := causalIndex(t, causes, corrs)
	grouped := ix.names
	removed := map[uint32]bool{}
	for i := range n {
		if corrs[i] >= 0 {
			removed[uint32(i)] = true
		}
	}
	ix.Lock()
	ix.RemoveLocked(removed)
	ix.Unlock()
	if len(ix.corr) != 0 {
		t.Fatalf("%d correlation groups left after removing every member", len(ix.corr))
	}
	names := int64(len("e")+estEntityBytes) + int64(len("s")+estScopeBytes)
	if got := ix.names; got != names {
		t.Fatalf("the estimate's names and groups: %d with the groups, %d after removing their members, want %d (the entity and scope alone)", grouped, got, names)
	}
}

// TestSettingAGroupAgainKeepsTheEstimate: a correlation group set twice
// (a checkpoint naming one id twice) counts its members once, those of
// the list it holds.
func TestSettingAGroupAgainKeepsTheEstimate(t *testing.T) {
	ix := New()
	var corr [16]byte
	corr[0] = 1
	ix.SetCorrelationGroup(corr, []uint32{1, 2, 3})
	ix.SetCorrelationGroup(corr, []uint32{4, 5})
	if want := int64(estCorrBytes + 2*estCorrSeq); ix.names != want {
		t.Fatalf("a group set twice, 3 then 2 members: the estimate holds %d, want %d", ix.names, want)
	}
}
