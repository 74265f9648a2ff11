package core

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/index"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// Recovery: everything Open does to turn the files of a store directory
// into an index and the writer's starting point, in order —
//
//  1. finish or discard an interrupted compaction (its journal, journal.go);
//  2. load the erasure epoch (a damaged file moves to a fresh one);
//  3. read what the store recorded about its log's end (logend.go);
//  4. rebuild the index: the checkpoint (checkpoint.go), then segment
//     footers (footer.go), then a frame scan of what neither covers, every
//     path through the same walk (recovery_walk.go);
//  5. check the log reaches what was recorded (or salvage), and run the
//     repairs recovery deferred until that check passed.
//
// A read-only store runs 2–5 beside a live writer and reads again when the
// files changed under it (readretry.go).

// recoverStore runs recovery for s (see above) and returns where the log
// ends. On error nothing on disk was changed beyond finishing a committed
// compaction.
func (s *Store) recoverStore() (rec recovered, err error) {
	// A file cut short in place while it is mapped (by another program:
	// the store replaces files by renaming) faults on its mapping (SIGBUS)
	// rather than failing a read: on this goroutine, which does all of
	// recovery's reading, the fault is made a panic and the panic an error.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if _, fault := p.(interface{ Addr() uintptr }); !fault {
				panic(p)
			}
			rec, err = recovered{}, fmt.Errorf("batpak: a file in %s was cut short while Open read it (%v); open again to read it as it now is: %w", s.cfg.Dir, p, ErrCorrupt)
		}
	}()
	return s.recoverStoreFiles()
}

// recoverStoreFiles is recoverStore without the fault guard.
func (s *Store) recoverStoreFiles() (recovered, error) {
	cfg := s.cfg
	if !s.readOnly {
		if err := finishCompaction(s.fs, cfg.Dir); err != nil {
			return recovered{}, err
		}
		if err := finishRedactions(s.fs, cfg.Dir, s.log.Warn); err != nil {
			return recovered{}, err
		}
	}
	n, damaged, absent, err := loadErasures(s.fs, cfg.Dir)
	switch {
	case err == nil && damaged:
		err = s.resetErasures(n)
	case err == nil && absent && !s.readOnly:
		// A new store records its epoch from the start: one missing from
		// a store with segments is then damage (see loadErasures).
		err = writeErasures(s.fs, cfg.Dir, 0)
	}
	if err != nil {
		return recovered{}, err
	}
	s.erasures.Store(n)
	// Read before the log: beside a live writer, nothing recorded here is
	// ahead of what the scan below reads.
	logRecs, releaseRecs := readLogRecords(s.fs, cfg.Dir)
	defer releaseRecs()
	began := time.Now()
	var rec recovered
	if s.readOnly {
		first := true
		err = readBesideWriter(s.fs, cfg.Dir, func() (err error) {
			if !first {
				s.resetIndex()
				s.openReport, s.noFooters = OpenReport{}, false
			}
			first = false
			rec, err = s.recover()
			return err
		})
	} else {
		rec, err = s.recover()
	}
	s.openReport.Elapsed = time.Since(began)
	if damaged {
		s.openReport.ErasureEpochReset = 1
	}
	var ce *CorruptionError
	if s.readOnly && errors.As(err, &ce) && redacting(s.fs, cfg.Dir) && !strings.HasSuffix(ce.Reason, pendingRedaction) {
		ce.Reason += pendingRedaction
	}
	if err == nil {
		err = s.checkLogEnd(logRecs, &rec)
	}
	if err == nil {
		err = s.runRepairs()
	}
	return rec, err
}

// recovered is what recovery learned about the tail of the log.
type recovered struct {
	lastSeg  uint32 // 0: no segment yet
	end      int64  // data end of lastSeg
	fileSize int64  // size of lastSeg on disk (may include zero padding)
	nextSeq  uint64
	// danglingFence: the log ends inside a visibility fence (a crash while
	// it was open); the writer records its cancellation.
	danglingFence bool
	fenceID       uint64
}

// recover rebuilds the index from every segment, oldest first.
func (s *Store) recover() (recovered, error) {
	var out recovered
	snap, err := takeSegmentSnapshot(s.fs, s.cfg.Dir, s.readOnly)
	if err != nil {
		return out, err
	}
	s.snap = snap
	defer func() { snap.close(); s.snap = nil }()
	ids := snap.keys
	ck := s.loadCheckpoint(ids)
	ckBad := ck == nil // not loaded again: it would be refused (and logged) again
	var lw *logWalker
	for {
		lw, err = s.scanLog(ids, ck, &out)
		switch {
		case errors.Is(err, errFooterStale) && !s.noFooters:
			// The stale footer is gone (dropStaleFooter); read frames.
			s.log.Warn("batpak: a segment footer does not match the log; reading the segments instead", "reason", err)
			s.resetIndex()
			s.noFooters = true
			if ck = nil; !ckBad {
				ck = s.loadCheckpoint(ids)
			}
			continue
		case errors.Is(err, errCheckpointStale) && ck != nil:
			s.log.Warn("batpak: index checkpoint does not match the log; scanning the log", "reason", err)
			s.resetIndex()
			ck, ckBad = nil, true
			continue
		}
		break
	}
	if err != nil {
		return out, err
	}
	dangling, fenceID, err := lw.finish()
	if err != nil {
		return out, err
	}
	s.openReport.Path = "scan"
	if s.openReport.Footers > 0 {
		s.openReport.Path = "footers"
	}
	if ck != nil {
		s.openReport.Path = "checkpoint"
		s.openReport.Restored = ck.entries
		s.openReport.TailReplayed = uint64(s.ix.Len()) - ck.entries
		s.openReport.Hidden = ck.hidden
	}
	s.openReport.Segments = len(ids)
	s.openReport.Entries = uint64(s.ix.Len())
	s.openReport.Hidden += lw.hiddenEvents
	s.openReport.DroppedBatch = lw.droppedBatches
	switch {
	case lw.droppedBatches > 0 && s.readOnly:
		// Beside a live writer, the last batch may simply not be
		// committed yet: not data loss, and nothing is discarded on disk.
		s.log.Debug("batpak: not showing batches without a commit record (a writer may still be writing one)", "batches", lw.droppedBatches)
	case lw.droppedBatches > 0:
		s.log.Warn("batpak: discarded batches that lack a commit record", "batches", lw.droppedBatches)
	}
	out.danglingFence, out.fenceID = dangling, fenceID
	out.nextSeq = uint64(s.ix.Len())
	return out, nil
}

// resetIndex forgets what a recovery attempt restored, before another.
func (s *Store) resetIndex() {
	s.ix = index.New()
	s.endsMu.Lock()
	s.ends = nil
	s.endsMu.Unlock()
	s.openReport.Footers, s.openReport.SegmentsScanned = 0, 0
}

// errCheckpointStale: the checkpoint covers log data that is not there.
var errCheckpointStale = errors.New("index checkpoint is stale")

// scanLog walks every segment into the index; frames a checkpoint covers
// are only checked.
func (s *Store) scanLog(ids []uint32, ck *checkpointInfo, out *recovered) (*logWalker, error) {
	lw := &logWalker{dir: s.cfg.Dir, emit: s.indexWalked, next: func() (uint64, uint32) {
		return uint64(s.ix.Len()), lastSeg(s.ix)
	}}
	for i, id := range ids {
		last := i == len(ids)-1
		// Frames the checkpoint covers are checked (length and CRC) but not
		// read into the index: Open stays as strict about damage as a scan.
		from := format.SegmentHeaderSize
		if ck != nil {
			switch {
			case format.SegID(id) < format.SegID(ck.seg):
				from = math.MaxInt
			case id == ck.seg:
				from = int(ck.end)
			}
		}
		end, size, err := s.recoverSegment(lw, id, last, from, ck)
		if errors.Is(err, os.ErrNotExist) && ck == nil {
			// Packed since it was listed (a reader beside a live writer):
			// the next generation holds the same frames at the same offsets.
			if next := segment.RepackedKey(id); segment.SamePlacesPacked(s.fs, filepath.Join(s.cfg.Dir, format.SegmentName(next))) {
				id = next
				end, size, err = s.recoverSegment(lw, id, last, from, ck)
			}
		}
		if err != nil {
			return nil, err
		}
		out.lastSeg, out.end, out.fileSize = id, end, size
		s.setSegmentEnd(id, end)
	}
	if ck != nil && ck.matched != ck.located {
		return nil, fmt.Errorf("%w: %d of its %d events are not where it says", errCheckpointStale, ck.located-ck.matched, ck.located)
	}
	return lw, nil
}

func (s *Store) recoverSegment(lw *logWalker, id uint32, last bool, from int, ck *checkpointInfo) (end, size int64, err error) {
	path := filepath.Join(s.cfg.Dir, format.SegmentName(id))
	f, done, err := s.snap.open(id)
	if err != nil {
		return 0, 0, fmt.Errorf("batpak: open segment: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		done()
		return 0, 0, err
	}
	size = st.Size()
	if err := segment.CheckFileSize(path, size); err != nil {
		done()
		return 0, 0, segErr(err)
	}
	if size < format.SegmentHeaderSize {
		done()
		if last && !s.readOnly {
			// A crash while a new segment was being created.
			s.log.Warn("batpak: recreating a segment left incomplete by a crash", "file", path, "size", size)
			s.repair(func() error { return writeSegmentHeader(s.fs, path, id) })
			return format.SegmentHeaderSize, format.SegmentHeaderSize, nil
		}
		if last {
			return 0, 0, nil
		}
		return 0, 0, &CorruptionError{File: path, Offset: 0, Reason: "file shorter than the segment header"}
	}
	m, err := s.fs.MmapRead(f, int(size))
	if err != nil {
		done()
		return 0, 0, fmt.Errorf("batpak: mmap %s: %w", path, err)
	}
	defer done() // after the scan, which reads the checkpoint's part through f
	defer s.fs.Munmap(m)
	if segment.IsPackedHeader(m) {
		return s.recoverPacked(lw, id, path, m, from, ck)
	}
	if why := format.CheckSegmentHeader(m, id); why != "" {
		// Only a file that is zeros throughout can be a segment whose creation
		// a crash interrupted; a zeroed header with frames after it is damage.
		if last && format.AllZero(m) {
			if s.readOnly {
				return 0, 0, nil // holds nothing yet
			}
			s.log.Warn("batpak: recreating a segment left incomplete by a crash", "file", path)
			s.repair(func() error { return writeSegmentHeader(s.fs, path, id) })
			return format.SegmentHeaderSize, format.SegmentHeaderSize, nil
		}
		return 0, 0, &CorruptionError{File: path, Offset: 0, Reason: why}
	}
	start := format.SegmentHeaderSize
	// A plain segment the checkpoint covers has its frames checked (read
	// in chunks, no decoding: scanSegment): the checkpoint path stays as
	// strict about damage as a scan. Without a checkpoint, its footer
	// stands in for the frames it covers.
	if fo := s.usableFooter(id, size, ck != nil, func(off int) ([]byte, bool, error) {
		rec, ok := format.FrameAt(m, off)
		if !ok {
			return nil, false, nil
		}
		return m[off : off+format.FrameHeaderSize+len(rec)], true, nil
	}); fo != nil {
		err := fo.replay(lw, from, ck, s.ix)
		fo.close()
		if err != nil {
			return 0, 0, s.dropStaleFooter(id, err)
		}
		s.openReport.Footers++
		start = int(fo.end)
	}
	e, st2, err := scanSegment(f, m, start, from, &lw.chunk, s.recoverFrame(lw, id, from, ck))
	if err != nil {
		return 0, 0, err
	}
	if e > start {
		s.openReport.SegmentsScanned++
	}
	end = int64(e)
	if st2 == format.TailCorrupt {
		return 0, 0, &CorruptionError{File: path, Offset: end, Reason: "frame fails its length or checksum check and valid frames follow it", live: last && s.readOnly}
	}
	if covered := s.checkpointEnd(id, from); covered > end {
		return 0, 0, fmt.Errorf("%w: %s: readable data ends at %d, the checkpoint covers up to %d", errCheckpointStale, path, end, covered)
	}
	switch st2 {
	case format.TailTorn:
		if !last {
			return 0, 0, &CorruptionError{File: path, Offset: end, Reason: "unreadable bytes at the end of a sealed segment"}
		}
		if !s.readOnly {
			s.log.Warn("batpak: a torn tail left by a crash (zeroed once the store opens)", "file", path, "offset", end, "bytes", size-end)
			s.openReport.TornTailBytes += size - end
			s.repair(func() error { return zeroTail(s.fs, path, end, size) })
		}
	}
	return end, size, nil
}

// scanSegment is format.ScanFrames(m, start, fn) for a plain segment
// mapped at m from the open file f, whose frames before from are the part
// the checkpoint covers. When that part holds at least segmentReadChunk bytes
// it is read from f a chunk at a time into *chunk (made once, kept for the
// next segment; format.ScanFramesAt, about three times faster than reading
// the mapping, and this part is most of a store on a clean Open); fn only
// checks those frames and keeps nothing of them. The rest, which the
// walker indexes and may keep, is read from the mapping, as is any frame
// the chunked read stopped at, so damage is classified exactly as by
// ScanFrames. A read error falls back to the mapping from where it
// happened.
func scanSegment(f vfs.File, m []byte, start, from int, chunk *[]byte, fn func(off int, rec []byte) error) (int, format.Tail, error) {
	if covered := min(from, len(m)); covered-start >= segmentReadChunk {
		if *chunk == nil {
			*chunk = make([]byte, segmentReadChunk)
		}
		var fnErr error
		keep := func(off int, rec []byte) error {
			fnErr = fn(off, rec)
			return fnErr
		}
		end, _, err := format.ScanFramesAt(f, int64(covered), int64(start), *chunk, keep)
		if fnErr != nil {
			return int(end), format.TailClean, fnErr
		}
		_ = err // a read error: the mapping goes on from end
		start = int(end)
	}
	return format.ScanFrames(m, start, fn)
}

// recoverFrame is what recovery does with each frame of segment id: a
// frame before from (the part the checkpoint covers) is checked against
// the restored index, not indexed again; the others go through the walker.
func (s *Store) recoverFrame(lw *logWalker, id uint32, from int, ck *checkpointInfo) func(off int, rec []byte) error {
	return func(off int, rec []byte) error {
		if off < from {
			return ck.cover(s.ix, id, off, rec, from)
		}
		return lw.frame(id, off, rec)
	}
}

// recoverPacked recovers a packed (compressed) segment: from its footer
// when it has a usable one, otherwise by decompressing and scanning it.
// A packed segment is complete by construction (it was written whole and
// synced before it replaced the plain one), so any damage is corruption.
func (s *Store) recoverPacked(lw *logWalker, id uint32, path string, file []byte, from int, ck *checkpointInfo) (end, size int64, err error) {
	pk, err := segment.ParsePacked(file, id)
	if err != nil {
		return 0, 0, &CorruptionError{File: path, Reason: err.Error()}
	}
	if fo := s.usableFooter(id, pk.Size(), false, func(off int) ([]byte, bool, error) { return pk.Frame(file, off) }); fo != nil {
		if fo.end != pk.Size() {
			fo.close()
		} else {
			err := fo.replay(lw, from, ck, s.ix)
			fo.close()
			if err != nil {
				return 0, 0, s.dropStaleFooter(id, err)
			}
			s.openReport.Footers++
			return pk.Size(), pk.Size(), nil
		}
	}
	// A block at a time: what a damaged or crafted file decodes to is
	// refused at its first block that is not whole frames, and a sound
	// one is read in a block's memory, not its whole logical size.
	s.openReport.SegmentsScanned++
	frame := s.recoverFrame(lw, id, from, ck)
	events, others := 0, 0
	err = pk.ScanBlocks(file, func(off int, rec []byte) error {
		if rec[0] == format.RecEvent {
			events++
		} else {
			others++
		}
		return frame(off, rec)
	})
	if err != nil {
		if segment.Damaged(err) {
			return 0, 0, &CorruptionError{File: path, Reason: err.Error()}
		}
		return 0, 0, err
	}
	if others > maxMarkersPerEvent*events+maxLooseMarkers {
		// The writer frames batches and fences around events: a packed
		// segment of markers alone decodes to hundreds of times its size
		// (a crafted file), which the sealer and Verify would hold whole.
		return 0, 0, &CorruptionError{File: path, Reason: fmt.Sprintf("a packed segment of %d batch and fence records around %d events: no writer makes that", others, events)}
	}
	return pk.Size(), pk.Size(), nil
}

// maxMarkersPerEvent and maxLooseMarkers bound the batch and fence
// records a packed segment holds (recoverPacked): a batch frames its
// events with two, and fences that hold no event (cancelled, empty) add
// two each, far fewer than 32,768 of them to a segment.
const (
	maxMarkersPerEvent = 2
	maxLooseMarkers    = 1 << 16
)

// dropStaleFooter removes the footer of segment id when replaying it
// showed it does not match the log (the sealer writes a sound one), and
// returns err.
func (s *Store) dropStaleFooter(id uint32, err error) error {
	if errors.Is(err, errFooterStale) && !s.readOnly {
		s.repair(removeFooter(s.fs, s.cfg.Dir, id))
	}
	return err
}

// usableFooter returns the footer of segment id when footers are in use
// (and not skipped) and it matches the segment (size: its logical size; frame reads one
// frame), else nil.
func (s *Store) usableFooter(id uint32, size int64, skip bool, frame func(off int) ([]byte, bool, error)) *footer {
	if s.noFooters || skip {
		return nil
	}
	fo, why := readFooter(s.fs, s.cfg.Dir, id)
	if fo == nil && why == "" {
		return nil // none
	}
	if fo != nil && !fo.matches(size, frame) {
		fo.close()
		fo, why = nil, "it does not match the segment"
	}
	if fo == nil {
		s.log.Warn("batpak: segment footer not used; scanning the segment", "file", footerName(id), "reason", why)
		if !s.readOnly {
			// The sealer writes a sound one in its place.
			s.repair(removeFooter(s.fs, s.cfg.Dir, id))
		}
		return nil
	}
	return fo
}

// checkpointEnd is how far the checkpoint covers segment id (0: not at all).
func (s *Store) checkpointEnd(id uint32, from int) int64 {
	switch {
	case from == format.SegmentHeaderSize:
		return 0
	case from == math.MaxInt:
		return s.segmentEnd(id)
	default:
		return int64(from)
	}
}

// zeroTail overwrites [from, size) with zeros and syncs: a torn tail is
// discarded without shrinking the file, which a reader in another process
// may have mapped (see writer.seal).
func zeroTail(fsys vfs.FS, path string, from, size int64) error {
	f, err := fsys.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("batpak: discard torn tail: %w", err)
	}
	defer f.Close()
	if err := segment.ZeroFill(f, from, size); err != nil {
		return fmt.Errorf("batpak: discard torn tail: %w", err)
	}
	return nil
}

// writeSegmentHeader writes the header of segment id at the start of path.
func writeSegmentHeader(fsys vfs.FS, path string, id uint32) error {
	f, err := fsys.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("batpak: rewrite segment header: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(format.EncodeSegmentHeader(id)); err != nil {
		return fmt.Errorf("batpak: rewrite segment header: %w", err)
	}
	return f.Sync()
}

// sequenceGap says why ev's sequence cannot follow the index's last: a
// repeated or backward sequence, or missing events before it (see
// missingBefore).
func sequenceGap(ix *index.Index, ev *walkedEvent) string {
	n := ix.Len()
	if ev.seq <= uint64(n) || ev.seq >= math.MaxUint32 {
		return fmt.Sprintf("global sequence %d out of order (next is %d)", ev.seq, n)
	}
	return missingBefore(uint64(n), lastSeg(ix), ev.seq, ev.seg)
}

// lastSeg is the segment of the index's last event (0 when it has none:
// segment ids start at 1).
func lastSeg(ix *index.Index) uint32 {
	if n := ix.Len(); n > 0 {
		return ix.At(n - 1).Seg
	}
	return 0
}

// missingBefore says which sequences, from next, are missing before the
// event of sequence seq read in segment seg, the previous one read being
// in segment prev (see missingUpTo).
func missingBefore(next uint64, prev uint32, seq uint64, seg uint32) string {
	return missingUpTo(next, prev, seq, seg, fmt.Sprintf("this event's %d", seq))
}

// missingUpTo says that the sequences from next up to seq are missing
// before what (the record read in segment seg, the previous one read
// being in segment prev) — then, when segment numbers are skipped between
// prev and seg, which segment files are missing (a removed middle segment
// otherwise reads as damage of the one after it).
func missingUpTo(next uint64, prev uint32, seq uint64, seg uint32, what string) string {
	why := fmt.Sprintf("global sequences %d..%d are missing before %s", next, seq-1, what)
	if seq == next+1 {
		why = fmt.Sprintf("global sequence %d is missing before %s", next, what)
	}
	switch p, cur := format.SegID(prev), format.SegID(seg); {
	case cur == p+2:
		why += "; segment " + format.SegmentName(p+1) + " is missing"
	case cur > p+2:
		why += fmt.Sprintf("; segments %s to %s are missing", format.SegmentName(p+1), format.SegmentName(cur-1))
	}
	return why
}

// indexWalked adds one recovered event to the index (hidden events keep
// their sequence and their place in the entity's chain, nothing more).
func (s *Store) indexWalked(ev *walkedEvent) error {
	ix := s.ix
	// Sequences run without gaps (a batch that never committed gives its
	// sequences back): a gap means events are missing — except before the
	// event that records a salvaged loss (see logend.go), which takes the
	// sequence the store had recorded.
	salvage := ev.kind == KindLogSalvaged && !ev.hidden && ev.seq > uint64(ix.Len()) && string(ev.entity) == SalvageEntity
	if (ev.seq != uint64(ix.Len()) && !salvage) || ev.seq >= math.MaxUint32 {
		return &CorruptionError{File: filepath.Join(s.cfg.Dir, format.SegmentName(ev.seg)), Offset: int64(ev.off),
			Reason: sequenceGap(ix, ev)}
	}
	ent := ix.EntityFor(ev.entity)
	sc := ix.ScopeFor(ev.scope)
	ix.Entity(ent).Head = index.Head{Exists: true, Clock: ev.clock, TS: ev.ts, Hash: ev.hash}
	var idem string
	if len(ev.idem) > 0 && !ev.hidden && !ev.removed {
		idem = string(ev.idem)
	}
	e := index.Entry{ID: ev.id, Seg: ev.seg, Off: uint32(ev.off), Entity: ent, Scope: sc, Clock: ev.clock, Kind: uint16(ev.kind)}
	if ev.hidden {
		e.Flags |= index.Hidden
	}
	if ev.removed {
		e.Flags |= index.Removed
	}
	ix.InsertLocked(uint32(ev.seq), e, idem, index.Links{Cause: ev.cause, Corr: ev.corr})
	return nil
}
