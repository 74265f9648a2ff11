package core

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
)

// VerifyReport summarises a successful Verify.
type VerifyReport struct {
	Segments int
	Events   int // events checked, hidden ones and removed stubs included
	Hidden   int // events of fences that never committed (checked, never shown)
	// Removed counts the stubs compaction left of the events it removed
	// (headers that keep the chain linked; checked, never shown). They
	// are in Events too: Events-Removed-Hidden is what reads can show.
	Removed  int
	Entities int
}

// Verify reads every segment and checks every event: frame checksums, the
// payload digest, the event's own chain hash, the link to the entity's
// previous event, and that clocks run 0, 1, 2, … per entity; and that the
// index reads are served from names each event as its frame does (id,
// entity, clock: a footer or checkpoint whose checksum holds but whose
// content does not, however it came to be, is found here). It returns the
// first failure: a *ChainError (errors.Is(err, ErrChainBroken)) naming the
// segment, offset and event id, or a *CorruptionError for unreadable
// frames. Verify reads from disk, not from the index, and may run while the
// store is being written (it checks what was written when it started).
// On a read-only store beside a compacting writer it checks the segments
// live when it starts (see OpenReadOnly), holding one file descriptor per
// segment until it returns.
func (s *Store) Verify() (VerifyReport, error) { return s.VerifyProgress(nil) }

// VerifyProgress is Verify, calling progress (when not nil) after each
// segment checked with the segments checked so far and the number it
// checks in all (what was written when it started), from the calling
// goroutine.
func (s *Store) VerifyProgress(progress func(done, total int)) (VerifyReport, error) {
	if !s.readOnly {
		return s.verifyOnce(progress)
	}
	var rep VerifyReport
	err := readBesideWriter(s.fs, s.cfg.Dir, func() (err error) {
		rep, err = s.verifyOnce(progress)
		return err
	})
	return rep, err
}

func (s *Store) verifyOnce(progress func(done, total int)) (VerifyReport, error) {
	var rep VerifyReport
	if err := s.checkReadable(); err != nil {
		return rep, err
	}
	// No redaction rewrites a frame, and no compaction replaces a file,
	// while they are being checked.
	s.rewriteMu.RLock()
	defer s.rewriteMu.RUnlock()
	snap, err := takeSegmentSnapshot(s.fs, s.cfg.Dir, s.readOnly)
	if err != nil {
		return rep, err
	}
	defer snap.close()
	ids := snap.keys
	limitSeg, limitOff := uint32(0), int64(-1)
	if s.w != nil {
		limitSeg, limitOff = s.w.stat()
	}
	type link struct {
		hash  Hash
		clock uint64
	}
	last := map[string]link{}
	s.ix.RLock()
	indexed := uint64(s.ix.Len()) // events published when the check began
	s.ix.RUnlock()
	fail := func(seg uint32, off int, id EventID, entity []byte, why string) error {
		return &ChainError{Segment: format.SegmentName(seg), Offset: int64(off), ID: id, Entity: string(entity), Reason: why}
	}
	lw := &logWalker{dir: s.cfg.Dir}
	var ahead digestsAhead
	lw.check = func(seg uint32, off int, v format.EventView) error {
		payload, chain := ahead.at(off, v)
		if v.SysFlags()&(format.SysRedacted|format.SysRemoved) == 0 && payload != v.PayloadHash() {
			return fail(seg, off, v.ID(), v.Entity(), "payload does not match its digest")
		}
		if chain != v.Hash() {
			return fail(seg, off, v.ID(), v.Entity(), "header fields do not match the event hash")
		}
		return nil
	}
	lw.emit = func(ev *walkedEvent) error {
		prev, seen := last[string(ev.entity)]
		switch {
		case !seen && ev.prev != (Hash{}):
			return fail(ev.seg, ev.off, ev.id, ev.entity, "first event of the entity has a previous hash")
		case !seen && ev.clock != 0:
			return fail(ev.seg, ev.off, ev.id, ev.entity, fmt.Sprintf("first event of the entity has clock %d", ev.clock))
		case seen && ev.prev != prev.hash:
			return fail(ev.seg, ev.off, ev.id, ev.entity, "previous hash does not match the entity's previous event")
		case seen && ev.clock != prev.clock+1:
			return fail(ev.seg, ev.off, ev.id, ev.entity, fmt.Sprintf("clock %d follows clock %d", ev.clock, prev.clock))
		}
		if ev.seq < indexed {
			if why := s.indexDisagrees(ev); why != "" {
				return fail(ev.seg, ev.off, ev.id, ev.entity, why)
			}
		}
		last[string(ev.entity)] = link{hash: ev.hash, clock: ev.clock}
		rep.Events++
		if ev.hidden {
			rep.Hidden++
		}
		if ev.removed {
			rep.Removed++
		}
		return nil
	}
	for _, id := range ids {
		if limitOff >= 0 && format.SegID(id) > format.SegID(limitSeg) {
			// Created by a write still in progress (a batch crossing into a
			// new segment): nothing in it is published yet.
			break
		}
		path := filepath.Join(s.cfg.Dir, format.SegmentName(id))
		data, pk, unmap, err := snap.mapped(id)
		if next := segment.RepackedKey(id); errors.Is(err, os.ErrNotExist) && segment.SamePlacesPacked(s.fs, filepath.Join(s.cfg.Dir, format.SegmentName(next))) {
			// Packed since it was listed: the same frames, same offsets.
			id, path = next, filepath.Join(s.cfg.Dir, format.SegmentName(next))
			data, pk, unmap, err = mapSegment(s.fs, path, id)
		}
		if err != nil {
			return rep, err
		}
		if pk != nil {
			// A packed segment (sealed: never the one being written) is
			// checked a block at a time, in memory of one block, not of
			// all it decodes to (the walk keeps no frame's bytes: what a
			// batch or fence holds back is copied).
			rep.Segments++
			err := pk.EachBlock(data, true, func(start int, d []byte) error {
				ahead.resetAt(d, start)
				end, _, err := format.ScanFrames(d, 0, func(off int, rec []byte) error { return lw.frame(id, start+off, rec) })
				if err == nil && end != len(d) {
					err = &CorruptionError{File: path, Offset: int64(start + end), Reason: "unreadable frame (a packed block that does not end with a whole frame)"}
				}
				return err
			})
			ahead.resetAt(nil, 0)
			unmap()
			if segment.Damaged(err) {
				err = &CorruptionError{File: path, Reason: err.Error()}
			}
			if err != nil {
				return rep, err
			}
			if progress != nil {
				progress(rep.Segments, len(ids))
			}
			continue
		}
		if id == limitSeg && limitOff >= 0 && int64(len(data)) > limitOff {
			data = data[:limitOff]
		}
		if why := format.CheckSegmentHeader(data, id); why != "" {
			unmap()
			if id == ids[len(ids)-1] && len(data) < format.SegmentHeaderSize {
				// A crash while the last segment was being created: it holds
				// nothing (Open recreates it; a read-only open skips it).
				break
			}
			return rep, &CorruptionError{File: path, Reason: why}
		}
		rep.Segments++
		ahead.resetAt(data, 0)
		end, st, err := format.ScanFrames(data, format.SegmentHeaderSize, func(off int, rec []byte) error { return lw.frame(id, off, rec) })
		unmap()
		if err != nil {
			return rep, err
		}
		if st == format.TailCorrupt || (st == format.TailTorn && id != ids[len(ids)-1]) {
			return rep, &CorruptionError{File: path, Offset: int64(end), Reason: "unreadable frame", live: id == ids[len(ids)-1]}
		}
		if progress != nil {
			progress(rep.Segments, len(ids))
		}
	}
	if _, _, err := lw.finish(); err != nil {
		return rep, err
	}
	rep.Entities = len(last)
	return rep, nil
}

// indexDisagrees compares the index's entry for ev's sequence with ev as
// its frame reads, and says how they differ ("" when they agree).
func (s *Store) indexDisagrees(ev *walkedEvent) string {
	s.ix.RLock()
	defer s.ix.RUnlock()
	e := s.ix.At(uint32(ev.seq))
	switch {
	case EventID(e.ID) != ev.id:
		return fmt.Sprintf("the index holds event %s at sequence %d, the log this one: rebuild the index (remove index.ckpt and the .idx footers)", EventID(e.ID), ev.seq)
	case e.Clock != ev.clock:
		return fmt.Sprintf("the index gives it clock %d, its frame %d: rebuild the index (remove index.ckpt and the .idx footers)", e.Clock, ev.clock)
	case s.ix.Entity(e.Entity).Name != string(ev.entity):
		return fmt.Sprintf("the index files it under entity %q, its frame under %q: rebuild the index (remove index.ckpt and the .idx footers)", s.ix.Entity(e.Entity).Name, ev.entity)
	}
	return ""
}
