package core

import (
	"context"
	"time"

	"github.com/batpak-go/batpak/core/internal/vfs"
)

// Test-only access to the batch fault points (compiled into tests only).

// FaultPoint names a place in the batch write path.
type FaultPoint = faultPoint

// The batch fault points, in the order the writer passes them.
const (
	FaultBatchStart    = faultBatchStart
	FaultAfterBegin    = faultAfterBegin
	FaultAfterItem     = faultAfterItem
	FaultAfterItems    = faultAfterItems
	FaultAfterCommit   = faultAfterCommit
	FaultBeforePublish = faultBeforePublish
)

// SetBatchFault makes the store's writer call fn at every batch fault
// point (item is the item index at FaultAfterItem, else -1); a non-nil
// error fails the batch there. Call it before writing; nil removes the
// hook. It goes through the writer's mailbox, so it is ordered after
// writes already queued.
func SetBatchFault(s *Store, fn func(p FaultPoint, item int) error) {
	_ = s.Sync(context.Background()) // drain what is queued; the writer is idle after
	s.w.faultHook = fn
}

// SetCompactHook makes Compact call fn at each point of its commit:
// "written" (new segments synced under temporary names), "committed"
// (journal synced), "renaming" (first new segment renamed), "switched"
// (index switched), "deleting" (first old segment deleted), "deleted".
// Set it before compacting; nil removes it. It is set under erasureMu,
// which every compaction (the sealer's packing too) holds while it runs.
func SetCompactHook(s *Store, fn func(stage string)) {
	s.erasureMu.Lock()
	s.compactHook = fn
	s.erasureMu.Unlock()
}

// OpenWithFS is Open with every file operation going through fsys.
func OpenWithFS(cfg Config, fsys vfs.FS) (*Store, error) {
	cfg.fs = fsys
	return Open(cfg)
}

// OpenReadOnlyWithFS is OpenReadOnly through fsys.
func OpenReadOnlyWithFS(cfg Config, fsys vfs.FS) (*Store, error) {
	cfg.fs = fsys
	return OpenReadOnly(cfg)
}

// SetActiveFileIdle sets how long a writer idles before it releases the
// active segment's descriptor, for stores opened from now on; the returned
// func restores the previous value.
func SetActiveFileIdle(d time.Duration) (restore func()) {
	old := activeFileIdle.Swap(int64(d))
	return func() { activeFileIdle.Store(old) }
}

// WriteActiveFooter builds and saves the footer of the active segment as
// it is (the sealer's work, done by Close), once the writer is idle.
func WriteActiveFooter(s *Store) error {
	if err := s.Sync(context.Background()); err != nil {
		return err
	}
	s.erasureMu.Lock()
	defer s.erasureMu.Unlock()
	seg, off := s.w.stat()
	return s.writeSegmentFooter(seg, off)
}

// DurableSequence is how many sequences the writer counts as on stable
// storage (what Cursor.Commit compares its position with). Read it while
// the writer is idle (after a Sync or a waited write).
func DurableSequence(s *Store) uint64 { return s.w.durable.Load() }
