package core

import (
	"encoding/json"
	"fmt"

	"github.com/batpak-go/batpak/ijson"
	"github.com/google/uuid"
)

// EventID is a 16-byte UUIDv7: time-ordered, unique without coordination.
// The zero value means "none" (for example, no causation: a root cause).
type EventID [16]byte

// NewEventID returns a fresh UUIDv7: the current Unix time in milliseconds
// with a sub-millisecond fraction, then 62 random bits. Ids from one
// process are strictly increasing (bytes and text sort alike), even when
// many are made within one clock step or the wall clock is set back; it is
// safe for concurrent use. It panics only if crypto/rand fails.
func NewEventID() EventID { return eventIDs.next() }

// ParseEventID reads the canonical UUID text form.
func ParseEventID(s string) (EventID, error) {
	u, err := uuid.Parse(s)
	if err != nil {
		return EventID{}, fmt.Errorf("batpak: %q is not an event id: %w", s, err)
	}
	return EventID(u), nil
}

// String renders the canonical UUID text form, e.g. 0190b6c1-....
func (id EventID) String() string { return uuid.UUID(id).String() }

// IsZero reports whether id is the zero ("none") id.
func (id EventID) IsZero() bool { return id == EventID{} }

// MarshalText implements encoding.TextMarshaler (canonical UUID text).
func (id EventID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *EventID) UnmarshalText(b []byte) error {
	v, err := ParseEventID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// Hash is a BLAKE3-256 digest.
type Hash [32]byte

func (h Hash) String() string { return fmt.Sprintf("%x", h[:]) }

// Header is everything the store records about an event besides its
// coordinate and payload.
type Header struct {
	ID            EventID
	CorrelationID EventID // the conversation the event belongs to; defaults to ID
	CausationID   EventID // the event that caused this one; zero for a root cause
	Timestamp     int64   // microseconds since the Unix epoch, never decreasing within an entity
	Clock         uint64  // per-entity sequence: 0, 1, 2, …
	Kind          Kind
	Flags         uint16 // user-defined bits, stored and chained
	PayloadHash   Hash   // BLAKE3 of the payload bytes
	PrevHash      Hash   // Hash of the entity's previous event; zero for its first
	Hash          Hash   // this event's chain hash (covers every field above, coordinate and idempotency key)
}

// StoredEvent is an event as read back from the store.
type StoredEvent struct {
	Coordinate     Coordinate
	Header         Header
	GlobalSequence uint64 // position in the store's total order, from 0
	IdempotencyKey string // empty when the write carried none
	// Payload is the event's JSON; nil when Redacted.
	Payload json.RawMessage
	// Redacted: the payload was erased (Store.Redact, Store.EraseEntity).
	// The header, and the chain through the payload's digest, remain.
	Redacted bool
}

// Receipt acknowledges a write. What it promises about durability depends on
// Config.Sync: see the package documentation's durability table.
type Receipt struct {
	ID             EventID
	CorrelationID  EventID
	GlobalSequence uint64
	Clock          uint64
	Timestamp      int64
	// Deduplicated is true when the write carried an idempotency key the store
	// already held: the receipt is the original write's and nothing new was written.
	Deduplicated bool
}

// Expectation is a compare-and-set precondition on an entity's last clock.
// The zero value expects nothing.
type Expectation struct {
	set     bool
	noEvent bool
	clock   uint64
}

// ExpectNoEvents expects the entity to have no events yet.
func ExpectNoEvents() Expectation { return Expectation{set: true, noEvent: true} }

// ExpectClock expects the entity's last event to have clock c.
func ExpectClock(c uint64) Expectation { return Expectation{set: true, clock: c} }

// IsSet reports whether the expectation constrains anything.
func (e Expectation) IsSet() bool { return e.set }

// NoEvents reports whether the expectation is "the entity has no events".
func (e Expectation) NoEvents() bool { return e.set && e.noEvent }

// Clock returns the expected last clock and true, or 0 and false when the
// expectation is unset or is ExpectNoEvents.
func (e Expectation) Clock() (uint64, bool) { return e.clock, e.set && !e.noEvent }

func (e Expectation) String() string {
	switch {
	case !e.set:
		return "anything"
	case e.noEvent:
		return "no events"
	default:
		return fmt.Sprintf("last clock %d", e.clock)
	}
}

// MaxIdempotencyKeyBytes is the longest idempotency key accepted.
const MaxIdempotencyKeyBytes = 256

// AppendOptions tunes one write. The zero value is an ordinary append.
type AppendOptions struct {
	// ExpectedClock makes the write conditional (compare-and-set): the writer
	// checks it against the entity's published and queued events and fails the
	// write with a *ConflictError when it does not hold.
	ExpectedClock Expectation
	// IdempotencyKey, when non-empty, makes the write idempotent: a later write
	// with the same key, coordinate, kind and payload returns the original
	// receipt (Deduplicated set) and writes nothing, even across Close/Open
	// and crashes. Reusing a key for a different event fails with an
	// *IdempotencyError. Keys are store-wide, at most MaxIdempotencyKeyBytes
	// bytes of UTF-8.
	IdempotencyKey string
	// CorrelationID defaults to the event's own id.
	CorrelationID EventID
	// CausationID is the event that caused this one; zero means root cause.
	CausationID EventID
	// Flags are user-defined bits stored with the event.
	Flags uint16
	// ID, when not zero, is the event's id instead of a fresh one. It is
	// the replicated-apply seam: a leader fixes ids (and Timestamp) before
	// proposing a write, so every replica applying the same writes in the
	// same order ends with the same events, clocks, sequences, chain hashes,
	// compare-and-set results and idempotency decisions. A write whose ID
	// the store already holds, or an earlier write of its group or batch
	// holds, fails with ErrDuplicateID and writes nothing. The idempotency
	// key is checked first: a retry whose key is stored returns the
	// original receipt whatever ID it carries.
	ID EventID
	// Timestamp, when not zero, is the event's time in microseconds since
	// the Unix epoch instead of the writer's clock reading; as always it is
	// raised to the entity's last timestamp when earlier. Negative values
	// are refused (ErrInvalidOptions).
	Timestamp int64
	// PayloadChecked, when it covers the payload (ijson.Checked.Covers at
	// Config.MaxJSONDepth), spares the store its own JSON check of the
	// payload: a reader that validated the payload inside a larger
	// document (an HTTP request) hands the record of that check on. Only
	// package ijson makes records that cover anything; any other payload
	// is checked as always.
	PayloadChecked ijson.Checked
}
