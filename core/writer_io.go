package core

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
)

// The writer's file work: placing frames in the active segment, zero-fill
// ahead of the data, rotation, sealing.

// makeRoom rotates to a new segment when a frame of n bytes would take the
// active one past SegmentMaxBytes (unless the segment holds no frames yet).
func (w *writer) makeRoom(n int) error {
	end := w.off + int64(len(w.buf))
	if end+int64(n) <= w.s.cfg.SegmentMaxBytes || end == format.SegmentHeaderSize {
		return nil
	}
	if err := w.flush(); err != nil {
		return err
	}
	if err := w.seal(); err != nil {
		return err
	}
	if err := w.createSegment(w.seg + 1); err != nil {
		return err
	}
	w.rotated = true // the sealer is woken once the group is published
	return nil
}

// flush writes w.buf at the end of the active segment.
func (w *writer) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.payOwedSync(); err != nil {
		return err
	}
	w.sealPlaced()
	need := w.off + int64(len(w.buf))
	if need > w.alloc {
		if err := w.extend(need); err != nil {
			return err
		}
	}
	if w.wmap != nil && len(w.buf) <= mappedWriteMax && w.s.cfg.Sync.EveryNEvents != 1 {
		copyAscending(w.wmap[w.off:need], w.buf)
	} else if _, err := w.file.WriteAt(w.buf, w.off); err != nil {
		return fmt.Errorf("batpak: write segment: %w", err)
	}
	w.off = need
	w.alloc = max(w.alloc, need)
	w.unsynced += w.bufEvents
	w.buf, w.bufEvents = w.buf[:0], 0
	return nil
}

// copyAscending copies src into dst (a shared mapping of the active
// segment) first byte first, so that a process killed in the middle of it
// leaves a prefix of the group in the file — a torn tail, as a cut-short
// write(2) does — and never a later frame without the ones before it,
// which recovery must take for corruption. The runtime's memmove does not
// promise that order: above 256 bytes, with AVX, it stores the middle
// before the first and last bytes. Its paths up to 256 bytes store in
// ascending order, so the copy goes in 256-byte steps.
func copyAscending(dst, src []byte) {
	for len(src) > 0 {
		n := copy(dst, src[:min(len(src), 256)])
		dst, src = dst[n:], src[n:]
	}
}

// extend zero-fills the active segment ahead of need, leaving the sync to
// the store's next one: the group being placed when every group is synced,
// the background syncer's otherwise. No fdatasync of its own on the
// writer's path (measured here: one per 4 MiB of log, several ms each, the
// writer idle meanwhile). Writing into blocks that already hold (zero)
// data lets each later fdatasync flush data only: measured here, a 15 KB
// group commit costs ~100 µs over written blocks against ~230 µs over
// fallocated ones, whose extents must be converted in the journal on every
// sync. The zeros reserve their blocks when written, so a full disk fails
// this write, never a later store through the mapping (mapActive).
//
// That trade is for stores that sync every group (EveryNEvents 1). The
// others sync in the background, off every writer's path, and there the
// zeros' copy is what costs: 7–10 % of pipelined Submit's throughput,
// measured here. Those stores reserve the blocks with fallocate instead
// (segment.Preallocate: zeros where the file system cannot), which
// guards the mapping just as well and reads as zeros the same.
func (w *writer) extend(need int64) error {
	// The step grows with the segment (half of what it holds, from 64 KiB
	// to 4 MiB), so a small store carries little zero tail and a busy one
	// few extra fsyncs: filling a segment takes about 13 extensions to
	// 16 MiB and one per 4 MiB after that.
	step := min(max(w.off/2, 64<<10), segment.PreallocStep)
	// Never fill past SegmentMaxBytes: a segment file stays within it
	// unless one event alone is larger.
	target := max(need, min(w.alloc+step, w.s.cfg.SegmentMaxBytes))
	fill := segment.WriteZeros
	if w.s.cfg.Sync.EveryNEvents != 1 {
		fill = segment.Preallocate
	}
	if err := fill(w.file, w.alloc, target); err != nil {
		return fmt.Errorf("batpak: preallocate segment: %w", err)
	}
	w.alloc = target
	return nil
}

// mappedWriteMax is the largest group copied into the shared mapping of the
// active segment instead of being written with pwrite. For a small group
// the system call is most of the writer's cost (~1.8 µs here, against
// ~50 ns for the copy); a large group amortises it, and pages dirtied
// through the mapping cost more at writeback (the kernel write-protects
// them again), so large groups and groups synced at once use pwrite. Both
// put the bytes in the page cache before the receipt: a killed process
// loses nothing it acknowledged, and fdatasync flushes both alike.
const mappedWriteMax = 1 << 10

// mapActive maps the active segment for writing. Only bytes below w.alloc
// (zero-filled ahead, so backed by allocated blocks) are ever written
// through it, so a full disk fails extend's write instead of raising
// SIGBUS.
func (w *writer) mapActive() error {
	m, err := w.s.fs.MmapWrite(w.file, w.s.segs.ActiveMapLen())
	if err != nil {
		return fmt.Errorf("batpak: map active segment: %w", err)
	}
	w.wmap = m
	return nil
}

func (w *writer) unmapActive() {
	if w.wmap != nil {
		_ = w.s.fs.Munmap(w.wmap)
		w.wmap = nil
	}
}

// seal finishes the active segment: sync and close it. The zero-filled
// tail stays: a reader in another process (OpenReadOnly) may have the file
// mapped, and cutting it would turn that reader's next look at the tail
// into SIGBUS. Readers treat the zeros as the end of data.
func (w *writer) seal() error {
	if err := w.awaitSync(); err != nil {
		return err
	}
	w.unmapActive()
	if err := w.file.Sync(); err != nil {
		return fmt.Errorf("batpak: seal segment: %w", err)
	}
	w.fsyncs.Add(1)
	w.unsynced, w.syncOwed = 0, false
	w.s.segs.Seal(w.seg, w.off)
	w.s.setSegmentEnd(w.seg, w.off)
	return w.file.Close()
}

// createSegment creates segment id with its header, syncs it and the
// directory, and makes it active.
func (w *writer) createSegment(id uint32) error {
	dir := w.s.cfg.Dir
	f, err := w.s.fs.OpenFile(filepath.Join(dir, format.SegmentName(id)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("batpak: create segment: %w", err)
	}
	if _, err := f.Write(format.EncodeSegmentHeader(id)); err != nil {
		f.Close()
		return fmt.Errorf("batpak: create segment: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("batpak: create segment: %w", err)
	}
	if err := segment.SyncDir(w.s.fs, dir); err != nil {
		f.Close()
		return err
	}
	w.file, w.seg, w.off, w.alloc = f, id, format.SegmentHeaderSize, format.SegmentHeaderSize
	w.s.setSegmentEnd(id, w.off)
	if err := w.mapActive(); err != nil {
		return err
	}
	w.s.segs.SetActive(id, w.off)
	return nil
}

// activeFileIdle is how long a writer waits with nothing to do before it
// releases the active segment's file descriptor and writable mapping (tests
// shorten it through export_test.go). An idle store then holds one
// descriptor, its LOCK file, so that thousands of open stores (one per
// tenant of a server) fit in the process's descriptor limit. Reopening
// costs the next write an open and an mmap (a few microseconds).
var activeFileIdle atomic.Int64

func init() { activeFileIdle.Store(int64(time.Second)) }

// releaseIdleFile runs when the idle timer fires: if the writer was asked
// nothing for idleAfter, it syncs whatever is written but not yet synced
// (more syncing than the sync setting asks, never less), then unmaps and
// closes the active segment. A writer that failed, or has a fence open,
// keeps its file. A sync or close error stops the writer as a write error
// would.
func (w *writer) releaseIdleFile() {
	if w.file == nil || w.failed != nil {
		return
	}
	if d := w.idleAfter - time.Since(w.lastActive); d > 0 {
		w.idle.Reset(d)
		return
	}
	if w.fence != nil {
		w.idle.Reset(w.idleAfter)
		return
	}
	if w.unsynced > 0 || w.syncer.busy || w.durable.Load() < w.nextSeq {
		if err := w.syncNow(); err != nil {
			w.fail(err)
			return
		}
	}
	w.unmapActive()
	err := w.file.Close()
	w.file = nil
	if err != nil {
		w.fail(fmt.Errorf("batpak: close idle segment: %w", err))
	}
}

// reopenFile reopens and maps the active segment released by
// releaseIdleFile, before the writer handles its next request.
func (w *writer) reopenFile() error {
	f, err := w.s.fs.OpenFile(filepath.Join(w.s.cfg.Dir, format.SegmentName(w.seg)), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("batpak: reopen active segment: %w", err)
	}
	w.file = f
	if err := w.mapActive(); err != nil {
		f.Close()
		w.file = nil
		return err
	}
	w.idle.Reset(w.idleAfter)
	return nil
}
