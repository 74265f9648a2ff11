package core

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// How far the log durably went. The segment files are not the only record
// of it: the index checkpoint (written at Close), every segment footer
// (written once its segment is synced) and every named cursor position
// (committed only once the events before it are synced, see Cursor.Commit)
// each say that the log held at least so many sequences. Each is written
// only after the log it describes is on stable storage, so a crash — a
// killed process or a power loss of unsynced writes — never leaves one
// ahead of the log: a torn tail is never counted. A log shorter than the
// largest of them lost acknowledged events to damage (a deleted, truncated
// or zeroed segment), and Open says so with a *LogTruncatedError instead of
// continuing with fewer events and reusing their sequences. Config.Salvage
// opens such a store anyway: the loss is recorded as a system event
// (KindLogSalvaged) whose sequence is the recorded end, so no sequence is
// ever given to two events.
//
// A record only counts when it belongs to this log: the checkpoint and
// each footer must parse whole and name, for every event the log still
// holds, the same event id (ids are random, so another store's files are
// found out); cursor positions carry no ids and always count.

// KindLogSalvaged is the system event Open writes under Config.Salvage when
// the log is shorter than recorded. Its global sequence is the recorded
// end (the sequences in between hold no event) and its payload says what
// was lost: {"recorded":N,"found":M,"lost":N-M,"evidence":"..."}.
const KindLogSalvaged Kind = 0x0F1

// SalvageEntity is the entity (scope "batpak") of KindLogSalvaged
// events; only such an event there may follow a gap in the sequences.
const SalvageEntity = "batpak:log"

// salvageCoordinate is where Open files KindLogSalvaged events.
var salvageCoordinate = Coordinate{Entity: SalvageEntity, Scope: "batpak"}

// logRecord is one record of how far the log went.
type logRecord struct {
	end  uint64 // sequences recorded
	what string
	// ids names events the record says the log holds (sequence → id), to
	// check it belongs to this log; nil for a cursor.
	ids func(yield func(seq uint64, id EventID) bool)
}

// readLogRecords gathers the checkpoint, footer and cursor records of dir
// (unreadable or damaged ones are skipped: they prove nothing). The
// checkpoint's record reads the checkpoint's mapping: call release once
// done with the records.
func readLogRecords(fsys vfs.FS, dir string) (out []logRecord, release func()) {
	release = func() {}
	if b, unmap, err := mapCheckpoint(fsys, dir); err == nil {
		if r, ok := checkpointRecord(b); ok {
			out = append(out, r)
			release = unmap
		} else {
			unmap()
		}
	}
	ents, _ := fsys.ReadDir(dir)
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, footerSuffix) {
			continue
		}
		b, unmap, err := mapFooter(fsys, filepath.Join(dir, name))
		if err != nil {
			continue
		}
		if len(b) >= len(footerMagic)+4 {
			key := le.Uint32(b[len(footerMagic):])
			if footerName(key) == name {
				if f, why := decodeFooter(b, key); f != nil && why == "" {
					if r, ok := f.record(); ok { // it copies what it keeps
						out = append(out, r)
					}
				}
			}
		}
		unmap()
	}
	cents, _ := fsys.ReadDir(filepath.Join(dir, cursorDir))
	for _, e := range cents {
		name, ok := strings.CutSuffix(e.Name(), ".pos")
		if !ok || e.IsDir() || !cursorNameRE.MatchString(name) {
			continue
		}
		if pos, err := loadCursor(fsys, dir, name); err == nil && pos > 0 {
			out = append(out, logRecord{end: pos, what: fmt.Sprintf("cursor %q (%s)", name, filepath.Join(cursorDir, name+".pos"))})
		}
	}
	return out, release
}

// checkpointRecord parses a checkpoint whole (without restoring it) and
// returns the log end it records.
func checkpointRecord(b []byte) (logRecord, bool) {
	if len(b) < len(format.CheckpointMagic)+4 || string(b[:len(format.CheckpointMagic)]) != format.CheckpointMagic {
		return logRecord{}, false
	}
	body := b[:len(b)-4]
	if le.Uint32(b[len(b)-4:]) != format.CRC32C(body) {
		return logRecord{}, false
	}
	r := &ckReader{b: body, off: len(format.CheckpointMagic)}
	r.u32()
	r.u64()
	n := r.u32()
	// Counts come from the file: bound them by its size before reading.
	fits := func(n, size int) bool { return r.err == nil && n >= 0 && n <= (len(body)-r.off)/size }
	nseg := int(r.u32())
	if !fits(nseg, 12) {
		return logRecord{}, false
	}
	r.take(nseg * 12)
	nent := int(r.u32())
	for i := 0; i < nent && r.err == nil; i++ {
		r.take(int(r.u16()))
		r.take(1 + 8 + 8 + 32)
	}
	nsc := int(r.u32())
	for i := 0; i < nsc && r.err == nil; i++ {
		r.take(int(r.u16()))
	}
	const entrySize = 16 + 4*4 + 8 + 2 + 1 + 4 + 4
	if !fits(int(n), entrySize) {
		return logRecord{}, false
	}
	entries := r.take(int(n) * entrySize)
	nid := int(r.u32())
	for i := 0; i < nid && r.err == nil; i++ {
		r.take(int(r.u16()))
		r.u32()
	}
	ngroups := int(r.u32())
	for i := 0; i < ngroups && r.err == nil; i++ {
		r.take(16)
		m := int(r.u32())
		if !fits(m, 4) {
			return logRecord{}, false
		}
		r.take(m * 4)
	}
	if r.err != nil || r.off != len(body) {
		return logRecord{}, false
	}
	return logRecord{end: uint64(n), what: "the index checkpoint (" + format.CheckpointName + ")",
		ids: func(yield func(uint64, EventID) bool) {
			for seq := 0; seq < int(n); seq++ {
				var id EventID
				copy(id[:], entries[seq*entrySize:])
				if !id.IsZero() && !yield(uint64(seq), id) {
					return
				}
			}
		}}, true
}

// record returns the log end a footer records: one past the last sequence
// it lists, batch items counting only when their batch commits within the
// footer. A footer whose items do not tile what it says it covers is not
// one the store wrote, and records nothing.
func (f *footer) record() (logRecord, bool) {
	type ev struct {
		seq uint64
		id  EventID
	}
	evs, batch := make([]ev, 0, len(f.items)), []ev(nil)
	next, lastOff, lastEv := int64(format.SegmentHeaderSize), int64(-1), int64(-1)
	var lastID EventID
	for _, raw := range f.items {
		it := format.ParseFooterItem(raw)
		off, flen := int64(it.Off), int64(it.Len)
		if off != next {
			return logRecord{}, false
		}
		lastOff, next = off, off+format.FrameHeaderSize+flen
		if it.Type != format.RecEvent {
			if it.Type == format.RecBatchCommit {
				evs = append(evs, batch...)
			}
			batch = batch[:0]
			continue
		}
		e := ev{seq: it.Seq, id: it.ID}
		lastEv, lastID = off, e.id
		if it.SysFlags&format.SysBatch != 0 {
			batch = append(batch, e)
			continue
		}
		batch = batch[:0]
		evs = append(evs, e)
	}
	if next != f.end || (len(f.items) > 0 && lastOff != f.lastOff) || lastEv != f.lastEv || (lastEv >= 0 && lastID != f.lastID) {
		return logRecord{}, false
	}
	var end uint64
	for _, e := range evs {
		end = max(end, e.seq+1)
	}
	if end == 0 {
		return logRecord{}, false
	}
	return logRecord{end: end, what: "the footer " + footerName(f.key), ids: func(yield func(uint64, EventID) bool) {
		for _, e := range evs {
			if !yield(e.seq, e.id) {
				return
			}
		}
	}}, true
}

// recordedEnd returns the largest log end that recs record and that
// belongs to this log (see logRecord.ids), with what recorded it. The
// caller holds the recovered index.
func (s *Store) recordedEnd(recs []logRecord) (uint64, string) {
	ix := s.ix
	ix.RLock()
	defer ix.RUnlock()
	var best uint64
	var what string
	for _, r := range recs {
		if r.end <= best {
			continue
		}
		ours := true
		if r.ids != nil {
			r.ids(func(seq uint64, id EventID) bool {
				if seq < uint64(ix.Len()) {
					if e := ix.At(uint32(seq)); !EventID(e.ID).IsZero() && e.ID != id {
						ours = false
					}
				}
				return ours
			})
		}
		if !ours {
			s.log.Warn("batpak: ignoring a record of the log's end that names other events", "record", r.what)
			continue
		}
		best, what = r.end, r.what
	}
	return best, what
}

// checkLogEnd compares the recovered log with what the store recorded
// (recs, read before the log was) and fails with a *LogTruncatedError when
// it is shorter, unless Config.Salvage is set: then the next sequence
// moves to the recorded end and the writer records the loss (salvage).
func (s *Store) checkLogEnd(recs []logRecord, rec *recovered) error {
	recorded, what := s.recordedEnd(recs)
	found := rec.nextSeq
	if recorded <= found {
		return nil
	}
	lerr := &LogTruncatedError{Dir: s.cfg.Dir, Recorded: recorded, Found: found, Evidence: what}
	if !s.cfg.Salvage {
		return lerr
	}
	s.log.Warn("batpak: acknowledged events are missing from the log; salvaging (Config.Salvage)",
		"recorded", recorded, "found", found, "lost", recorded-found, "evidence", what)
	s.openReport.LostSequences = recorded - found
	if !s.readOnly {
		rec.nextSeq = recorded
		s.salvaged = lerr
	}
	return nil
}

// recordSalvage writes the KindLogSalvaged event of a salvaged open (it
// takes the recorded end as its sequence) and syncs it.
func (s *Store) recordSalvage(e *LogTruncatedError) error {
	p, err := json.Marshal(map[string]any{"recorded": e.Recorded, "found": e.Found, "lost": e.Recorded - e.Found, "evidence": e.Evidence})
	if err != nil {
		return err
	}
	if _, err := s.writeLocalStoreRecord(context.Background(), salvageCoordinate, KindLogSalvaged, p); err != nil {
		return fmt.Errorf("batpak: record the salvaged loss: %w", err)
	}
	return s.Sync(context.Background())
}

// repair queues a change recovery decided on (see Store.repairs).
func (s *Store) repair(fn func() error) { s.repairs = append(s.repairs, fn) }

// runRepairs makes the queued recovery changes, in order.
func (s *Store) runRepairs() error {
	for _, fn := range s.repairs {
		if err := fn(); err != nil {
			return err
		}
	}
	s.repairs = nil
	return nil
}

// removeFooter returns a repair deleting the footer of segment key (the
// sealer writes a sound one in its place).
func removeFooter(fsys vfs.FS, dir string, key uint32) func() error {
	return func() error {
		_ = fsys.Remove(filepath.Join(dir, footerName(key)))
		return nil
	}
}
