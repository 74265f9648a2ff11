package core

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"unsafe"
)

// The in-memory index. Entries live in fixed-size chunks addressed by
// global sequence (no copying as the store grows); per-entity streams and
// per-scope and per-kind postings hold sequences; an open-addressing table
// maps event ids to sequences. The writer goroutine is the only mutator: it
// inserts under mu.Lock, readers hold mu.RLock.
const (
	chunkBits = 16
	chunkSize = 1 << chunkBits

	entryRemoved uint8 = 1 << 0 // no event at this sequence (a gap)
	entryHidden  uint8 = 1 << 1 // written under a fence that did not commit: never shown
)

type entry struct {
	id     EventID
	seg    uint32
	off    uint32
	entity uint32
	scope  uint32
	clock  uint64
	kind   Kind
	flags  uint8
}

// entityState is one entity. seqs is the published stream (clock order);
// the w* fields are the writer's view including events it has assigned but
// not yet published, touched only by the writer goroutine (and by Open
// before the writer starts).
type entityState struct {
	name string
	seqs []uint32

	wExists bool
	wClock  uint64
	wTS     int64
	wHash   Hash
}

type scopeState struct {
	name string
	seqs []uint32
}

type index struct {
	mu     sync.RWMutex
	chunks [][]entry
	n      uint32 // entries held == next global sequence
	// liveEntities counts entities with at least one visible event.
	liveEntities int
	ids          idTable
	entities     []*entityState
	byEntity     map[string]uint32
	scopes       []scopeState
	byScope      map[string]uint32
	kinds        map[Kind][]uint32
	idem         map[string]uint32 // idempotency key → sequence

	sortMu sync.Mutex
	sorted []uint32 // entity numbers by name, for prefix search
}

func newIndex() *index {
	return &index{
		byEntity: map[string]uint32{},
		byScope:  map[string]uint32{},
		kinds:    map[Kind][]uint32{},
		idem:     map[string]uint32{},
	}
}

func (ix *index) at(seq uint32) *entry {
	return &ix.chunks[seq>>chunkBits][seq&(chunkSize-1)]
}

// entityFor returns the entity's number, creating it (under the write lock)
// when new. Only the writer (or Open) calls it.
func (ix *index) entityFor(name []byte) uint32 {
	if n, ok := ix.byEntity[string(name)]; ok {
		return n
	}
	ix.mu.Lock()
	n := uint32(len(ix.entities))
	s := string(name)
	ix.entities = append(ix.entities, &entityState{name: s})
	ix.byEntity[s] = n
	ix.mu.Unlock()
	return n
}

func (ix *index) scopeFor(name []byte) uint32 {
	if n, ok := ix.byScope[string(name)]; ok {
		return n
	}
	ix.mu.Lock()
	n := uint32(len(ix.scopes))
	s := string(name)
	ix.scopes = append(ix.scopes, scopeState{name: s})
	ix.byScope[s] = n
	ix.mu.Unlock()
	return n
}

// insertLocked adds e at sequence seq (>= ix.n; gaps become removed
// entries). Caller holds mu.Lock.
func (ix *index) insertLocked(seq uint32, e entry, idem string) {
	for ix.n < seq {
		ix.appendEntry(entry{flags: entryRemoved})
	}
	ix.appendEntry(e)
	if e.flags&(entryRemoved|entryHidden) != 0 {
		return
	}
	es := ix.entities[e.entity]
	if len(es.seqs) == 0 {
		ix.liveEntities++
	}
	ix.ids.insert(ix, seq)
	es.seqs = append(es.seqs, seq)
	sc := &ix.scopes[e.scope]
	sc.seqs = append(sc.seqs, seq)
	ix.kinds[e.kind] = append(ix.kinds[e.kind], seq)
	if idem != "" {
		ix.idem[idem] = seq
	}
}

func (ix *index) appendEntry(e entry) {
	c := ix.n >> chunkBits
	if int(c) == len(ix.chunks) {
		// The first chunk starts small so that small stores stay small;
		// later chunks are allocated whole.
		size := chunkSize
		if c == 0 {
			size = 256
		}
		ix.chunks = append(ix.chunks, make([]entry, 0, size))
	}
	ix.chunks[c] = append(ix.chunks[c], e)
	ix.n++
}

// lookup returns the sequence of id. Caller holds mu (read or write).
func (ix *index) lookup(id EventID) (uint32, bool) {
	return ix.ids.find(ix, id)
}

// loc is where to read one event from.
type loc struct {
	seq uint32
	seg uint32
	off uint32
}

// plan collects the locations of the visible events matching r, in global
// sequence order.
func (ix *index) plan(r Region) []loc {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var cands []uint32
	all := true
	consider := func(s []uint32) {
		if all || len(s) < len(cands) {
			cands, all = s, false
		}
	}
	if r.hasScope {
		if n, ok := ix.byScope[r.scope]; ok {
			consider(ix.scopes[n].seqs)
		} else {
			return nil
		}
	}
	if r.hasKind {
		consider(ix.kinds[r.kind])
	}
	if r.hasEntity {
		ents := ix.entitiesWithPrefix(r.entityPrefix)
		switch {
		case len(ents) == 0:
			return nil
		case len(ents) == 1:
			consider(ix.entities[ents[0]].seqs)
		case !all && len(cands) < 4096:
			// a short candidate list already: filtering beats merging streams
		default:
			var merged []uint32
			for _, n := range ents {
				merged = append(merged, ix.entities[n].seqs...)
			}
			slices.Sort(merged)
			consider(merged)
		}
	}
	var out []loc
	keep := func(seq uint32) {
		if e := ix.at(seq); ix.matchesLocked(r, e) {
			out = append(out, loc{seq: seq, seg: e.seg, off: e.off})
		}
	}
	if all {
		for seq := uint32(0); seq < ix.n; seq++ {
			keep(seq)
		}
	} else {
		for _, seq := range cands {
			keep(seq)
		}
	}
	return out
}

// entitiesWithPrefix returns the numbers of the entities whose names start
// with prefix, from a name-sorted list kept up to date lazily. Caller holds
// mu (read or write).
func (ix *index) entitiesWithPrefix(prefix string) []uint32 {
	ix.sortMu.Lock()
	defer ix.sortMu.Unlock()
	name := func(i int) string { return ix.entities[ix.sorted[i]].name }
	if added := len(ix.entities) - len(ix.sorted); added > 0 {
		if added > 64 {
			for n := len(ix.sorted); n < len(ix.entities); n++ {
				ix.sorted = append(ix.sorted, uint32(n))
			}
			slices.SortFunc(ix.sorted, func(a, b uint32) int {
				return strings.Compare(ix.entities[a].name, ix.entities[b].name)
			})
		} else {
			for n := len(ix.entities) - added; n < len(ix.entities); n++ {
				nm := ix.entities[n].name
				i := sort.Search(len(ix.sorted), func(i int) bool { return name(i) >= nm })
				ix.sorted = slices.Insert(ix.sorted, i, uint32(n))
			}
		}
	}
	i := sort.Search(len(ix.sorted), func(i int) bool { return name(i) >= prefix })
	var out []uint32
	for ; i < len(ix.sorted) && strings.HasPrefix(name(i), prefix); i++ {
		out = append(out, ix.sorted[i])
	}
	return out
}

// stream returns the locations of entity's published events in clock order.
func (ix *index) stream(entity string) []loc {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n, ok := ix.byEntity[entity]
	if !ok {
		return nil
	}
	seqs := ix.entities[n].seqs
	out := make([]loc, 0, len(seqs))
	for _, seq := range seqs {
		e := ix.at(seq)
		out = append(out, loc{seq: seq, seg: e.seg, off: e.off})
	}
	return out
}

// memoryBytes estimates the heap held by the index.
func (ix *index) memoryBytes() int64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var b int64
	for _, c := range ix.chunks {
		b += int64(cap(c)) * int64(unsafe.Sizeof(entry{}))
	}
	b += int64(len(ix.ids.slots)) * 4
	for _, es := range ix.entities {
		b += int64(cap(es.seqs))*4 + int64(unsafe.Sizeof(*es)) + int64(len(es.name)) + 48
	}
	for _, sc := range ix.scopes {
		b += int64(cap(sc.seqs))*4 + int64(len(sc.name)) + 48
	}
	for _, s := range ix.kinds {
		b += int64(cap(s))*4 + 48
	}
	for k := range ix.idem {
		b += int64(len(k)) + 48
	}
	return b
}

// idTable is an open-addressing hash table of sequence+1 (0 = empty), keyed
// by the id stored in the entry; linear probing, grown at 70 % load.
type idTable struct {
	slots []uint32
	used  int
}

func idSlot(id EventID, mask uint64) uint64 {
	// bytes 8..15 of a UUIDv7 are random (after the variant bits).
	return (le.Uint64(id[8:]) * 0x9E3779B97F4A7C15) >> 20 & mask
}

func (t *idTable) find(ix *index, id EventID) (uint32, bool) {
	if len(t.slots) == 0 {
		return 0, false
	}
	mask := uint64(len(t.slots) - 1)
	for i := idSlot(id, mask); ; i = (i + 1) & mask {
		s := t.slots[i]
		if s == 0 {
			return 0, false
		}
		if ix.at(s-1).id == id {
			return s - 1, true
		}
	}
}

func (t *idTable) insert(ix *index, seq uint32) {
	if (t.used+1)*10 > len(t.slots)*7 {
		t.grow(ix)
	}
	t.place(ix.at(seq).id, seq)
	t.used++
}

func (t *idTable) place(id EventID, seq uint32) {
	mask := uint64(len(t.slots) - 1)
	i := idSlot(id, mask)
	for t.slots[i] != 0 {
		i = (i + 1) & mask
	}
	t.slots[i] = seq + 1
}

func (t *idTable) grow(ix *index) {
	n := len(t.slots) * 2
	if n == 0 {
		n = 1024
	}
	old := t.slots
	t.slots = make([]uint32, n)
	for _, s := range old {
		if s != 0 {
			t.place(ix.at(s-1).id, s-1)
		}
	}
}

// published is the number of sequences decided (visible or hidden).
func (ix *index) published() uint32 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.n
}

// matchesLocked reports whether entry e is visible and in r. Caller holds mu.
func (ix *index) matchesLocked(r Region, e *entry) bool {
	if e.flags&(entryRemoved|entryHidden) != 0 {
		return false
	}
	if r.hasEntity && !strings.HasPrefix(ix.entities[e.entity].name, r.entityPrefix) {
		return false
	}
	if r.hasScope && ix.scopes[e.scope].name != r.scope {
		return false
	}
	return r.matchesKindClock(e.kind, e.clock)
}

// countMatching counts the visible events in r with sequences in [from, to).
func (ix *index) countMatching(r Region, from, to uint64) uint64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	to = min(to, uint64(ix.n))
	var n uint64
	for seq := from; seq < to; seq++ {
		if ix.matchesLocked(r, ix.at(uint32(seq))) {
			n++
		}
	}
	return n
}

// planFrom collects up to max visible events in r with sequence >= from,
// in order, and returns the sequence to continue from: one past the last
// sequence examined (all of which are decided, so nothing before it can
// appear later).
func (ix *index) planFrom(r Region, from uint64, max int) ([]loc, uint64) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	end := uint64(ix.n)
	if from >= end || max <= 0 {
		return nil, from
	}
	var out []loc
	take := func(seq uint32) bool {
		e := ix.at(seq)
		if ix.matchesLocked(r, e) {
			out = append(out, loc{seq: seq, seg: e.seg, off: e.off})
		}
		return len(out) < max
	}
	// Walk the shortest posting list the region allows, from `from` on.
	var post []uint32
	switch {
	case r.hasScope:
		if n, ok := ix.byScope[r.scope]; ok {
			post = ix.scopes[n].seqs
		} else {
			return nil, end
		}
	case r.hasKind:
		post = ix.kinds[r.kind]
	default:
		for seq := from; seq < end; seq++ {
			if !take(uint32(seq)) {
				return out, seq + 1
			}
		}
		return out, end
	}
	i := sort.Search(len(post), func(i int) bool { return uint64(post[i]) >= from })
	for ; i < len(post); i++ {
		if !take(post[i]) {
			return out, uint64(post[i]) + 1
		}
	}
	return out, end
}
