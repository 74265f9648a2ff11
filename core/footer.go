package core

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/index"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// Segment footers. When a segment is sealed (rotation, Close, or a
// compaction writing it) its index footer is saved beside it as
// "<segment name>.idx" — a sidecar rather than bytes at the end of the
// segment, because a sealed segment is never rewritten in place (a reader
// in another process may have it mapped, and a packed segment's trailer
// must stay last). The footer lists, for every frame, what recovery needs
// from it without the frame's bytes: Open replays footers through the same
// log walker as a frame scan (batch and fence rules included), reading no
// payload and decompressing nothing.
//
//	"BPFOOT02" | segment key u32 | covered end u64 | last frame offset u64 |
//	last event offset u64 (all ones: none) | last event id [16] |
//	names u32 × (length u16, bytes) |
//	items u32 × item | CRC32C of all before it u32
//	item: type u8 | offset u32 | frame length u32 | then, for an event:
//	  sequence u64, id [16], clock u64, timestamp i64, kind u16,
//	  system flags u8, hash [32], entity name u32, scope name u32,
//	  idempotency key (length u16, bytes);
//	  for a batch or fence record: count u32, id u64
//
// A footer covers the segment from its header to "covered end". It is
// used only when its checksum holds, it names the segment, its items tile
// the covered part frame after frame, the frame it says ends that part is
// there, and the last event it lists is in the segment at its offset with
// its id (ids are random, so another store's footer for a segment of the
// same layout fails this; a redaction in place keeps it). Frames after the
// covered end (a segment written on after a Close) are scanned. Anything else — a missing, damaged or stale footer, or one that
// disagrees with the log while replayed — costs that segment a frame scan,
// never a wrong index. Footers say nothing about damage inside the frames
// they cover: that is Verify's job.
const (
	footerSuffix = ".idx"
	footerMagic  = "BPFOOT02"
)

func footerName(key uint32) string {
	return strings.TrimSuffix(format.SegmentName(key), format.SegmentSuffix) + footerSuffix
}

// errFooterStale: a footer disagreed with the log; Open retries without
// footers.
var errFooterStale = errors.New("segment footer does not match the log")

// buildFooter encodes the footer of a segment from its logical bytes
// (header included, frames after it; trailing zeros allowed).
func buildFooter(data []byte, key uint32) ([]byte, error) {
	names := map[string]uint32{}
	var nameTab []byte
	name := func(b []byte) uint32 {
		if i, ok := names[string(b)]; ok {
			return i
		}
		i := uint32(len(names))
		names[string(b)] = i
		nameTab = le.AppendUint16(nameTab, uint16(len(b)))
		nameTab = append(nameTab, b...)
		return i
	}
	items := make([]byte, 0, 1024)
	n := 0
	lastOff, lastEv := 0, -1
	var lastID EventID
	end, st, err := format.ScanFrames(data, format.SegmentHeaderSize, func(off int, rec []byte) error {
		items = append(items, rec[0])
		items = le.AppendUint32(items, uint32(off))
		items = le.AppendUint32(items, uint32(len(rec)))
		if rec[0] == format.RecEvent {
			if !format.CheckEvent(rec) {
				return fmt.Errorf("malformed event record at offset %d", off)
			}
			v := format.EventView(rec)
			items = le.AppendUint64(items, v.Seq())
			id := v.ID()
			lastEv, lastID = off, id
			items = append(items, id[:]...)
			items = le.AppendUint64(items, v.Clock())
			items = le.AppendUint64(items, uint64(v.Timestamp()))
			items = le.AppendUint16(items, uint16(v.Kind()))
			items = append(items, v.SysFlags())
			h := v.Hash()
			items = append(items, h[:]...)
			items = le.AppendUint32(items, name(v.Entity()))
			items = le.AppendUint32(items, name(v.Scope()))
			items = le.AppendUint16(items, uint16(len(v.Idem())))
			items = append(items, v.Idem()...)
		} else {
			m, ok := format.DecodeMarker(rec)
			if !ok {
				return fmt.Errorf("unknown record at offset %d", off)
			}
			items = le.AppendUint32(items, m.Count)
			items = le.AppendUint64(items, m.ID)
		}
		n++
		lastOff = off
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("batpak: segment footer: %w", err)
	}
	if st != format.TailClean {
		return nil, fmt.Errorf("batpak: segment footer: unreadable frame at offset %d", end)
	}
	b := make([]byte, 0, 40+len(nameTab)+len(items))
	b = append(b, footerMagic...)
	b = le.AppendUint32(b, key)
	b = le.AppendUint64(b, uint64(end))
	b = le.AppendUint64(b, uint64(lastOff))
	b = le.AppendUint64(b, uint64(int64(lastEv)))
	b = append(b, lastID[:]...)
	b = le.AppendUint32(b, uint32(len(names)))
	b = append(b, nameTab...)
	b = le.AppendUint32(b, uint32(n))
	b = append(b, items...)
	return le.AppendUint32(b, format.CRC32C(b)), nil
}

// footer is a loaded, checksum-checked footer.
type footer struct {
	key     uint32
	end     int64
	lastOff int64
	lastEv  int64 // -1: no event
	lastID  EventID
	names   [][]byte
	n       int
	items   []byte
}

// readFooter loads the footer of segment key; nil when it is missing or
// fails its own checks (the reason is returned for the log).
func readFooter(fsys vfs.FS, dir string, key uint32) (*footer, string) {
	b, err := vfs.ReadFile(fsys, filepath.Join(dir, footerName(key)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ""
	}
	if err != nil {
		return nil, err.Error()
	}
	if len(b) < len(footerMagic)+56 || string(b[:len(footerMagic)]) != footerMagic {
		return nil, "bad magic"
	}
	body := b[:len(b)-4]
	if le.Uint32(b[len(b)-4:]) != format.CRC32C(body) {
		return nil, "checksum mismatch"
	}
	r := &ckReader{b: body, off: len(footerMagic)}
	f := &footer{key: r.u32(), end: int64(r.u64()), lastOff: int64(r.u64()), lastEv: int64(r.u64())}
	copy(f.lastID[:], r.take(16))
	if f.key != key {
		return nil, fmt.Sprintf("names segment %s", format.SegmentName(f.key))
	}
	nn := int(r.u32())
	for i := 0; i < nn && r.err == nil; i++ {
		f.names = append(f.names, r.take(int(r.u16())))
	}
	f.n = int(r.u32())
	f.items = body[r.off:]
	if r.err != nil {
		return nil, "truncated"
	}
	return f, ""
}

// matches checks the footer against the segment (size: its logical
// size): the frame it says ends the covered part must be there, and the
// last event it lists must be where it says, with its id. readFrame reads one
// frame (for a packed segment, by decompressing its block).
func (f *footer) matches(size int64, readFrame func(off int) ([]byte, bool, error)) bool {
	if f.end > size || f.end < format.SegmentHeaderSize {
		return false
	}
	if f.n == 0 {
		return f.end == format.SegmentHeaderSize && f.lastEv < 0
	}
	fr, ok, err := readFrame(int(f.lastOff))
	if err != nil || !ok || f.lastOff+int64(len(fr)) != f.end {
		return false
	}
	if f.lastEv < 0 {
		return true
	}
	if f.lastEv >= f.end {
		return false
	}
	if fr, ok, err = readFrame(int(f.lastEv)); err != nil || !ok {
		return false
	}
	rec := fr[format.FrameHeaderSize:]
	return rec[0] == format.RecEvent && format.CheckEvent(rec) && format.EventView(rec).ID() == f.lastID
}

// replay hands the footer's items on: those before from (the part of the
// segment the checkpoint covers) are checked against the restored index,
// the rest go through the walker, as the frames would.
func (f *footer) replay(lw *logWalker, from int, ck *checkpointInfo, ix *index.Index) error {
	r := &ckReader{b: f.items}
	stale := func(why string) error { return fmt.Errorf("%w: %s: %s", errFooterStale, footerName(f.key), why) }
	next := format.SegmentHeaderSize // items must tile the covered part
	for i := 0; i < f.n; i++ {
		typ := r.take(1)[0]
		off, flen := int(r.u32()), int(r.u32())
		if r.err != nil {
			return stale("truncated")
		}
		if off != next || flen < format.MinRecordSize {
			return stale(fmt.Sprintf("item %d at offset %d, the previous frame ends at %d", i, off, next))
		}
		next = off + format.FrameHeaderSize + flen
		if typ != format.RecEvent {
			m := format.Marker{Type: typ, Count: r.u32()}
			m.ID = r.u64()
			if r.err != nil || typ < format.RecBatchBegin || typ > format.RecFenceCancel {
				return stale("bad item")
			}
			if off < from {
				if off+format.FrameHeaderSize+flen > from {
					return fmt.Errorf("%w: the watermark falls inside the frame at offset %d of %s", errCheckpointStale, off, format.SegmentName(f.key))
				}
				continue
			}
			if err := lw.marker(f.key, off, m); err != nil {
				return stale(err.Error())
			}
			continue
		}
		ev := walkedEvent{seg: f.key, off: off, seq: r.u64()}
		copy(ev.id[:], r.take(16))
		ev.clock, ev.ts, ev.kind = r.u64(), int64(r.u64()), Kind(r.u16())
		sf := r.take(1)[0]
		copy(ev.hash[:], r.take(32))
		ent, sc := r.u32(), r.u32()
		ev.idem = r.take(int(r.u16()))
		if r.err != nil || int(ent) >= len(f.names) || int(sc) >= len(f.names) {
			return stale("bad item")
		}
		ev.entity, ev.scope = f.names[ent], f.names[sc]
		if len(ev.idem) == 0 {
			ev.idem = nil
		}
		if off < from {
			if err := ck.coverEvent(ix, f.key, off, flen, from, ev.seq, ev.id); err != nil {
				return err
			}
			continue
		}
		if err := lw.event(ev, sf); err != nil {
			return stale(err.Error())
		}
	}
	if r.off != len(r.b) {
		return stale("bytes left over")
	}
	if int64(next) != f.end {
		return stale(fmt.Sprintf("items end at %d, the footer covers up to %d", next, f.end))
	}
	return nil
}

// writeFooter saves a footer built for segment key (atomically).
func writeFooter(fsys vfs.FS, dir string, key uint32, b []byte) error {
	return segment.WriteFileAtomic(fsys, dir, footerName(key), b, true)
}

// footerEnd reads how far the footer of segment key says it covers,
// without checking the rest of it (the sealer's "is it current" test).
func footerEnd(fsys vfs.FS, dir string, key uint32) (int64, bool) {
	f, err := fsys.Open(filepath.Join(dir, footerName(key)))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	h := make([]byte, len(footerMagic)+12)
	if _, err := f.ReadAt(h, 0); err != nil || string(h[:len(footerMagic)]) != footerMagic || le.Uint32(h[8:]) != key {
		return 0, false
	}
	return int64(le.Uint64(h[12:])), true
}
