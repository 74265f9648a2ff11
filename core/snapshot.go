package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// snapPoint is where the published log ends at a snapshot.
type snapPoint struct {
	seg    uint32
	end    int64
	events uint64
}

// SnapshotReport describes a snapshot.
type SnapshotReport struct {
	Dest     string
	Segments int
	Bytes    int64
	// GlobalSequence is the number of sequences published at the snapshot
	// point: the copy shows exactly the events with sequences below it,
	// and its next event gets this sequence — unless a fence was open at
	// the point: its writes, hidden in the copy, take the sequences after
	// it.
	GlobalSequence uint64
	Elapsed        time.Duration
}

// SnapshotOptions adjusts Store.SnapshotWithOptions.
type SnapshotOptions struct {
	// NoSync leaves the copy's files and directories unsynced (Snapshot
	// syncs them before it returns). For a copy that is read back at
	// once and written elsewhere durably — a staging copy streamed into a
	// synced archive, as a raft snapshot's is — syncing it first only
	// adds the disk's time (about two thirds of a 320 MiB copy's, on a
	// 2-core VM). After a crash such a copy may be incomplete or damaged:
	// discard it.
	NoSync bool
	// LinkSealed hard-links the sealed segments, the segments' footers
	// and the index checkpoint into dest instead of copying them, where
	// the file system allows (they are copied where it does not: another
	// file system, one without hard links). Only the active segment's
	// bytes up to the snapshot point are copied, so the snapshot of a
	// large store takes about as long as that of its active segment.
	// The links share the store's files, which the store only ever
	// replaces whole (a footer, the checkpoint, a packed segment: written
	// apart and renamed into place), never changes in place, except
	// Redact and EraseEntity, which a replicated store refuses: so
	// LinkSealed is refused with ErrSnapshotLinks on a store without
	// Config.Replicator. Should the copy be opened as a store of its own,
	// or the store reopened without a Replicator, Redact rewrites a
	// sealed segment whose file is shared into a new file rather than in
	// place, so neither sees the other's erasures. Links are made on Unix
	// only; elsewhere the files are copied.
	LinkSealed bool
}

// Snapshot copies the store into dest, a directory that must not exist or
// be empty (a symbolic link is refused), while writes go on. The copy is
// consistent: opening it shows exactly the events published when the
// snapshot point was taken (a fence open then stays open in the copy, so
// its writes are hidden there), with hidden ranges and durable cursor
// positions (one committed past the snapshot point, while the copy was
// being made, is copied as the point). Files are synced before Snapshot returns. The snapshot point
// is taken through the writer (after everything queued before the call);
// the copy happens on the calling goroutine. If it fails, what it copied
// is removed (dest is left as it was, empty or missing), so it can be
// retried into the same dest.
func (s *Store) Snapshot(ctx context.Context, dest string) (SnapshotReport, error) {
	return s.SnapshotWithOptions(ctx, dest, SnapshotOptions{})
}

// SnapshotWithOptions is Snapshot adjusted by opts (SnapshotOptions.NoSync
// for a copy that need not be durable).
func (s *Store) SnapshotWithOptions(ctx context.Context, dest string, opts SnapshotOptions) (SnapshotReport, error) {
	if s.readOnly {
		return SnapshotReport{Dest: dest}, ErrReadOnly
	}
	if opts.LinkSealed && s.cfg.Replicator == nil {
		return SnapshotReport{Dest: dest}, ErrSnapshotLinks
	}
	if err := checkSnapshotDest(s.fs, dest); err != nil {
		return SnapshotReport{Dest: dest}, err
	}
	_, statErr := s.fs.Lstat(dest)
	rep, err := s.snapshot(ctx, dest, !opts.NoSync, opts.LinkSealed)
	if err != nil {
		// dest was empty or missing: leave it so, and the call retryable
		// (a full disk, a cancelled context).
		removeContents(s.fs, dest)
		if statErr != nil {
			_ = s.fs.Remove(dest)
		}
	}
	return rep, err
}

// removeContents removes everything under dir, best effort.
func removeContents(fsys vfs.FS, dir string) {
	ents, _ := fsys.ReadDir(dir)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if e.IsDir() {
			removeContents(fsys, p)
		}
		_ = fsys.Remove(p)
	}
}

func (s *Store) snapshot(ctx context.Context, dest string, sync, link bool) (SnapshotReport, error) {
	start := time.Now()
	rep := SnapshotReport{Dest: dest}
	// Held from before the snapshot point: a compaction or redaction
	// between the point and the copy would put other bytes, or files with
	// other names and contents, under the copy.
	s.rewriteMu.RLock()
	defer s.rewriteMu.RUnlock()
	pt := &snapPoint{}
	t, err := s.enqueue(&request{op: opSnapshot, t: newTicket(), snap: pt})
	if err != nil {
		return rep, err
	}
	if _, err := t.Wait(ctx); err != nil {
		return rep, err
	}
	mkdir := segment.MkdirDurable
	if !sync {
		mkdir = func(fsys vfs.FS, dir string) error { return fsys.MkdirAll(dir, 0o755) }
	}
	if err := mkdir(s.fs, dest); err != nil {
		return rep, fmt.Errorf("batpak: snapshot: %w", err)
	}
	ids, err := listSegments(s.fs, s.cfg.Dir)
	if err != nil {
		return rep, err
	}
	for _, id := range ids {
		if format.SegID(id) > format.SegID(pt.seg) {
			break // created after the snapshot point
		}
		limit := int64(-1)
		if id == pt.seg {
			limit = pt.end
		}
		src, dst := filepath.Join(s.cfg.Dir, format.SegmentName(id)), filepath.Join(dest, format.SegmentName(id))
		var n int64
		if link && limit < 0 { // sealed
			n, err = linkFile(s.fs, src, dst, sync)
		} else {
			n, err = copyFile(s.fs, src, dst, limit, sync)
		}
		if err != nil {
			return rep, fmt.Errorf("batpak: snapshot segment %d: %w", id, err)
		}
		rep.Segments++
		rep.Bytes += n
		// The segment's footer, when it covers no more than was copied:
		// the copy then opens without reading its frames. Judged on the
		// copy, which a footer renamed into place meanwhile cannot change.
		footer := filepath.Join(dest, footerName(id))
		if _, err := copyOrLink(s.fs, filepath.Join(s.cfg.Dir, footerName(id)), footer, sync, link); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return rep, fmt.Errorf("batpak: snapshot footer of segment %d: %w", id, err)
		}
		if end, ok := footerEnd(s.fs, dest, id); !ok || limit >= 0 && end > limit {
			if err := s.fs.Remove(footer); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return rep, fmt.Errorf("batpak: snapshot footer of segment %d: %w", id, err)
			}
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}
	// The index checkpoint of the last Close, if no compaction has
	// invalidated it since: it covers a prefix of what was copied, so the
	// copy opens by loading it and reading only the log after it (Open
	// checks it against the copied segments and ignores it if it does not
	// fit).
	if _, err := copyOrLink(s.fs, filepath.Join(s.cfg.Dir, format.CheckpointName), filepath.Join(dest, format.CheckpointName), sync, link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return rep, fmt.Errorf("batpak: snapshot checkpoint: %w", err)
	}
	if _, err := s.fs.Stat(filepath.Join(s.cfg.Dir, erasureFile)); err == nil {
		if _, err := copyFile(s.fs, filepath.Join(s.cfg.Dir, erasureFile), filepath.Join(dest, erasureFile), -1, sync); err != nil {
			return rep, fmt.Errorf("batpak: snapshot erasure epoch: %w", err)
		}
	}
	if err := copyCursors(s.fs, s.cfg.Dir, dest, pt.events, sync); err != nil {
		return rep, fmt.Errorf("batpak: snapshot cursors: %w", err)
	}
	if sync {
		if err := segment.SyncDir(s.fs, dest); err != nil {
			return rep, err
		}
	}
	rep.GlobalSequence = pt.events
	rep.Elapsed = time.Since(start)
	return rep, nil
}

func checkSnapshotDest(fsys vfs.FS, dest string) error {
	fi, err := fsys.Lstat(dest)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("%w: %s: %v", ErrSnapshotDest, dest, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%w: %s is a symbolic link", ErrSnapshotDest, dest)
	case !fi.IsDir():
		return fmt.Errorf("%w: %s exists and is not a directory", ErrSnapshotDest, dest)
	}
	ents, err := fsys.ReadDir(dest)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrSnapshotDest, dest, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("%w: %s is not empty", ErrSnapshotDest, dest)
	}
	return nil
}

// copyFile copies src to dst (at most limit bytes when limit >= 0) and,
// when sync is set, syncs dst. The kernel does the copying where it can
// (copy_file_range).
// copyOrLink is linkFile when link is set, else copyFile of all of src.
func copyOrLink(fsys vfs.FS, src, dst string, sync, link bool) (int64, error) {
	if link {
		return linkFile(fsys, src, dst, sync)
	}
	return copyFile(fsys, src, dst, -1, sync)
}

// linkFile makes dst a hard link to src (synced, when sync is set, so
// that the data it shares is durable) and returns its size; where the
// link cannot be made (another file system, none with links) it copies
// src instead.
func linkFile(fsys vfs.FS, src, dst string, sync bool) (int64, error) {
	if err := vfs.Link(fsys, src, dst); err != nil {
		return copyFile(fsys, src, dst, -1, sync)
	}
	if !sync {
		fi, err := fsys.Stat(dst)
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	f, err := fsys.Open(dst) // links are made on Unix only, where a reader may fsync
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func copyFile(fsys vfs.FS, src, dst string, limit int64, sync bool) (int64, error) {
	in, err := fsys.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := fsys.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	var r io.Reader = in
	if limit >= 0 {
		r = io.LimitReader(in, limit)
	}
	n, err := io.Copy(out, r)
	if err == nil && sync {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// copyCursors copies the durable cursor positions of the store in src to
// dst (synced when sync is set). A position is copied as at most limit (the snapshot point): a
// consumer that committed past the point after it was taken must not skip,
// in the copy, the events the copy will get there.
func copyCursors(fsys vfs.FS, src, dst string, limit uint64, sync bool) error {
	if fi, err := fsys.Lstat(filepath.Join(src, cursorDir)); err == nil && !fi.IsDir() {
		// A link (or not a directory): no file of the store; what it
		// points at is not copied into the snapshot.
		return &CorruptionError{File: filepath.Join(src, cursorDir), Reason: fmt.Sprintf("the cursors directory is not a directory (%s): move it aside", fi.Mode().Type())}
	}
	ents, err := fsys.ReadDir(filepath.Join(src, cursorDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".pos")
		if e.IsDir() || !ok || !cursorNameRE.MatchString(name) {
			continue
		}
		pos, err := loadCursor(fsys, src, name)
		if err != nil {
			// Damaged: copied as it is (the copy reports it as the source
			// does) when it is a file of the store's own, at most a small
			// file's size; a link or anything but a regular file is not
			// followed: the copy has no such position (it starts again).
			if fi, lerr := fsys.Lstat(cursorPath(src, name)); lerr != nil || !fi.Mode().IsRegular() {
				continue
			}
			if err := fsys.MkdirAll(filepath.Join(dst, cursorDir), 0o755); err != nil {
				return err
			}
			if _, err := copyFile(fsys, cursorPath(src, name), cursorPath(dst, name), smallFileMax, sync); err != nil {
				return err
			}
			continue
		}
		if err := saveCursorSynced(fsys, dst, name, min(pos, limit), sync); err != nil {
			return err
		}
	}
	if _, err := fsys.Stat(filepath.Join(dst, cursorDir)); err == nil && sync {
		return segment.SyncDir(fsys, filepath.Join(dst, cursorDir))
	}
	return nil
}

// CopyFiles copies the files of the store in directory dir into dest, a
// new directory (its parents are created): every subdirectory and regular
// file but the writer's lock file and temporary files (".tmp"), neither of
// which a store opened on the copy needs. A file removed while the copy
// runs is skipped. It only reads dir: use it on a closed store, or for a
// copy that needs no consistency with a running writer (Store.Snapshot
// copies an open store consistently). The copy is not synced. Errors: dest
// exists, or an I/O error (dest may then hold part of the copy).
func CopyFiles(dir, dest string) error { return copyFiles(dir, dest, nil) }

// CopyFilesLinked is CopyFiles for the directory of a closed store that
// is only ever reopened with Config.Replicator, so never redacted (see
// SnapshotOptions.LinkSealed): every segment but the newest, every
// segment's footer and the index checkpoint are hard-linked into dest
// where the file system allows (copied where it does not), the rest is
// copied. The newest segment is copied: a reopened store appends to it.
// The store's other files are only ever replaced whole, so the copy stays
// the store as it was while the store is reopened and written to (Redact
// rewrites a sealed segment whose file is shared into a new file, should
// either side be redacted). Links are made on Unix only.
func CopyFilesLinked(dir, dest string) error {
	ids, err := listSegments(vfs.Default(), dir)
	if err != nil {
		return err
	}
	linked := map[string]bool{format.CheckpointName: true}
	for i, id := range ids {
		if i < len(ids)-1 {
			linked[format.SegmentName(id)] = true
		}
		linked[footerName(id)] = true
	}
	return copyFiles(dir, dest, linked)
}

// copyFiles copies dir's files into dest, hard-linking those whose names
// linked holds (directly under dir) where the file system allows.
func copyFiles(dir, dest string, linked map[string]bool) error {
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("batpak: copying a store: %s exists", dest)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path != dir {
				return nil // removed since listed (a writer's compaction)
			}
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dest, rel)
		switch {
		case d.IsDir():
			return os.Mkdir(to, 0o755)
		case !d.Type().IsRegular(), rel == segment.LockFileName, strings.HasSuffix(d.Name(), tmpSuffix):
			return nil
		}
		if linked[rel] && os.Link(path, to) == nil {
			return nil
		}
		in, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
