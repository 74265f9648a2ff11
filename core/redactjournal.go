package core

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/index"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// The redaction journal. Redact rewrites a frame in place with two
// writes (the record, then the frame header with the new checksum), and
// a crash between them, or a power loss that keeps only some of the
// pages, leaves a frame that fails its checksum. So before rewriting,
// redactLocs records each frame it is about to rewrite (segment, offset
// and the event's id) in redactJournal, synced; it removes the journal
// once the frames are rewritten and synced. Open finishes what a journal
// names: the rewrite depends only on bytes it does not change (the
// record's fixed fields and lengths), so it comes out the same whatever
// part of it reached the disk, and doing it again is harmless. A
// read-only store beside a live writer reads again while a journal is
// there (readBesideWriter, decodeAt).
const redactJournal = "redact.journal"

// redactJournalChunk bounds the frames one journal names: an erasure of
// more rewrites them a chunk at a time, each chunk journaled and synced.
const redactJournalChunk = 4096

// redactEntrySize is one entry's bytes: segment, offset, event id, and
// the checksum the frame has once redacted.
const redactEntrySize = 4 + 4 + 16 + 4

// redactJournalMax is the largest journal: magic, count, entries, CRC.
const redactJournalMax = 8 + redactJournalChunk*redactEntrySize + 4

var redactJournalMagic = [4]byte{'B', 'P', 'R', '2'}

// redactEntry is one frame a redaction rewrites, and the checksum it has
// once rewritten: Open rewrites a frame only when what it finds there
// comes to that (the bytes a redaction keeps are those it read), never a
// frame a power loss tore in another way, which stays torn (a tail cut,
// damage named) as it would without the journal.
type redactEntry struct {
	seg, off uint32
	id       [16]byte
	crc      uint32
}

// encodeRedactJournal is the journal naming entries.
func encodeRedactJournal(entries []redactEntry) []byte {
	b := make([]byte, 0, 8+len(entries)*redactEntrySize+4)
	b = append(b, redactJournalMagic[:]...)
	b = le.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = le.AppendUint32(b, e.seg)
		b = le.AppendUint32(b, e.off)
		b = append(b, e.id[:]...)
		b = le.AppendUint32(b, e.crc)
	}
	return le.AppendUint32(b, format.CRC32C(b))
}

// readRedactJournal reads the journal in dir; nil when there is none.
func readRedactJournal(fsys vfs.FS, dir string) ([]redactEntry, error) {
	path := filepath.Join(dir, redactJournal)
	b, err := vfs.ReadFileAtMost(fsys, path, redactJournalMax)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	damaged := func(why string) error {
		return &CorruptionError{File: path, Reason: "the redaction journal is damaged: " + why +
			"; move it aside and open again (a frame a crash interrupted the redaction of may then fail its checksum: Open names it)"}
	}
	var tl *vfs.TooLargeError
	switch {
	case errors.As(err, &tl):
		return nil, damaged(fmt.Sprintf("%d bytes, more than any journal holds (%d)", tl.Size, redactJournalMax))
	case notAFile(err):
		return nil, damaged(notAFileWhat(err))
	case err != nil:
		return nil, fmt.Errorf("batpak: read the redaction journal: %w", err)
	case len(b) < 12 || [4]byte(b[:4]) != redactJournalMagic:
		return nil, damaged("not a redaction journal")
	case le.Uint32(b[len(b)-4:]) != format.CRC32C(b[:len(b)-4]):
		return nil, damaged("it fails its checksum")
	}
	n := int(le.Uint32(b[4:]))
	if n > redactJournalChunk || len(b) != 8+n*redactEntrySize+4 {
		return nil, damaged(fmt.Sprintf("it names %d frames in %d bytes", n, len(b)))
	}
	entries := make([]redactEntry, n)
	for i := range entries {
		p := b[8+i*redactEntrySize:]
		entries[i] = redactEntry{seg: le.Uint32(p), off: le.Uint32(p[4:]), id: [16]byte(p[8:24]), crc: le.Uint32(p[24:])}
	}
	return entries, nil
}

// redactedFrame returns frame (an event frame, and maybe bytes past
// it) rewritten as redacted: zeroed payload, redacted flag, new
// checksum. ok is false when the bytes are not an event frame of id
// whose fixed fields and lengths hold together (the checksum is not
// asked: a frame whose redaction a crash interrupted fails it); already
// is true when the frame is whole and redacted already.
func redactedFrame(frame []byte, id [16]byte) (out []byte, already, ok bool) {
	if len(frame) < format.FrameHeaderSize {
		return nil, false, false
	}
	n := int(le.Uint32(frame))
	if n < format.MinRecordSize || n > format.MaxRecordSize || format.FrameHeaderSize+n > len(frame) {
		return nil, false, false
	}
	frame = frame[:format.FrameHeaderSize+n]
	rec := frame[format.FrameHeaderSize:]
	if !format.CheckEvent(rec) || format.EventView(rec).ID() != id {
		return nil, false, false
	}
	if _, whole := format.FrameAt(frame, 0); whole && format.EventView(rec).SysFlags()&format.SysRedacted != 0 {
		return nil, true, true
	}
	out = append([]byte(nil), frame...)
	nrec := out[format.FrameHeaderSize:]
	nrec[1] |= format.SysRedacted
	clear(format.EventView(nrec).Payload())
	le.PutUint32(out[4:], format.FrameCRC(out[0:4], nrec))
	return out, false, true
}

// writeRedactedFrame writes frame (from redactedFrame) over the one at
// off of f: the record first, the header with its checksum last, so a
// reader sees the old frame, one failing its checksum (and retries), or
// the new one. The caller syncs f.
func writeRedactedFrame(f vfs.File, off uint32, frame []byte) error {
	if _, err := f.WriteAt(frame[format.FrameHeaderSize:], int64(off)+format.FrameHeaderSize); err != nil {
		return err
	}
	_, err := f.WriteAt(frame[:format.FrameHeaderSize], int64(off))
	return err
}

// journalRedactions records entries as the frames about to be rewritten,
// durably.
func journalRedactions(fsys vfs.FS, dir string, entries []redactEntry) error {
	if err := segment.WriteFileAtomic(fsys, dir, redactJournal, encodeRedactJournal(entries), true); err != nil {
		return fmt.Errorf("batpak: record the redaction journal: %w", err)
	}
	return nil
}

// finishRedactions rewrites, as redacted, the frames the journal in dir
// names (a crash interrupted their redaction), syncs them and removes the
// journal. A frame that is no longer the journaled event (its segment
// compacted away since) is left alone. Called by Open before the log is
// read.
func finishRedactions(fsys vfs.FS, dir string, log func(msg string, args ...any)) error {
	entries, err := readRedactJournal(fsys, dir)
	if err != nil || entries == nil {
		return err
	}
	done := 0
	bySeg := map[uint32][]redactEntry{}
	seen := map[[2]uint32]bool{}
	for _, e := range entries {
		if at := [2]uint32{e.seg, e.off}; !seen[at] { // each frame once
			seen[at] = true
			bySeg[e.seg] = append(bySeg[e.seg], e)
		}
	}
	for seg, es := range bySeg {
		path := filepath.Join(dir, format.SegmentName(seg))
		f, err := fsys.OpenFile(path, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("batpak: finish an interrupted redaction: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return fmt.Errorf("batpak: finish an interrupted redaction: %w", err)
		}
		for _, e := range es {
			frame, err := readFrameAt(f, st.Size(), e.off)
			if err != nil {
				f.Close()
				return fmt.Errorf("batpak: finish an interrupted redaction in %s: %w", path, err)
			}
			out, already, ok := redactedFrame(frame, e.id)
			if !ok || already || le.Uint32(out[4:]) != e.crc {
				continue
			}
			if err := writeRedactedFrame(f, e.off, out); err != nil {
				f.Close()
				return fmt.Errorf("batpak: finish an interrupted redaction in %s: %w", path, err)
			}
			done++
		}
		err = f.SyncData()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("batpak: finish an interrupted redaction in %s: %w", path, err)
		}
	}
	if err := removeRedactJournal(fsys, dir); err != nil {
		return err
	}
	if done > 0 {
		log("batpak: finished a redaction a crash interrupted", "frames", done)
	}
	return nil
}

// readFrameAt reads the frame at off of f (size bytes long): its header,
// then as much of the record as the header says, within the file.
func readFrameAt(f vfs.File, size int64, off uint32) ([]byte, error) {
	if int64(off)+format.FrameHeaderSize > size {
		return nil, nil
	}
	var h [format.FrameHeaderSize]byte
	if _, err := f.ReadAt(h[:], int64(off)); err != nil {
		return nil, err
	}
	n := int64(le.Uint32(h[:]))
	if n < format.MinRecordSize || n > format.MaxRecordSize || int64(off)+format.FrameHeaderSize+n > size {
		return nil, nil
	}
	frame := make([]byte, format.FrameHeaderSize+n)
	if _, err := f.ReadAt(frame, int64(off)); err != nil {
		return nil, err
	}
	return frame, nil
}

// removeRedactJournal removes the journal, durably: a journal left
// behind would name frames of segments a later compaction may reuse the
// name of (redactedFrame checks the event's id, so even then it
// rewrites nothing).
func removeRedactJournal(fsys vfs.FS, dir string) error {
	if err := fsys.Remove(filepath.Join(dir, redactJournal)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("batpak: remove the redaction journal: %w", err)
	}
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("batpak: remove the redaction journal: %w", err)
	}
	return nil
}

// pendingRedaction is what a read-only store adds to the damage it finds
// while a redaction journal is there.
const pendingRedaction = " (a redaction journal is there: a redaction is rewriting frames, or a crash interrupted one, which opening the store read-write finishes)"

// redacting reports whether a redaction journal is in dir: a redaction
// is rewriting frames in place (or a crash interrupted one).
func redacting(fsys vfs.FS, dir string) bool {
	_, err := fsys.Stat(filepath.Join(dir, redactJournal))
	return err == nil
}

// redactEntries are the journal entries of locs: where each frame is,
// its event's id, and the checksum it has once redacted, computed from
// the frame as it is now (sound: redactOne checks it again before
// rewriting). A frame already redacted, or not sound, is left out.
func (s *Store) redactEntries(locs []index.Loc) ([]redactEntry, []index.Loc, error) {
	out := make([]redactEntry, 0, len(locs))
	keep := locs[:0:0]
	for _, l := range locs {
		s.ix.RLock()
		id := s.ix.At(l.Seq).ID
		s.ix.RUnlock()
		m, err := s.acquireSegment(l.Seg)
		if err != nil {
			return nil, nil, err
		}
		path := m.File()
		rec, ok := format.FrameAt(m.Bytes(), int(l.Off))
		if !ok {
			s.segs.Release(m)
			return nil, nil, &CorruptionError{File: path, Offset: int64(l.Off), Reason: "event frame fails its checksum before redaction"}
		}
		frame, already, ok := redactedFrame(m.Bytes()[l.Off:int(l.Off)+format.FrameHeaderSize+len(rec)], id)
		s.segs.Release(m)
		if !ok {
			return nil, nil, &CorruptionError{File: path, Offset: int64(l.Off), Reason: "the frame the index names is not the event's"}
		}
		if already {
			continue
		}
		out = append(out, redactEntry{seg: l.Seg, off: l.Off, id: id, crc: le.Uint32(frame[4:])})
		keep = append(keep, l)
	}
	return out, keep, nil
}
