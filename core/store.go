package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/vfs"
	"github.com/batpak-go/batpak/ijson"
)

// Store is an open event store. All methods are safe for concurrent use.
// Writes go through one writer goroutine; reads are served from the
// in-memory index and the segment files.
type Store struct {
	cfg      Config
	readOnly bool
	log      *slog.Logger

	ix   *index
	segs *segCache
	bc   *broadcaster
	lock vfs.File
	fs   vfs.FS // every file operation goes through it

	mailbox chan *request
	closeMu sync.RWMutex // held shared while sending to mailbox
	closed  bool
	w       *writer

	closeOnce sync.Once
	closeErr  error
	shut      atomic.Bool // Close finished: reads fail with ErrClosed

	fence atomic.Pointer[Fence] // the open visibility fence, if any
	// rewriteMu orders in-place rewrites of published frames (redaction)
	// against snapshots copying them.
	rewriteMu sync.RWMutex
	erasures  atomic.Uint64 // the erasure epoch (see redact.go)
	// erasureMu serialises erasures (Redact, EraseEntity, Compact): each
	// raises the epoch once, and looks up the locations it rewrites while
	// no compaction can move them. Taken before rewriteMu.
	erasureMu sync.Mutex
	// compactions counts committed compactions: a read that fails while it
	// changed is planned again (see readRetry).
	compactions atomic.Uint64

	openReport OpenReport
	noFooters  bool // recovery reads frames, not segment footers
	// maintClosed is set by Close under erasureMu: maintenance that takes
	// erasureMu afterwards (Compact, Redact, EraseEntity, the sealer)
	// does nothing, so no file changes once Close has written its footer
	// and checkpoint and released the lock.
	maintClosed bool
	sl          *sealer
	// snap: the segment files recovery reads (during Open only).
	snap *segmentSnapshot

	compactHook func(stage string) // tests only (export_test.go)

	// repairs are the changes recovery decided on (a torn tail zeroed, a
	// stale footer removed, a segment header rewritten), made only once
	// the log is known not to be shorter than recorded: a refused Open
	// changes nothing.
	repairs []func() error
	// salvaged: Open found the log shorter than recorded and Config.Salvage
	// was set; the loss is recorded once the writer runs (see logend.go).
	salvaged *LogTruncatedError

	endsMu sync.Mutex
	ends   map[uint32]int64 // segment id → end of its data (active: see writer.stat)
}

// segmentEnd returns where a segment's data ends.
func (s *Store) segmentEnd(id uint32) int64 {
	s.endsMu.Lock()
	defer s.endsMu.Unlock()
	return s.ends[id]
}

// dropSegmentEnd forgets a removed segment.
func (s *Store) dropSegmentEnd(id uint32) {
	s.endsMu.Lock()
	delete(s.ends, id)
	s.endsMu.Unlock()
}

// setSegmentEnd records where a segment's data ends, for Stats.
func (s *Store) setSegmentEnd(id uint32, end int64) {
	s.endsMu.Lock()
	if s.ends == nil {
		s.ends = map[uint32]int64{}
	}
	s.ends[id] = end
	s.endsMu.Unlock()
}

// Open opens (creating if needed) the store in cfg.Dir for reading and
// writing. It takes the directory's exclusive lock (a second writer process
// gets a *LockedError naming the holder's pid), then rebuilds the index from
// the segment files. A torn tail (a partly written last frame, as left by a
// crash) is truncated away and logged; a frame that fails its checks with
// valid frames after it, or a damaged segment header, fails Open with a
// *CorruptionError naming the file and offset. A compaction journal left
// by a crash is finished only when it passes its checks; otherwise Open
// fails with a *CorruptionError naming the journal, with no file renamed
// or deleted.
func Open(cfg Config) (*Store, error) {
	return open(cfg, false)
}

// OpenReadOnly opens an existing store for reading only: no lock is taken
// (it works beside a live writer process), no writer goroutine runs, nothing
// on disk is changed, and every write returns ErrReadOnly. It shows the
// events that were written when it opened. Beside a live writer, a segment
// the writer rewrites later (Compact, Redact in a packed segment, or the
// packing of sealed segments under Config.Compression) has a new file
// name: reads of it fail with an error saying so until the read-only
// store is reopened. A compaction committing while it opens is never
// reported as damage: it reads the segments the compaction protocol says
// are live (see core/doc.go), holding one file descriptor per segment
// until its index is built. A damaged compaction journal fails it with a
// *CorruptionError naming the journal.
func OpenReadOnly(cfg Config) (*Store, error) {
	return open(cfg, true)
}

func open(cfg Config, readOnly bool) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fillRuntimeDefaults()
	s := &Store{cfg: cfg, readOnly: readOnly, log: cfg.Logger, ix: newIndex(), bc: newBroadcaster(cfg.BroadcastCapacity), fs: cfg.fs}
	if s.fs == nil {
		s.fs = vfs.Default()
	}
	if readOnly {
		if _, err := s.fs.Stat(cfg.Dir); err != nil {
			return nil, fmt.Errorf("batpak: open read-only: %w", err)
		}
	} else {
		if err := mkdirDurable(s.fs, cfg.Dir); err != nil {
			return nil, fmt.Errorf("batpak: create store directory: %w", err)
		}
		l, err := acquireLock(s.fs, cfg.Dir)
		if err != nil {
			return nil, err
		}
		s.lock = l
	}
	activeMapLen := 0
	if !readOnly {
		activeMapLen = int(cfg.SegmentMaxBytes) + cfg.SingleAppendMaxBytes + 1<<20 + preallocStep
	}
	s.segs = newSegCache(s.fs, cfg.Dir, cfg.FDBudget, activeMapLen)
	if !readOnly {
		if err := finishCompaction(s.fs, cfg.Dir); err != nil {
			_ = releaseLock(s.fs, s.lock)
			return nil, err
		}
	}
	n, damaged, err := loadErasures(s.fs, cfg.Dir)
	if err == nil && damaged {
		err = s.resetErasures(n)
	}
	if err != nil {
		_ = releaseLock(s.fs, s.lock)
		return nil, err
	}
	s.erasures.Store(n)
	// Read before the log: beside a live writer, nothing recorded here is
	// ahead of what the scan below reads.
	logRecs := readLogRecords(s.fs, cfg.Dir)
	began := time.Now()
	var rec recovered
	if readOnly {
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
	if err == nil {
		err = s.checkLogEnd(logRecs, &rec)
	}
	if err == nil {
		err = s.runRepairs()
	}
	if err != nil {
		s.segs.close()
		_ = releaseLock(s.fs, s.lock)
		return nil, err
	}
	if readOnly {
		return s, nil
	}
	w, err := newWriter(s, rec)
	if err != nil {
		s.segs.close()
		_ = releaseLock(s.fs, s.lock)
		return nil, err
	}
	s.w = w
	s.mailbox = make(chan *request, cfg.ChannelCapacity)
	go w.run()
	s.startSealer()
	if s.salvaged != nil {
		if err := s.recordSalvage(s.salvaged); err != nil {
			_ = s.Close()
			return nil, err
		}
	}
	return s, nil
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
	ckBad := false
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
		s.openReport.TailReplayed = uint64(s.ix.n) - ck.entries
		s.openReport.Hidden = ck.hidden
	}
	s.openReport.Segments = len(ids)
	s.openReport.Entries = uint64(s.ix.n)
	s.openReport.Hidden += lw.hiddenEvents
	s.openReport.DroppedBatch = lw.droppedBatches
	if lw.droppedBatches > 0 {
		s.log.Warn("batpak: discarded batches that lack a commit record", "batches", lw.droppedBatches)
	}
	out.danglingFence, out.fenceID = dangling, fenceID
	out.nextSeq = uint64(s.ix.n)
	return out, nil
}

// resetIndex forgets what a recovery attempt restored, before another.
func (s *Store) resetIndex() {
	s.ix = newIndex()
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
	lw := &logWalker{dir: s.cfg.Dir, emit: s.indexWalked}
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
			if next := repackedKey(id); samePlacesPacked(s.fs, filepath.Join(s.cfg.Dir, format.SegmentName(next))) {
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
	done()
	if err != nil {
		return 0, 0, fmt.Errorf("batpak: mmap %s: %w", path, err)
	}
	defer s.fs.Munmap(m)
	if isPackedHeader(m) {
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
	// A plain segment the checkpoint covers has its frames checked (a
	// read of mapped bytes, no decoding): the checkpoint path stays as
	// strict about damage as a scan. Without a checkpoint, its footer
	// stands in for the frames it covers.
	if fo := s.usableFooter(id, size, ck != nil, func(off int) ([]byte, bool, error) {
		rec, ok := format.FrameAt(m, off)
		if !ok {
			return nil, false, nil
		}
		return m[off : off+format.FrameHeaderSize+len(rec)], true, nil
	}); fo != nil {
		if err := fo.replay(lw, from, ck, s.ix); err != nil {
			return 0, 0, s.dropStaleFooter(id, err)
		}
		s.openReport.Footers++
		start = int(fo.end)
	}
	e, st2, err := format.ScanFrames(m, start, s.recoverFrame(lw, id, from, ck))
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
			s.log.Warn("batpak: discarding a torn tail left by a crash", "file", path, "offset", end, "bytes", size-end)
			s.openReport.TornTailBytes += size - end
			s.repair(func() error { return zeroTail(s.fs, path, end, size) })
		}
	}
	return end, size, nil
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
	pk, err := parsePacked(file, id)
	if err != nil {
		return 0, 0, &CorruptionError{File: path, Reason: err.Error()}
	}
	if fo := s.usableFooter(id, pk.size, false, func(off int) ([]byte, bool, error) { return pk.frame(file, off) }); fo != nil && fo.end == pk.size {
		if err := fo.replay(lw, from, ck, s.ix); err != nil {
			return 0, 0, s.dropStaleFooter(id, err)
		}
		s.openReport.Footers++
		return pk.size, pk.size, nil
	}
	data, err := pk.logical(file, id)
	if err != nil {
		return 0, 0, &CorruptionError{File: path, Reason: err.Error()}
	}
	s.openReport.SegmentsScanned++
	e, st, err := format.ScanFrames(data, format.SegmentHeaderSize, s.recoverFrame(lw, id, from, ck))
	if err != nil {
		return 0, 0, err
	}
	if st != format.TailClean || int64(e) != pk.size {
		return 0, 0, &CorruptionError{File: path, Offset: int64(e), Reason: "unreadable frame inside a packed segment"}
	}
	return pk.size, pk.size, nil
}

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
	for off := from; off < size; {
		n := min(int64(len(zeros)), size-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("batpak: discard torn tail: %w", err)
		}
		off += n
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("batpak: discard torn tail: %w", err)
	}
	return nil
}

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

// indexWalked adds one recovered event to the index (hidden events keep
// their sequence and their place in the entity's chain, nothing more).
func (s *Store) indexWalked(ev *walkedEvent) error {
	ix := s.ix
	// Sequences run without gaps (a batch that never committed gives its
	// sequences back): a gap means events are missing — except before the
	// event that records a salvaged loss (see logend.go), which takes the
	// sequence the store had recorded.
	salvage := ev.kind == KindLogSalvaged && !ev.hidden && ev.seq > uint64(ix.n)
	if (ev.seq != uint64(ix.n) && !salvage) || ev.seq >= math.MaxUint32 {
		return &CorruptionError{File: filepath.Join(s.cfg.Dir, format.SegmentName(ev.seg)), Offset: int64(ev.off),
			Reason: fmt.Sprintf("global sequence %d out of order (next is %d)", ev.seq, ix.n)}
	}
	ent := ix.entityFor(ev.entity)
	sc := ix.scopeFor(ev.scope)
	es := ix.entities[ent]
	es.wExists, es.wClock, es.wTS, es.wHash = true, ev.clock, ev.ts, ev.hash
	var idem string
	if len(ev.idem) > 0 && !ev.hidden && !ev.removed {
		idem = string(ev.idem)
	}
	e := entry{id: ev.id, seg: ev.seg, off: uint32(ev.off), entity: ent, scope: sc, clock: ev.clock, kind: ev.kind}
	if ev.hidden {
		e.flags |= entryHidden
	}
	if ev.removed {
		e.flags |= entryRemoved
	}
	ix.insertLocked(uint32(ev.seq), e, idem)
	return nil
}

// Close drains the writer mailbox (every accepted write is written),
// syncs, truncates the active segment's preallocated tail, and releases the
// lock. Later writes fail with ErrClosed; reads keep working until Close
// returns and then fail with ErrClosed. Close is safe to call twice; the
// second call returns the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		defer s.shut.Store(true)
		defer s.bc.close()
		if s.readOnly {
			s.segs.close()
			return
		}
		s.closeMu.Lock()
		s.closed = true
		s.closeMu.Unlock()
		t := newTicket()
		s.mailbox <- &request{op: opClose, t: t}
		<-t.Done()
		s.closeErr = t.err
		<-s.w.exited
		s.stopSealer()
		// Held to the end: a Redact or Compact still running finishes
		// first, and none starts after (see maintClosed).
		s.erasureMu.Lock()
		defer s.erasureMu.Unlock()
		s.maintClosed = true
		if s.closeErr == nil {
			// A footer or checkpoint that fails to write costs the next Open
			// a scan, nothing else: report it, keep closing.
			seg, off := s.w.stat()
			s.footerOnClose(seg, off)
			if err := s.writeCheckpoint(seg, off); err != nil {
				s.log.Warn("batpak: index checkpoint not written", "err", err)
			}
		}
		s.segs.close()
		if err := releaseLock(s.fs, s.lock); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

// Sync forces every write accepted so far to stable storage, whatever the
// sync setting.
func (s *Store) Sync(ctx context.Context) error {
	t, err := s.enqueue(&request{op: opSync, t: newTicket()})
	if err != nil {
		return err
	}
	_, err = t.Wait(ctx)
	return err
}

// Dir returns the store directory.
func (s *Store) Dir() string { return s.cfg.Dir }

// Config returns the configuration the store was opened with.
func (s *Store) Config() Config { return s.cfg }

// WriterPressure reports how full the writer mailbox is.
func (s *Store) WriterPressure() WriterPressure {
	if s.mailbox == nil {
		return WriterPressure{Capacity: s.cfg.ChannelCapacity}
	}
	return WriterPressure{QueueLen: len(s.mailbox), Capacity: cap(s.mailbox)}
}

// Stats is a point-in-time summary of the store.
type Stats struct {
	Events         uint64 // visible events
	GlobalSequence uint64 // the sequence the next event will get
	Entities       int    // entities with at least one visible event
	Segments       int
	Bytes          int64 // bytes of segment data (headers and frames; zero-filled space excluded)
	IndexBytes     int64 // estimate of the heap the index holds
	Fsyncs         uint64
}

// Stats reports counts and sizes.
func (s *Store) Stats() Stats {
	s.ix.mu.RLock()
	st := Stats{GlobalSequence: uint64(s.ix.n), Entities: s.ix.liveEntities, Events: uint64(s.ix.ids.used)}
	s.ix.mu.RUnlock()
	st.IndexBytes = s.ix.memoryBytes()
	var activeID uint32
	var activeEnd int64 = -1
	if s.w != nil {
		activeID, activeEnd = s.w.stat()
	}
	s.endsMu.Lock()
	for id, end := range s.ends {
		if id == activeID && activeEnd >= 0 {
			end = activeEnd
		}
		st.Bytes += end
	}
	st.Segments = len(s.ends)
	s.endsMu.Unlock()
	if s.w != nil {
		st.Fsyncs = s.w.fsyncs.Load()
	}
	return st
}

// validateWrite checks a single event's coordinate, payload and options on
// the caller's goroutine (kinds are checked by the callers: user writes
// refuse reserved categories, system events require them).
func (s *Store) validateWrite(coord Coordinate, payload []byte, opts *AppendOptions) error {
	if err := coord.Validate(); err != nil {
		return err
	}
	if len(payload) > s.cfg.SingleAppendMaxBytes {
		return fmt.Errorf("%w: %d bytes, the limit is %d (Config.SingleAppendMaxBytes)", ErrPayloadTooLarge, len(payload), s.cfg.SingleAppendMaxBytes)
	}
	if err := ijson.Validate(payload, s.maxJSONDepth()); err != nil {
		return payloadError(err)
	}
	if len(opts.IdempotencyKey) > MaxIdempotencyKeyBytes {
		return fmt.Errorf("%w: idempotency key is %d bytes, the limit is %d", ErrInvalidOptions, len(opts.IdempotencyKey), MaxIdempotencyKeyBytes)
	}
	if !utf8.ValidString(opts.IdempotencyKey) {
		return fmt.Errorf("%w: idempotency key is not valid UTF-8", ErrInvalidOptions)
	}
	return nil
}

// maxJSONDepth is Config.MaxJSONDepth with 0 read as the default.
func (s *Store) maxJSONDepth() int {
	if s.cfg.MaxJSONDepth == 0 {
		return DefaultMaxJSONDepth
	}
	return s.cfg.MaxJSONDepth
}

// payloadError turns the validator's refusal into a *PayloadError.
func payloadError(err error) error {
	var e *ijson.Error
	if !errors.As(err, &e) {
		return fmt.Errorf("%w: %v", ErrInvalidPayload, err)
	}
	reason := e.Msg
	if e.Msg == "empty input" {
		reason = "empty payload (use {} or null for no data)"
	}
	return &PayloadError{Offset: e.Offset, Rule: e.Rule, Limit: e.Limit, Key: e.Key, Reason: reason}
}

// enqueue hands a request to the writer, blocking while the mailbox is
// full. It fails with ErrReadOnly, ErrClosed or ErrFenceActive without
// enqueueing.
func (s *Store) enqueue(r *request) (*Ticket, error) {
	return s.send(r, false)
}

// tryEnqueue is enqueue that refuses instead of blocking: a *RetryError
// under pressure, a *CancelledError while a fence is active.
func (s *Store) tryEnqueue(r *request) (*Ticket, error) {
	return s.send(r, true)
}

func (s *Store) send(r *request, try bool) (*Ticket, error) {
	if s.readOnly {
		return nil, ErrReadOnly
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	if r.fence == nil && (r.op == opAppend || r.op == opBatch) && s.fence.Load() != nil {
		if try {
			return nil, &CancelledError{Reason: "a visibility fence is active", Cause: ErrFenceActive}
		}
		return nil, ErrFenceActive
	}
	if !try {
		s.mailbox <- r
		return r.t, nil
	}
	q, c := len(s.mailbox), cap(s.mailbox)
	if q*100 >= c*s.cfg.PressureRetryPct {
		return nil, &RetryError{After: s.w.retryAfter(q), Reason: fmt.Sprintf("writer mailbox holds %d of %d", q, c)}
	}
	select {
	case s.mailbox <- r:
		return r.t, nil
	default:
		return nil, &RetryError{After: s.w.retryAfter(q), Reason: "writer mailbox is full"}
	}
}

// checkReadable fails reads after Close.
func (s *Store) checkReadable() error {
	if s.shut.Load() {
		return ErrClosed
	}
	return nil
}

// nowMicros is the configured wall clock in microseconds.
func (s *Store) nowMicros() int64 { return s.cfg.Now().UnixMicro() }
