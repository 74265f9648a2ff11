package core

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/index"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// Erasure. Redact overwrites an event's payload bytes on disk with zeros
// and flags the record redacted, in place and synced (or, in a sealed
// segment whose file is shared with a copy through hard links, by
// rewriting the segment as for a packed one, below); the header stays,
// and with it the hash chain, which covers the payload only through its
// digest: Verify still passes, and reads return the event with Redacted
// set and no payload. In a packed (compressed) segment, which is never
// rewritten in place, the segment is rewritten instead (a compaction of
// that one segment, same crash safety) with the event as a redacted stub:
// its header without the payload bytes. This is erasure of the payload, not of the fact that
// an event happened; erase identifying data from entity and scope names by
// not putting it there.

// Redact erases the payload of the visible event id. Redacting an already
// redacted event does nothing. With Config.Admission set it is admitted
// first (ActionRedact; see MaintenanceAdmission); an erasure is recorded as
// an audit event (MaintenanceAuditEntity) before it is done. Errors:
// ErrNotFound, ErrReadOnly, ErrClosed, ErrMaintenanceNotAdmitted, the
// gate's refusal, I/O errors. The erasure is synced to disk before Redact
// returns; a snapshot taken earlier still holds the payload.
func (s *Store) Redact(ctx context.Context, id EventID) error {
	if s.readOnly {
		return ErrReadOnly
	}
	if s.cfg.Replicator != nil {
		return fmt.Errorf("%w: Redact", ErrReplicated)
	}
	// Locations are looked up under erasureMu, which a compaction holds
	// while it moves events to other files.
	s.erasureMu.Lock()
	defer s.erasureMu.Unlock()
	if s.maintClosed {
		return ErrClosed
	}
	if err := s.finishPendingRedaction(); err != nil {
		return err
	}
	s.ix.RLock()
	seq, ok := s.ix.Lookup(id)
	var l index.Loc
	if ok {
		e := s.ix.At(seq)
		l = index.Loc{Seq: seq, Seg: e.Seg, Off: e.Off}
	}
	s.ix.RUnlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	_, err := s.eraseAdmitted(ctx, ActionRedact, "", []index.Loc{l})
	return err
}

// EraseEntity redacts every visible event of entity and returns how many
// it erased (already redacted ones are not counted). Admission, audit
// record and errors as Redact (ActionErase).
func (s *Store) EraseEntity(ctx context.Context, entity string) (int, error) {
	if s.readOnly {
		return 0, ErrReadOnly
	}
	if s.cfg.Replicator != nil {
		return 0, fmt.Errorf("%w: EraseEntity", ErrReplicated)
	}
	s.erasureMu.Lock()
	defer s.erasureMu.Unlock()
	if s.maintClosed {
		return 0, ErrClosed
	}
	if err := s.finishPendingRedaction(); err != nil {
		return 0, err
	}
	return s.eraseAdmitted(ctx, ActionErase, entity, s.ix.Stream(entity))
}

// eraseAdmitted plans the erasure of the events at locs (those not yet
// redacted), asks the gate, records it and carries it out. The caller
// holds erasureMu, so no other erasure or compaction changes the plan
// between the question and the answer.
func (s *Store) eraseAdmitted(ctx context.Context, action Action, entity string, locs []index.Loc) (int, error) {
	evs, err := s.readRetry(func() []index.Loc { return locs })
	if err != nil {
		return 0, err
	}
	p := &MaintenanceProposal{Action: action, Entity: entity, Entities: map[string]int{}}
	bySeq := make(map[uint64]*StoredEvent, len(evs))
	for i := range evs {
		bySeq[evs[i].GlobalSequence] = &evs[i]
	}
	todo := locs[:0:0]
	for _, l := range locs {
		ev, ok := bySeq[uint64(l.Seq)]
		if !ok {
			continue // not visible
		}
		if p.Entity == "" {
			p.Entity = ev.Coordinate.Entity
		}
		if ev.Redacted {
			continue
		}
		todo = append(todo, l)
		p.IDs = append(p.IDs, ev.Header.ID)
		p.Entities[ev.Coordinate.Entity]++
	}
	p.EventsErased = len(todo)
	if err := s.admitMaintenance(ctx, p); err != nil {
		return 0, err
	}
	if len(todo) == 0 {
		return 0, nil
	}
	n, err := s.redactLocs(ctx, todo)
	if n > 0 {
		s.forgetEntities(p.Entities)
	}
	return n, err
}

// redactLocs erases the payloads at locs and returns how many it erased.
// The caller holds erasureMu.
func (s *Store) redactLocs(ctx context.Context, locs []index.Loc) (int, error) {
	n, err := s.raiseErasures()
	if err != nil {
		return 0, err
	}
	// Published only once the frames are rewritten: a projection that read
	// the event before then is tagged with the old epoch, so never served.
	defer s.erasures.Store(n)
	done := 0
	packed := map[uint32]bool{}
	ids := map[EventID]bool{}
	var sealed map[uint32]bool
	var inPlace []index.Loc
	for _, l := range locs {
		if s.isPacked(l.Seg) || s.isShared(l.Seg, &sealed) {
			// A packed segment is not rewritten in place, nor is a sealed
			// one whose file is shared with a copy (hard links: a
			// snapshot taken with SnapshotOptions.LinkSealed, or the store
			// such a copy was taken of): the events are tombstoned by
			// rewriting the segment into a new file.
			packed[l.Seg] = true
			s.ix.RLock()
			ids[s.ix.At(l.Seq).ID] = true
			s.ix.RUnlock()
			continue
		}
		inPlace = append(inPlace, l)
	}
	if len(inPlace) > 0 {
		n, err := s.redactInPlace(inPlace)
		done += n
		if err != nil {
			return done, err
		}
	}
	if len(packed) > 0 {
		keys := make([]uint32, 0, len(packed))
		for k := range packed {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		rep, err := s.compactLocked(ctx, keys, CompactConfig{Tombstone: func(ev StoredEvent) bool { return ids[ev.Header.ID] }}, false, nil)
		done += rep.EventsTombstoned
		if err != nil {
			return done, err
		}
	}
	return done, s.Sync(ctx)
}

// isShared reports whether segment key is sealed and its file has other
// hard links; sealed caches the sealed segments' keys for the next call.
// The caller holds erasureMu.
func (s *Store) isShared(key uint32, sealed *map[uint32]bool) bool {
	shared, err := vfs.Shared(s.fs, filepath.Join(s.cfg.Dir, format.SegmentName(key)))
	if err != nil || !shared {
		return false
	}
	if *sealed == nil {
		keys, err := s.sealedKeys()
		if err != nil {
			return false
		}
		*sealed = map[uint32]bool{}
		for _, k := range keys {
			(*sealed)[k] = true
		}
	}
	return (*sealed)[key]
}

// isPacked reports whether segment key is stored packed (compressed).
func (s *Store) isPacked(key uint32) bool {
	m, err := s.acquireSegment(key)
	if err != nil {
		return false
	}
	defer s.segs.Release(m)
	return m.IsPacked()
}

// smallFileMax bounds what is read of a store's small records (the
// erasure epoch, a cursor's position, the lock's pid): each is a few
// dozen bytes, and a larger file is damaged, never read whole.
const smallFileMax = 4 << 10

// The erasure epoch counts erasures (redactions, and compactions that
// remove or tombstone events) over the store's life, persisted in the
// directory: projection caches tag states with it and never serve a state
// computed before an erasure, in this process or after a restart.
const erasureFile = "erasures"

// loadErasures reads the erasure epoch. A damaged file (wrong size or
// checksum) loses only which epoch caches were tagged with, not data: the
// store moves to a fresh epoch no cache can hold (see freshErasureEpoch)
// and damaged reports it, for the caller to rewrite the file and say so.
// A file missing from a store that holds segments is taken for damaged
// too (a cache may hold states tagged with the epoch it counted to, and
// counting again from 0 would serve them); absent reports a new store's,
// which the caller writes.
func loadErasures(fsys vfs.FS, dir string) (n uint64, damaged, absent bool, err error) {
	b, err := vfs.ReadFileAtMost(fsys, filepath.Join(dir, erasureFile), smallFileMax)
	if errors.Is(err, os.ErrNotExist) {
		if !holdsSegments(fsys, dir) {
			return 0, false, true, nil
		}
		n, err := freshErasureEpoch()
		return n, true, false, err
	}
	var tl *vfs.TooLargeError
	if errors.As(err, &tl) {
		b, err = nil, nil // damaged: a fresh epoch, below
	}
	if notAFile(err) {
		// A directory or a pipe in its place: the epoch could not be
		// written there either.
		return 0, false, false, &CorruptionError{File: filepath.Join(dir, erasureFile), Reason: "the erasure epoch is " + notAFileWhat(err) + ": move it aside (the store then starts a fresh epoch)"}
	}
	if err != nil {
		return 0, false, false, fmt.Errorf("batpak: read erasure epoch: %w", err)
	}
	if len(b) != 12 || le.Uint32(b[8:]) != format.CRC32C(b[:8]) {
		n, err := freshErasureEpoch()
		return n, true, false, err
	}
	return le.Uint64(b), false, false, nil
}

// holdsSegments reports whether dir holds a segment file (or cannot be
// listed: then it is taken to).
func holdsSegments(fsys vfs.FS, dir string) bool {
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), format.SegmentSuffix) {
			return true
		}
	}
	return false
}

// notAFile reports whether err is the read of a store record that is
// not a regular file: a directory, or a pipe, socket or device
// (vfs.ErrNotRegular).
func notAFile(err error) bool {
	return errors.Is(err, vfs.ErrNotRegular) || errors.Is(err, syscall.EISDIR)
}

// notAFileWhat names what notAFile found.
func notAFileWhat(err error) string {
	if errors.Is(err, syscall.EISDIR) {
		return "a directory, not a file"
	}
	return "not a regular file (a named pipe, socket or device)"
}

// freshErasureEpoch returns a random epoch in [2^62, 2^63): caches
// compare epochs for equality, and the states they hold were tagged with
// the epochs this store counted up from 0 (or from an earlier fresh
// epoch, another random draw), so none holds it; raising it by one per
// erasure never wraps.
func freshErasureEpoch() (uint64, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("batpak: choose a fresh erasure epoch: %w", err)
	}
	return 1<<62 | le.Uint64(b[:])&(1<<62-1), nil
}

// writeErasures records epoch n durably.
func writeErasures(fsys vfs.FS, dir string, n uint64) error {
	b := le.AppendUint64(nil, n)
	b = le.AppendUint32(b, format.CRC32C(b))
	return segment.WriteFileAtomic(fsys, dir, erasureFile, b, true)
}

// raiseErasures records the next erasure epoch durably, before anything is
// erased, so that a crash in between can only invalidate caches, never
// leave one stale; it returns the epoch, which the caller publishes
// (s.erasures) once the erasure is done. The caller holds erasureMu.
func (s *Store) raiseErasures() (uint64, error) {
	n := s.erasures.Load() + 1
	if err := writeErasures(s.fs, s.cfg.Dir, n); err != nil {
		return 0, fmt.Errorf("batpak: record erasure epoch: %w", err)
	}
	return n, nil
}

// redactInPlace rewrites the frames at locs in place, a chunk at a time:
// each chunk is journaled (redactjournal.go), rewritten, synced; the
// journal is removed at the end. It returns how many it erased. The
// caller holds erasureMu.
func (s *Store) redactInPlace(locs []index.Loc) (int, error) {
	done := 0
	n, err := s.redactChunks(locs)
	done += n
	if err != nil {
		// Frames of the chunk may be half rewritten: finish them now if
		// the disk lets us (else Open does).
		if ferr := s.finishRedactionsLive(); ferr != nil {
			s.log.Warn("batpak: a redaction failed part way; the store finishes it when opened next", "err", ferr)
		}
		return done, err
	}
	return done, removeRedactJournal(s.fs, s.cfg.Dir)
}

// redactChunks is redactInPlace's rewriting, leaving the journal.
func (s *Store) redactChunks(locs []index.Loc) (int, error) {
	done := 0
	for len(locs) > 0 {
		chunk := locs[:min(len(locs), redactJournalChunk)]
		locs = locs[len(chunk):]
		entries, chunk, err := s.redactEntries(chunk)
		if err != nil {
			return done, err
		}
		if len(chunk) == 0 {
			continue
		}
		if err := journalRedactions(s.fs, s.cfg.Dir, entries); err != nil {
			return done, err
		}
		files := map[uint32]vfs.File{}
		closeAll := func() {
			for _, f := range files {
				f.Close()
			}
		}
		for i, l := range chunk {
			ok, err := s.redactOne(l, entries[i].id, files)
			if err != nil {
				closeAll()
				return done, err
			}
			if ok {
				done++
			}
		}
		for key, f := range files {
			if err := f.SyncData(); err != nil {
				closeAll()
				return done, fmt.Errorf("batpak: redact: sync %s: %w", format.SegmentName(key), err)
			}
		}
		closeAll()
	}
	return done, nil
}

// finishPendingRedaction finishes the journal a redaction that failed
// part way (an I/O error) left, if any, before another erasure reads the
// events (a frame it left half rewritten fails its checksum until then)
// or overwrites the journal. The caller holds erasureMu.
func (s *Store) finishPendingRedaction() error {
	if !redacting(s.fs, s.cfg.Dir) {
		return nil
	}
	if err := s.finishRedactionsLive(); err != nil {
		return fmt.Errorf("batpak: finish the redaction that failed before: %w", err)
	}
	return nil
}

// finishRedactionsLive finishes the journal a failed redaction left, as
// Open would, with readers told a rewrite runs (see decodeAt).
func (s *Store) finishRedactionsLive() error {
	s.rewriteMu.Lock()
	defer s.rewriteMu.Unlock()
	s.rewrites.Add(1)
	defer s.rewrites.Add(1)
	return finishRedactions(s.fs, s.cfg.Dir, s.log.Warn)
}

// redactOne rewrites one record in place (zeroed payload, redacted flag,
// new frame checksum) through files (the segments' files opened so far,
// which the caller syncs and closes); false when it was redacted
// already. It holds the rewrite lock so that a snapshot never copies a
// half-rewritten frame; readers that catch the frame mid-rewrite retry
// (see decodeAt).
func (s *Store) redactOne(l index.Loc, id [16]byte, files map[uint32]vfs.File) (bool, error) {
	s.rewriteMu.Lock()
	defer s.rewriteMu.Unlock()
	s.rewrites.Add(1) // odd: a rewrite runs (see decodeAt)
	defer s.rewrites.Add(1)
	path := filepath.Join(s.cfg.Dir, format.SegmentName(l.Seg))
	m, err := s.acquireSegment(l.Seg)
	if err != nil {
		return false, err
	}
	rec, ok := format.FrameAt(m.Bytes(), int(l.Off))
	if !ok || !format.CheckEvent(rec) {
		s.segs.Release(m)
		return false, &CorruptionError{File: path, Offset: int64(l.Off), Reason: "event frame fails its checksum before redaction"}
	}
	frame, already, ok := redactedFrame(m.Bytes()[l.Off:int(l.Off)+format.FrameHeaderSize+len(rec)], id)
	s.segs.Release(m)
	if !ok {
		return false, &CorruptionError{File: path, Offset: int64(l.Off), Reason: "the frame the index names is not the event's"}
	}
	if already {
		return false, nil
	}
	f := files[l.Seg]
	if f == nil {
		if f, err = s.fs.OpenFile(path, os.O_RDWR, 0); err != nil {
			return false, fmt.Errorf("batpak: redact: %w", err)
		}
		files[l.Seg] = f
	}
	if err := writeRedactedFrame(f, l.Off, frame); err != nil {
		return false, fmt.Errorf("batpak: redact: %w", err)
	}
	return true, nil
}

// readRetries bounds how often a read retries a frame that fails its
// checksum while redactions rewrite frames in place (a read no rewrite
// overlapped reports the damage at once).
const readRetries = 1000

var readRetryWait = 200 * time.Microsecond

// resetErasures moves a store whose erasure epoch file was damaged to the
// fresh epoch n: the file is rewritten (a read-only store keeps n in
// memory only), the reset logged and counted in Diagnostics().Open.
func (s *Store) resetErasures(n uint64) error {
	path := filepath.Join(s.cfg.Dir, erasureFile)
	s.log.Warn("batpak: the erasure epoch file is damaged or missing; moving to a fresh epoch (cached projection states are recomputed)", "file", path, "epoch", n)
	if s.readOnly {
		return nil
	}
	if err := writeErasures(s.fs, s.cfg.Dir, n); err != nil {
		return fmt.Errorf("batpak: record a fresh erasure epoch: %w", err)
	}
	return nil
}
