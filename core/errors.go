package core

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/ijson"
)

// Every error a Store returns either is one of the sentinels below or
// wraps one, so callers can branch with errors.Is; errors that carry data
// are typed (*CoordinateError, *ConflictError, *CorruptionError, …), and
// each matches its sentinel through errors.Is too (an Is method). They are
// grouped by where they come from: opening and checking a store, writes,
// batches and fences, reads and followers, maintenance.

// ---- Opening, recovery and Verify ----

var (
	// ErrClosed: the store was closed; nothing was written.
	ErrClosed = errors.New("batpak: store is closed")
	// ErrReadOnly: the store was opened with OpenReadOnly; nothing was written.
	ErrReadOnly = errors.New("batpak: store is read-only")
	// ErrReplicated: the operation rewrites or hides the log locally (a
	// fence, Redact, EraseEntity, Compact) and the store's writes belong to
	// a Replicator; nothing was done.
	ErrReplicated = errors.New("batpak: not supported on a replicated store")
	// ErrNotReplicated: SubmitReplicated on a store without a Replicator;
	// nothing was written.
	ErrNotReplicated = errors.New("batpak: the store has no Replicator")
	// ErrLocked: another process holds the store's writer lock; see LockedError.
	ErrLocked = errors.New("batpak: store is locked by another process")
	// ErrInvalidConfig: a Config field is out of its documented range.
	ErrInvalidConfig = errors.New("batpak: invalid config")
	// ErrCorrupt: a segment holds bytes that fail their checks; see CorruptionError.
	ErrCorrupt = errors.New("batpak: corrupt segment")
	// ErrChainBroken: Verify found a hash-chain link that does not hold; see ChainError.
	ErrChainBroken = errors.New("batpak: hash chain broken")
)

// LockedError is returned by Open when another process holds the store lock.
type LockedError struct {
	Dir string
	PID int // 0 when the holder's pid could not be read
}

func (e *LockedError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("batpak: store %s is locked by pid %d", e.Dir, e.PID)
	}
	return fmt.Sprintf("batpak: store %s is locked by another process", e.Dir)
}

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// ConfigError names a Config field that is out of its documented range.
type ConfigError struct {
	Field string // Go field name, e.g. "Sync.EveryNEvents"
	Value any
	Want  string // the allowed range
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("batpak: invalid config: %s = %v, want %s", e.Field, e.Value, e.Want)
}

// Is reports ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// CorruptionError names the file and byte offset of bytes that failed a check.
type CorruptionError struct {
	File   string
	Offset int64
	Reason string
	// live: what a reader beside a live writer can see while files change
	// under it (two generations of a segment mid-compaction, a frame half
	// written at the tail); a read-only store reads again before reporting it.
	live bool
}

func (e *CorruptionError) Error() string {
	if !strings.HasSuffix(e.File, format.SegmentSuffix) && !strings.HasSuffix(e.File, format.FooterSuffix) {
		// A store's other records (a cursor's position, the erasure
		// epoch, the compaction journal) are not segments.
		return fmt.Sprintf("batpak: damaged file %s: %s", e.File, e.Reason)
	}
	return fmt.Sprintf("batpak: corrupt segment %s at offset %d: %s", e.File, e.Offset, e.Reason)
}

func (e *CorruptionError) Is(target error) bool { return target == ErrCorrupt }

// ChainError is the first broken hash-chain link Verify found.
type ChainError struct {
	Segment string // segment file name
	Offset  int64  // byte offset of the event's frame in that file
	ID      EventID
	Entity  string
	Reason  string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("batpak: hash chain broken at %s offset %d (event %s, entity %q): %s", e.Segment, e.Offset, e.ID, e.Entity, e.Reason)
}

func (e *ChainError) Is(target error) bool { return target == ErrChainBroken }

// ErrLogTruncated is matched by a *LogTruncatedError.
var ErrLogTruncated = errors.New("batpak: the log is shorter than the store recorded")

// LogTruncatedError is returned by Open when the segment files hold fewer
// sequences than the store durably recorded (in its checkpoint, a segment
// footer or a named cursor position): acknowledged events are missing.
// Nothing was changed on disk. Open with Config.Salvage to continue past
// the loss (recorded as a KindLogSalvaged event).
type LogTruncatedError struct {
	Dir      string
	Recorded uint64 // sequences the store recorded durably (the next sequence it would have given)
	Found    uint64 // sequences the segment files hold
	Evidence string // which file recorded Recorded
}

func (e *LogTruncatedError) Error() string {
	return fmt.Sprintf("batpak: the log of %s ends at sequence %d but %s records %d: %d acknowledged events are missing (Config.Salvage opens it anyway and records the loss)",
		e.Dir, e.Found, e.Evidence, e.Recorded, e.Recorded-e.Found)
}

// Is reports ErrLogTruncated.
func (e *LogTruncatedError) Is(target error) bool { return target == ErrLogTruncated }

// ---- Writes ----

var (
	// ErrInvalidCoordinate: an entity or scope is empty, too long, not UTF-8 or holds NUL.
	ErrInvalidCoordinate = errors.New("batpak: invalid coordinate")
	// ErrInvalidKind: a kind uses a reserved category or a type above 0xFFF.
	ErrInvalidKind = errors.New("batpak: invalid event kind")
	// ErrInvalidPayload: the payload is not a single valid JSON value, is
	// nested deeper than Config.MaxJSONDepth or repeats a member name in an
	// object; see PayloadError.
	ErrInvalidPayload = errors.New("batpak: payload is not valid JSON")
	// ErrPayloadTooLarge: the payload is larger than Config.SingleAppendMaxBytes.
	ErrPayloadTooLarge = errors.New("batpak: payload too large")
	// ErrInvalidOptions: an AppendOptions field is out of range (for example an over-long idempotency key).
	ErrInvalidOptions = errors.New("batpak: invalid append options")
	// ErrConflict: a compare-and-set expectation did not hold; see ConflictError.
	ErrConflict = errors.New("batpak: expected clock conflict")
	// ErrIdempotencyMismatch: an idempotency key was reused for a different
	// event (other coordinate, kind or payload); see IdempotencyError.
	ErrIdempotencyMismatch = errors.New("batpak: idempotency key reused for a different event")
	// ErrStoreFull: the store reached its limit of 2^32-1 events.
	ErrStoreFull = errors.New("batpak: store holds the maximum number of events")
	// ErrWriterStopped: an earlier write or sync failed (the disk full, an
	// I/O error), so the writer stopped rather than guess what reached the
	// disk; this write was not made. It comes wrapped with that first
	// failure (errors.Is finds the cause too: syscall.ENOSPC, say). What
	// was acknowledged before is kept. Close the store and Open it again,
	// once the cause is fixed, to write on; reads go on meanwhile.
	// Store.Stopped reports it without writing.
	ErrWriterStopped = errors.New("the writer stopped; reopen the store")
)

// CoordinateError names the part of a coordinate that was refused.
type CoordinateError struct {
	Part   string // "entity" or "scope"
	Value  string // the refused value, truncated to 64 bytes
	Reason string
}

func (e *CoordinateError) Error() string {
	return fmt.Sprintf("batpak: invalid coordinate: %s %q: %s", e.Part, e.Value, e.Reason)
}

func (e *CoordinateError) Is(target error) bool { return target == ErrInvalidCoordinate }

// KindError says why a category/type pair is not a usable kind.
type KindError struct {
	Category uint16
	Type     uint16
	Reason   string
}

func (e *KindError) Error() string {
	return fmt.Sprintf("batpak: invalid event kind %#x:%#x: %s", e.Category, e.Type, e.Reason)
}

func (e *KindError) Is(target error) bool { return target == ErrInvalidKind }

// PayloadError says why a payload was refused (nothing written): Rule is
// "syntax" (not one RFC 8259 JSON value), "utf8" (a string that is not
// UTF-8), "depth" (nested deeper than Limit, Config.MaxJSONDepth) or
// "duplicate-key" (an object repeats the member name Key, compared with
// escapes decoded: I-JSON, RFC 7493). Offset is the byte where the
// payload was refused.
type PayloadError struct {
	Offset int
	Rule   string
	Limit  int
	Key    string
	Reason string
}

func (e *PayloadError) Error() string {
	if e.Rule == ijson.RuleDepth {
		return fmt.Sprintf("batpak: payload is not valid JSON: at byte %d: %s (Config.MaxJSONDepth)", e.Offset, e.Reason)
	}
	return fmt.Sprintf("batpak: payload is not valid JSON: at byte %d: %s", e.Offset, e.Reason)
}

func (e *PayloadError) Is(target error) bool { return target == ErrInvalidPayload }

// ConflictError is returned when AppendOptions.ExpectedClock does not hold.
// Expected is what the caller asked for; Actual is the entity's state when the
// writer checked it (ExpectNoEvents() when the entity has no events).
type ConflictError struct {
	Entity   string
	Expected Expectation
	Actual   Expectation
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("batpak: expected clock conflict on %q: expected %s, actual %s", e.Entity, e.Expected, e.Actual)
}

func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// IdempotencyError is returned when a write repeats an idempotency key the
// store already holds but is not the same event: a different coordinate,
// kind or payload. Nothing is written. A true retry (same coordinate, kind
// and payload bytes) gets the original receipt instead.
type IdempotencyError struct {
	Key      string
	Original EventID // the event the key belongs to
	Reason   string
}

func (e *IdempotencyError) Error() string {
	return fmt.Sprintf("batpak: idempotency key %q already names event %s: %s", e.Key, e.Original, e.Reason)
}

func (e *IdempotencyError) Is(target error) bool { return target == ErrIdempotencyMismatch }

// ErrRetry is matched by a *RetryError: TrySubmit refused the write because
// the writer mailbox is under pressure. Nothing was written; try again.
var ErrRetry = errors.New("batpak: writer under pressure, retry")

// RetryError is TrySubmit's answer under back-pressure.
type RetryError struct {
	After  time.Duration // suggested wait before retrying
	Reason string
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("batpak: retry after %v: %s", e.After, e.Reason)
}

// Is reports ErrRetry.
func (e *RetryError) Is(target error) bool { return target == ErrRetry }

// ErrNotSystemKind: AppendSystem takes only category 0x0 kinds.
var ErrNotSystemKind = errors.New("batpak: not a system kind")

// ErrDuplicateID: an imported event's id is already in the store with
// other content (a re-import of the same event is skipped instead).
var ErrDuplicateID = errors.New("batpak: an event with this id exists")

// ---- Batches, the outbox and fences ----

// ErrBatchTooLarge: a batch holds more than Config.Batch.MaxSize items or
// more than Config.Batch.MaxBytes of payload.
var ErrBatchTooLarge = errors.New("batpak: batch too large")

// ErrBatchMixedKeys: a batch mixes idempotency keys the store already holds
// with new items: an item with a new key, or one without a key (a retry is
// recognized by its keys alone, so a batch that may be retried needs a key
// on every item). A retry must repeat the whole batch; nothing was written.
var ErrBatchMixedKeys = errors.New("batpak: batch mixes stored and new idempotency keys")

// BatchItemError names the batch item that was refused; nothing of the
// batch was written. It wraps the item's error (a *CoordinateError,
// *ConflictError, …), so errors.Is and errors.As see through it.
type BatchItemError struct {
	Index int
	Err   error
}

func (e *BatchItemError) Error() string {
	return fmt.Sprintf("batpak: batch item %d: %v", e.Index, e.Err)
}

// Unwrap returns the item's error.
func (e *BatchItemError) Unwrap() error { return e.Err }

// ErrOutboxUnderFence: Flush on a fence's outbox would wait for the fence's
// Commit; use SubmitFlush and wait on the ticket after Commit.
var ErrOutboxUnderFence = errors.New("batpak: Flush on a fence's outbox would wait for the fence to commit; use SubmitFlush")

// ErrFenceActive: a visibility fence is open, so ordinary writes are
// refused (write through the fence, or wait for it to end); also returned
// by BeginFence when another fence is open.
var ErrFenceActive = errors.New("batpak: a visibility fence is active")

// ErrFenceCancelled: the fence a write was made under was cancelled (or
// abandoned by Close): the write is on disk but hidden for ever.
var ErrFenceCancelled = errors.New("batpak: visibility fence cancelled")

// ErrFenceEnded: a write or Commit/Cancel on a fence that already ended.
var ErrFenceEnded = errors.New("batpak: visibility fence already committed or cancelled")

// ErrFenceExpired: the fence's deadline passed before it was committed, so
// the store cancelled it (its writes are hidden for ever, as after Cancel).
var ErrFenceExpired = errors.New("batpak: visibility fence expired before it was committed")

// ErrCancelled is matched by a *CancelledError: TrySubmit refused the write
// and retrying soon will not help (a visibility fence is active).
var ErrCancelled = errors.New("batpak: write cancelled")

// CancelledError is TrySubmit's answer while a fence is active. It matches
// ErrCancelled and the cause (ErrFenceActive) with errors.Is.
type CancelledError struct {
	Reason string
	Cause  error
}

func (e *CancelledError) Error() string { return "batpak: write cancelled: " + e.Reason }

// Is reports ErrCancelled.
func (e *CancelledError) Is(target error) bool { return target == ErrCancelled }

// Unwrap returns the cause.
func (e *CancelledError) Unwrap() error { return e.Cause }

// ---- Reads, cursors and workers ----

var (
	// ErrNotFound: no visible event has the requested id.
	ErrNotFound = errors.New("batpak: event not found")
)

// ErrSubscriptionClosed: the subscription, or its store, was closed.
var ErrSubscriptionClosed = errors.New("batpak: subscription closed")

// ErrInvalidCursorName: a cursor name must be 1..128 characters of
// letters, digits, '.', '_' and '-', starting with a letter or digit.
var ErrInvalidCursorName = errors.New("batpak: invalid cursor name")

// ErrCursorAhead is matched by a *CursorAheadError.
var ErrCursorAhead = errors.New("batpak: cursor position is ahead of the log")

// CursorAheadError is returned by NamedCursor (and Poll) when a cursor's
// committed position is past the end of the log: the events it says were
// processed are not there. Nothing is skipped silently.
type CursorAheadError struct {
	Name     string
	Position uint64 // the committed position
	LogEnd   uint64 // the next sequence of the log
}

func (e *CursorAheadError) Error() string {
	return fmt.Sprintf("batpak: cursor %q is committed at %d, past the end of the log (%d)", e.Name, e.Position, e.LogEnd)
}

// Is reports ErrCursorAhead.
func (e *CursorAheadError) Is(target error) bool { return target == ErrCursorAhead }

// ErrHandlerPanic is wrapped by the error a panicking handler is turned into.
var ErrHandlerPanic = errors.New("batpak: handler panicked")

// WorkerError is what Join returns when a worker stopped because its
// handler kept failing.
type WorkerError struct {
	Restarts int
	Err      error // the last failure
}

func (e *WorkerError) Error() string {
	return fmt.Sprintf("batpak: cursor worker stopped after %d restarts: %v", e.Restarts, e.Err)
}

// Unwrap returns the last failure.
func (e *WorkerError) Unwrap() error { return e.Err }

// ---- Maintenance ----

// ErrMaintenanceNotAdmitted: the store's Admission does not implement
// MaintenanceAdmission, so it cannot judge Redact, EraseEntity or Compact,
// which are then refused (the gate fails closed).
var ErrMaintenanceNotAdmitted = errors.New("batpak: the store's Admission cannot judge destructive operations (it does not implement core.MaintenanceAdmission); refused")

// ErrSnapshotDest: the snapshot destination exists and is not an empty
// directory, or is a symbolic link.
var ErrSnapshotDest = errors.New("batpak: snapshot destination refused")

// ErrSnapshotLinks: SnapshotOptions.LinkSealed was asked of a store
// without Config.Replicator, which may Redact and EraseEntity: linked
// copies are for replicated stores, whose sealed segments nothing
// changes.
var ErrSnapshotLinks = errors.New("batpak: snapshot: LinkSealed needs a replicated store (Config.Replicator)")
