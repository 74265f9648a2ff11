package core

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// The compaction journal, compact.journal, is the commit point of a
// compaction (see compact.go): written whole and synced under a temporary
// name, then renamed into place. Its layout, one line each:
//
//	batpak compaction journal 1
//	rename <new>.tmp <new>   each new segment, then its footer (if any)
//	delete <old>             each segment replaced, then its footer
//	crc32c <8 hex digits>    CRC-32C of every byte before this line
//
// Open (finishCompaction) and readers beside a live writer (segment
// snapshots, liveset.go) trust a journal only when all of this holds, and
// otherwise fail with a *CorruptionError naming the journal, having
// renamed and deleted nothing:
//
//   - the checksum matches and the header is this version's;
//   - every name is one of this store's own segment or footer file names,
//     exactly as the store spells them (no directory, no "..", no other
//     file), and a rename only drops ".tmp" from a name;
//   - it is a compaction: at least one new segment; each new segment is
//     the next generation of a segment it deletes; every segment it
//     deletes comes at or after the first new one; footers go with their
//     segments;
//   - (Open only) every new segment exists, is sound, and holds every
//     event sequence of each replaced segment still on disk.
const journalHeader = "batpak compaction journal 1"

// compactionJournal is a parsed, checked journal.
type compactionJournal struct {
	renames [][2]string // temporary name, final name (segments and footers)
	deletes []string    // segments and footers
	newSegs []uint32    // keys of the new segments, in journal order
	oldSegs []uint32    // keys of the segments replaced
}

// encodeJournal writes the journal of a compaction replacing sealed by outs.
func encodeJournal(sealed []uint32, outs []*compactOut) []byte {
	var j bytes.Buffer
	j.WriteString(journalHeader + "\n")
	for _, o := range outs {
		fmt.Fprintf(&j, "rename %s %s\n", format.SegmentName(o.key)+tmpSuffix, format.SegmentName(o.key))
		if o.footer != nil {
			fmt.Fprintf(&j, "rename %s %s\n", footerName(o.key)+tmpSuffix, footerName(o.key))
		}
	}
	for _, k := range sealed {
		fmt.Fprintf(&j, "delete %s\n", format.SegmentName(k))
		fmt.Fprintf(&j, "delete %s\n", footerName(k))
	}
	fmt.Fprintf(&j, "crc32c %08x\n", format.CRC32C(j.Bytes()))
	return j.Bytes()
}

// parseFooterName is segment.ParseName for segment footer file names.
func parseFooterName(name string) (key uint32, ok bool) {
	if !strings.HasSuffix(name, footerSuffix) {
		return 0, false
	}
	key, ok = segment.ParseName(strings.TrimSuffix(name, footerSuffix) + format.SegmentSuffix)
	return key, ok && footerName(key) == name
}

// parseJournal checks b, the content of the journal of the store in dir,
// and returns what it says (see journalHeader). Errors: *CorruptionError
// naming the journal.
func parseJournal(dir string, b []byte) (*compactionJournal, error) {
	bad := func(format string, a ...any) error {
		return &CorruptionError{File: filepath.Join(dir, compactJournal),
			Reason: "compaction journal refused, nothing renamed or deleted (" + fmt.Sprintf(format, a...) +
				"); the segments it names are as they were: remove the journal to open them"}
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, bad("empty or cut short")
	}
	at := bytes.LastIndexByte(b[:len(b)-1], '\n') + 1
	body, last := b[:at], string(b[at:len(b)-1])
	sum, ok := strings.CutPrefix(last, "crc32c ")
	if !ok || len(sum) != 8 {
		return nil, bad("no checksum line at the end")
	}
	want, err := strconv.ParseUint(sum, 16, 32)
	if err != nil {
		return nil, bad("checksum %q is not 8 hex digits", sum)
	}
	if got := format.CRC32C(body); uint32(want) != got {
		return nil, bad("checksum mismatch: the file says %08x, its content gives %08x", want, got)
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if lines[0] != journalHeader {
		return nil, bad("first line %.40q, want %q", lines[0], journalHeader)
	}
	j := &compactionJournal{}
	newFooters, oldFooters := map[uint32]bool{}, map[uint32]bool{}
	newSegs, oldSegs := map[uint32]bool{}, map[uint32]bool{}
	for _, line := range lines[1:] {
		f := strings.Split(line, " ")
		switch {
		case len(f) == 3 && f[0] == "rename":
			if f[1] != f[2]+tmpSuffix {
				return nil, bad("rename %.80q: only a temporary name may be renamed, to the same name without %q", line, tmpSuffix)
			}
			if k, ok := segment.ParseName(f[2]); ok && !newSegs[k] {
				newSegs[k] = true
				j.newSegs = append(j.newSegs, k)
			} else if k, ok := parseFooterName(f[2]); ok && !newFooters[k] {
				newFooters[k] = true
			} else {
				return nil, bad("rename %.80q: not a segment or footer name of this store, or named twice", f[2])
			}
			j.renames = append(j.renames, [2]string{f[1], f[2]})
		case len(f) == 2 && f[0] == "delete":
			if k, ok := segment.ParseName(f[1]); ok && !oldSegs[k] {
				oldSegs[k] = true
				j.oldSegs = append(j.oldSegs, k)
			} else if k, ok := parseFooterName(f[1]); ok && !oldFooters[k] {
				oldFooters[k] = true
			} else {
				return nil, bad("delete %.80q: not a segment or footer name of this store, or named twice", f[1])
			}
			j.deletes = append(j.deletes, f[1])
		default:
			return nil, bad("unreadable line %.80q", line)
		}
	}
	// What a compaction writes: new generations of segments it replaces.
	if len(j.newSegs) == 0 {
		return nil, bad("it names no new segment")
	}
	replaced := map[uint32]uint32{} // id → replaced key
	for _, k := range j.oldSegs {
		if newSegs[k] {
			return nil, bad("it deletes %s, which it also writes", format.SegmentName(k))
		}
		replaced[format.SegID(k)] = k
	}
	first := format.SegID(j.newSegs[0])
	for _, k := range j.newSegs {
		old, ok := replaced[format.SegID(k)]
		if !ok || segment.RepackedKey(old) != k {
			return nil, bad("new segment %s is not the next generation of a segment it replaces", format.SegmentName(k))
		}
		first = min(first, format.SegID(k))
	}
	for _, k := range j.oldSegs {
		if format.SegID(k) < first {
			return nil, bad("it deletes %s, before the first segment it writes", format.SegmentName(k))
		}
	}
	for k := range newFooters {
		if !newSegs[k] {
			return nil, bad("it renames the footer of %s, which it does not write", format.SegmentName(k))
		}
	}
	for k := range oldFooters {
		if !oldSegs[k] {
			return nil, bad("it deletes the footer of %s, which it does not replace", format.SegmentName(k))
		}
	}
	return j, nil
}

// journalMaxBytes bounds a compaction journal's file: a line for each
// segment replaced and written (a few hundred bytes each), so a file of
// more is damaged and is not read whole.
const journalMaxBytes = 64 << 20

// readJournal reads and checks the journal in dir; nil when there is none.
func readJournal(fsys vfs.FS, dir string) (*compactionJournal, []byte, error) {
	b, err := vfs.ReadFileAtMost(fsys, filepath.Join(dir, compactJournal), journalMaxBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	var tl *vfs.TooLargeError
	if errors.As(err, &tl) {
		return nil, nil, &CorruptionError{File: filepath.Join(dir, compactJournal), Reason: fmt.Sprintf("compaction journal is damaged: %d bytes, more than any journal holds (%d)", tl.Size, int64(journalMaxBytes))}
	}
	if notAFile(err) {
		return nil, nil, &CorruptionError{File: filepath.Join(dir, compactJournal), Reason: "the compaction journal is " + notAFileWhat(err)}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("batpak: read compaction journal: %w", err)
	}
	j, err := parseJournal(dir, b)
	return j, b, err
}

// newSegmentPath returns where new segment key of a committed journal is
// now: its final name, or its temporary name before the rename.
func newSegmentPath(fsys vfs.FS, dir string, key uint32) (string, bool) {
	final := filepath.Join(dir, format.SegmentName(key))
	for _, p := range []string{final, final + tmpSuffix, final} {
		if _, err := fsys.Stat(p); err == nil {
			return p, true
		}
	}
	return final, false
}

// seqRange is the first and last event sequence a segment holds.
type seqRange struct {
	first, last uint64
	any         bool
}

// segmentRecords reads the segment file at path (key: its key) and
// returns the sequences of its events and the batch and fence records it
// holds; sound is false when it is damaged (a bad header
// or an unreadable frame).
func segmentRecords(fsys vfs.FS, path string, key uint32, budget *int64) (r seqRange, ms map[format.Marker]bool, sound bool, err error) {
	data, packed, release, err := loadSegment(fsys, path, key)
	if err != nil {
		var ce *CorruptionError
		if errors.As(err, &ce) {
			return r, nil, false, nil
		}
		return r, nil, false, err
	}
	defer release()
	if !packed && format.CheckSegmentHeader(data, key) != "" {
		return r, nil, false, nil
	}
	ms = map[format.Marker]bool{}
	_, st, _ := format.ScanFramesBudget(data, format.SegmentHeaderSize, budget, func(_ int, rec []byte) error {
		if rec[0] == format.RecEvent && format.CheckEvent(rec) {
			q := format.EventView(rec).Seq()
			if !r.any {
				r.first, r.any = q, true
			}
			r.last = q
		} else if m, ok := format.DecodeMarker(rec); ok {
			ms[m] = true
		}
		return nil
	})
	return r, ms, st == format.TailClean, nil
}

// checkJournalTargets fails unless every new segment of j is in place
// (final or temporary name) and sound, and holds the events of every
// replaced segment still on disk: finishing j then loses nothing.
func checkJournalTargets(fsys vfs.FS, dir string, j *compactionJournal) error {
	jpath := filepath.Join(dir, compactJournal)
	// The segments a compaction wrote and replaced are whole and sealed:
	// their scans search after no bad frame, so one budget serves every
	// scan of the check (a journal naming many damaged segments costs
	// one bounded search, not one each).
	budget := format.ResyncBudget(0)
	var news []seqRange
	// Compaction copies every batch and fence record as it is: a segment
	// it replaces may go only if the new ones hold its records too (a
	// segment holding a fence's commit and no event is not empty).
	newMarkers := map[format.Marker]bool{}
	for _, k := range j.newSegs {
		p, ok := newSegmentPath(fsys, dir, k)
		if !ok {
			return &CorruptionError{File: jpath,
				Reason: fmt.Sprintf("the compaction it records wrote %s, which is missing; the segments it replaces were kept (remove the journal to open them)", format.SegmentName(k))}
		}
		r, ms, sound, err := segmentRecords(fsys, p, k, &budget)
		if err != nil {
			return fmt.Errorf("batpak: finish compaction: %w", err)
		}
		if !sound {
			return &CorruptionError{File: jpath,
				Reason: fmt.Sprintf("the compaction it records wrote %s, which is damaged; the segments it replaces were kept (remove the journal to open them)", filepath.Base(p))}
		}
		news = append(news, r)
		for m := range ms {
			newMarkers[m] = true
		}
	}
	for _, k := range j.oldSegs {
		p := filepath.Join(dir, format.SegmentName(k))
		if _, err := fsys.Stat(p); errors.Is(err, os.ErrNotExist) {
			continue // deleted before a crash
		}
		r, ms, _, err := segmentRecords(fsys, p, k, &budget)
		if err != nil {
			return fmt.Errorf("batpak: finish compaction: %w", err)
		}
		for m := range ms {
			if !newMarkers[m] {
				return &CorruptionError{File: jpath,
					Reason: fmt.Sprintf("it would delete %s, whose %s record (id %d) no new segment it names holds; nothing was renamed or deleted (remove the journal to open the segments)", format.SegmentName(k), markerName(m.Type), m.ID)}
			}
		}
		if !r.any {
			continue
		}
		held := false
		for _, n := range news {
			held = held || (n.any && n.first <= r.first && r.last <= n.last)
		}
		if !held {
			return &CorruptionError{File: jpath,
				Reason: fmt.Sprintf("it would delete %s (events %d to %d), which no new segment it names holds; nothing was renamed or deleted (remove the journal to open the segments)", format.SegmentName(k), r.first, r.last)}
		}
	}
	return nil
}

// markerName names a batch or fence record type in messages.
func markerName(t byte) string {
	switch t {
	case format.RecBatchBegin:
		return "batch-begin"
	case format.RecBatchCommit:
		return "batch-commit"
	case format.RecFenceBegin:
		return "fence-begin"
	case format.RecFenceCommit:
		return "fence-commit"
	case format.RecFenceCancel:
		return "fence-cancel"
	}
	return fmt.Sprintf("type %d", t)
}

// finishCompaction completes a committed compaction a crash interrupted,
// and deletes the temporary files of one that never committed (and those
// of interrupted atomic writes). Open calls it before reading any segment.
// A journal that fails its checks (see journalHeader) fails Open with a
// *CorruptionError naming it, with nothing renamed or deleted.
func finishCompaction(fsys vfs.FS, dir string) error {
	j, _, err := readJournal(fsys, dir)
	if err != nil {
		return err
	}
	if j != nil {
		// Every new segment must be in place and hold what it replaces
		// before any file is renamed or deleted.
		if err := checkJournalTargets(fsys, dir, j); err != nil {
			return err
		}
		for _, r := range j.renames {
			if err := fsys.Rename(filepath.Join(dir, r[0]), filepath.Join(dir, r[1])); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("batpak: finish compaction: %w", err)
			}
		}
		for _, name := range j.deletes {
			if err := fsys.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("batpak: finish compaction: %w", err)
			}
		}
		if err := segment.SyncDir(fsys, dir); err != nil {
			return err
		}
		if err := fsys.Remove(filepath.Join(dir, compactJournal)); err != nil {
			return err
		}
	}
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strayTemp(e.Name()) {
			if err := fsys.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
