package index

import (
	"encoding/binary"
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

// longestRun is the longest run of occupied slots in ix's id table: what
// a lookup that lands in it probes at worst.
func longestRun(ix *Index) int {
	best, run := 0, 0
	for _, s := range ix.ids.slots {
		if s == 0 {
			run = 0
			continue
		}
		run++
		best = max(best, run)
	}
	return best
}

// TestIDsAlikeDoNotCollide: ids a writer chose (an import keeps them)
// that differ only in their first eight bytes, or only in their last
// eight, spread over the id table as random ones do, whether inserted
// one at a time or built at open: no writer can make one run of slots
// that every lookup, insert and open then walks.
func TestIDsAlikeDoNotCollide(t *testing.T) {
	const n = 40000
	for _, tc := range []struct {
		name string
		id   func(i int) [16]byte
	}{
		{"first eight bytes differ", func(i int) (id [16]byte) {
			binary.BigEndian.PutUint64(id[:8], 0x01a2511700007000+uint64(i)<<16)
			copy(id[8:], []byte{0x80, 0, 0, 0, 0, 0, 0, 1})
			return id
		}},
		{"last eight bytes differ", func(i int) (id [16]byte) {
			copy(id[:8], []byte{0x01, 0xa2, 0x51, 0x17, 0, 0, 0x70, 0})
			binary.BigEndian.PutUint64(id[8:], 0x8000000000000000+uint64(i)<<20)
			return id
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, bulk := range []bool{false, true} {
				m := &model{ix: New()}
				if bulk {
					m.ix.Lock()
					m.ix.DeferIDsLocked()
					m.ix.Unlock()
				}
				for i := range n {
					m.insert(uint32(i), tc.id(i), "e", "s", 1, 0, "")
				}
				if bulk {
					m.ix.Lock()
					m.ix.BuildIDsLocked()
					m.ix.Unlock()
				}
				// At 70 % load a random table's longest run is some tens
				// of slots; ids that shared a home slot made one of n.
				if run := longestRun(m.ix); run > 400 {
					t.Fatalf("built at open %v: the longest run of slots is %d for %d ids", bulk, run, n)
				}
				m.ix.RLock()
				for i := 0; i < n; i += 997 {
					m.checkLookup(t, i)
				}
				m.ix.RUnlock()
			}
		})
	}
}
