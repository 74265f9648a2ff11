package core

import (
	"bytes"
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
// The layout is core/internal/format's (FooterMagic).
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
	footerSuffix = format.FooterSuffix
	footerMagic  = format.FooterMagic
)

func footerName(key uint32) string {
	return strings.TrimSuffix(format.SegmentName(key), format.SegmentSuffix) + footerSuffix
}

// errFooterStale: a footer disagreed with the log; Open retries without
// footers.
var errFooterStale = errors.New("segment footer does not match the log")

// buildFooter encodes the footer of a segment from its logical bytes
// (header included, frames after it; trailing zeros allowed).
func buildFooter(data []byte, key uint32) ([]byte, error) { return format.EncodeFooter(data, key) }

// footer is a loaded, checksum-checked footer.
type footer struct {
	key     uint32
	end     int64
	lastOff int64
	lastEv  int64 // -1: no event
	lastID  EventID
	names   [][]byte
	items   [][]byte // raw, see format.ParseFooterItem
	// release unmaps the footer's file, which names and items point
	// into: call it once done with them.
	release func()
}

// readFooter loads the footer of segment key; nil when it is missing or
// fails its own checks (the reason is returned for the log). The file is
// mapped, not read into the heap: a footer runs to ~40 % of its segment,
// and a fresh buffer that size costs a page fault per 4 KiB where the
// mapping costs one per 16 pages of the page cache. Call release on the
// footer once done with it; nothing of it may be kept after that.
func readFooter(fsys vfs.FS, dir string, key uint32) (*footer, string) {
	b, release, err := mapFooter(fsys, filepath.Join(dir, footerName(key)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ""
	}
	if err != nil {
		return nil, err.Error()
	}
	f, why := decodeFooter(b, key)
	if f == nil {
		release()
		return nil, why
	}
	f.release = release
	return f, ""
}

// close releases the footer's file (see readFooter).
func (f *footer) close() {
	if f.release != nil {
		f.release()
		f.release = nil
	}
}

// mapReadOnly maps the whole file at path read-only (footers, the
// checkpoint): Open reads them whole, and a fresh heap buffer of their size
// costs a page fault per 4 KiB where the mapping of page-cached bytes costs
// one per 16 pages. Call the returned func to unmap.
func mapReadOnly(fsys vfs.FS, path string) ([]byte, func(), error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	return segment.MapOpened(fsys, f, path)
}

// mapFooter is mapReadOnly for a footer file: one larger than any
// segment (a footer indexes one segment and runs to less than it) is
// refused by its size, not mapped and checked whole.
func mapFooter(fsys vfs.FS, path string) ([]byte, func(), error) {
	if st, err := fsys.Stat(path); err == nil && st.Size() > segment.MaxFileBytes {
		return nil, nil, fmt.Errorf("footer %s of %d bytes, larger than any segment", path, st.Size())
	}
	return mapReadOnly(fsys, path)
}

// decodeFooter is readFooter on the footer's bytes b.
func decodeFooter(b []byte, key uint32) (*footer, string) {
	ff, err := format.DecodeFooter(b)
	if err != nil {
		if bytes.HasPrefix(b, []byte(format.FooterMagicV2)) {
			return nil, "an earlier layout (" + format.FooterMagicV2 + ", without causal links); the sealer rewrites it"
		}
		return nil, err.Error()
	}
	if ff.Key != key {
		return nil, fmt.Sprintf("names segment %s", format.SegmentName(ff.Key))
	}
	return &footer{key: ff.Key, end: int64(ff.End), lastOff: int64(ff.LastOff), lastEv: int64(ff.LastEv), lastID: ff.LastID, names: ff.Names, items: ff.Items}, ""
}

// matches checks the footer against the segment (size: its logical
// size): the frame it says ends the covered part must be there, and the
// last event it lists must be where it says, with its id. readFrame reads one
// frame (for a packed segment, by decompressing its block).
func (f *footer) matches(size int64, readFrame func(off int) ([]byte, bool, error)) bool {
	if f.end > size || f.end < format.SegmentHeaderSize {
		return false
	}
	if len(f.items) == 0 {
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
	stale := func(why string) error { return fmt.Errorf("%w: %s: %s", errFooterStale, footerName(f.key), why) }
	next := format.SegmentHeaderSize // items must tile the covered part
	if ck == nil {
		// Every event item is indexed: the id table grows once for the
		// segment instead of doubling on the way (Open runs alone).
		ix.ReserveIDsLocked(len(f.items))
	}
	for i, raw := range f.items {
		it := format.ParseFooterItem(raw)
		off, flen := int(it.Off), int(it.Len)
		if off != next || flen < format.MinRecordSize {
			return stale(fmt.Sprintf("item %d at offset %d, the previous frame ends at %d", i, off, next))
		}
		next = off + format.FrameHeaderSize + flen
		if it.Type != format.RecEvent {
			if off < from {
				if off+format.FrameHeaderSize+flen > from {
					return fmt.Errorf("%w: the watermark falls inside the frame at offset %d of %s", errCheckpointStale, off, format.SegmentName(f.key))
				}
				continue
			}
			if err := lw.marker(f.key, off, format.Marker{Type: it.Type, Count: it.Count, ID: it.MarkerID}); err != nil {
				return stale(err.Error())
			}
			continue
		}
		if uint64(it.Entity) >= uint64(len(f.names)) || uint64(it.Scope) >= uint64(len(f.names)) {
			return stale("bad item")
		}
		ev := walkedEvent{seg: f.key, off: off, seq: it.Seq, id: it.ID, clock: it.Clock, ts: it.Timestamp, kind: Kind(it.Kind),
			hash: it.Hash, entity: f.names[it.Entity], scope: f.names[it.Scope], idem: it.Idem,
			cause: it.Cause, corr: it.Corr}
		if len(ev.idem) == 0 {
			ev.idem = nil
		}
		if off < from {
			if err := ck.coverEvent(ix, f.key, off, flen, from, ev.seq, ev.id); err != nil {
				return err
			}
			continue
		}
		if err := lw.event(ev, it.SysFlags); err != nil {
			return stale(err.Error())
		}
	}
	if int64(next) != f.end {
		return stale(fmt.Sprintf("items end at %d, the footer covers up to %d", next, f.end))
	}
	return nil
}

// writeFooter saves a footer built for segment key (atomically).
func writeFooter(fsys vfs.FS, dir string, key uint32, parts [][]byte) error {
	return segment.WriteFileAtomicParts(fsys, dir, footerName(key), parts, true)
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
