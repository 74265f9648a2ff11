package core

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// Segment snapshots: which segment files a reading of the whole log
// (recovery at Open, Verify) reads, when a writer may be compacting or
// packing beside it (a read-only store next to a live writer process).
//
// Listing the directory is not atomic with respect to a compaction's
// renames and deletes: between a new generation's rename and the delete
// of the files it replaces, both are there ("two generations of segment
// N", or a merged segment beside the later segments it absorbed). The
// on-disk protocol says which set is live at every moment, and a snapshot
// follows it:
//
//   - Without a journal, the files listed are the live set (compaction
//     renames and deletes only while its journal is in place).
//   - With a journal (a compaction committed, its file work in progress):
//     the compaction renames every new segment into place before it
//     deletes any file it replaces. So while one of the new segments the
//     journal names is not in place yet, the live set is the listing
//     without the new segments (the old ones are all still there); once
//     they all are, it is the listing without the segments the journal
//     deletes, plus the new ones (listed or not).
//   - The journal is read before and after the listing; when the two
//     differ (a commit began or ended meanwhile) the listing is taken
//     again. A listing unexplained by the journal (two generations of one
//     segment) is taken again too, and reported only if it persists.
//   - The files of a read-only snapshot are opened (pinned) right after
//     the listing and read through those descriptors, so deletes that come
//     later do not affect the reading: one descriptor per segment is held
//     until it ends. A file gone before it could be opened means the
//     writer moved on; the snapshot is taken again.
//
// A writable store needs none of this (it holds the lock; its own
// compactions exclude its readings of the whole log), but takes the same
// path unpinned.

// snapshotTries bounds how often a snapshot is taken again because the
// writer changed the directory meanwhile (each time means a commit began,
// ended or deleted files within a few microseconds of the listing).
const snapshotTries = 64

// journalRefusals is how many tries in a row a snapshot makes while the
// same compaction journal fails its checks (a compaction's renames and
// deletes are each a moment; a journal that keeps failing is damaged).
const journalRefusals = 4

// segmentSnapshot is the set of segment files one reading of the log uses.
type segmentSnapshot struct {
	fs    vfs.FS
	dir   string
	keys  []uint32            // oldest first
	files map[uint32]vfs.File // pinned files (read-only stores), by key
}

// takeSegmentSnapshot returns the live segment files of dir (see above),
// pinned when pin is set. Call close when done. Errors: a *CorruptionError
// for a journal that fails its checks or a listing no journal explains,
// I/O errors.
func takeSegmentSnapshot(fsys vfs.FS, dir string, pin bool) (*segmentSnapshot, error) {
	var refused []byte // the journal whose checks failed at the last try
	sameRefused := 0   // how many tries in a row refused it
	for try := 0; ; try++ {
		again := try < snapshotTries
		j, before, err := readJournal(fsys, dir)
		if err != nil {
			return nil, err
		}
		ents, err := fsys.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("batpak: list segments: %w", err)
		}
		_, after, err := readJournal(fsys, dir)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(before, after) && again {
			continue // a commit began or ended during the listing
		}
		keys := segment.Keys(ents)
		if j != nil {
			// The checks Open makes before it finishes a journal: a
			// journal naming segments that do not hold what it replaces
			// (damaged, or crafted with a valid checksum) must not make a
			// reader drop segments either.
			if err := checkJournalTargets(fsys, dir, j); err != nil {
				// A compaction may be renaming or deleting its files: try
				// again, but the same journal failing again and again is
				// damaged or crafted (checking it costs a scan of every
				// file it names): given up after journalRefusals tries.
				if refused != nil && bytes.Equal(refused, before) {
					sameRefused++
				} else {
					refused, sameRefused = before, 1
				}
				if again && sameRefused < journalRefusals {
					continue
				}
				return nil, err
			}
			keys = applyJournal(fsys, dir, keys, j)
		}
		keys, err = orderSegments(fsys, dir, keys)
		if err != nil {
			if liveChange(err) && again {
				continue
			}
			return nil, err
		}
		p := &segmentSnapshot{fs: fsys, dir: dir, keys: keys}
		if !pin {
			return p, nil
		}
		p.files = make(map[uint32]vfs.File, len(keys))
		for _, k := range keys {
			f, err := fsys.Open(filepath.Join(dir, format.SegmentName(k)))
			if err != nil {
				p.close()
				if errors.Is(err, os.ErrNotExist) && again {
					p = nil
					break // deleted since the listing: the writer moved on
				}
				return nil, fmt.Errorf("batpak: open segment: %w", err)
			}
			p.files[k] = f
		}
		if p != nil {
			return p, nil
		}
	}
}

// applyJournal turns a listing taken while j was in place into the live
// set: before every new segment j names is in place, the listing without
// them; after, the listing without the segments j deletes, with the new
// ones.
func applyJournal(fsys vfs.FS, dir string, keys []uint32, j *compactionJournal) []uint32 {
	renamed := true
	for _, k := range j.newSegs {
		if _, err := fsys.Stat(filepath.Join(dir, format.SegmentName(k))); err != nil {
			renamed = false
			break
		}
	}
	drop := map[uint32]bool{}
	for _, k := range j.newSegs {
		drop[k] = true
	}
	if renamed {
		for _, k := range j.oldSegs {
			drop[k] = true
		}
	}
	out := keys[:0]
	for _, k := range keys {
		if !drop[k] {
			out = append(out, k)
		}
	}
	if renamed {
		out = append(out, j.newSegs...)
	}
	return out
}

// open returns segment key's file and a function to call when done with
// it: the pinned file (done does nothing), or the file opened by name.
func (p *segmentSnapshot) open(key uint32) (vfs.File, func(), error) {
	if f, ok := p.files[key]; ok {
		return f, func() {}, nil
	}
	f, err := p.fs.Open(filepath.Join(p.dir, format.SegmentName(key)))
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// mapped maps segment key of the snapshot: a plain segment's bytes (pk
// nil), or a packed one's file and parsed table, its blocks for the
// caller to decode one at a time; release unmaps it.
func (p *segmentSnapshot) mapped(key uint32) (data []byte, pk *segment.Packed, release func(), err error) {
	f, done, err := p.open(key)
	if err != nil {
		return nil, nil, nil, err
	}
	defer done()
	path := filepath.Join(p.dir, format.SegmentName(key))
	data, unmap, err := segment.MapOpened(p.fs, f, path)
	if err != nil {
		return nil, nil, nil, err
	}
	if !segment.IsPackedHeader(data) {
		return data, nil, unmap, nil
	}
	if pk, err = segment.ParsePacked(data, key); err != nil {
		unmap()
		return nil, nil, nil, &CorruptionError{File: path, Reason: err.Error()}
	}
	return data, pk, unmap, nil
}

// close releases the pinned files.
func (p *segmentSnapshot) close() {
	for _, f := range p.files {
		f.Close()
	}
	p.files = nil
}
