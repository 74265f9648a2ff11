package index

// Taking back the newest inserts: the writer may add a group's entries
// before it knows the group is durable (while its fsync runs, under Lock)
// and must then be able to remove them again, exactly, should the sync
// fail or take too long. BeginUndo starts recording what InsertLocked
// changes; UndoLocked puts everything back as it was before the first
// recorded insert (Len included), and EndUndo forgets the record. Only
// inserts are recorded: nothing else may change the index in between,
// which holding Lock from BeginUndo to EndUndo or UndoLocked guarantees.

// undoRecord is what one InsertLocked changed beyond appending.
type undoRecord struct {
	seq       uint32
	visible   bool   // joined the postings, the id table and its entity's stream
	cause     uint32 // one more than the cause's sequence whose Child it took (0: none)
	idem      string // the key it set ("": none)
	idemPrev  uint32 // the key's sequence before, when hadIdem
	hadIdem   bool
	corr      [16]byte // the correlation group it joined, when correlated
	correlate bool
	corrNew   bool // the group had no list before
	kindNew   bool // its kind had no list before
}

// undoLog is the record since BeginUndo.
type undoLog struct {
	on       bool
	n        uint32 // Len at BeginUndo
	idSlots  int    // the id table's size at BeginUndo (a grow rebuilds it on undo)
	idUsed   int
	inserts  []undoRecord
	liveEnts int
}

// ReserveIDsLocked grows the id table, if need be, so that n more visible
// inserts fit without growing it: call it before BeginUndo, so that an undo
// clears the undone ids in O(group) instead of rebuilding the table (a
// grow re-places every id, after which clearing some could cut others'
// probe runs). Caller holds Lock.
func (ix *Index) ReserveIDsLocked(n int) {
	for (ix.ids.used+n)*10 > len(ix.ids.slots)*7 {
		ix.ids.grow(ix, ix.n)
	}
}

// BeginUndo starts recording inserts so that UndoLocked can take them
// back. Caller holds Lock until EndUndo or UndoLocked.
func (ix *Index) BeginUndo() {
	u := &ix.undo
	u.on, u.n, u.idSlots, u.idUsed, u.liveEnts = true, ix.n, len(ix.ids.slots), ix.ids.used, ix.liveEntities
	u.inserts = u.inserts[:0]
}

// EndUndo keeps the recorded inserts and stops recording. Caller holds
// Lock.
func (ix *Index) EndUndo() {
	ix.undo.on = false
	clear(ix.undo.inserts) // drop the strings
	ix.undo.inserts = ix.undo.inserts[:0]
}

// UndoLocked takes back every insert since BeginUndo, newest first, and
// stops recording: entries, postings, entity streams, idempotency keys,
// causal links, correlation groups and the id table are as they were, and
// Len is what it was. Caller holds Lock.
func (ix *Index) UndoLocked() {
	u := &ix.undo
	pop := func(seqs []uint32, seq uint32) []uint32 {
		if n := len(seqs); n > 0 && seqs[n-1] == seq {
			return seqs[:n-1]
		}
		panic("index: undo of an insert that is not the newest")
	}
	grew := len(ix.ids.slots) != u.idSlots
	for i := len(u.inserts) - 1; i >= 0; i-- {
		r := &u.inserts[i]
		if !r.visible {
			continue
		}
		e := ix.At(r.seq)
		if r.cause != 0 {
			ix.At(r.cause - 1).Child = ix.Sibling(r.seq)
		}
		if r.correlate {
			ix.names -= estCorrSeq
			if seqs := pop(ix.corr[r.corr], r.seq); r.corrNew {
				delete(ix.corr, r.corr)
				ix.names -= estCorrBytes
			} else {
				ix.corr[r.corr] = seqs
			}
		}
		es := ix.entities[e.Entity]
		es.Seqs = pop(es.Seqs, r.seq)
		ix.scopes[e.Scope].seqs = pop(ix.scopes[e.Scope].seqs, r.seq)
		if ks := pop(ix.kinds[e.Kind], r.seq); r.kindNew {
			delete(ix.kinds, e.Kind)
		} else {
			ix.kinds[e.Kind] = ks
		}
		if r.idem != "" {
			if r.hadIdem {
				ix.idem[r.idem] = r.idemPrev
			} else {
				delete(ix.idem, r.idem)
				ix.names -= int64(len(r.idem)) + estIdemBytes
			}
		}
		if !grew {
			ix.ids.remove(e.ID, r.seq)
		}
	}
	ix.truncate(u.n)
	if grew {
		// A grow re-placed every id in slot order: clearing the undone
		// ones could cut others' probe runs. Rebuild from the entries
		// (O(Len); ReserveIDsLocked before BeginUndo avoids it).
		ix.ids = idTable{}
		for seq := uint32(0); seq < ix.n; seq++ {
			if ix.At(seq).Visible() {
				ix.ids.insert(ix, seq)
			}
		}
	}
	ix.liveEntities = u.liveEnts
	ix.EndUndo()
}

// truncate drops the entries from n on (their postings already gone).
func (ix *Index) truncate(n uint32) {
	for ix.n > n {
		ix.n--
		c := ix.n >> chunkBits
		ix.chunks[c] = ix.chunks[c][:len(ix.chunks[c])-1]
		ix.sibling[c] = ix.sibling[c][:len(ix.sibling[c])-1]
		if len(ix.chunks[c]) == 0 && c > 0 {
			ix.chunks, ix.sibling = ix.chunks[:c], ix.sibling[:c]
		}
	}
}

// remove clears the slot of (id, seq), the newest id placed: with linear
// probing, taking back the newest insert first leaves every other probe
// run as it was (each was placed when that slot was still empty).
func (t *idTable) remove(id [16]byte, seq uint32) {
	mask := uint64(len(t.slots) - 1)
	for i := idSlot(id, mask); t.slots[i] != 0; i = (i + 1) & mask {
		if t.slots[i] == seq+1 {
			t.slots[i] = 0
			t.used--
			return
		}
	}
	panic("index: undo of an id that is not in the table")
}
