package index

import "math/bits"

// Bulk loading. Restoring a million entries one InsertLocked at a time
// puts each id at a random place in the id table: a cache and TLB miss per
// entry, about 140 ns on the development VM — most of restoring a
// checkpoint. Between DeferIDsLocked and BuildIDsLocked, InsertLocked
// leaves the id table alone; BuildIDsLocked then places every visible
// entry's id in the order of its home slot, so the table is written front
// to back.

// DeferIDsLocked makes InsertLocked leave the id table to BuildIDsLocked.
// Until then, nothing may look an id up (FindID, a cause in Links):
// restoring a checkpoint gives no links. Caller holds Lock.
func (ix *Index) DeferIDsLocked() { ix.idsLater = true }

// BuildIDsLocked puts the id of every visible entry into the id table,
// which must hold none yet (after DeferIDsLocked on a fresh index), and
// ends the deferral. Caller holds Lock.
func (ix *Index) BuildIDsLocked() {
	ix.idsLater = false
	visible := 0
	for s := range ix.n {
		if ix.At(s).Visible() {
			visible++
		}
	}
	size := 1024
	for (visible+1)*10 > size*7 {
		size *= 2
	}
	t := &ix.ids
	t.slots, t.used = make([]uint32, size), visible
	mask := uint64(size - 1)
	// A counting sort of the sequences by the top bits of their home
	// slot (at most 1<<16 buckets), then placement in that order.
	shift := max(bits.Len(uint(size-1))-16, 0)
	counts := make([]uint32, (size-1)>>shift+2)
	for s := range ix.n {
		if e := ix.At(s); e.Visible() {
			counts[idSlot(e.ID, mask)>>shift+1]++
		}
	}
	for i := 1; i < len(counts); i++ {
		counts[i] += counts[i-1]
	}
	order := make([]uint32, visible)
	for s := range ix.n {
		if e := ix.At(s); e.Visible() {
			b := idSlot(e.ID, mask) >> shift
			order[counts[b]] = s
			counts[b]++
		}
	}
	for _, s := range order {
		t.place(ix.At(s).ID, s)
	}
}
