package core

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// ErrNotEmpty: RemoveEmpty found something in the store directory that an
// empty store does not hold; nothing was removed. See NotEmptyError.
var ErrNotEmpty = errors.New("batpak: the store is not empty")

// NotEmptyError is RemoveEmpty's refusal: what in Dir is more than an
// empty store holds. Nothing was removed.
type NotEmptyError struct {
	Dir    string
	Reason string // e.g. "00000000000000000001.seg holds data", "it holds cursors"
}

func (e *NotEmptyError) Error() string {
	return fmt.Sprintf("batpak: store %s is not empty: %s; nothing was removed", e.Dir, e.Reason)
}

// Is reports ErrNotEmpty.
func (e *NotEmptyError) Is(target error) bool { return target == ErrNotEmpty }

// RemoveEmpty removes the store in directory dir, and dir itself, when the
// store holds nothing: for a caller that created a store (Open creates its
// directory) and wrote nothing into it, such as a failed import, to leave
// no empty store behind. It takes the store's writer lock first and checks
// and removes while holding it, so a process that opens the store at the
// same moment either has the lock first (RemoveEmpty then fails with a
// *LockedError) or opens a store created anew after the removal: whatever
// another process wrote is never removed.
//
// Empty means: dir holds only the files Open creates, each a regular file
// (LOCK, segment files "<20-digit id>.seg" and their footers ".idx",
// index.ckpt, erasures); every segment holds nothing after its 32-byte
// header but zeros (so no event, no marker); the index checkpoint records
// no event; and the erasure epoch is 0 (nothing was ever erased). Anything
// else — cursors, a compaction or redaction journal, a packed or rewritten
// segment, any other file, a symbolic link — is a *NotEmptyError
// (errors.Is ErrNotEmpty) and nothing is removed.
//
// The files are removed checkpoint, footers, segments and erasure epoch
// first and LOCK last, still locked (where the OS cannot remove an open
// file, as on Windows, LOCK is removed just after the lock is let go); then
// dir is removed. An Open in another process that locked LOCK as it was
// being removed sees that and takes a new LOCK (see Open). If dir is not
// empty by then (another process opened a new store in it meanwhile), the
// store's files are gone but dir and what is new in it are left, and the
// error says so. Errors: a *LockedError while another process has the
// store open; a *NotEmptyError; an error naming dir when it is missing, is
// not a directory or is a symbolic link; otherwise the I/O error, wrapped.
func RemoveEmpty(dir string) error {
	return removeEmpty(vfs.Default(), dir)
}

func removeEmpty(fsys vfs.FS, dir string) error {
	fi, err := fsys.Lstat(dir)
	if err != nil {
		return fmt.Errorf("batpak: remove store: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("batpak: remove store: %s is not a directory (%s)", dir, fi.Mode().Type())
	}
	// Looked at first without the lock too, so that a directory that is
	// no empty store is refused without a LOCK file left in it.
	if _, err := emptyStoreFiles(fsys, dir, false); err != nil {
		return err
	}
	lock, err := segment.Lock(fsys, dir)
	if err != nil {
		return segErr(err)
	}
	locked := true
	defer func() {
		if locked {
			_ = segment.Unlock(fsys, lock)
		}
	}()
	names, err := emptyStoreFiles(fsys, dir, true)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := fsys.Remove(filepath.Join(dir, n)); err != nil {
			return fmt.Errorf("batpak: remove store: %w", err)
		}
	}
	lockPath := filepath.Join(dir, segment.LockFileName)
	lerr := fsys.Remove(lockPath)
	locked = false
	_ = segment.Unlock(fsys, lock)
	if lerr != nil {
		// Windows keeps an open file; it is closed now. An Open that has
		// it open meanwhile holds it (and this fails): its store stays.
		if err := fsys.Remove(lockPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("batpak: remove store: its files are removed, %s is left: %w", dir, err)
		}
	}
	if err := fsys.Remove(dir); err != nil {
		return fmt.Errorf("batpak: remove store: its files are removed, the directory %s is left (another process may have opened a store there since): %w", dir, err)
	}
	_ = fsys.SyncDir(filepath.Dir(dir))
	return nil
}

// emptyStoreFiles checks, under the store's lock, that dir holds an empty
// store (see RemoveEmpty) and returns its files to remove in order, LOCK
// left out: the index checkpoint, the footers, the segments, the erasure
// epoch. Without contents it looks at the names alone (a first look,
// before the lock is taken) and returns none.
func emptyStoreFiles(fsys vfs.FS, dir string, contents bool) ([]string, error) {
	notEmpty := func(format string, a ...any) error {
		return &NotEmptyError{Dir: dir, Reason: fmt.Sprintf(format, a...)}
	}
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("batpak: remove store: %w", err)
	}
	var ckpt, footers, segs, erasures []string
	for _, e := range ents {
		n := e.Name()
		if e.Type() != 0 { // ReadDir does not follow links
			return nil, notEmpty("%s is not a regular file", n)
		}
		switch {
		case n == segment.LockFileName:
		case n == format.CheckpointName:
			ckpt = append(ckpt, n)
		case n == erasureFile:
			erasures = append(erasures, n)
		case openSegmentName(n):
			segs = append(segs, n)
		case strings.HasSuffix(n, format.FooterSuffix) && openSegmentName(strings.TrimSuffix(n, format.FooterSuffix)+format.SegmentSuffix):
			footers = append(footers, n)
		case n == cursorDir:
			return nil, notEmpty("it holds cursors (%s)", n)
		default:
			return nil, notEmpty("it holds %s, which an empty store does not", n)
		}
	}
	if !contents {
		return nil, nil // the names alone: a first look, without the lock
	}
	for _, n := range segs {
		held, err := segmentHoldsData(fsys, filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("batpak: remove store: %w", err)
		}
		if held {
			return nil, notEmpty("%s holds data", n)
		}
	}
	if len(ckpt) > 0 {
		b, err := vfs.ReadFileAtMost(fsys, filepath.Join(dir, format.CheckpointName), smallFileMax)
		if err != nil {
			var tl *vfs.TooLargeError
			if errors.As(err, &tl) {
				return nil, notEmpty("%s records events", format.CheckpointName)
			}
			return nil, fmt.Errorf("batpak: remove store: %w", err)
		}
		if len(b) < format.CheckpointHeaderSize || string(b[:8]) != format.CheckpointMagic || le.Uint32(b[20:]) != 0 {
			return nil, notEmpty("%s records events (or is not a checkpoint this version writes)", format.CheckpointName)
		}
	}
	if len(erasures) > 0 || len(segs) > 0 {
		n, damaged, _, err := loadErasures(fsys, dir)
		if err != nil {
			return nil, fmt.Errorf("batpak: remove store: %w", err)
		}
		if damaged {
			return nil, notEmpty("its erasure epoch (%s) is missing or damaged", erasureFile)
		}
		if n != 0 {
			return nil, notEmpty("events were erased from it (erasure epoch %d)", n)
		}
	}
	return append(append(append(ckpt, footers...), segs...), erasures...), nil
}

// openSegmentName reports whether n names a segment file as Open creates
// it: "<20-digit id>.seg", no generation (packing and compaction make
// those).
func openSegmentName(n string) bool {
	key, ok := segment.ParseName(n)
	return ok && format.SegGen(key) == 0
}

// segmentHoldsData reports whether the segment file at path holds anything
// after its header but zeros (its preallocated space).
func segmentHoldsData(fsys vfs.FS, path string) (bool, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	off := int64(format.SegmentHeaderSize)
	for {
		n, err := f.ReadAt(buf, off)
		if !allZero(buf[:n]) {
			return true, nil
		}
		off += int64(n)
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

func allZero(b []byte) bool {
	return len(bytes.TrimLeft(b, "\x00")) == 0
}
