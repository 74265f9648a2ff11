package core

import "github.com/batpak-go/batpak/core/internal/format"

// Sealing placed events: their chain hashes, taken many at once.
//
// place encodes an event without its chain hash (the BLAKE3 of its
// header, which holds the previous event's hash of its entity). The
// frames wait in the writer's buffer until something writes, rotates or
// cuts it, or until maxUnsealed of them wait; sealPlaced then hashes them
// level by level. A frame's level is one more than that of the unsealed
// frame it chains to (0 when its previous hash was known at placing), so
// the frames of one level are independent: eight producers' batches of
// 100 events to eight entities are 100 levels of eight hashes, taken
// eight lanes at a time (format.SealEvents), not 800 one after another.

// maxUnsealed bounds the frames waiting for their seal, and so the
// seal's bookkeeping, whatever the size of a group.
const maxUnsealed = 1 << 14

// unsealedFrame is an event frame placed in the writer's buffer and not
// yet sealed.
type unsealedFrame struct {
	off  int    // where the frame starts in the buffer
	pred int32  // the unsealed frame it chains to, or -1: its previous hash is in the record
	en   uint32 // its entity
	// hashPayload: the record's payload digest is still to be taken
	// (eventReq.hashLater).
	hashPayload bool
}

// sealState is the writer's unsealed frames and the seal's scratch space.
type sealState struct {
	frames   []unsealedFrame
	head     map[uint32]int32 // entity -> its newest unsealed frame
	payloads int              // frames whose payload digest is still to be taken
	// Scratch, kept between seals.
	hashes [][32]byte // by frame
	level  []int32    // by frame
	starts []int32    // by level: where its frames start in order
	order  []int32    // frames, by level
	at     []int32    // by level: the next place in order
	offs   []int
	out    [][32]byte
}

// newest returns the entity's newest unsealed frame, or -1.
func (s *sealState) newest(en uint32) int32 {
	if i, ok := s.head[en]; ok {
		return i
	}
	return -1
}

// add records an unsealed frame at off of entity en chaining to pred,
// whose payload digest is still to be taken when hashPayload is set.
func (s *sealState) add(off int, pred int32, en uint32, hashPayload bool) {
	if s.head == nil {
		s.head = map[uint32]int32{}
	}
	s.head[en] = int32(len(s.frames))
	s.frames = append(s.frames, unsealedFrame{off: off, pred: pred, en: en, hashPayload: hashPayload})
	if hashPayload {
		s.payloads++
	}
}

// reset forgets the frames (sealed); a map grown by a large group is
// dropped rather than cleared, since clear walks every bucket.
func (s *sealState) reset() {
	s.frames, s.payloads = s.frames[:0], 0
	if len(s.head) > 4096 {
		s.head = nil
		return
	}
	clear(s.head)
}

// sealPlaced seals every unsealed frame in w.buf: each gets its previous
// hash (when it chains to another unsealed frame), its chain hash and its
// frame's CRC, and each entity's head gets its newest event's hash.
// Whatever writes, rotates, cuts or drops w.buf calls it first.
func (w *writer) sealPlaced() {
	s := &w.unsealed
	n := len(s.frames)
	if n == 0 {
		return
	}
	if s.payloads > 0 {
		// The payloads' digests first: they are in the chained headers.
		s.offs = s.offs[:0]
		for _, f := range s.frames {
			if f.hashPayload {
				s.offs = append(s.offs, f.off)
			}
		}
		format.HashPayloads(w.buf, s.offs)
	}
	s.level = grow(s.level, n)
	s.hashes = grow(s.hashes, n)
	top := int32(0)
	for i, f := range s.frames {
		l := int32(0)
		if f.pred >= 0 {
			l = s.level[f.pred] + 1
		}
		s.level[i] = l
		top = max(top, l)
	}
	// The frames by level (a counting sort, stable: within a level, in
	// placing order).
	s.starts = grow(s.starts, int(top)+2)
	clear(s.starts)
	for _, l := range s.level {
		s.starts[l+1]++
	}
	for l := int32(1); l <= top+1; l++ {
		s.starts[l] += s.starts[l-1]
	}
	s.order = grow(s.order, n)
	s.at = append(s.at[:0], s.starts[:top+1]...)
	for i, l := range s.level {
		s.order[s.at[l]] = int32(i)
		s.at[l]++
	}
	for l := int32(0); l <= top; l++ {
		idxs := s.order[s.starts[l]:s.starts[l+1]]
		s.offs = s.offs[:0]
		for _, i := range idxs {
			f := &s.frames[i]
			if f.pred >= 0 {
				format.SetPrevHash(w.buf, f.off, s.hashes[f.pred])
			}
			s.offs = append(s.offs, f.off)
		}
		s.out = grow(s.out, len(idxs))
		format.SealEvents(w.buf, s.offs, s.out)
		for k, i := range idxs {
			s.hashes[i] = s.out[k]
		}
	}
	ix := w.s.ix
	for en, i := range s.head {
		ix.Entity(en).Head.Hash = s.hashes[i]
	}
	s.reset()
}

// grow returns b resized to n, reallocated when its capacity is short.
func grow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n, max(n, 2*cap(b)))
	}
	return b[:n]
}
