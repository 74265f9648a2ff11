package index

import (
	"fmt"
	"maps"
	"math/rand"
	"reflect"
	"slices"
	"testing"
)

// indexState is everything a reader can find in an index, copied.
type indexState struct {
	N            uint32
	Entries      []Entry
	Siblings     []uint32
	Streams      map[string][]uint32
	Scopes       map[string][]uint32
	Kinds        map[uint16][]uint32
	Idem         map[string]uint32
	Corr         map[[16]byte][]uint32
	LiveEntities int
	IDs          map[[16]byte]uint32 // every visible entry's id, looked up
	IDsUsed      int
}

func stateOf(ix *Index) indexState {
	st := indexState{N: ix.n, Streams: map[string][]uint32{}, Scopes: map[string][]uint32{},
		Kinds: map[uint16][]uint32{}, Idem: maps.Clone(ix.idem), Corr: map[[16]byte][]uint32{},
		LiveEntities: ix.liveEntities, IDs: map[[16]byte]uint32{}, IDsUsed: ix.ids.used}
	for seq := uint32(0); seq < ix.n; seq++ {
		e := *ix.At(seq)
		st.Entries = append(st.Entries, e)
		st.Siblings = append(st.Siblings, ix.Sibling(seq))
		if e.Visible() {
			got, ok := ix.Lookup(e.ID)
			if !ok {
				got = ^uint32(0)
			}
			st.IDs[e.ID] = got
		}
	}
	// Entities and scopes are created before their first event is
	// inserted, and an undo leaves them (empty), as a failed write does.
	for _, es := range ix.entities {
		if len(es.Seqs) > 0 {
			st.Streams[es.Name] = slices.Clone(es.Seqs)
		}
	}
	for _, sc := range ix.scopes {
		if len(sc.seqs) > 0 {
			st.Scopes[sc.name] = slices.Clone(sc.seqs)
		}
	}
	for k, v := range ix.kinds {
		st.Kinds[k] = slices.Clone(v)
	}
	for k, v := range ix.corr {
		st.Corr[k] = slices.Clone(v)
	}
	return st
}

// insertRandom inserts n events after the index's end the way the writer
// does: gaps, hidden events, causes among earlier events, correlation
// groups and idempotency keys (some reusing a key, as a restore may).
func insertRandom(ix *Index, rng *rand.Rand, n int, ids *[][16]byte) {
	seq := ix.n
	for range n {
		if rng.Intn(10) == 0 {
			seq++ // a gap
		}
		id := testID(rng)
		en := ix.EntityFor(fmt.Appendf(nil, "e%d", rng.Intn(7)))
		sc := ix.ScopeFor(fmt.Appendf(nil, "s%d", rng.Intn(3)))
		es := ix.Entity(en)
		clock := uint64(0)
		if es.Head.Exists {
			clock = es.Head.Clock + 1
		}
		es.Head = Head{Exists: true, Clock: clock}
		var flags uint8
		if rng.Intn(12) == 0 {
			flags = Hidden
		}
		var l Links
		if len(*ids) > 0 && rng.Intn(2) == 0 {
			l.Cause = (*ids)[rng.Intn(len(*ids))]
		}
		if len(*ids) > 0 && rng.Intn(3) == 0 {
			l.Corr = (*ids)[rng.Intn(len(*ids))]
		}
		idem := ""
		if rng.Intn(3) == 0 {
			idem = fmt.Sprintf("k%d", rng.Intn(400))
		}
		ix.Lock()
		ix.InsertLocked(seq, Entry{ID: id, Seg: seq / 100, Off: seq, Entity: en, Scope: sc, Clock: clock, Kind: uint16(rng.Intn(4)), Flags: flags}, idem, l)
		ix.Unlock()
		*ids = append(*ids, id)
		seq++
	}
}

// UndoLocked puts the index back exactly as it was before BeginUndo,
// whether the id table grew in between or not, and the index keeps
// working (inserting the same sequences again) afterwards.
func TestUndoRestoresTheIndex(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, group int
	}{
		{"small group", 500, 40},
		{"group that grows the id table", 700, 600},
		{"group across a chunk", chunkSize - 20, 60},
		{"empty index", 0, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(tc.before*31 + tc.group)))
			ix := New()
			var ids [][16]byte
			insertRandom(ix, rng, tc.before, &ids)
			want := stateOf(ix)
			slots := len(ix.ids.slots)
			ix.Lock()
			ix.BeginUndo()
			ix.Unlock()
			groupIDs := slices.Clone(ids)
			insertRandom(ix, rng, tc.group, &groupIDs)
			grew := len(ix.ids.slots) != slots
			ix.Lock()
			ix.UndoLocked()
			ix.Unlock()
			if got := stateOf(ix); !reflect.DeepEqual(got, want) {
				t.Fatalf("after undo (id table grew: %v) the index differs from before the group", grew)
			}
			checkIDTable(t, ix)
			// The index goes on: the same sequences can be inserted again.
			insertRandom(ix, rng, tc.group, &ids)
			for _, id := range ids[tc.before:] {
				if seq, ok := ix.Lookup(id); ok && ix.At(seq).ID != id {
					t.Fatalf("id %x found at %d, which holds another", id, seq)
				}
			}
		})
	}
}

// With the id table reserved for the group first (as the writer does), a
// group that would have grown it does not, and the undo clears its ids in
// place instead of rebuilding the table.
func TestUndoAfterReserveKeepsTheTable(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	ix := New()
	var ids [][16]byte
	insertRandom(ix, rng, 700, &ids) // 1024 slots, near 70 %
	want := stateOf(ix)
	ix.Lock()
	ix.ReserveIDsLocked(600)
	slots := len(ix.ids.slots)
	ix.BeginUndo()
	ix.Unlock()
	insertRandom(ix, rng, 600, &ids)
	if len(ix.ids.slots) != slots {
		t.Fatalf("the id table grew inside the group (%d → %d slots) although reserved", slots, len(ix.ids.slots))
	}
	ix.Lock()
	ix.UndoLocked()
	ix.Unlock()
	got := stateOf(ix)
	if !reflect.DeepEqual(got, want) {
		t.Fatal("after undo the index differs from before the group")
	}
}

// A kind whose events a compaction removed keeps an empty list; an undo of
// a group that used it again leaves it so (and a kind new in the group is
// gone again).
func TestUndoKeepsEmptyKinds(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	ix := New()
	var ids [][16]byte
	insertRandom(ix, rng, 200, &ids)
	removed := map[uint32]bool{}
	for _, seq := range ix.kinds[2] {
		removed[seq] = true
	}
	ix.Lock()
	ix.RemoveLocked(removed)
	ix.Unlock()
	if ks, ok := ix.kinds[2]; !ok || len(ks) != 0 {
		t.Fatalf("kind 2 after removing its events: %v, %v; want an empty list", ks, ok)
	}
	want := stateOf(ix)
	ix.Lock()
	ix.BeginUndo()
	ix.Unlock()
	insertRandom(ix, rng, 100, &ids) // kinds 0..3 again
	en := ix.EntityFor([]byte("e0"))
	sc := ix.ScopeFor([]byte("s0"))
	ix.Lock()
	ix.InsertLocked(ix.n, Entry{ID: testID(rng), Entity: en, Scope: sc, Kind: 9}, "", Links{})
	ix.UndoLocked()
	ix.Unlock()
	if got := stateOf(ix); !reflect.DeepEqual(got, want) {
		t.Fatalf("after undo: kinds %v, want %v", got.Kinds, want.Kinds)
	}
}
