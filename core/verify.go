package core

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// VerifyReport summarises a successful Verify.
type VerifyReport struct {
	Segments int
	Events   int
	Entities int
}

// Verify reads every segment and checks every event: frame checksums, the
// payload digest, the event's own chain hash, the link to the entity's
// previous event, and that clocks run 0, 1, 2, … per entity. It returns the
// first failure: a *ChainError (errors.Is(err, ErrChainBroken)) naming the
// segment, offset and event id, or a *CorruptionError for unreadable
// frames. Verify reads from disk, not from the index, and may run while the
// store is being written (it checks what was written when it started).
func (s *Store) Verify() (VerifyReport, error) {
	var rep VerifyReport
	if err := s.checkReadable(); err != nil {
		return rep, err
	}
	ids, err := listSegments(s.cfg.Dir)
	if err != nil {
		return rep, err
	}
	limitSeg, limitOff := uint32(0), int64(-1)
	if s.w != nil {
		limitSeg, limitOff = s.w.stat()
	}
	type link struct {
		hash  Hash
		clock uint64
	}
	last := map[string]link{}
	for _, id := range ids {
		name := segmentName(id)
		path := filepath.Join(s.cfg.Dir, name)
		data, unmap, err := mapFile(path)
		if err != nil {
			return rep, err
		}
		if id == limitSeg && limitOff >= 0 && int64(len(data)) > limitOff {
			data = data[:limitOff]
		}
		if why := checkSegmentHeader(data, id); why != "" {
			unmap()
			return rep, &CorruptionError{File: path, Reason: why}
		}
		rep.Segments++
		_, st, err := scanFrames(data, func(off int, rec []byte) error {
			if !checkEvent(rec) {
				return &CorruptionError{File: path, Offset: int64(off), Reason: "malformed record"}
			}
			v := eventView(rec)
			fail := func(why string) error {
				return &ChainError{Segment: name, Offset: int64(off), ID: v.id(), Entity: string(v.entity()), Reason: why}
			}
			if payloadHash(v.payload()) != v.payloadHash() {
				return fail("payload does not match its digest")
			}
			if chainHash(rec, v.stringsEnd()) != v.hash() {
				return fail("header fields do not match the event hash")
			}
			prev, seen := last[string(v.entity())]
			switch {
			case !seen && v.prevHash() != (Hash{}):
				return fail("first event of the entity has a previous hash")
			case !seen && v.clock() != 0:
				return fail(fmt.Sprintf("first event of the entity has clock %d", v.clock()))
			case seen && v.prevHash() != prev.hash:
				return fail("previous hash does not match the entity's previous event")
			case seen && v.clock() != prev.clock+1:
				return fail(fmt.Sprintf("clock %d follows clock %d", v.clock(), prev.clock))
			}
			last[string(v.entity())] = link{hash: v.hash(), clock: v.clock()}
			rep.Events++
			return nil
		})
		unmap()
		if err != nil {
			return rep, err
		}
		if st == tailCorrupt || (st == tailTorn && id != ids[len(ids)-1]) {
			return rep, &CorruptionError{File: path, Reason: "unreadable frame"}
		}
	}
	rep.Entities = len(last)
	return rep, nil
}

// mapFile maps a whole file read-only.
func mapFile(path string) ([]byte, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.Size() == 0 {
		return nil, func() {}, nil
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("batpak: mmap %s: %w", path, err)
	}
	return data, func() { _ = unix.Munmap(data) }, nil
}
