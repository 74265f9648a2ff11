package core

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/index"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// The index checkpoint: the whole in-memory index, written at Close
// (temporary file, fsync, rename) with its watermark — the segment and
// offset where the log stood. Open loads it and reads only the log after
// the watermark, which stays valid whatever is appended later, crashes
// included. A checkpoint that is damaged, or that does not match the
// segment files (one it lists is missing, or shorter than its watermark),
// is ignored and the log is scanned in full; every path yields the same
// index.

// (layout: core/internal/format, CheckpointName)

type checkpointInfo struct {
	seg     uint32
	end     int64
	entries uint64
	hidden  int // restored entries of fences that never committed
	// located counts the restored entries that name an event frame;
	// matched counts those the covered frames confirmed (see cover).
	located, matched int
}

// writeCheckpoint saves the index. Called by Close once the writer has
// stopped, so the index and segment ends are final.
func (s *Store) writeCheckpoint(seg uint32, end int64) error {
	ix := s.ix
	ix.RLock()
	defer ix.RUnlock()
	// Sized for everything but the idempotency keys and correlation
	// groups up front: growing a buffer of hundreds of MB copies it.
	size := 64 + int(ix.Len())*51 + 16*1024 + int(ix.NumScopes())*34 + ix.NumIdems()*40 + ix.NumCorrelationGroups()*24
	for n := range uint32(ix.NumEntities()) {
		size += 51 + len(ix.Entity(n).Name)
	}
	b := make([]byte, 0, size)
	b = append(b, format.CheckpointMagic...)
	b = le.AppendUint32(b, seg)
	b = le.AppendUint64(b, uint64(end))
	b = le.AppendUint32(b, ix.Len())
	s.endsMu.Lock()
	ids := make([]uint32, 0, len(s.ends))
	for id := range s.ends {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	b = le.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		b = le.AppendUint32(b, id)
		b = le.AppendUint64(b, uint64(s.ends[id]))
	}
	s.endsMu.Unlock()
	b = le.AppendUint32(b, uint32(ix.NumEntities()))
	for n := range uint32(ix.NumEntities()) {
		es := ix.Entity(n)
		b = le.AppendUint16(b, uint16(len(es.Name)))
		b = append(b, es.Name...)
		ex := byte(0)
		if es.Head.Exists {
			ex = 1
		}
		b = append(b, ex)
		b = le.AppendUint64(b, es.Head.Clock)
		b = le.AppendUint64(b, uint64(es.Head.TS))
		b = append(b, es.Head.Hash[:]...)
	}
	b = le.AppendUint32(b, uint32(ix.NumScopes()))
	for n := range uint32(ix.NumScopes()) {
		name := ix.ScopeName(n)
		b = le.AppendUint16(b, uint16(len(name)))
		b = append(b, name...)
	}
	for seq := uint32(0); seq < ix.Len(); seq++ {
		e := ix.At(seq)
		b = append(b, e.ID[:]...)
		b = le.AppendUint32(b, e.Seg)
		b = le.AppendUint32(b, e.Off)
		b = le.AppendUint32(b, e.Entity)
		b = le.AppendUint32(b, e.Scope)
		b = le.AppendUint64(b, e.Clock)
		b = le.AppendUint16(b, e.Kind)
		b = append(b, e.Flags)
		b = le.AppendUint32(b, e.Child)
		b = le.AppendUint32(b, ix.Sibling(seq))
	}
	b = le.AppendUint32(b, uint32(ix.NumIdems()))
	for k, seq := range ix.Idems() {
		b = le.AppendUint16(b, uint16(len(k)))
		b = append(b, k...)
		b = le.AppendUint32(b, seq)
	}
	b = le.AppendUint32(b, uint32(ix.NumCorrelationGroups()))
	for corr, seqs := range ix.CorrelationGroups() {
		b = append(b, corr[:]...)
		b = le.AppendUint32(b, uint32(len(seqs)))
		for _, q := range seqs {
			b = le.AppendUint32(b, q)
		}
	}
	b = le.AppendUint32(b, format.CRC32C(b))
	return segment.WriteFileAtomic(s.fs, s.cfg.Dir, format.CheckpointName, b, true)
}

var errBadCheckpoint = errors.New("checkpoint damaged")

// checkCausalLinks checks the restored child and sibling links of the n
// entries of ix form a forest, as the writer builds them: every event is
// reached from at most one cause, and every event on a cause's chain
// comes after that cause (siblings already run backwards, so a chain
// ends). Otherwise a walk could return an event twice, list an event
// under a cause it does not have, or grow a level past every bound. It
// costs one bit per entry and one step per link.
func checkCausalLinks(ix *index.Index, n uint32) error {
	reached := make([]uint64, (int(n)+63)/64)
	for p := uint32(0); p < n; p++ {
		for c := ix.At(p).Child; c != 0; c = ix.Sibling(c - 1) {
			q := c - 1
			if q <= p || q >= n || reached[q/64]&(1<<(q%64)) != 0 {
				return fmt.Errorf("%w: entry %d has causal links that are not a forest (at entry %d)", errBadCheckpoint, p, q)
			}
			reached[q/64] |= 1 << (q % 64)
		}
	}
	return nil
}

// mapCheckpoint maps dir's index checkpoint, refusing by its size one
// far larger than the log it indexes (checkpointMaxBytes): sparse or
// written over, it would be mapped and checked whole.
func mapCheckpoint(fsys vfs.FS, dir string) ([]byte, func(), error) {
	path := filepath.Join(dir, format.CheckpointName)
	if st, err := fsys.Stat(path); err == nil {
		if max := checkpointMaxBytes(fsys, dir); st.Size() > max {
			return nil, nil, fmt.Errorf("index checkpoint %s of %d bytes, more than a checkpoint of this log holds (%d)", path, st.Size(), max)
		}
	}
	return mapReadOnly(fsys, path)
}

// checkpointMaxBytes bounds the index checkpoint of the log in dir: an
// event's entry is smaller than its frame, and a packed segment holds
// its frames in less than a sixteenth of their size only when they
// repeat a lot, so sixteen times the segments' bytes and 64 MiB.
func checkpointMaxBytes(fsys vfs.FS, dir string) int64 {
	var n int64
	ents, _ := fsys.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), format.SegmentSuffix) {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
	}
	return 16*n + 64<<20
}

// checkpointSegments returns the segment keys dir's index checkpoint
// lists when it is sound (nil otherwise): evidence, for salvage, of the
// segment files the log had when it was written.
func checkpointSegments(fsys vfs.FS, dir string) []uint32 {
	b, unmap, err := mapCheckpoint(fsys, dir)
	if err != nil {
		return nil
	}
	defer unmap()
	body, err := checkpointBody(b)
	if err != nil {
		return nil
	}
	r := &ckReader{b: body, off: len(format.CheckpointMagic)}
	r.u32() // the watermark segment
	r.u64() // its end
	r.u32() // the entries
	nseg := int(r.u32())
	var out []uint32
	for i := 0; i < nseg && r.err == nil; i++ {
		id := r.u32()
		r.u64()
		if r.err == nil {
			out = append(out, id)
		}
	}
	return out
}

// loadCheckpoint restores the index from the checkpoint when it is sound
// and matches the segment files; otherwise it leaves the index empty and
// returns nil (the caller scans the log).
func (s *Store) loadCheckpoint(ids []uint32) *checkpointInfo {
	path := filepath.Join(s.cfg.Dir, format.CheckpointName)
	b, unmap, err := mapCheckpoint(s.fs, s.cfg.Dir) // restoreCheckpoint copies what it keeps
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("batpak: index checkpoint unreadable; scanning the log", "err", err)
		}
		return nil
	}
	defer unmap()
	ck, err := s.restoreCheckpoint(b, ids)
	if err != nil {
		s.log.Warn("batpak: index checkpoint not used; scanning the log", "file", path, "reason", err)
		s.ix = index.New()
		s.endsMu.Lock()
		s.ends = nil
		s.endsMu.Unlock()
		return nil
	}
	return ck
}

type ckReader struct {
	b   []byte
	off int
	err error
}

func (r *ckReader) take(n int) []byte {
	if r.err != nil || n < 0 || r.off+n > len(r.b) {
		r.err = errBadCheckpoint
		return make([]byte, max(n, 0))
	}
	v := r.b[r.off : r.off+n]
	r.off += n
	return v
}

func (r *ckReader) u16() uint16 { return le.Uint16(r.take(2)) }
func (r *ckReader) u32() uint32 { return le.Uint32(r.take(4)) }
func (r *ckReader) u64() uint64 { return le.Uint64(r.take(8)) }

// checkpointBody checks a checkpoint's magic and checksum and returns
// what the checksum covers.
func checkpointBody(b []byte) ([]byte, error) {
	if len(b) < len(format.CheckpointMagic)+4 || string(b[:len(format.CheckpointMagic)]) != format.CheckpointMagic {
		if string(b[:min(len(b), len(format.CheckpointMagicV1))]) == format.CheckpointMagicV1 {
			return nil, errors.New("an earlier layout (" + format.CheckpointMagicV1 + ", without causal links); Close writes the current one")
		}
		return nil, fmt.Errorf("%w: bad magic", errBadCheckpoint)
	}
	body := b[:len(b)-4]
	if le.Uint32(b[len(b)-4:]) != format.CRC32C(body) {
		return nil, fmt.Errorf("%w: checksum mismatch", errBadCheckpoint)
	}
	return body, nil
}

func (s *Store) restoreCheckpoint(b []byte, ids []uint32) (*checkpointInfo, error) {
	body, err := checkpointBody(b)
	if err != nil {
		return nil, err
	}
	r := &ckReader{b: body, off: len(format.CheckpointMagic)}
	ck := &checkpointInfo{seg: r.u32(), end: int64(r.u64())}
	n := r.u32()
	ck.entries = uint64(n)
	present := map[uint32]bool{}
	for _, id := range ids {
		present[id] = true
	}
	nseg := int(r.u32())
	for i := 0; i < nseg && r.err == nil; i++ {
		id, end := r.u32(), int64(r.u64())
		if !present[id] {
			return nil, fmt.Errorf("segment %s is listed but missing", format.SegmentName(id))
		}
		if n, err := segment.LogicalSize(s.fs, filepath.Join(s.cfg.Dir, format.SegmentName(id))); err != nil || n < end {
			return nil, fmt.Errorf("segment %s is shorter than the checkpoint says", format.SegmentName(id))
		}
		s.setSegmentEnd(id, end)
	}
	for _, id := range ids {
		if format.SegID(id) < format.SegID(ck.seg) {
			s.endsMu.Lock()
			_, ok := s.ends[id]
			s.endsMu.Unlock()
			if !ok {
				return nil, fmt.Errorf("segment %d is not in the checkpoint", id)
			}
		}
	}
	if ck.seg != 0 && !present[ck.seg] {
		return nil, fmt.Errorf("watermark segment %d is missing", ck.seg)
	}
	ix := s.ix
	correlated := 0 // visible entries filed in a correlation group
	nent := int(r.u32())
	for i := 0; i < nent && r.err == nil; i++ {
		name := string(r.take(int(r.u16())))
		var head index.Head
		head.Exists = r.take(1)[0] == 1
		head.Clock = r.u64()
		head.TS = int64(r.u64())
		copy(head.Hash[:], r.take(32))
		ix.AddEntity(name, head)
	}
	nsc := int(r.u32())
	for i := 0; i < nsc && r.err == nil; i++ {
		name := string(r.take(int(r.u16())))
		ix.AddScope(name)
	}
	// The id table is built once every entry is in (index.BuildIDsLocked:
	// in slot order, not a cache miss per entry); nothing looks an id up
	// meanwhile.
	ix.DeferIDsLocked()
	for seq := uint32(0); seq < n && r.err == nil; seq++ {
		var e index.Entry
		copy(e.ID[:], r.take(16))
		e.Seg, e.Off, e.Entity, e.Scope = r.u32(), r.u32(), r.u32(), r.u32()
		e.Clock = r.u64()
		e.Kind = r.u16()
		e.Flags = r.take(1)[0]
		e.Child = r.u32()
		sib := r.u32()
		if int(e.Entity) >= ix.NumEntities() || int(e.Scope) >= ix.NumScopes() {
			return nil, fmt.Errorf("%w: entry %d names an unknown entity or scope", errBadCheckpoint, seq)
		}
		// A child comes after its cause; the next sibling before it.
		if (e.Child != 0 && (e.Child-1 <= seq || e.Child > n)) || (sib != 0 && sib-1 >= seq) {
			return nil, fmt.Errorf("%w: entry %d has causal links out of order", errBadCheckpoint, seq)
		}
		if !EventID(e.ID).IsZero() {
			ck.located++
		}
		if e.Flags&index.Hidden != 0 {
			ck.hidden++
		}
		if e.Visible() && e.Flags&index.Correlated != 0 {
			correlated++
		}
		ix.InsertLocked(seq, e, "", index.Links{})
		ix.SetSibling(seq, sib)
	}
	// From here on n entries were read, so n is bounded by the file.
	if r.err != nil {
		return nil, r.err
	}
	ix.BuildIDsLocked()
	if err := checkCausalLinks(ix, n); err != nil {
		return nil, err
	}
	nid := int(r.u32())
	for i := 0; i < nid && r.err == nil; i++ {
		k := string(r.take(int(r.u16())))
		q := r.u32()
		if r.err == nil && (q >= n || !ix.At(q).Visible()) {
			return nil, fmt.Errorf("%w: idempotency key %d names entry %d, not a visible event", errBadCheckpoint, i, q)
		}
		ix.SetIdem(k, q)
	}
	ngroups := int(r.u32())
	if ngroups < 0 || ngroups > (len(body)-r.off)/20 {
		return nil, fmt.Errorf("%w: %d correlation groups", errBadCheckpoint, ngroups)
	}
	ix.ReserveCorrelationGroups(ngroups)
	// Every group's members in one allocation (each group's slice capped,
	// so a later append to one copies it rather than overwrite the next).
	backing := make([]uint32, 0, max(0, (len(body)-r.off-20*ngroups)/4))
	member := make([]uint64, (int(n)+63)/64)
	for i := 0; i < ngroups && r.err == nil; i++ {
		var corr [16]byte
		copy(corr[:], r.take(16))
		m := int(r.u32())
		if m <= 0 || m > int(n) || m > cap(backing)-len(backing) {
			return nil, fmt.Errorf("%w: correlation group %d has %d members", errBadCheckpoint, i, m)
		}
		start := len(backing)
		backing = backing[:start+m]
		seqs := backing[start : start+m : start+m]
		for j := range seqs {
			seqs[j] = r.u32()
			if seqs[j] >= n || (j > 0 && seqs[j] <= seqs[j-1]) {
				return nil, fmt.Errorf("%w: correlation group %d out of order", errBadCheckpoint, i)
			}
			// Only a visible event carrying another event's correlation id
			// is a member, of one group only; with the count below, every
			// such event is in exactly one group.
			if e := ix.At(seqs[j]); !e.Visible() || e.Flags&index.Correlated == 0 || member[seqs[j]/64]&(1<<(seqs[j]%64)) != 0 {
				return nil, fmt.Errorf("%w: correlation group %d names entry %d, not a visible correlated event of no other group", errBadCheckpoint, i, seqs[j])
			}
			member[seqs[j]/64] |= 1 << (seqs[j] % 64)
		}
		correlated -= m
		ix.SetCorrelationGroup(corr, seqs)
	}
	if r.err != nil {
		return nil, r.err
	}
	if correlated != 0 {
		return nil, fmt.Errorf("%w: the correlation groups do not list every correlated event once", errBadCheckpoint)
	}
	if r.off != len(body) {
		return nil, fmt.Errorf("%w: %d bytes left over", errBadCheckpoint, len(body)-r.off)
	}
	return ck, nil
}

// cover checks a frame the checkpoint covers (at off in segment seg; the
// checkpoint covers the segment up to from) against the restored index:
// the watermark must not fall inside the frame, and an event frame at a
// place an entry names must be that entry's event. A checkpoint of
// another store, or of other files, is so found out instead of being
// trusted (Open then scans).
func (ck *checkpointInfo) cover(ix *index.Index, seg uint32, off int, rec []byte, from int) error {
	if off+format.FrameHeaderSize+len(rec) > from {
		return fmt.Errorf("%w: the watermark falls inside the frame at offset %d of %s", errCheckpointStale, off, format.SegmentName(seg))
	}
	if rec[0] != format.RecEvent || !format.CheckEvent(rec) {
		return nil
	}
	v := format.EventView(rec)
	return ck.coverEvent(ix, seg, off, len(rec), from, v.Seq(), v.ID())
}

// coverEvent is cover for an event known by its sequence and id (from a
// frame, or from a segment footer); n is its record length.
func (ck *checkpointInfo) coverEvent(ix *index.Index, seg uint32, off, n, from int, seq uint64, id EventID) error {
	if off+format.FrameHeaderSize+n > from {
		return fmt.Errorf("%w: the watermark falls inside the frame at offset %d of %s", errCheckpointStale, off, format.SegmentName(seg))
	}
	if seq >= uint64(ix.Len()) {
		return nil // a batch that never committed, at the very end
	}
	e := ix.At(uint32(seq))
	if e.Seg != seg || e.Off != uint32(off) {
		return nil // a batch that never committed: its sequence was reused
	}
	if e.ID != id {
		return fmt.Errorf("%w: %s at offset %d holds event %s, the checkpoint says %s", errCheckpointStale, format.SegmentName(seg), off, id, EventID(e.ID))
	}
	ck.matched++
	return nil
}
