package core

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// The sealer is the store's background maintenance of sealed segments.
// Woken when the writer rotates to a new segment (and once after Open, for
// work a crash or a Close left), it
//
//   - packs every sealed plain segment when Config.Compression asks for it,
//     one segment at a time, through the compaction path (new generation,
//     journal, crash-safe; nothing else about the segment changes), and
//   - writes the footer of every sealed segment that lacks a current one.
//
// It works under erasureMu like a compaction, so Compact, Redact and
// EraseEntity wait for the segment in hand, never for the whole sweep.
// Close stops it (after the segment in hand; a packing cut short by a
// crash leaves the plain segment in force) and then writes the footer of
// the segment being written.
type sealer struct {
	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *Store) startSealer() {
	ctx, cancel := context.WithCancel(context.Background())
	s.sl = &sealer{kick: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.sl.done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.sl.kick:
				if err := s.sealPending(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("batpak: sealing segments failed; retried at the next rotation", "err", err)
				}
			}
		}
	}()
	s.kickSealer()
}

// kickSealer asks the sealer for a sweep (never blocks).
func (s *Store) kickSealer() {
	if s.sl == nil {
		return
	}
	select {
	case s.sl.kick <- struct{}{}:
	default:
	}
}

func (s *Store) stopSealer() {
	if s.sl == nil {
		return
	}
	s.sl.cancel()
	<-s.sl.done
}

// SealSegments does now, on the calling goroutine, the work the store
// does in the background after each rotation: every sealed segment is
// packed (when Config.Compression asks for it) and given a current footer.
// It returns when none is left to do. Errors: ErrReadOnly, ErrClosed,
// ctx's error, I/O errors and *CorruptionError (a sealed segment that
// cannot be read is left as it is).
func (s *Store) SealSegments(ctx context.Context) error {
	if s.readOnly {
		return ErrReadOnly
	}
	if err := s.checkReadable(); err != nil {
		return err
	}
	return s.sealPending(ctx)
}

// sealPending packs and footers the sealed segments that need it. Each
// segment is worked on at most once per sweep; one that fails is skipped
// for the rest of it (the first error is returned at the end), so one
// damaged segment holds up no other.
func (s *Store) sealPending(ctx context.Context) error {
	handled := map[uint32]bool{}
	var first error
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, did, err := s.sealOne(ctx, handled)
		handled[k] = true
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if k == 0 { // not about one segment (ErrClosed, a listing error)
				return err
			}
			if first == nil {
				first = err
			}
			continue
		}
		if !did {
			return first
		}
	}
}

// sealOne does the next piece of sealing work, if any, skipping the
// segments in skip; it returns the segment it worked on.
func (s *Store) sealOne(ctx context.Context, skip map[uint32]bool) (uint32, bool, error) {
	s.erasureMu.Lock()
	defer s.erasureMu.Unlock()
	if s.maintClosed {
		return 0, false, ErrClosed
	}
	sealed, err := s.sealedKeys()
	if err != nil {
		return 0, false, err
	}
	for _, k := range sealed {
		if skip[k] {
			continue
		}
		path := filepath.Join(s.cfg.Dir, format.SegmentName(k))
		if s.cfg.Compression != CompressionNone && !segment.IsPackedFile(s.fs, path) {
			_, err := s.compactLocked(ctx, []uint32{k}, CompactConfig{pack: true}, false, nil)
			return k, err == nil, err
		}
		if end, ok := footerEnd(s.fs, s.cfg.Dir, k); !ok || end != s.segmentEnd(k) {
			return k, true, s.writeSegmentFooter(k, s.segmentEnd(k))
		}
	}
	return 0, false, nil
}

// writeSegmentFooter builds the footer of segment key from its frames
// (up to its recorded end) and saves it. The caller holds erasureMu, so
// no compaction or redaction rewrites the segment meanwhile.
func (s *Store) writeSegmentFooter(key uint32, end int64) error {
	path := filepath.Join(s.cfg.Dir, format.SegmentName(key))
	parts, err := footerFromFile(s.fs, path, key, end)
	if err != nil {
		return err
	}
	if parts == nil {
		// Packed, with no recorded end, or frames that stop short of it:
		// from the mapped (or unpacked) bytes, which says why.
		data, _, release, err := loadSegment(s.fs, path, key)
		if err != nil {
			return err
		}
		defer release()
		if end > 0 && int64(len(data)) > end {
			data = data[:end]
		}
		if parts, err = format.EncodeFooterParts(data, key); err != nil {
			return err
		}
	}
	return writeFooter(s.fs, s.cfg.Dir, key, parts)
}

// segmentReadChunk is how much of a segment a whole-segment read takes at
// a time (footerFromFile, and the checkpoint's frames in scanSegment).
const segmentReadChunk = 1 << 20

// footerFromFile builds the footer of the plain segment at path whose
// frames run exactly to end, reading it a chunk at a time rather than
// mapping it (format.ScanFramesAt says why). Nil parts and no error: the
// segment is packed, has no recorded end, is shorter than end, or its
// frames stop short of end; the mapped scan handles those.
func footerFromFile(fsys vfs.FS, path string, key uint32, end int64) ([][]byte, error) {
	if end <= format.SegmentHeaderSize {
		return nil, nil
	}
	f, err := fsys.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() < end {
		return nil, nil
	}
	h := make([]byte, format.SegmentHeaderSize)
	if _, err := f.ReadAt(h, 0); err != nil {
		return nil, err
	}
	if segment.IsPackedHeader(h) {
		return nil, nil
	}
	parts, ok, err := format.EncodeFooterPartsAt(f, end, key, make([]byte, min(segmentReadChunk, end)))
	if err != nil || !ok {
		return nil, err
	}
	return parts, nil
}

// footerOnClose writes the footer of the segment being written (its data
// ends at end), once the writer has stopped. Close holds erasureMu.
func (s *Store) footerOnClose(key uint32, end int64) {
	if key == 0 {
		return
	}
	if err := s.writeSegmentFooter(key, end); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("batpak: segment footer not written; the next Open scans the segment", "segment", format.SegmentName(key), "err", err)
	}
}
