package core

import (
	"path/filepath"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
)

// OpenReport says how Open rebuilt the index.
type OpenReport struct {
	// Path is how the index was rebuilt: "checkpoint" (the index saved at
	// the last Close, then the log written after it), "footers" (segment
	// footers replayed, frames read only where no usable footer covers
	// them) or "scan" (every frame of every segment read and checked).
	Path string
	// Footers is how many segment footers were used (with a checkpoint,
	// to check it against the segments without reading their frames).
	Footers int
	// SegmentsScanned is how many segments had frames read.
	SegmentsScanned int
	Restored        uint64 // entries loaded from the checkpoint
	TailReplayed    uint64 // entries read from the log after the checkpoint
	Segments        int
	Entries         uint64 // events restored (hidden ones included)
	Hidden          int    // events of fences that never committed
	DroppedBatch    int    // batches discarded for lack of a commit record
	TornTailBytes   int64  // bytes of a torn tail discarded
	// ErasureEpochReset is 1 when the erasure epoch file was damaged (or
	// missing from a store with segments) and Open moved to a fresh epoch (cached projection states from before
	// are recomputed), else 0.
	ErasureEpochReset int
	// LostSequences is how many sequences Open found missing from the log
	// and skipped under Config.Salvage (0 unless it salvaged).
	LostSequences uint64
	Elapsed       time.Duration
}

// Diagnostics is Stats plus what an operator needs to see how the store
// is doing.
type Diagnostics struct {
	Stats
	VisibleSequence uint64 // sequences decided (visible or hidden) so far
	BytesOnDisk     int64  // segment file sizes, zero fill included
	// PackedSegments is how many segments are stored compressed;
	// PackedBytes what they take on disk and PackedRawBytes their
	// uncompressed size (the ratio is PackedRawBytes / PackedBytes).
	PackedSegments int
	PackedBytes    int64
	PackedRawBytes int64
	// Footers is how many segments have a footer file (the one being
	// written has one after a Close); whether each is current is checked
	// when Open uses it.
	Footers        int
	MappedSegments int // segment files mapped for reads now
	Pressure       WriterPressure
	Open           OpenReport
}

// Diagnostics reports counts, sizes, writer pressure and how Open went.
func (s *Store) Diagnostics() Diagnostics {
	d := Diagnostics{Stats: s.Stats(), Pressure: s.WriterPressure(), Open: s.openReport}
	d.VisibleSequence = uint64(s.ix.Published())
	ids, _ := listSegments(s.fs, s.cfg.Dir)
	for _, id := range ids {
		path := filepath.Join(s.cfg.Dir, format.SegmentName(id))
		fi, err := s.fs.Stat(path)
		if err != nil {
			continue
		}
		d.BytesOnDisk += fi.Size()
		if segment.IsPackedFile(s.fs, path) {
			d.PackedSegments++
			d.PackedBytes += fi.Size()
			if n, err := segment.LogicalSize(s.fs, path); err == nil {
				d.PackedRawBytes += n
			}
		}
		if _, ok := footerEnd(s.fs, s.cfg.Dir, id); ok {
			d.Footers++
		}
	}
	d.MappedSegments = s.segs.Mapped()
	return d
}
