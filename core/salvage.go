package core

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// SalvageReport says what SalvageExport wrote and what it could not read.
type SalvageReport struct {
	Segments int // segment files read (whole or in part)
	Events   int // events written
	// Skipped lists the byte ranges that could not be read, in log order:
	// damaged frames, unreadable or foreign files.
	Skipped []SalvageSkip
	// Unconfirmed counts events that were read but not written because
	// nothing read shows they were acknowledged: items of a batch whose
	// commit record was not read (the damage hid it, or it was never
	// written); items of a batch whose commit record was read but that
	// were read before a damage point in it and are not confirmed by the
	// hash chain (see SalvageExport); and events of a visibility fence
	// whose commit record was not read, or that the damage cut (a fence's
	// end record read after damage is not trusted to end the fence whose
	// events were read before it).
	Unconfirmed int
	// PartialBatches counts the batches whose commit record was read but
	// not all of whose items were written: some were not read (frames
	// damaged, a segment missing or unreadable) or were left out as
	// unconfirmed. BatchItemsLost counts the batches' sequences that no
	// item written holds; they are in Missing too.
	PartialBatches int
	BatchItemsLost int
	// Duplicates counts events not written because an event of the same
	// global sequence was read before them (a segment file copied): each
	// sequence is written at most once, the first read.
	Duplicates int
	// Missing lists the global sequences no readable segment holds: gaps
	// between the events read (a segment deleted, or skipped whole) and,
	// at the end, the sequences the store recorded beyond the last event
	// read (a checkpoint, footer or cursor records them). Each range is
	// lost acknowledged events, unless a KindLogSalvaged event already
	// records it.
	Missing []SalvageGap
}

// SalvageGap is a range of global sequences [From, To) that SalvageExport
// found in no readable segment.
type SalvageGap struct {
	From, To uint64
	Reason   string
}

// SalvageSkip is one range of a segment file SalvageExport skipped.
type SalvageSkip struct {
	File   string
	Offset int64 // first byte skipped
	Length int64 // bytes skipped (to the next readable frame or the end of the file)
	Reason string
}

// SalvageExport writes, in Export's format (one ExportedEvent a line, in
// log order), every event it can read from the segments of the store
// directory dir — a store Open and OpenReadOnly refuse because a segment
// is damaged. It opens no store, takes no lock and changes nothing on
// disk. Where frames are damaged it skips to the next frame that passes
// its checksum and records the skipped range. A file it cannot read at
// all (a packed block that does not decompress, a header naming another
// segment or version) is skipped whole; a plain segment whose header
// alone fails its magic or checksum loses only the header. A frame that
// reads whole but whose payload does not match its digest is skipped too.
//
// Nothing is written that nothing read shows acknowledged. An atomic
// batch whose commit record is read, and that was read whole, is written
// whole. One that damage cut (frames skipped, a segment file missing or
// unreadable between its begin and commit records, or its begin record
// not read) is written in part: its items read after the last damage
// point before its commit record, whose sequences run up to the last one
// the record names; and an item read before a damage point only when the
// hash chain confirms it — an item of the batch written, of the same
// entity and read later, has its hash as previous hash, so it was in the
// entity's chain (committed) when that item was written — and then the
// items read before it back to the batch's begin record or the damage
// point before it (the same attempt at the batch). Other items read
// before a damage point are left out (counted in Unconfirmed): a commit
// record names only its batch's first sequence and count, which a batch
// retried after a crash shares with the attempt the crash cut, and the
// damage may have hidden the retry's begin record. The batch's sequences
// no item written holds are counted (PartialBatches, BatchItemsLost) and
// are in Missing.
//
// Events the store would not show are left out too: compaction stubs,
// items of batches whose commit record was not read, events of fences
// that never committed or that damage cut (counted in Unconfirmed), and
// the store's own system records (as Export). An event whose global
// sequence was read before (a segment file copied) is not written again
// (counted in Duplicates). The hash chain is not checked (it breaks where
// events are lost): Import assigns its own, and Verify checks the store
// it rebuilt.
func SalvageExport(dir string, w io.Writer) (SalvageReport, error) {
	var rep SalvageReport
	fsys := vfs.Default()
	ids, err := listSegments(fsys, dir)
	if err != nil {
		return rep, err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)

	type at struct {
		seg uint32
		off int
	}
	read := map[at]StoredEvent{} // events read, until the walker hands them on
	lw := &logWalker{dir: dir, salvage: true}
	lw.check = func(seg uint32, off int, v format.EventView) error {
		sf := v.SysFlags()
		if sf&(format.SysRedacted|format.SysRemoved) == 0 && format.PayloadHash(v.Payload()) != v.PayloadHash() {
			return lw.corrupt(seg, off, "payload does not match its digest")
		}
		ev := decodeOwned(v)
		ev.Payload = append([]byte(nil), ev.Payload...)
		if sf&format.SysRedacted != 0 {
			ev.Payload = nil
		}
		read[at{seg, off}] = ev
		return nil
	}
	var werr error
	var seen walkedSeqs    // the sequences of the events walked
	var seenEnd uint64     // and the sequence after the last of them
	var recorded seqRanges // the sequences a salvaged open recorded as lost
	lw.next = func() (uint64, uint32) { return seenEnd, 0 }
	lw.emit = func(e *walkedEvent) error {
		k := at{e.seg, e.off}
		ev, ok := read[k]
		delete(read, k)
		if !seen.insert(e.seq) {
			// Its sequence was walked already: a copy (a segment file
			// copied), not another event.
			rep.Duplicates++
			return nil
		}
		seenEnd = max(seenEnd, e.seq+1)
		if ok && e.kind == KindLogSalvaged {
			// The sequences a salvaged open recorded as lost hold no
			// event by design.
			var lost struct{ Recorded, Found uint64 }
			if json.Unmarshal(ev.Payload, &lost) == nil && lost.Found < lost.Recorded && lost.Recorded == e.seq {
				recorded.add(lost.Found, lost.Recorded)
			}
		}
		if !ok || e.hidden || e.removed || ev.Header.Kind.Category() == CategorySystem {
			if e.hidden {
				rep.Unconfirmed++
			}
			return nil
		}
		if err := enc.Encode(Exported(ev)); err != nil {
			werr = err
			return err
		}
		rep.Events++
		return nil
	}
	// reset tells the walk of damage: a fence it cuts is not confirmed, a
	// batch it cuts waits for its commit record.
	reset := lw.damage

	expected := expectedSegments(fsys, dir)
	for i, id := range ids {
		path := filepath.Join(dir, format.SegmentName(id))
		if i > 0 && format.SegID(id) != format.SegID(ids[i-1])+1 && (format.SegGen(ids[i-1]) == 0 || expected.within(ids[i-1], id)) {
			// Segment files missing between: what they held (a batch's
			// begin record, say) is not known. After a rewritten file —
			// a generation past 0 — a gap is what a compaction's merge
			// leaves (the file holds its inputs' frames, the ids after
			// its own among them), unless the index checkpoint or a
			// footer names a segment in it: then one is missing.
			if err := reset(); err != nil {
				return rep, err
			}
		}
		if i == len(ids)-1 {
			// A newest segment shorter than its header is what a crash
			// while rotating leaves (Open makes it again): not damage.
			if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && fi.Size() < format.SegmentHeaderSize {
				continue
			}
		}
		data, packed, release, err := loadSegment(fsys, path, id)
		if err != nil {
			size := int64(0)
			if fi, serr := os.Stat(path); serr == nil {
				size = fi.Size()
			}
			rep.Skipped = append(rep.Skipped, SalvageSkip{File: path, Length: size, Reason: err.Error()})
			if err := reset(); err != nil {
				return rep, err
			}
			continue
		}
		off := format.SegmentHeaderSize
		if why := format.CheckSegmentHeader(data, id); why != "" {
			if _, frameFollows := format.FrameAt(data, format.SegmentHeaderSize); !packed && format.SegmentHeaderDamaged(data) && frameFollows {
				// Only the header: a frame that passes its checksum
				// follows it (each has its own), and the file's name says
				// where it goes. (A file of anything else is not scanned
				// for frames: that costs time growing with its size
				// squared.)
				rep.Skipped = append(rep.Skipped, SalvageSkip{File: path, Length: format.SegmentHeaderSize, Reason: why + " (the frames after it are read)"})
				if err := reset(); err != nil {
					release()
					return rep, err
				}
			} else {
				release()
				rep.Skipped = append(rep.Skipped, SalvageSkip{File: path, Length: int64(len(data)), Reason: why})
				if err := reset(); err != nil {
					return rep, err
				}
				continue
			}
		}
		rep.Segments++
		// One budget for every search after damage in this segment (the
		// scans' and the skips'), so crafted damage repeated through it
		// costs one bounded search, not one per place.
		budget := 4 * format.ResyncBudget(len(data))
		for off < len(data) {
			end, tail, err := format.ScanFramesBudget(data, off, &budget, func(o int, rec []byte) error { return lw.frame(id, o, rec) })
			if werr != nil {
				release()
				return rep, werr
			}
			if err != nil {
				// A frame that reads whole but cannot be taken (its payload
				// digest, a batch item whose batch-begin the damage took):
				// skip that frame.
				n := format.FrameHeaderSize
				if rec, ok := format.FrameAt(data, end); ok {
					n += len(rec)
				}
				rep.Skipped = append(rep.Skipped, SalvageSkip{File: path, Offset: int64(end), Length: int64(n), Reason: unprefixed(err)})
				delete(read, at{id, end})
				if err := reset(); err != nil {
					release()
					return rep, err
				}
				off = end + n
				continue
			}
			if tail == format.TailClean {
				break
			}
			// A salvage searches harder than an open (four budgets), but
			// not without bound: bytes crafted to look like frames
			// everywhere are skipped to the segment's end past it.
			next, found, exhausted := format.NextFrame(data, end, &budget)
			if !found {
				next = len(data)
			}
			reason := "unreadable frame"
			switch {
			case exhausted:
				reason = "unreadable bytes, too many of them shaped like frames to search further: skipped to the end of the segment"
			case tail == format.TailTorn:
				reason = "torn tail (a write cut short)"
			}
			rep.Skipped = append(rep.Skipped, SalvageSkip{File: path, Offset: int64(end), Length: int64(next - end), Reason: reason})
			if err := reset(); err != nil {
				release()
				return rep, err
			}
			off = next
		}
		release()
	}
	if _, _, err := lw.finish(); err != nil {
		return rep, err
	}
	rep.PartialBatches, rep.BatchItemsLost = lw.partialBatches, lw.partialItems
	rep.Unconfirmed += len(read)
	if werr != nil {
		return rep, werr
	}
	recs, releaseRecs := readLogRecords(fsys, dir)
	logEnd, evidence := lw.cutEnd, "a batch-commit record" // the items a batch lacks are missing
	for _, r := range recs {
		if r.end > logEnd {
			logEnd, evidence = r.end, r.what
		}
	}
	releaseRecs()
	rep.Missing = append(seen.all(), recorded...).gaps(logEnd, evidence)
	if err := bw.Flush(); err != nil {
		return rep, fmt.Errorf("batpak: salvage export: %w", err)
	}
	return rep, nil
}

// seqRanges is a set of sequence ranges [from, to), added mostly in
// order: its size is the number of discontinuities, not of sequences.
type seqRanges [][2]uint64

func (r *seqRanges) add(from, to uint64) {
	if n := len(*r); n > 0 && (*r)[n-1][1] == from {
		(*r)[n-1][1] = to
		return
	}
	*r = append(*r, [2]uint64{from, to})
}

// segmentEvidence is the segment keys the index checkpoint lists and the
// footer files name: segments the log had.
type segmentEvidence []uint32

// expectedSegments gathers dir's segmentEvidence.
func expectedSegments(fsys vfs.FS, dir string) segmentEvidence {
	ev := segmentEvidence(checkpointSegments(fsys, dir))
	ents, _ := fsys.ReadDir(dir)
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), format.FooterSuffix); ok {
			if key, ok := segment.ParseName(n + format.SegmentSuffix); ok {
				ev = append(ev, key)
			}
		}
	}
	return ev
}

// within reports whether evidence names a segment whose id lies strictly
// between those of the files a and b.
func (ev segmentEvidence) within(a, b uint32) bool {
	for _, k := range ev {
		if id := format.SegID(k); id > format.SegID(a) && id < format.SegID(b) {
			return true
		}
	}
	return false
}

// walkedSeqs are the global sequences of the events a salvage walked:
// runs of ascending sequences as ranges (how a log is read), and the
// sequences that came lower than the end of those (copied or crafted
// segments) one by one in a set, so that a walk in any order costs
// O(log n) an event, never a shift of the ranges.
type walkedSeqs struct {
	ranges seqRanges           // ascending, as walked
	end    uint64              // the sequence after the last range
	lower  map[uint64]struct{} // walked below end, outside ranges
}

// insert records q, reporting false when it was walked already.
func (w *walkedSeqs) insert(q uint64) bool {
	if q >= w.end {
		w.ranges.add(q, q+1)
		w.end = q + 1
		return true
	}
	r := w.ranges
	i, _ := slices.BinarySearchFunc(r, q, func(g [2]uint64, q uint64) int { return cmp.Compare(g[1], q+1) }) // the first range ending after q
	if i < len(r) && r[i][0] <= q {
		return false
	}
	if _, ok := w.lower[q]; ok {
		return false
	}
	if w.lower == nil {
		w.lower = map[uint64]struct{}{}
	}
	w.lower[q] = struct{}{}
	return true
}

// all returns every sequence walked as ranges (not sorted).
func (w *walkedSeqs) all() seqRanges {
	out := append(seqRanges(nil), w.ranges...)
	for q := range w.lower {
		out = append(out, [2]uint64{q, q + 1})
	}
	return out
}

// gaps returns the sequences before the first range, between the
// ranges, and between the last and recorded (what evidence records as the log's end), as SalvageGaps.
func (r seqRanges) gaps(recorded uint64, evidence string) []SalvageGap {
	slices.SortFunc(r, func(a, b [2]uint64) int { return cmp.Compare(a[0], b[0]) })
	var out []SalvageGap
	var end uint64 // a log starts at sequence 0 (compaction leaves stubs)
	for _, g := range r {
		if g[0] > end {
			out = append(out, SalvageGap{From: end, To: g[0], Reason: fmt.Sprintf("no event of sequences %d to %d could be read (a segment missing or damaged)", end, g[0]-1)})
		}
		end = max(end, g[1])
	}
	if recorded > end {
		out = append(out, SalvageGap{From: end, To: recorded, Reason: fmt.Sprintf("the log read ends at sequence %d but %s records %d", end, evidence, recorded)})
	}
	return out
}

// unprefixed is err's message without core's "batpak: " prefix.
func unprefixed(err error) string {
	msg := err.Error()
	if len(msg) > 8 && msg[:8] == "batpak: " {
		return msg[8:]
	}
	return msg
}
