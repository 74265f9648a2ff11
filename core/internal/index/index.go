package index

import (
	"hash/maphash"
	"iter"
	"slices"
	"sort"
	"strings"
	"sync"
	"unsafe"
)

const (
	chunkBits = 16
	chunkSize = 1 << chunkBits
)

// Entry flags.
const (
	Removed uint8 = 1 << 0 // no event at this sequence (a gap, or removed by a compaction)
	Hidden  uint8 = 1 << 1 // written under a fence that did not commit: never shown
	// Correlated: the event's correlation id is not its own id, so it is
	// filed in a correlation group (see Correlation).
	Correlated uint8 = 1 << 2
)

// Entry is where one global sequence's event is and what selects it.
// Entity and Scope are numbers given by EntityFor and ScopeFor.
type Entry struct {
	ID     [16]byte
	Seg    uint32 // segment id
	Off    uint32 // offset of the frame in the segment
	Entity uint32
	Scope  uint32
	Clock  uint64
	Kind   uint16
	Flags  uint8
	// Child is one more than the sequence of the newest visible event this
	// one caused (0: none); the others follow through the sibling links
	// (see Children). It fits in the entry's padding: the entry stays 48
	// bytes.
	Child uint32
}

// Links are the causal metadata InsertLocked files a visible event under:
// the id of the event that caused it (zero: a root cause) and its
// correlation id (zero or its own id: its own conversation).
type Links struct {
	Cause, Corr [16]byte
}

// Visible reports whether the entry is an event readers may see (neither
// Removed nor Hidden).
func (e *Entry) Visible() bool { return e.Flags&(Removed|Hidden) == 0 }

// Head is the writer's view of an entity's newest event, including events
// it has assigned but not yet published: whether there is one, its clock,
// timestamp (µs) and event hash. Only the writer goroutine (or Open,
// before the writer starts) reads or changes it.
type Head struct {
	Exists bool
	// Checked: the writer made this head, or matched it with its event's
	// frame, since Open (a head restored from a checkpoint or footer is
	// only as true as that file).
	Checked bool
	Clock   uint64
	TS      int64
	Hash    [32]byte
}

// Entity is one entity. Seqs is its published stream of visible events in
// clock order (read under RLock, never changed by the caller).
type Entity struct {
	Name string
	Seqs []uint32
	Head Head
}

type scope struct {
	name string
	seqs []uint32
}

// Loc is where to read one event from: its global sequence, segment id
// and frame offset.
type Loc struct {
	Seq uint32
	Seg uint32
	Off uint32
}

// Index is the in-memory index; see the package doc for its locking.
type Index struct {
	mu     sync.RWMutex
	chunks [][]Entry
	n      uint32 // entries held == next global sequence
	// liveEntities counts entities with at least one visible event.
	liveEntities int
	ids          idTable
	entities     []*Entity
	byEntity     map[string]uint32
	scopes       []scope
	byScope      map[string]uint32
	kinds        map[uint16][]uint32
	idem         map[string]uint32 // idempotency key → sequence
	// sibling, chunked like chunks: one more than the sequence of the next
	// older event with the same cause (0: none).
	sibling [][]uint32
	// corr: correlation id → the sequences of the visible events that carry
	// it and are not the event with that id, in order.
	corr map[[16]byte][]uint32

	sortMu sync.Mutex
	sorted []uint32 // entity numbers by name, for prefix search

	// undo records inserts between BeginUndo and EndUndo (undo.go).
	undo undoLog

	// idsLater: InsertLocked leaves the id table to BuildIDsLocked
	// (bulk.go).
	idsLater bool

	// names is the running estimate of what the entities', scopes' and
	// idempotency keys' names and the correlation groups hold
	// (EstimatedBytes): each new one adds its length and a fixed overhead,
	// each one dropped takes them back. Guarded by mu (written under the
	// write lock, or by Open before anyone else sees the index).
	names int64
}

// Per-item costs of EstimatedBytes: an entry (48 bytes), its places in
// the entity's, scope's and kind's postings (4 bytes each, twice for the
// room a growing slice keeps), its sibling link and its id-table slot at
// 70 % load; an entity, a scope and an idempotency key besides their
// names (the struct, the map entry); a correlation group (its map entry
// and list) and each event filed in one (its place in the list, twice).
const (
	estEntryBytes  = 48 + 8 + 8 + 8 + 4 + 6
	estEntityBytes = 48 + 48
	estScopeBytes  = 48 + 48
	estIdemBytes   = 48
	estCorrBytes   = 96
	estCorrSeq     = 8
)

// EstimatedBytes is a running estimate of the heap the index holds, kept
// as it grows, so it costs the same at any size (MemoryBytes walks the
// index for a closer figure). Caller holds RLock or Lock.
func (ix *Index) EstimatedBytes() int64 {
	return int64(ix.n)*estEntryBytes + ix.names
}

// New returns an empty index.
func New() *Index {
	return &Index{
		byEntity: map[string]uint32{},
		byScope:  map[string]uint32{},
		kinds:    map[uint16][]uint32{},
		idem:     map[string]uint32{},
		corr:     map[[16]byte][]uint32{},
	}
}

// Lock takes the write lock.
func (ix *Index) Lock() { ix.mu.Lock() }

// Unlock releases the write lock.
func (ix *Index) Unlock() { ix.mu.Unlock() }

// RLock takes the read lock.
func (ix *Index) RLock() { ix.mu.RLock() }

// RUnlock releases the read lock.
func (ix *Index) RUnlock() { ix.mu.RUnlock() }

// At returns the entry at seq (< Len). Caller holds the lock; under Lock
// it may change the entry's fields.
func (ix *Index) At(seq uint32) *Entry {
	return &ix.chunks[seq>>chunkBits][seq&(chunkSize-1)]
}

// Len is the number of entries held, which is the next global sequence.
// Caller holds the lock, or is the writer.
func (ix *Index) Len() uint32 { return ix.n }

// LiveEntities counts the entities with at least one visible event.
// Caller holds the lock.
func (ix *Index) LiveEntities() int { return ix.liveEntities }

// Events counts the visible events. Caller holds the lock.
func (ix *Index) Events() int { return ix.ids.used }

// NumEntities is the number of entities known, visible events or not;
// they are numbered 0 to NumEntities-1. Caller holds the lock, or is the
// writer.
func (ix *Index) NumEntities() int { return len(ix.entities) }

// Entity returns entity number n. Caller holds the lock, or is the writer.
func (ix *Index) Entity(n uint32) *Entity { return ix.entities[n] }

// EntityNamed returns the number of the entity called name. Caller holds
// the lock, or is the writer.
func (ix *Index) EntityNamed(name string) (uint32, bool) {
	n, ok := ix.byEntity[name]
	return n, ok
}

// NumScopes is the number of scopes known. Caller holds the lock, or is
// the writer.
func (ix *Index) NumScopes() int { return len(ix.scopes) }

// ScopeName returns the name of scope number n. Caller holds the lock, or
// is the writer.
func (ix *Index) ScopeName(n uint32) string { return ix.scopes[n].name }

// Idem returns the sequence of the event holding idempotency key. Caller
// holds the lock.
func (ix *Index) Idem(key string) (uint32, bool) {
	seq, ok := ix.idem[key]
	return seq, ok
}

// NumIdems counts the idempotency keys held. Caller holds the lock.
func (ix *Index) NumIdems() int { return len(ix.idem) }

// Idems yields every idempotency key and its sequence, in no order.
// Caller holds the lock.
func (ix *Index) Idems() iter.Seq2[string, uint32] {
	return func(yield func(string, uint32) bool) {
		for k, seq := range ix.idem {
			if !yield(k, seq) {
				return
			}
		}
	}
}

// EntityFor returns the entity's number, creating it (under the write
// lock) when new. Only the writer (or Open) calls it.
func (ix *Index) EntityFor(name []byte) uint32 {
	if n, ok := ix.byEntity[string(name)]; ok {
		return n
	}
	ix.mu.Lock()
	n := uint32(len(ix.entities))
	s := string(name)
	ix.entities = append(ix.entities, &Entity{Name: s})
	ix.byEntity[s] = n
	ix.names += int64(len(s)) + estEntityBytes
	ix.mu.Unlock()
	return n
}

// ScopeFor returns the scope's number, creating it (under the write lock)
// when new. Only the writer (or Open) calls it.
func (ix *Index) ScopeFor(name []byte) uint32 {
	if n, ok := ix.byScope[string(name)]; ok {
		return n
	}
	ix.mu.Lock()
	n := uint32(len(ix.scopes))
	s := string(name)
	ix.scopes = append(ix.scopes, scope{name: s})
	ix.byScope[s] = n
	ix.names += int64(len(s)) + estScopeBytes
	ix.mu.Unlock()
	return n
}

// AddEntity appends an entity with this name and writer head, numbered
// NumEntities (a checkpoint lists entities in number order). Only Open
// calls it, on an index no one else sees yet.
func (ix *Index) AddEntity(name string, head Head) {
	ix.byEntity[name] = uint32(len(ix.entities))
	ix.entities = append(ix.entities, &Entity{Name: name, Head: head})
	ix.names += int64(len(name)) + estEntityBytes
}

// AddScope appends a scope with this name, numbered NumScopes. Only Open
// calls it, on an index no one else sees yet.
func (ix *Index) AddScope(name string) {
	ix.byScope[name] = uint32(len(ix.scopes))
	ix.scopes = append(ix.scopes, scope{name: name})
	ix.names += int64(len(name)) + estScopeBytes
}

// SetIdem records that the event at seq holds idempotency key. Only Open
// calls it, on an index no one else sees yet.
func (ix *Index) SetIdem(key string, seq uint32) {
	if _, had := ix.idem[key]; !had {
		ix.names += int64(len(key)) + estIdemBytes
	}
	ix.idem[key] = seq
}

// InsertLocked adds e at sequence seq (>= Len; the sequences skipped become
// Removed entries). A visible entry joins its entity's stream, its scope's
// and kind's postings, the id table and, when idem is not empty, the
// idempotency keys, and is linked to its cause (when that is a visible
// event) and to its correlation group after l. e.Entity and e.Scope must
// have been given by EntityFor or ScopeFor (or AddEntity, AddScope).
// Caller holds Lock.
func (ix *Index) InsertLocked(seq uint32, e Entry, idem string, l Links) {
	for ix.n < seq {
		ix.appendEntry(Entry{Flags: Removed})
	}
	// Only l files an event in a group: an entry restored from a
	// checkpoint (no links given) keeps its flag, and its group is
	// restored apart.
	correlated := e.Visible() && l.Corr != ([16]byte{}) && l.Corr != e.ID
	if correlated {
		e.Flags |= Correlated
	}
	ix.appendEntry(e)
	if !e.Visible() {
		return
	}
	var r *undoRecord
	if ix.undo.on {
		ix.undo.inserts = append(ix.undo.inserts, undoRecord{seq: seq, visible: true})
		r = &ix.undo.inserts[len(ix.undo.inserts)-1]
	}
	if l.Cause != ([16]byte{}) {
		if p, ok := ix.ids.find(ix, l.Cause); ok && p < seq {
			pe := ix.At(p)
			ix.sibling[seq>>chunkBits][seq&(chunkSize-1)] = pe.Child
			pe.Child = seq + 1
			if r != nil {
				r.cause = p + 1
			}
		}
	}
	if correlated {
		if r != nil {
			_, had := ix.corr[l.Corr]
			r.corr, r.correlate, r.corrNew = l.Corr, true, !had
		}
		seqs, had := ix.corr[l.Corr]
		if !had {
			ix.names += estCorrBytes
		}
		ix.names += estCorrSeq
		ix.corr[l.Corr] = append(seqs, seq)
	}
	es := ix.entities[e.Entity]
	if len(es.Seqs) == 0 {
		ix.liveEntities++
	}
	if !ix.idsLater {
		ix.ids.insert(ix, seq)
	}
	es.Seqs = append(es.Seqs, seq)
	sc := &ix.scopes[e.Scope]
	sc.seqs = append(sc.seqs, seq)
	if r != nil {
		_, had := ix.kinds[e.Kind]
		r.kindNew = !had
	}
	ix.kinds[e.Kind] = append(ix.kinds[e.Kind], seq)
	if idem != "" {
		prev, had := ix.idem[idem]
		if r != nil {
			r.idem = idem
			r.idemPrev, r.hadIdem = prev, had
		}
		if !had {
			ix.names += int64(len(idem)) + estIdemBytes
		}
		ix.idem[idem] = seq
	}
}

func (ix *Index) appendEntry(e Entry) {
	c := ix.n >> chunkBits
	if int(c) == len(ix.chunks) {
		// The first chunk starts small so that small stores stay small;
		// later chunks are allocated whole.
		size := chunkSize
		if c == 0 {
			size = 256
		}
		ix.chunks = append(ix.chunks, make([]Entry, 0, size))
		ix.sibling = append(ix.sibling, make([]uint32, 0, size))
	}
	ix.chunks[c] = append(ix.chunks[c], e)
	ix.sibling[c] = append(ix.sibling[c], 0)
	ix.n++
}

// RemoveLocked marks the events at the sequences in removed Removed and
// takes them out of every entity stream, posting list and idempotency key;
// the id table is rebuilt. Caller holds Lock.
func (ix *Index) RemoveLocked(removed map[uint32]bool) {
	if len(removed) == 0 {
		return
	}
	for seq := range removed {
		ix.At(seq).Flags |= Removed
	}
	keep := func(seqs []uint32) []uint32 {
		out := seqs[:0]
		for _, q := range seqs {
			if !removed[q] {
				out = append(out, q)
			}
		}
		return out
	}
	ix.liveEntities = 0
	for _, es := range ix.entities {
		es.Seqs = keep(es.Seqs)
		if len(es.Seqs) > 0 {
			ix.liveEntities++
		}
	}
	for i := range ix.scopes {
		ix.scopes[i].seqs = keep(ix.scopes[i].seqs)
	}
	for k, seqs := range ix.kinds {
		ix.kinds[k] = keep(seqs)
	}
	for k, q := range ix.idem {
		if removed[q] {
			delete(ix.idem, k)
			ix.names -= int64(len(k)) + estIdemBytes
		}
	}
	// Child and sibling links stay: a walk skips a removed event and what
	// it caused, as Ancestors stops at a removed cause.
	for k, seqs := range ix.corr {
		before := len(seqs)
		seqs = keep(seqs)
		ix.names -= int64(before-len(seqs)) * estCorrSeq
		if len(seqs) == 0 {
			delete(ix.corr, k)
			ix.names -= estCorrBytes
		} else {
			ix.corr[k] = seqs
		}
	}
	ix.ids = idTable{}
	for seq := uint32(0); seq < ix.n; seq++ {
		if ix.At(seq).Visible() {
			ix.ids.insert(ix, seq)
		}
	}
}

// Lookup returns the sequence of the visible event with this id. Caller
// holds the lock.
func (ix *Index) Lookup(id [16]byte) (uint32, bool) {
	return ix.ids.find(ix, id)
}

// Plan collects the locations of the visible events matching f, in global
// sequence order.
func (ix *Index) Plan(f Filter) []Loc {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var cands []uint32
	all := true
	consider := func(s []uint32) {
		if all || len(s) < len(cands) {
			cands, all = s, false
		}
	}
	if f.HasScope {
		if n, ok := ix.byScope[f.Scope]; ok {
			consider(ix.scopes[n].seqs)
		} else {
			return nil
		}
	}
	if f.HasKind {
		consider(ix.kinds[f.Kind])
	}
	if f.HasEntity {
		ents := ix.entitiesOf(&f, 0)
		switch {
		case len(ents) == 0:
			return nil
		case len(ents) == 1:
			consider(ix.entities[ents[0]].Seqs)
		case !all && len(cands) < 4096:
			// a short candidate list already: filtering beats merging streams
		default:
			var merged []uint32
			for _, n := range ents {
				merged = append(merged, ix.entities[n].Seqs...)
			}
			slices.Sort(merged)
			consider(merged)
		}
	}
	var out []Loc
	keep := func(seq uint32) {
		if e := ix.At(seq); ix.matchesLocked(&f, e) {
			out = append(out, Loc{Seq: seq, Seg: e.Seg, Off: e.Off})
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

// entitiesOf returns the numbers of the entities f's entity constraint
// (set) admits. Caller holds mu (read or write).
// At most upTo are returned when upTo > 0.
func (ix *Index) entitiesOf(f *Filter, upTo int) []uint32 {
	if f.EntityExact {
		if n, ok := ix.byEntity[f.EntityPrefix]; ok {
			return []uint32{n}
		}
		return nil
	}
	return ix.entitiesWithPrefix(f.EntityPrefix, upTo)
}

// entitiesWithPrefix returns the numbers of the entities whose names start
// with prefix (at most upTo of them when upTo > 0), from a name-sorted
// list kept up to date lazily. Caller holds mu (read or write).
func (ix *Index) entitiesWithPrefix(prefix string, upTo int) []uint32 {
	ix.sortMu.Lock()
	defer ix.sortMu.Unlock()
	name := func(i int) string { return ix.entities[ix.sorted[i]].Name }
	if added := len(ix.entities) - len(ix.sorted); added > 0 {
		if added > 64 {
			for n := len(ix.sorted); n < len(ix.entities); n++ {
				ix.sorted = append(ix.sorted, uint32(n))
			}
			slices.SortFunc(ix.sorted, func(a, b uint32) int {
				return strings.Compare(ix.entities[a].Name, ix.entities[b].Name)
			})
		} else {
			for n := len(ix.entities) - added; n < len(ix.entities); n++ {
				nm := ix.entities[n].Name
				i := sort.Search(len(ix.sorted), func(i int) bool { return name(i) >= nm })
				ix.sorted = slices.Insert(ix.sorted, i, uint32(n))
			}
		}
	}
	i := sort.Search(len(ix.sorted), func(i int) bool { return name(i) >= prefix })
	var out []uint32
	for ; i < len(ix.sorted) && strings.HasPrefix(name(i), prefix) && (upTo <= 0 || len(out) < upTo); i++ {
		out = append(out, ix.sorted[i])
	}
	return out
}

// Stream returns the locations of entity's published events in clock
// order.
func (ix *Index) Stream(entity string) []Loc {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n, ok := ix.byEntity[entity]
	if !ok {
		return nil
	}
	seqs := ix.entities[n].Seqs
	out := make([]Loc, 0, len(seqs))
	for _, seq := range seqs {
		e := ix.At(seq)
		out = append(out, Loc{Seq: seq, Seg: e.Seg, Off: e.Off})
	}
	return out
}

// EntityEvents returns the locations of entity's visible events with
// global sequence >= from whose kind is in kinds (all when kinds is
// empty), and the entity's generation: one past the sequence of its newest
// visible event, 0 when it has none.
func EntityEvents[K ~uint16](ix *Index, entity string, kinds []K, from uint64) ([]Loc, uint64) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n, ok := ix.byEntity[entity]
	if !ok {
		return nil, 0
	}
	seqs := ix.entities[n].Seqs
	if len(seqs) == 0 {
		return nil, 0
	}
	gen := uint64(seqs[len(seqs)-1]) + 1
	i := sort.Search(len(seqs), func(i int) bool { return uint64(seqs[i]) >= from })
	out := make([]Loc, 0, len(seqs)-i)
	for ; i < len(seqs); i++ {
		e := ix.At(seqs[i])
		if len(kinds) > 0 && !slices.Contains(kinds, K(e.Kind)) {
			continue
		}
		out = append(out, Loc{Seq: seqs[i], Seg: e.Seg, Off: e.Off})
	}
	return out, gen
}

// MemoryBytes estimates the heap held by the index.
func (ix *Index) MemoryBytes() int64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var b int64
	for _, c := range ix.chunks {
		b += int64(cap(c)) * int64(unsafe.Sizeof(Entry{}))
	}
	b += int64(len(ix.ids.slots)) * 4
	for _, es := range ix.entities {
		b += int64(cap(es.Seqs))*4 + int64(unsafe.Sizeof(*es)) + int64(len(es.Name)) + 48
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
	for _, c := range ix.sibling {
		b += int64(cap(c)) * 4
	}
	for _, seqs := range ix.corr {
		b += int64(cap(seqs))*4 + 64
	}
	return b
}

// idTable is an open-addressing hash table of sequence+1 (0 = empty), keyed
// by the id stored in the entry; linear probing, grown at 70 % load.
type idTable struct {
	slots []uint32
	used  int
	warm  uint32 // what WarmIDsLocked read, summed
}

// idSeed keys the id table's hash, chosen at random per process: an id
// is any UUID a writer chose (an import keeps the ids it is given), so
// the home slot must not be one a writer can predict. Hashing only a
// UUIDv7's random bytes, unkeyed, let an import of ids alike in them
// land on one slot each (80,000 of them made the import 40× slower and
// every lookup and open of the store quadratic).
var idSeed = maphash.MakeSeed()

// idSlot is id's home slot in a table of mask+1 slots: all 16 bytes,
// hashed with idSeed.
func idSlot(id [16]byte, mask uint64) uint64 {
	return maphash.Bytes(idSeed, id[:]) & mask
}

func (t *idTable) find(ix *Index, id [16]byte) (uint32, bool) {
	if len(t.slots) == 0 {
		return 0, false
	}
	mask := uint64(len(t.slots) - 1)
	for i := idSlot(id, mask); ; i = (i + 1) & mask {
		s := t.slots[i]
		if s == 0 {
			return 0, false
		}
		if ix.At(s-1).ID == id {
			return s - 1, true
		}
	}
}

func (t *idTable) insert(ix *Index, seq uint32) {
	if (t.used+1)*10 > len(t.slots)*7 {
		t.grow(ix, seq)
	}
	t.place(ix.At(seq).ID, seq)
	t.used++
}

func (t *idTable) place(id [16]byte, seq uint32) {
	mask := uint64(len(t.slots) - 1)
	i := idSlot(id, mask)
	for t.slots[i] != 0 {
		i = (i + 1) & mask
	}
	t.slots[i] = seq + 1
}

// WarmIDsLocked readies the id table for inserting the ids of a group of
// at most n entries: it grows the table now if they would make it grow
// (ReserveIDsLocked), then reads the slot each id will be placed at first. In a table of
// millions of slots each of those reads misses the cache; taken here, one
// after another with nothing depending on them, they overlap, where
// InsertLocked would wait on each in turn (a fifth of the writer's time
// with one goroutine submitting, before). It changes no entry and no
// lookup. Caller holds Lock.
func (ix *Index) WarmIDsLocked(n int, ids iter.Seq[[16]byte]) {
	if ix.idsLater {
		return
	}
	ix.ReserveIDsLocked(n)
	t := &ix.ids
	if len(t.slots) == 0 {
		return
	}
	mask := uint64(len(t.slots) - 1)
	var sum uint32
	for id := range ids {
		sum += t.slots[idSlot(id, mask)]
	}
	t.warm = sum // kept, so the reads are
}

// grow doubles the table and places again what it held: the id of every
// visible entry below upto (InsertLocked, RemoveLocked and UndoLocked keep
// the table so; it holds nothing while idsLater). It reads the entries in
// sequence order rather than the old slots, whose every id would be a read
// at a random place among the entries (a cache and TLB miss each): in
// order, the reads stream, and only the writes into the new table land
// at random.
func (t *idTable) grow(ix *Index, upto uint32) {
	n := len(t.slots) * 2
	if n == 0 {
		n = 1024
	}
	t.slots = make([]uint32, n)
	if ix.idsLater {
		return
	}
	for seq := range upto {
		if e := ix.At(seq); e.Visible() {
			t.place(e.ID, seq)
		}
	}
}

// Published is the number of sequences decided (visible or hidden): Len,
// under the read lock.
func (ix *Index) Published() uint32 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.n
}

// matchesLocked reports whether entry e is visible and in f. Caller holds
// mu.
func (ix *Index) matchesLocked(f *Filter, e *Entry) bool {
	if !e.Visible() {
		return false
	}
	if f.HasEntity && !f.entityMatches(ix.entities[e.Entity].Name) {
		return false
	}
	if f.HasScope && ix.scopes[e.Scope].name != f.Scope {
		return false
	}
	return f.matchesKindClock(e.Kind, e.Clock)
}

// PlanMergeEntities is how many entities an entity-prefix filter may
// match for PlanFrom to merge their streams rather than walk a longer
// posting list or the log itself.
const PlanMergeEntities = 1024

// streamMerge yields, in ascending order, the sequences of several
// entities' streams from a starting sequence on: a min-heap of one
// position per stream.
type streamMerge struct {
	streams [][]uint32
	heads   []int // heap of stream numbers, by the stream's current sequence
}

// mergeFrom is a merge of ents' streams from sequence from on, or nil
// when they hold at least walk sequences from there (walking the
// alternative examines no more). Caller holds mu.
func (ix *Index) mergeFrom(ents []uint32, from, walk uint64) *streamMerge {
	m := &streamMerge{streams: make([][]uint32, 0, len(ents)), heads: make([]int, 0, len(ents))}
	var total uint64
	for _, n := range ents {
		s := ix.entities[n].Seqs
		s = s[sort.Search(len(s), func(i int) bool { return uint64(s[i]) >= from }):]
		if len(s) == 0 {
			continue
		}
		if total += uint64(len(s)); total >= walk {
			return nil
		}
		m.streams = append(m.streams, s)
		m.heads = append(m.heads, len(m.streams)-1)
	}
	for i := len(m.heads)/2 - 1; i >= 0; i-- {
		m.down(i)
	}
	return m
}

// Len is the number of streams not yet exhausted.
func (m *streamMerge) Len() int { return len(m.heads) }

// next returns the smallest sequence left and moves past it.
func (m *streamMerge) next() uint32 {
	top := m.heads[0]
	seq := m.streams[top][0]
	m.streams[top] = m.streams[top][1:]
	if len(m.streams[top]) == 0 {
		last := len(m.heads) - 1
		m.heads[0] = m.heads[last]
		m.heads = m.heads[:last]
	}
	if len(m.heads) > 0 {
		m.down(0)
	}
	return seq
}

func (m *streamMerge) less(i, j int) bool { return m.streams[m.heads[i]][0] < m.streams[m.heads[j]][0] }

func (m *streamMerge) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(m.heads) {
			return
		}
		c := l
		if r := l + 1; r < len(m.heads) && m.less(r, l) {
			c = r
		}
		if !m.less(c, i) {
			return
		}
		m.heads[i], m.heads[c] = m.heads[c], m.heads[i]
		i = c
	}
}

// CountMatching counts the visible events in f with sequences in
// [from, to).
func (ix *Index) CountMatching(f Filter, from, to uint64) uint64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	to = min(to, uint64(ix.n))
	var n uint64
	for seq := from; seq < to; seq++ {
		if ix.matchesLocked(&f, ix.At(uint32(seq))) {
			n++
		}
	}
	return n
}

// PlanFrom collects up to max visible events in f with sequence >= from,
// in order, and returns the sequence to continue from: one past the last
// sequence examined (all of which are decided, so nothing before it can
// appear later).
func (ix *Index) PlanFrom(f Filter, from uint64, max int) ([]Loc, uint64) {
	locs, next, _, _ := ix.PlanFromWithin(f, from, max, 0)
	return locs, next
}

// PlanFromWithin is PlanFrom examining at most examine entries (the
// posting-list entries, streams' sequences or log entries it decides;
// examine <= 0: no bound). It returns as well how many it examined, and
// cut: it stopped at that bound with entries left, so the events from
// next on are not decided yet rather than absent. What one call holds
// the index's read lock for, and its CPU, are so bounded whatever the
// filter: one no posting list narrows (a category alone) walks the log.
func (ix *Index) PlanFromWithin(f Filter, from uint64, max, examine int) (locs []Loc, next uint64, examined int, cut bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	end := uint64(ix.n)
	if from >= end || max <= 0 {
		return nil, from, 0, false
	}
	if examine <= 0 {
		examine = int(^uint(0) >> 1)
	}
	var out []Loc
	// take decides seq; false once the plan is full or at the bound.
	take := func(seq uint32) bool {
		examined++
		e := ix.At(seq)
		if ix.matchesLocked(&f, e) {
			out = append(out, Loc{Seq: seq, Seg: e.Seg, Off: e.Off})
		}
		if examined >= examine && len(out) < max {
			cut = true
			return false
		}
		return len(out) < max
	}
	// done is what the plan returns, stopped before next with more
	// entries left or not: cut only with entries left (at the bound on
	// the last one, what follows it is decided: none is in f).
	done := func(next uint64, more bool) ([]Loc, uint64, int, bool) {
		if cut && !more {
			return out, end, examined, false
		}
		return out, next, examined, cut
	}
	// Walk the shortest posting list the filter allows, from `from` on:
	// the scope's, the kind's, or the entity's when it names one.
	var post []uint32
	have := false
	consider := func(s []uint32) {
		if !have || len(s) < len(post) {
			post, have = s, true
		}
	}
	if f.HasScope {
		n, ok := ix.byScope[f.Scope]
		if !ok {
			return nil, end, 0, false
		}
		consider(ix.scopes[n].seqs)
	}
	if f.HasKind {
		consider(ix.kinds[f.Kind])
	}
	entityList := false // post is one entity's sequences, in clock order too
	var merge []uint32  // entities whose streams are merged, when that walks least
	if f.HasEntity {
		switch ents := ix.entitiesOf(&f, PlanMergeEntities+1); {
		case len(ents) == 0:
			return nil, end, 0, false
		case len(ents) == 1:
			if s := ix.entities[ents[0]].Seqs; !have || len(s) < len(post) {
				post, have, entityList = s, true, true
			}
		case len(ents) <= PlanMergeEntities:
			merge = ents
		}
	}
	if merge != nil {
		walk := end - from
		if have {
			walk = uint64(len(post) - sort.Search(len(post), func(i int) bool { return uint64(post[i]) >= from }))
		}
		if m := ix.mergeFrom(merge, from, walk); m != nil {
			for m.Len() > 0 {
				if seq := m.next(); !take(seq) {
					return done(uint64(seq)+1, m.Len() > 0)
				}
			}
			return done(end, false)
		}
	}
	if !have {
		for seq := from; seq < end; seq++ {
			if !take(uint32(seq)) {
				return done(seq+1, seq+1 < end)
			}
		}
		return done(end, false)
	}
	i := sort.Search(len(post), func(i int) bool { return uint64(post[i]) >= from })
	clocks := entityList && f.HasClock
	if clocks {
		// One entity's events are in clock order: start at ClockMin, and
		// past ClockMax none is in f.
		i += sort.Search(len(post)-i, func(j int) bool { return ix.At(post[i+j]).Clock >= f.ClockMin })
	}
	for ; i < len(post); i++ {
		if clocks && ix.At(post[i]).Clock > f.ClockMax {
			return done(end, false)
		}
		if !take(post[i]) {
			return done(uint64(post[i])+1, i+1 < len(post))
		}
	}
	return done(end, false)
}
