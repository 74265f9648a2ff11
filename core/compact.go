package core

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
)

// Compaction rewrites sealed segments (never the one being written, so
// the store stays writable) to drop what is no longer wanted:
//
//   - Retention: events the Keep predicate refuses, events older than
//     MaxAge, events beyond an entity's newest MaxPerEntity, are removed:
//     each leaves a stub — its header without the payload, flagged removed
//     — so the entity's hash chain still links (the chain covers the
//     payload only through its digest) and Verify still passes. Removed
//     events are invisible: Get, Query, cursors and projections skip them.
//     Their idempotency keys are forgotten: a write repeating one is a new
//     event.
//   - Tombstone: events the predicate picks keep their header, visibly, as
//     redacted, and lose their payload bytes. Their idempotency keys still
//     dedupe (the payload digest is in the header).
//   - Merge: sealed segments are combined, after the above, into as few
//     files as SegmentMaxBytes allows.
//
// Removing or tombstoning events raises the erasure epoch, as a redaction
// does, so projection states cached before are not served after. The
// segments of a visibility fence still open are left alone (its events
// are not in the index until it ends).
//
// Everything else is copied byte for byte: global sequences, ids, payloads
// of kept events, batch and fence records (so hidden ranges stay hidden),
// and durable cursor positions are untouched. Redacted events shrink to
// stubs too.
//
// Crash safety: the new segments are written under temporary names and
// synced; then a journal naming them and the files they replace is synced
// (the commit point); then they are renamed into place, the index is
// switched over, the old files are deleted and the journal removed. Open
// finishes a journal it finds (once it passes its checks: checksum, names,
// new segments in place and holding what they replace; see journal.go)
// and deletes temporary files it finds without one, so a crash at any
// point leaves the old segments or the new ones, never a mix. A rewritten
// segment gets a new file name (a generation suffix), so readers that
// planned against the old files either still read them (an open mapping)
// or retry. A reader beside the writer that lists the directory while a
// journal is in place reads the new segments and skips the ones the
// journal deletes (see liveset.go).

// CompactConfig says what Compact does; combine the constructors' fields
// as needed. The zero value rewrites nothing.
type CompactConfig struct {
	// Merge combines sealed segments into as few files as SegmentMaxBytes
	// allows.
	Merge bool
	// Keep, when set, removes the visible events it returns false for.
	Keep func(StoredEvent) bool
	// Tombstone, when set, erases the payload of the visible events it
	// returns true for (they stay visible, Redacted).
	Tombstone func(StoredEvent) bool
	// MaxAge, when positive, removes events whose timestamp is older than
	// now minus MaxAge (now: Config.Now).
	MaxAge time.Duration
	// MaxPerEntity, when positive, keeps only each entity's newest N
	// visible events (counting those in the segment being written).
	MaxPerEntity int
	// StoreRecords lets Keep, Tombstone, MaxAge and MaxPerEntity apply to
	// the store's own records (entities under ReservedEntityPrefix: audit
	// records, log salvage, fence expiry) too. By default they are kept
	// whole, so retention cannot bury the audit trail.
	StoreRecords bool
	// MinSegments, when positive, is how many sealed segments there must be
	// for Compact to do anything (batpak 0.4.1's min_segments): with fewer
	// it reads, asks and changes nothing and reports Skipped. 0 (the
	// default): no minimum. Negative is refused (ErrInvalidOptions).
	MinSegments int
	// Progress, when set, is called from Compact's goroutine as the
	// rewrite reads the sealed segments: (0, total) before the first,
	// then (done, total) after each; total is how many will be read. It
	// must return quickly (it holds up the rewrite, not writes).
	Progress func(done, total int)

	// pack: the sealer's rewrite of one segment into a packed file, byte
	// for byte (no stub shrinking), so every event keeps its offset.
	pack bool
}

// Merge returns a config that combines sealed segments.
func Merge() CompactConfig { return CompactConfig{Merge: true} }

// Retention returns a config that removes events keep refuses.
func Retention(keep func(StoredEvent) bool) CompactConfig { return CompactConfig{Keep: keep} }

// TombstoneWhere returns a config that erases the payloads of the events
// pred picks.
func TombstoneWhere(pred func(StoredEvent) bool) CompactConfig {
	return CompactConfig{Tombstone: pred}
}

// CompactReport says what Compact did.
type CompactReport struct {
	SegmentsRewritten int   // sealed segments read
	SegmentsRemoved   int   // files fewer than before (merges)
	BytesReclaimed    int64 // bytes of segment data fewer than before (uncompressed)
	// DiskBytesReclaimed is how much less the segment files take on disk:
	// zero fill dropped and, with Config.Compression, compression included.
	DiskBytesReclaimed int64
	EventsRemoved      int
	EventsTombstoned   int
	// Skipped: fewer segments were sealed than CompactConfig.MinSegments,
	// so nothing was done.
	Skipped bool
	Elapsed time.Duration
}

const (
	compactJournal = "compact.journal"
	tmpSuffix      = ".tmp"
)

// Compact rewrites the sealed segments per cfg (see CompactConfig). It
// waits for a running snapshot or redaction and makes them wait. A
// compaction that removes or tombstones events is always recorded as an
// audit event (MaintenanceAuditEntity) before it takes effect, with
// Config.Admission set or not. With Config.Admission set it is first
// admitted (ActionCompact; see MaintenanceAdmission) once the new
// segments are written and before they take effect, so the gate judges
// exactly what will be removed. Errors: ErrReadOnly,
// ErrMaintenanceNotAdmitted, the gate's refusal, I/O errors (the old
// segments then stay in force).
func (s *Store) Compact(ctx context.Context, cfg CompactConfig) (CompactReport, error) {
	if s.readOnly {
		return CompactReport{}, ErrReadOnly
	}
	if s.cfg.Replicator != nil {
		return CompactReport{}, fmt.Errorf("%w: Compact", ErrReplicated)
	}
	if err := s.checkReadable(); err != nil {
		return CompactReport{}, err
	}
	s.erasureMu.Lock()
	defer s.erasureMu.Unlock()
	if s.maintClosed {
		return CompactReport{}, ErrClosed
	}
	if cfg.MinSegments < 0 {
		return CompactReport{}, fmt.Errorf("%w: CompactConfig.MinSegments is %d; want 0 (no minimum) or more", ErrInvalidOptions, cfg.MinSegments)
	}
	sealed, err := s.sealedKeys()
	if err != nil {
		return CompactReport{}, err
	}
	if len(sealed) < cfg.MinSegments {
		return CompactReport{Skipped: true}, nil
	}
	strategy := &CompactStrategy{Merge: cfg.Merge, MaxAge: cfg.MaxAge, MaxPerEntity: cfg.MaxPerEntity, Keep: cfg.Keep != nil, Tombstone: cfg.Tombstone != nil}
	return s.compactLocked(ctx, sealed, cfg, true, func(affected map[string]int, rep *CompactReport) error {
		return s.admitMaintenance(ctx, &MaintenanceProposal{
			Action: ActionCompact, Entities: affected, Compact: strategy,
			EventsErased: rep.EventsTombstoned, EventsRemoved: rep.EventsRemoved, Segments: rep.SegmentsRewritten,
		})
	})
}

// sealedKeys lists the segments a rewrite may touch, oldest first: those
// before the one being written. Events written under a fence that is
// still open are not in the index yet, so their entries could not follow
// them to new files: the segments from the fence's first one on are left
// alone too. The caller holds erasureMu.
func (s *Store) sealedKeys() ([]uint32, error) {
	active, _ := s.w.stat()
	// (Read after active: a fence begun later begins in active or after it.)
	if f := s.fence.Load(); f != nil {
		if b := f.beginSeg.Load(); b != 0 && format.SegID(b) < format.SegID(active) {
			active = b
		}
	}
	all, err := listSegments(s.fs, s.cfg.Dir)
	if err != nil {
		return nil, err
	}
	var sealed []uint32
	for _, k := range all {
		if format.SegID(k) < format.SegID(active) {
			sealed = append(sealed, k)
		}
	}
	return sealed, nil
}

// compactLocked rewrites the segments sealed per cfg. raiseEpoch: record
// an erasure when events are removed or tombstoned (a redaction, which
// has raised it already, passes false). admit, when set, is asked once the
// new segments are written and before anything takes effect, with the
// entities whose events are removed or tombstoned (and how many) and the
// report so far; its error abandons the rewrite. The caller holds
// erasureMu.
func (s *Store) compactLocked(ctx context.Context, sealed []uint32, cfg CompactConfig, raiseEpoch bool, admit func(affected map[string]int, rep *CompactReport) error) (CompactReport, error) {
	start := time.Now()
	var rep CompactReport
	s.rewriteMu.Lock()
	defer s.rewriteMu.Unlock()
	var affected map[string]int
	if _, forgets := s.cfg.ProjectionCache.(EntityForgetter); admit != nil || (forgets && raiseEpoch) {
		affected = map[string]int{}
	}
	if len(sealed) == 0 {
		if admit != nil {
			return rep, admit(affected, &rep)
		}
		return rep, nil
	}
	plan := s.compactPlan(cfg)
	outs, err := s.rewriteSegments(ctx, sealed, cfg, plan, &rep, affected)
	if err == nil && admit != nil {
		err = admit(affected, &rep)
	}
	if err != nil {
		for _, o := range outs {
			s.fs.Remove(o.tmpPath)
		}
		return rep, err
	}
	// Removing or tombstoning events is an erasure: projection states
	// cached before it must not be served after it (see redact.go).
	var epoch uint64
	if raiseEpoch && rep.EventsRemoved+rep.EventsTombstoned > 0 {
		if epoch, err = s.raiseErasures(); err != nil {
			for _, o := range outs {
				s.fs.Remove(o.tmpPath)
			}
			return rep, err
		}
	}
	if err := s.commitCompaction(sealed, outs, epoch, &rep); err != nil {
		return rep, err
	}
	if raiseEpoch && rep.EventsRemoved+rep.EventsTombstoned > 0 {
		// A compaction's erasure (a redaction's forgets its entities itself).
		s.forgetEntities(affected)
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// compactPlan precomputes what needs the index: each entity's cutoff for
// MaxPerEntity.
type compactPlanT struct {
	cutoff map[string]uint32 // entity → first sequence kept
	now    int64
}

func (s *Store) compactPlan(cfg CompactConfig) compactPlanT {
	p := compactPlanT{now: s.nowMicros()}
	if cfg.MaxPerEntity > 0 {
		p.cutoff = map[string]uint32{}
		s.ix.RLock()
		for n := range uint32(s.ix.NumEntities()) {
			if es := s.ix.Entity(n); len(es.Seqs) > cfg.MaxPerEntity {
				p.cutoff[es.Name] = es.Seqs[len(es.Seqs)-cfg.MaxPerEntity]
			}
		}
		s.ix.RUnlock()
	}
	return p
}

// compactOut is one rewritten segment.
type compactOut struct {
	key      uint32
	tmpPath  string
	path     string
	size     int64 // logical size (plain segment bytes)
	fileSize int64 // bytes on disk (smaller when packed)
	footer   []byte
	locs     map[uint32]uint32 // sequence → new offset
	removed  []uint32          // sequences now stubs (invisible)
}

// rewriteSegments writes the new segments under temporary names and
// counts, in affected (when not nil), the events removed or tombstoned
// per entity.
func (s *Store) rewriteSegments(ctx context.Context, sealed []uint32, cfg CompactConfig, plan compactPlanT, rep *CompactReport, affected map[string]int) ([]*compactOut, error) {
	var outs []*compactOut
	var cur *compactOut
	var buf, part []byte
	flush := func() error {
		if cur == nil {
			return nil
		}
		cur.size = int64(len(buf))
		var err error
		if s.cfg.Compression != CompressionNone {
			cur.fileSize, err = segment.WritePacked(s.fs, cur.tmpPath, buf, cur.key, segment.Codec(s.cfg.Compression), cfg.pack)
		} else {
			cur.fileSize, err = segment.WriteSynced(s.fs, cur.tmpPath, buf)
		}
		if err == nil {
			cur.footer, err = buildFooter(buf, cur.key)
		}
		cur, buf = nil, buf[:0]
		return err
	}
	open := func(from uint32) {
		key := segment.RepackedKey(from) // the next generation; wraps after 255 rewrites of one slot
		path := filepath.Join(s.cfg.Dir, format.SegmentName(key))
		cur = &compactOut{key: key, path: path, tmpPath: path + tmpSuffix, locs: map[uint32]uint32{}}
		outs = append(outs, cur)
		buf = append(buf[:0], format.EncodeSegmentHeader(key)...)
	}
	for i, key := range sealed {
		if err := ctx.Err(); err != nil {
			return outs, err
		}
		if cfg.Progress != nil {
			cfg.Progress(i, len(sealed))
		}
		path := filepath.Join(s.cfg.Dir, format.SegmentName(key))
		data, _, unmap, err := loadSegment(s.fs, path, key)
		if err != nil {
			return outs, err
		}
		if end := s.segmentEnd(key); end > 0 && int64(len(data)) > end {
			data = data[:end]
		}
		rep.SegmentsRewritten++
		// The segment's frames are rewritten into part (offsets relative to
		// its start), then placed: merging appends part to the current
		// output when the result stays within SegmentMaxBytes.
		part = part[:0]
		locs := map[uint32]uint32{}
		var removed []uint32
		_, st, err := format.ScanFrames(data, format.SegmentHeaderSize, func(off int, rec []byte) error {
			frame := data[off : off+format.FrameHeaderSize+len(rec)]
			if rec[0] != format.RecEvent || !format.CheckEvent(rec) {
				part = append(part, frame...)
				return nil
			}
			v := format.EventView(rec)
			seq := uint32(v.Seq())
			newOff := uint32(len(part))
			owned, visible := s.entryOf(seq, v.ID())
			if owned {
				// Every entry follows its frame, hidden ones and stubs too,
				// so the index (and the checkpoint) always names real places.
				locs[seq] = newOff
			}
			if !visible {
				part = append(part, frame...) // hidden, a stub, or a batch that never was
				return nil
			}
			switch act := s.compactAction(cfg, plan, v, seq); act {
			case format.SysRemoved:
				part = appendStub(part, rec, format.SysRemoved)
				removed = append(removed, seq)
				rep.EventsRemoved++
				if affected != nil {
					affected[string(v.Entity())]++
				}
			case format.SysRedacted:
				part = appendStub(part, rec, format.SysRedacted)
				if v.SysFlags()&format.SysRedacted == 0 {
					rep.EventsTombstoned++
					if affected != nil {
						affected[string(v.Entity())]++
					}
				}
			default:
				part = append(part, frame...)
			}
			return nil
		})
		unmap()
		if err != nil {
			return outs, err
		}
		if st != format.TailClean {
			return outs, &CorruptionError{File: path, Reason: "unreadable frame in a sealed segment; run Verify"}
		}
		if cur == nil || !cfg.Merge || int64(len(buf)+len(part)) > s.cfg.SegmentMaxBytes {
			if err := flush(); err != nil {
				return outs, err
			}
			open(key)
		}
		base := uint32(len(buf))
		buf = append(buf, part...)
		for seq, off := range locs {
			cur.locs[seq] = base + off
		}
		cur.removed = append(cur.removed, removed...)
	}
	if cfg.Progress != nil {
		cfg.Progress(len(sealed), len(sealed))
	}
	return outs, flush()
}

// entryOf reports whether the index entry at seq is this event (owned)
// and whether it is visible.
func (s *Store) entryOf(seq uint32, id EventID) (owned, visible bool) {
	s.ix.RLock()
	defer s.ix.RUnlock()
	if seq >= s.ix.Len() {
		return false, false
	}
	e := s.ix.At(seq)
	if e.ID != id {
		return false, false
	}
	return true, e.Visible()
}

var reservedPrefix = []byte(ReservedEntityPrefix)

// compactAction decides an event's fate: 0 keep, format.SysRemoved, format.SysRedacted.
func (s *Store) compactAction(cfg CompactConfig, plan compactPlanT, v format.EventView, seq uint32) byte {
	if cfg.pack {
		return 0
	}
	if !cfg.StoreRecords && bytes.HasPrefix(v.Entity(), reservedPrefix) {
		return 0
	}
	if cfg.MaxAge > 0 && v.Timestamp() < plan.now-cfg.MaxAge.Microseconds() {
		return format.SysRemoved
	}
	if c, ok := plan.cutoff[string(v.Entity())]; ok && seq < c {
		return format.SysRemoved
	}
	if cfg.Keep != nil || cfg.Tombstone != nil {
		ev := decodeHeader(v)
		if v.SysFlags()&format.SysRedacted == 0 {
			ev.Payload = append([]byte(nil), v.Payload()...) // the mapping goes away
		}
		if cfg.Keep != nil && !cfg.Keep(ev) {
			return format.SysRemoved
		}
		if cfg.Tombstone != nil && cfg.Tombstone(ev) {
			return format.SysRedacted
		}
	}
	if v.SysFlags()&format.SysRedacted != 0 && v.PayloadLen() > 0 {
		return format.SysRedacted // shrink a redaction's zeros
	}
	return 0
}

// appendStub appends the frame of rec without its payload, flagged.
func appendStub(dst, rec []byte, flag byte) []byte {
	v := format.EventView(rec)
	n := v.StringsEnd()
	start := len(dst)
	dst = format.Grow(dst, format.FrameHeaderSize+n)
	f := dst[start:]
	nrec := f[format.FrameHeaderSize:]
	copy(nrec, rec[:n])
	nrec[1] |= flag
	le.PutUint32(nrec[4:], 0)
	le.PutUint32(f[0:], uint32(n))
	le.PutUint32(f[4:], format.FrameCRC(f[0:4], nrec))
	return dst
}

// commitCompaction makes the rewrite take effect (see the package notes).
func (s *Store) commitCompaction(sealed []uint32, outs []*compactOut, epoch uint64, rep *CompactReport) error {
	dir := s.cfg.Dir
	if err := segment.SyncDir(s.fs, dir); err != nil {
		return err
	}
	// The checkpoint describes the old files: without it, the next Open scans.
	if err := s.fs.Remove(filepath.Join(dir, format.CheckpointName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// Each new segment's footer goes with it: written beside it under a
	// temporary name, renamed into place by the journal.
	for _, o := range outs {
		if o.footer == nil {
			continue
		}
		if _, err := segment.WriteSynced(s.fs, filepath.Join(dir, footerName(o.key)+tmpSuffix), o.footer); err != nil {
			return err
		}
	}
	s.compactStage("written")
	if err := segment.WriteFileAtomic(s.fs, dir, compactJournal, encodeJournal(sealed, outs), true); err != nil {
		return err
	}
	// Committed: from here on the new segments win, on any path.
	s.compactStage("committed")
	for i, o := range outs {
		s.segs.Forget(o.key) // a mapping left from a generation number's earlier use
		if err := s.fs.Rename(o.tmpPath, o.path); err != nil {
			return fmt.Errorf("batpak: compaction (committed; the next Open finishes it): %w", err)
		}
		if o.footer != nil {
			if err := s.fs.Rename(filepath.Join(dir, footerName(o.key)+tmpSuffix), filepath.Join(dir, footerName(o.key))); err != nil {
				return fmt.Errorf("batpak: compaction (committed; the next Open finishes it): %w", err)
			}
		}
		if i == 0 {
			s.compactStage("renaming")
		}
	}
	var oldBytes, oldDisk int64
	for _, k := range sealed {
		oldBytes += s.segmentEnd(k)
		if fi, err := s.fs.Stat(filepath.Join(dir, format.SegmentName(k))); err == nil {
			oldDisk += fi.Size()
		}
	}
	s.switchIndex(sealed, outs, epoch)
	s.compactStage("switched")
	for i, k := range sealed {
		s.segs.Forget(k)
		// The footer first: a crash between the two leaves a segment
		// without a footer (read by a scan, removed by the next Open),
		// never a footer naming a segment that is gone, which salvage
		// would take for a missing segment.
		if err := s.fs.Remove(filepath.Join(dir, footerName(k))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("batpak: compaction (committed; the next Open finishes it): %w", err)
		}
		if err := s.fs.Remove(filepath.Join(dir, format.SegmentName(k))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("batpak: compaction (committed; the next Open finishes it): %w", err)
		}
		s.segs.Forget(k) // again: a reader may have mapped it between the first forget and the delete
		if i == 0 {
			s.compactStage("deleting")
		}
	}
	if err := segment.SyncDir(s.fs, dir); err != nil {
		return err
	}
	s.compactStage("deleted")
	if err := s.fs.Remove(filepath.Join(dir, compactJournal)); err != nil {
		return err
	}
	var newBytes, newDisk int64
	for _, o := range outs {
		newBytes += o.size
		newDisk += o.fileSize
	}
	rep.DiskBytesReclaimed = oldDisk - newDisk
	rep.SegmentsRemoved = len(sealed) - len(outs)
	rep.BytesReclaimed = oldBytes - newBytes
	return segment.SyncDir(s.fs, dir)
}

// compactStage calls the test hook (export_test.go) at a point of the
// commit; production code never sets it.
func (s *Store) compactStage(stage string) {
	if s.compactHook != nil {
		s.compactHook(stage)
	}
}

// switchIndex points the index at the rewritten segments: new locations,
// removed events out of every posting list, the id table and the
// idempotency keys; then publishes the erasure epoch (when not 0).
func (s *Store) switchIndex(sealed []uint32, outs []*compactOut, epoch uint64) {
	ix := s.ix
	ix.Lock()
	defer ix.Unlock()
	removed := map[uint32]bool{}
	for _, o := range outs {
		for seq, off := range o.locs {
			e := ix.At(seq)
			e.Seg, e.Off = o.key, off
		}
		for _, seq := range o.removed {
			removed[seq] = true
		}
	}
	ix.RemoveLocked(removed)
	s.endsMu.Lock()
	for _, k := range sealed {
		delete(s.ends, k)
	}
	for _, o := range outs {
		s.ends[o.key] = o.size
	}
	s.endsMu.Unlock()
	if epoch != 0 {
		s.erasures.Store(epoch)
	}
	s.compactions.Add(1)
}

// strayTemp reports whether name is a temporary file a crash left in the
// store directory: a compaction's segment that never committed, or the
// temporary file of an atomic write (segment.WriteFileAtomic) of the
// journals, the checkpoint or the erasure epoch.
func strayTemp(name string) bool {
	if strings.HasSuffix(name, format.SegmentSuffix+tmpSuffix) || strings.Contains(name, footerSuffix+tmpSuffix) {
		return true
	}
	for _, f := range []string{compactJournal, redactJournal, format.CheckpointName, erasureFile} {
		if strings.HasPrefix(name, f+tmpSuffix) {
			return true
		}
	}
	return false
}
