package core

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/index"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// Cursor delivers every visible event of a region exactly once, in global
// order: Poll returns the next events after the cursor's position and
// moves it; it never skips and never repeats. Later appends appear on a
// later Poll. A fence's events appear once it commits (never, if it is
// cancelled). A named cursor (NamedCursor) keeps a committed position in
// the store directory: Commit persists the position reached, and a cursor
// opened again with the same name — in this process or after a restart —
// resumes there. A Cursor is safe for concurrent use.
type Cursor struct {
	s      *Store
	region Region
	name   string

	mu        sync.Mutex
	pos       uint64 // next global sequence to examine
	committed uint64
	examine   int    // bound on the index entries one PollBytes examines (0: none)
	examined  uint64 // index entries PollBytes examined in all
}

// Cursor returns an in-memory cursor over r starting at the first event.
func (s *Store) Cursor(r Region) *Cursor { return &Cursor{s: s, region: r} }

// cursorNameRE bounds cursor names to what is safe as a file name.
var cursorNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// NamedCursor returns the durable cursor called name over r, positioned
// at its last committed position (the first event if it has none). The
// name identifies the consumer; the region is not stored, so reopen a name
// with the same region.
func (s *Store) NamedCursor(name string, r Region) (*Cursor, error) {
	if !cursorNameRE.MatchString(name) {
		return nil, fmt.Errorf("%w: %q (want 1..128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", ErrInvalidCursorName, name)
	}
	pos, err := loadCursor(s.fs, s.cfg.Dir, name)
	if err != nil {
		return nil, err
	}
	if err := s.checkCursorPos(name, pos); err != nil {
		return nil, err
	}
	return &Cursor{s: s, region: r, name: name, pos: pos, committed: pos}, nil
}

// Poll returns up to max of the next visible events in the region and
// moves the position past them. It returns no events (and no error) when
// there is nothing new.
func (c *Cursor) Poll(max int) ([]StoredEvent, error) {
	if err := c.s.checkReadable(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.s.checkCursorPos(c.name, c.pos); err != nil {
		return nil, err
	}
	var next uint64
	evs, err := c.s.readRetry(func() []index.Loc {
		var locs []index.Loc
		locs, next = c.s.ix.PlanFrom(c.region.filter(), c.pos, max)
		return locs
	})
	if err != nil {
		return nil, err
	}
	c.pos = next
	return evs, nil
}

// PollBytes is Poll bounded in bytes as well: it stops before the event
// that would take the bytes returned past maxBytes, each event counting
// its payload, entity, scope and idempotency key and 160 bytes besides
// (it returns at least one event when there is one), so a reader of large
// events, or of small ones with long names, holds about maxBytes, not max
// of them. more reports that it
// stopped at that bound with events of the region left to read. The
// position moves past the events returned only. maxBytes <= 0: no bound
// (Poll).
func (c *Cursor) PollBytes(max, maxBytes int) (evs []StoredEvent, more bool, err error) {
	if err := c.s.checkReadable(); err != nil {
		return nil, false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.s.checkCursorPos(c.name, c.pos); err != nil {
		return nil, false, err
	}
	var next uint64
	var planned int
	var cut bool
	evs, err = c.s.readRetryBytes(func() []index.Loc {
		var locs []index.Loc
		var examined int
		locs, next, examined, cut = c.s.ix.PlanFromWithin(c.region.filter(), c.pos, max, c.examine)
		c.examined += uint64(examined)
		planned = len(locs)
		return locs
	}, maxBytes)
	if err != nil {
		return nil, false, err
	}
	if len(evs) < planned {
		next, more = evs[len(evs)-1].GlobalSequence+1, true
	}
	c.pos = next
	return evs, more || cut, nil
}

// ExamineAtMost bounds the index entries each later PollBytes examines
// to n (n <= 0: no bound, the default): the posting-list entries,
// entities' sequences or log entries it decides, matching or not. A poll
// that reaches the bound returns the events it found, perhaps none, with
// more true, and moves the position past what it examined: the region's
// events from there on are not read yet, not absent. What one poll holds
// the index's lock for, and its CPU, are so bounded whatever the region
// (a category alone, which no index list narrows, walks the log); a
// server bounds a request's work with it (Examined). Poll is not bounded.
func (c *Cursor) ExamineAtMost(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.examine = max(n, 0)
}

// Examined is how many index entries the cursor's PollBytes calls have
// examined in all (see ExamineAtMost).
func (c *Cursor) Examined() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.examined
}

// pending reports whether the region holds events past the position,
// from the index alone (no segment is read): a Poll that would find none
// needs no turn. Finding none, it moves the position past what it
// examined, as that Poll would.
func (c *Cursor) pending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.ix.RLock()
	n := uint64(c.s.ix.Len())
	c.s.ix.RUnlock()
	if n <= c.pos {
		return false
	}
	locs, next := c.s.ix.PlanFrom(c.region.filter(), c.pos, 1)
	if len(locs) == 0 {
		c.pos = next
		return false
	}
	return true
}

// Seek moves the position to pos, the global sequence the next Poll
// starts from (events before it are skipped). A position past the end of
// the log (Stats().GlobalSequence) makes Poll fail with a *CursorAheadError
// on a writable store: check it first. It does not change Committed:
// Commit after Seek commits pos. A server resuming a client's stream from
// the sequence the client last saw uses it.
func (c *Cursor) Seek(pos uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pos = pos
}

// Position is the global sequence the next Poll starts from.
func (c *Cursor) Position() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pos
}

// Committed is the last committed position (for a named cursor, what a
// restart resumes from).
func (c *Cursor) Committed() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.committed
}

// Commit records the current position as processed. For a named cursor it
// is written to the store directory (temp file, fsync, rename) before
// Commit returns (ErrClosed once the store is closing); for an unnamed one
// it only moves Committed. On a store whose Replicator is also a
// CursorReplicator, a named cursor's position is handed to it instead and
// Commit returns once the replicated log has committed it and applied it
// to this replica (its errors are the Replicator's, e.g. the replica is
// not the one taking writes); a position past the end of the log is
// refused with a *CursorAheadError before that. A committed position is never durable before
// the events it covers: when they are not yet on stable storage (a sync
// setting other than EveryNEvents = 1), Commit syncs the log first, as
// Store.Sync does.
func (c *Cursor) Commit() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commitLocked(c.pos, c.pos)
}

// commitAfter is Commit for a worker: a named cursor's position becomes
// durable only after the log is on stable storage up to end as well (the
// log's end when the handler returned, its own writes within it).
func (c *Cursor) commitAfter(end uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commitLocked(c.pos, max(c.pos, end))
}

// commitLocked commits pos; a named cursor's file is written once the
// log is durable up to syncTo (at least pos).
func (c *Cursor) commitLocked(pos, syncTo uint64) error {
	if c.name != "" && pos != c.committed {
		if c.s.readOnly {
			return ErrReadOnly
		}
		if cr, ok := c.s.cfg.Replicator.(CursorReplicator); ok {
			// Replicated: every replica writes the position when the
			// replicated log applies it (CommitReplicatedCursor).
			if c.s.shut.Load() {
				return ErrClosed
			}
			if err := c.s.checkCursorPos(c.name, pos); err != nil {
				return err
			}
			if err := cr.ReplicateCursor(c.name, pos); err != nil {
				return err
			}
			c.committed = pos
			return nil
		}
		if err := c.s.syncedTo(syncTo); err != nil {
			return err
		}
		// Like any write, none once Close has begun: the directory may
		// belong to another process by then.
		c.s.closeMu.RLock()
		defer c.s.closeMu.RUnlock()
		if c.s.closed {
			return ErrClosed
		}
		if err := saveCursor(c.s.fs, c.s.cfg.Dir, c.name, pos); err != nil {
			return err
		}
	}
	c.committed = pos
	return nil
}

// CommitReplicatedCursor is how a replicated log's state machine applies
// a committed named-cursor position to this replica (see
// CursorReplicator): it writes the position as Commit does on a store
// without a Replicator (the log synced first when it is not yet stable,
// then temp file, fsync, rename; neither sync when the Replicator is a
// VolatileReplica), without handing it to the Replicator again. Open cursors of the name keep their own position; NamedCursor
// opened afterwards starts at pos. Errors: ErrNotReplicated on a store
// without a Replicator; ErrReadOnly; ErrInvalidCursorName; a
// *CursorAheadError when pos is past the end of this replica's log
// (GlobalSequence); ErrClosed once the store is closing.
func (s *Store) CommitReplicatedCursor(name string, pos uint64) error {
	if s.cfg.Replicator == nil {
		return ErrNotReplicated
	}
	if s.readOnly {
		return ErrReadOnly
	}
	if !cursorNameRE.MatchString(name) {
		return fmt.Errorf("%w: %q (want 1..128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", ErrInvalidCursorName, name)
	}
	if err := s.checkCursorPos(name, pos); err != nil {
		return err
	}
	volatile := s.volatileReplica()
	if !volatile {
		if err := s.syncedTo(pos); err != nil {
			return err
		}
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return saveCursorSynced(s.fs, s.cfg.Dir, name, pos, !volatile)
}

// ResetCursor commits position 0 for the named cursor, whatever its saved
// position is — damaged (NamedCursor fails with a *CorruptionError), past
// the end of the log (*CursorAheadError), or sound — so that NamedCursor
// opens it at the log's beginning again. It is how a consumer whose
// position is lost starts afresh (it is delivered every event again).
// Durable and replicated as Commit is; errors as Commit's, and
// ErrInvalidCursorName. A position file that is not a regular file is
// replaced, never written through: a symbolic link, pipe or socket by the
// new file's rename (the link itself goes, not what it names), an empty
// directory removed first; a directory with anything in it is left, with
// an error saying to move it aside.
func (s *Store) ResetCursor(name string) error {
	if !cursorNameRE.MatchString(name) {
		return fmt.Errorf("%w: %q (want 1..128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", ErrInvalidCursorName, name)
	}

	// committed cannot be 0's equal: the commit is always written.
	c := &Cursor{s: s, name: name, committed: math.MaxUint64}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commitLocked(0, 0)
}

// CursorPositions returns the committed position of every named cursor
// in the store directory, by name (empty when there is none). A damaged
// position file fails it with a *CorruptionError naming the file.
func (s *Store) CursorPositions() (map[string]uint64, error) {
	out := map[string]uint64{}
	ents, err := s.fs.ReadDir(filepath.Join(s.cfg.Dir, cursorDir))
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("batpak: list cursors: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".pos")
		if e.IsDir() || !ok || !cursorNameRE.MatchString(name) {
			continue
		}
		pos, err := loadCursor(s.fs, s.cfg.Dir, name)
		if err != nil {
			return nil, err
		}
		out[name] = pos
	}
	return out, nil
}

// Rewind moves the position back to the last committed one, so the events
// after it are delivered again (what a restarted consumer needs).
func (c *Cursor) Rewind() {
	c.mu.Lock()
	c.pos = c.committed
	c.mu.Unlock()
}

const cursorDir = "cursors"

// syncedTo makes sure the first pos sequences are on stable storage,
// syncing the log when they may not be (cheap when they are).
func (s *Store) syncedTo(pos uint64) error {
	if s.w == nil || s.w.durable.Load() >= pos {
		return nil
	}
	return s.Sync(context.Background())
}

// checkCursorPos fails with a *CursorAheadError when a cursor position is
// past the end of the log (a writable store's log only grows, so that is
// damage, never a reason to skip). A read-only store shows the log as it
// was when it opened, so a writer's later commits may be ahead of it: it
// does not check.
func (s *Store) checkCursorPos(name string, pos uint64) error {
	if s.readOnly {
		return nil
	}
	if end := uint64(s.ix.Published()); pos > end {
		return &CursorAheadError{Name: name, Position: pos, LogEnd: end}
	}
	return nil
}

// A cursor file: "BPCURSR1" | position u64 | CRC32C of the first 16 bytes.
func cursorPath(dir, name string) string { return filepath.Join(dir, cursorDir, name+".pos") }

// loadCursor reads a cursor's committed position (0 when it has none). A
// position file that is not one of the store's own files — a symbolic
// link (read through, it would be another file's bytes, or a dangling
// link's 0), a directory, a pipe — or that fails its checks is a
// *CorruptionError, which ResetCursor replaces; so is a cursors directory
// that is itself a link (or not a directory), which ResetCursor refuses
// to write through.
func loadCursor(fsys vfs.FS, dir, name string) (uint64, error) {
	if fi, err := fsys.Lstat(filepath.Join(dir, cursorDir)); err == nil && !fi.IsDir() {
		return 0, &CorruptionError{File: filepath.Join(dir, cursorDir), Reason: fmt.Sprintf("the cursors directory is not a directory (%s): move it aside", fi.Mode().Type())}
	}
	if fi, err := fsys.Lstat(cursorPath(dir, name)); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return 0, &CorruptionError{File: cursorPath(dir, name), Reason: "the cursor's position is a symbolic link, not a file of the store"}
	}
	b, err := vfs.ReadFileAtMost(fsys, cursorPath(dir, name), smallFileMax)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	var tl *vfs.TooLargeError
	if errors.As(err, &tl) {
		return 0, &CorruptionError{File: cursorPath(dir, name), Reason: fmt.Sprintf("cursor position file is damaged: %d bytes, a position is 20", tl.Size)}
	}
	if notAFile(err) {
		return 0, &CorruptionError{File: cursorPath(dir, name), Reason: "the cursor's position is " + notAFileWhat(err)}
	}
	if err != nil {
		return 0, fmt.Errorf("batpak: read cursor %q: %w", name, err)
	}
	if len(b) != 20 || string(b[:8]) != "BPCURSR1" || le.Uint32(b[16:]) != format.CRC32C(b[:16]) {
		return 0, &CorruptionError{File: cursorPath(dir, name), Reason: "cursor position file is damaged"}
	}
	return le.Uint64(b[8:]), nil
}

func saveCursor(fsys vfs.FS, dir, name string, pos uint64) error {
	return saveCursorSynced(fsys, dir, name, pos, true)
}

// saveCursorSynced writes a cursor file atomically (temp file, rename),
// synced first when sync is set. The rename replaces whatever is at the
// path without following it (a symbolic link goes, not what it names); a
// directory there is removed first when empty, and otherwise left, with an
// error saying to move it aside.
func saveCursorSynced(fsys vfs.FS, dir, name string, pos uint64, sync bool) error {
	path := cursorPath(dir, name)
	// The cursors directory is the store's own: one that is a symbolic
	// link (or not a directory) would have the position written, and a
	// file replaced, wherever it points.
	if fi, err := fsys.Lstat(filepath.Join(dir, cursorDir)); err == nil && !fi.IsDir() {
		return &CorruptionError{File: filepath.Join(dir, cursorDir), Reason: fmt.Sprintf("the cursors directory is not a directory (%s): move it aside", fi.Mode().Type())}
	}
	if fi, err := fsys.Lstat(path); err == nil && fi.IsDir() {
		if err := fsys.Remove(path); err != nil {
			return fmt.Errorf("batpak: commit cursor %q: its position %s is a directory with files in it: move it aside: %w", name, path, err)
		}
	}
	b := make([]byte, 20)
	copy(b, "BPCURSR1")
	le.PutUint64(b[8:], pos)
	le.PutUint32(b[16:], format.CRC32C(b[:16]))
	if err := segment.WriteFileAtomic(fsys, filepath.Join(dir, cursorDir), name+".pos", b, sync); err != nil {
		return fmt.Errorf("batpak: commit cursor %q: %w", name, err)
	}
	return nil
}
