package core

import (
	"errors"

	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// Segment files as files (mappings under the fd budget, listing, packed
// segments, the lock, atomic writes) are core/internal/segment's; these
// wrappers give its errors core's types.

// segErr turns the segment layer's errors into core's: a
// *segment.CorruptError becomes a *CorruptionError with the same file and
// reason, a *segment.LockedError a *LockedError. Others pass unchanged.
func segErr(err error) error {
	if err == nil {
		return nil
	}
	var ce *segment.CorruptError
	if errors.As(err, &ce) {
		return &CorruptionError{File: ce.File, Reason: ce.Reason, live: ce.Live}
	}
	var le *segment.LockedError
	if errors.As(err, &le) {
		return &LockedError{Dir: le.Dir, PID: le.PID}
	}
	return err
}

// listSegments returns the segment keys in dir, by id then generation; two
// generations of one id are a *CorruptionError.
func listSegments(fsys vfs.FS, dir string) ([]uint32, error) {
	ids, err := segment.List(fsys, dir)
	return ids, segErr(err)
}

// orderSegments is segment.Order, with core's errors.
func orderSegments(fsys vfs.FS, dir string, ids []uint32) ([]uint32, error) {
	ids, err := segment.Order(fsys, dir, ids)
	return ids, segErr(err)
}

// loadSegment is segment.Load, with core's errors: the logical bytes of
// segment file path (key), packed reporting whether it was compressed.
func loadSegment(fsys vfs.FS, path string, key uint32) (data []byte, packed bool, release func(), err error) {
	data, packed, release, err = segment.Load(fsys, path, key)
	return data, packed, release, segErr(err)
}

// mapSegment is segment.Map, with core's errors: a plain segment's bytes
// (pk nil), or a packed one's file and table, to be decoded a block at a
// time.
func mapSegment(fsys vfs.FS, path string, key uint32) (data []byte, pk *segment.Packed, release func(), err error) {
	data, pk, release, err = segment.Map(fsys, path, key)
	return data, pk, release, segErr(err)
}

// acquireSegment is Store.segs.Acquire, with core's errors.
func (s *Store) acquireSegment(id uint32) (*segment.Mapping, error) {
	m, err := s.segs.Acquire(id)
	if err != nil {
		return nil, segErr(err)
	}
	return m, nil
}
