package index

import (
	"fmt"
	"math/rand"
	"testing"
)

// An index loaded with the id table deferred and then built in one go
// finds every visible event by its id, and no hidden or removed one,
// exactly as one filled insert by insert; inserts after the build (the
// log's tail after a checkpoint) grow the table and are found too.
func TestBuiltIDsFindWhatInsertsFind(t *testing.T) {
	for _, n := range []int{0, 1, 700, 70000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(n)))
			m := &model{ix: New()}
			m.ix.Lock()
			m.ix.DeferIDsLocked()
			m.ix.Unlock()
			for seq := range uint32(n) {
				var flags uint8
				if seq%97 == 0 {
					flags = Hidden
				}
				m.insert(seq+seq/50, testID(rng), fmt.Sprintf("e%d", seq%13), "s", 1, flags, "")
			}
			m.ix.Lock()
			m.ix.BuildIDsLocked()
			m.ix.Unlock()
			for range 3000 { // past the next growth of a small table
				m.insert(uint32(len(m.events)), testID(rng), "tail", "s", 1, 0, "")
			}
			ix := m.ix
			ix.RLock()
			defer ix.RUnlock()
			for seq := range m.events {
				m.checkLookup(t, seq)
			}
			checkIDTable(t, ix)
			if _, ok := ix.Lookup(testID(rand.New(rand.NewSource(-1)))); ok {
				t.Fatal("Lookup found an id never inserted")
			}
		})
	}
}

// BenchmarkBuildIDs: a million ids placed in slot order, against one
// insert at a time.
//
//	go test ./core/internal/index -run '^$' -bench BuildIDs
func BenchmarkBuildIDs(b *testing.B) {
	rng := rand.New(rand.NewSource(1))
	const n = 1_000_000
	ids := make([][16]byte, n)
	for i := range ids {
		ids[i] = testID(rng)
	}
	load := func(deferred bool) {
		ix := New()
		en := ix.EntityFor([]byte("e"))
		sc := ix.ScopeFor([]byte("s"))
		ix.Lock()
		defer ix.Unlock()
		if deferred {
			ix.DeferIDsLocked()
		}
		for i := range ids {
			ix.InsertLocked(uint32(i), Entry{ID: ids[i], Entity: en, Scope: sc, Kind: 1}, "", Links{})
		}
		if deferred {
			ix.BuildIDsLocked()
		}
	}
	for _, deferred := range []bool{false, true} {
		b.Run(fmt.Sprintf("deferred=%v", deferred), func(b *testing.B) {
			for range b.N {
				load(deferred)
			}
		})
	}
}
