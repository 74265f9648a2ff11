package core

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/batpak-go/batpak/core/internal/vfs"
	"github.com/batpak-go/batpak/ijson"
)

// Sentinel errors. Every error a Store returns either is one of these or
// wraps one, so callers can branch with errors.Is; errors that carry data
// are typed (CoordinateError, KindError, ConflictError, CorruptionError,
// ChainError, LockedError) and match their sentinel through errors.Is too.
var (
	// ErrNotFound: no visible event has the requested id.
	ErrNotFound = errors.New("batpak: event not found")
	// ErrClosed: the store was closed; nothing was written.
	ErrClosed = errors.New("batpak: store is closed")
	// ErrReadOnly: the store was opened with OpenReadOnly; nothing was written.
	ErrReadOnly = errors.New("batpak: store is read-only")
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
	// ErrCorrupt: a segment holds bytes that fail their checks; see CorruptionError.
	ErrCorrupt = errors.New("batpak: corrupt segment")
	// ErrChainBroken: Verify found a hash-chain link that does not hold; see ChainError.
	ErrChainBroken = errors.New("batpak: hash chain broken")
	// ErrLocked: another process holds the store's writer lock; see LockedError.
	ErrLocked = errors.New("batpak: store is locked by another process")
	// ErrInvalidConfig: a Config field is out of its documented range.
	ErrInvalidConfig = errors.New("batpak: invalid config")
	// ErrIdempotencyMismatch: an idempotency key was reused for a different
	// event (other coordinate, kind or payload); see IdempotencyError.
	ErrIdempotencyMismatch = errors.New("batpak: idempotency key reused for a different event")
	// ErrStoreFull: the store reached its limit of 2^32-1 events.
	ErrStoreFull = errors.New("batpak: store holds the maximum number of events")
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

// Is reports ErrInvalidCoordinate.
func (e *CoordinateError) Is(target error) bool { return target == ErrInvalidCoordinate }

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

// Is reports ErrInvalidPayload.
func (e *PayloadError) Is(target error) bool { return target == ErrInvalidPayload }

// KindError says why a category/type pair is not a usable kind.
type KindError struct {
	Category uint16
	Type     uint16
	Reason   string
}

func (e *KindError) Error() string {
	return fmt.Sprintf("batpak: invalid event kind %#x:%#x: %s", e.Category, e.Type, e.Reason)
}

// Is reports ErrInvalidKind.
func (e *KindError) Is(target error) bool { return target == ErrInvalidKind }

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

// Is reports ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

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

// segmentFiles names the segment files in dir and says whether a
// compaction journal is there (a compaction is committing): a read-only
// reader compares it before and after a read that failed.
func segmentFiles(fsys vfs.FS, dir string) string {
	ents, _ := fsys.ReadDir(dir)
	var b strings.Builder
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, segmentSuffix) || n == compactJournal {
			b.WriteString(n)
			b.WriteByte('\n')
		}
	}
	if _, err := fsys.Stat(filepath.Join(dir, compactJournal)); err == nil {
		b.WriteString("(journal)") // present at the end too
	}
	return b.String()
}

// readBesideWriter runs read, a read of the whole log by a read-only
// store, and runs it again (up to 8 times, a few milliseconds apart) while
// it fails in a way a live writer explains: files changing under it — a
// frame half written at the tail, segments replaced by a compaction or
// packing (events seen twice or not at all while it commits). Damage
// stays; those pass. It returns read's last error.
func readBesideWriter(fsys vfs.FS, dir string, read func() error) error {
	files := segmentFiles(fsys, dir)
	err := read()
	for try := 1; err != nil && try <= 8; try++ {
		now := segmentFiles(fsys, dir)
		if !liveChange(err) && now == files {
			break
		}
		files = now
		time.Sleep(time.Duration(try) * 2 * time.Millisecond)
		err = read()
	}
	return err
}

// liveChange reports whether err may come from files a live writer was
// changing under a read-only reader (see CorruptionError.live), rather
// than from damage.
func liveChange(err error) bool {
	var ce *CorruptionError
	return errors.Is(err, os.ErrNotExist) || (errors.As(err, &ce) && ce.live)
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("batpak: corrupt segment %s at offset %d: %s", e.File, e.Offset, e.Reason)
}

// Is reports ErrCorrupt.
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

// Is reports ErrChainBroken.
func (e *ChainError) Is(target error) bool { return target == ErrChainBroken }

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

// Is reports ErrLocked.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

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

// Is reports ErrIdempotencyMismatch.
func (e *IdempotencyError) Is(target error) bool { return target == ErrIdempotencyMismatch }
