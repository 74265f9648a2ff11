package abi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the ABI version this package describes.
const Version = 1

// Export and import names.
const (
	ExportABIVersion = "batpak_abi_version"
	ExportAlloc      = "batpak_alloc"
	ExportFold       = "batpak_fold"
	ExportHandle     = "batpak_handle"
	ImportModule     = "batpak"
	ImportLog        = "log"
)

// Log levels for the log import.
const (
	LogDebug = 0
	LogInfo  = 1
	LogWarn  = 2
	LogError = 3
)

// Handler actions.
const (
	ActionContinue = 0
	ActionStop     = 1
)

// EventFixed is the size of an event's fixed fields (after its size field).
const EventFixed = 84

// ReactionFixed is the size of a reaction's fixed fields.
const ReactionFixed = 16

var le = binary.LittleEndian

// PackResult packs a guest pointer and length (and the error bit) into the
// i64 fold and handle return.
func PackResult(ptr, length uint32, isErr bool) uint64 {
	r := uint64(ptr) | uint64(length&0x7fffffff)<<32
	if isErr {
		r |= 1 << 63
	}
	return r
}

// UnpackResult undoes PackResult.
func UnpackResult(r uint64) (ptr, length uint32, isErr bool) {
	return uint32(r), uint32(r>>32) & 0x7fffffff, r>>63 == 1
}

// EventRecord is one event to encode into a batch.
type EventRecord struct {
	Seq         uint64
	Clock       uint64
	Timestamp   int64
	Kind        uint16
	Flags       uint16
	ID          [16]byte
	Correlation [16]byte
	Causation   [16]byte
	Entity      []byte
	Scope       []byte
	Payload     []byte
}

// AppendBatchHeader starts a batch of count events.
func AppendBatchHeader(dst []byte, count int) []byte {
	return le.AppendUint32(dst, uint32(count))
}

// AppendEvent appends one encoded event.
func AppendEvent(dst []byte, e *EventRecord) []byte {
	size := EventFixed + len(e.Entity) + len(e.Scope) + len(e.Payload)
	dst = le.AppendUint32(dst, uint32(size))
	dst = le.AppendUint64(dst, e.Seq)
	dst = le.AppendUint64(dst, e.Clock)
	dst = le.AppendUint64(dst, uint64(e.Timestamp))
	dst = le.AppendUint16(dst, e.Kind)
	dst = le.AppendUint16(dst, e.Flags)
	dst = append(dst, e.ID[:]...)
	dst = append(dst, e.Correlation[:]...)
	dst = append(dst, e.Causation[:]...)
	dst = le.AppendUint16(dst, uint16(len(e.Entity)))
	dst = le.AppendUint16(dst, uint16(len(e.Scope)))
	dst = le.AppendUint32(dst, uint32(len(e.Payload)))
	dst = append(dst, e.Entity...)
	dst = append(dst, e.Scope...)
	return append(dst, e.Payload...)
}

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed plugin data")

// Batch is a zero-copy view of an encoded batch.
type Batch []byte

// Len is the number of events the batch announces.
func (b Batch) Len() int {
	if len(b) < 4 {
		return 0
	}
	return int(le.Uint32(b))
}

// Events calls fn for each event in order, stopping early when fn returns
// false. It returns an error if the batch is malformed.
func (b Batch) Events(fn func(i int, e Event) bool) error {
	if len(b) < 4 {
		return fmt.Errorf("%w: batch shorter than its count", ErrMalformed)
	}
	n := int(le.Uint32(b))
	off := 4
	for i := 0; i < n; i++ {
		if off+4 > len(b) {
			return fmt.Errorf("%w: event %d: truncated", ErrMalformed, i)
		}
		size := int(le.Uint32(b[off:]))
		off += 4
		if size < EventFixed || off+size > len(b) {
			return fmt.Errorf("%w: event %d: size %d out of bounds", ErrMalformed, i, size)
		}
		e := Event(b[off : off+size])
		if EventFixed+int(e.entityLen())+int(e.scopeLen())+int(e.payloadLen()) != size {
			return fmt.Errorf("%w: event %d: field lengths do not add up", ErrMalformed, i)
		}
		off += size
		if !fn(i, e) {
			return nil
		}
	}
	return nil
}

// Event is a zero-copy view of one encoded event (after its size field).
type Event []byte

// Seq is the event's global sequence.
func (e Event) Seq() uint64 { return le.Uint64(e[0:]) }

// Clock is the event's per-entity clock.
func (e Event) Clock() uint64 { return le.Uint64(e[8:]) }

// Timestamp is the event's time in microseconds since the Unix epoch.
func (e Event) Timestamp() int64 { return int64(le.Uint64(e[16:])) }

// Kind is category<<12 | type.
func (e Event) Kind() uint16 { return le.Uint16(e[24:]) }

// Category is the kind's top 4 bits.
func (e Event) Category() uint16 { return e.Kind() >> 12 }

// Type is the kind's low 12 bits.
func (e Event) Type() uint16 { return e.Kind() & 0xfff }

// Flags are the event's user flags.
func (e Event) Flags() uint16 { return le.Uint16(e[26:]) }

// ID is the event id (a UUIDv7).
func (e Event) ID() []byte { return e[28:44] }

// Correlation is the correlation id.
func (e Event) Correlation() []byte { return e[44:60] }

// Causation is the causation id (zeros for a root cause).
func (e Event) Causation() []byte { return e[60:76] }

func (e Event) entityLen() uint16  { return le.Uint16(e[76:]) }
func (e Event) scopeLen() uint16   { return le.Uint16(e[78:]) }
func (e Event) payloadLen() uint32 { return le.Uint32(e[80:]) }

// Entity is the entity name's bytes.
func (e Event) Entity() []byte { return e[EventFixed : EventFixed+int(e.entityLen())] }

// Scope is the scope's bytes.
func (e Event) Scope() []byte {
	s := EventFixed + int(e.entityLen())
	return e[s : s+int(e.scopeLen())]
}

// Payload is the payload's JSON bytes.
func (e Event) Payload() []byte {
	s := EventFixed + int(e.entityLen()) + int(e.scopeLen())
	return e[s : s+int(e.payloadLen())]
}

// Reaction is an event a handler asks the host to write.
type Reaction struct {
	Source  uint32 // index in the batch of the event it reacts to
	Kind    uint16
	Entity  []byte
	Scope   []byte
	Payload []byte
}

// MaxCoordinateBytes is the longest entity or scope a reaction may name,
// in bytes: core.MaxCoordinatePartBytes, which the host enforces when it
// writes the reaction (this package imports nothing of the host's).
const MaxCoordinateBytes = 1024

// AppendHandlerOutput encodes a handler's answer, or refuses it (dst
// unchanged) when a reaction's entity or scope is longer than
// MaxCoordinateBytes or its payload than 4 GiB − 1: the layout gives an
// entity and a scope 16 bits of length, so a longer one would be read
// back cut short, the rest of it taken for the reactions after it.
func AppendHandlerOutput(dst []byte, action uint32, rs []Reaction) ([]byte, error) {
	for i := range rs {
		r := &rs[i]
		switch {
		case len(r.Entity) > MaxCoordinateBytes:
			return dst, fmt.Errorf("reaction %d: its entity is %d bytes, longer than %d", i, len(r.Entity), MaxCoordinateBytes)
		case len(r.Scope) > MaxCoordinateBytes:
			return dst, fmt.Errorf("reaction %d: its scope is %d bytes, longer than %d", i, len(r.Scope), MaxCoordinateBytes)
		case uint64(len(r.Payload)) > 1<<32-1:
			return dst, fmt.Errorf("reaction %d: its payload is %d bytes, longer than 4 GiB - 1", i, len(r.Payload))
		}
	}
	dst = le.AppendUint32(dst, action)
	dst = le.AppendUint32(dst, uint32(len(rs)))
	for i := range rs {
		r := &rs[i]
		dst = le.AppendUint32(dst, r.Source)
		dst = le.AppendUint16(dst, r.Kind)
		dst = le.AppendUint16(dst, uint16(len(r.Entity)))
		dst = le.AppendUint16(dst, uint16(len(r.Scope)))
		dst = le.AppendUint16(dst, 0)
		dst = le.AppendUint32(dst, uint32(len(r.Payload)))
		dst = append(dst, r.Entity...)
		dst = append(dst, r.Scope...)
		dst = append(dst, r.Payload...)
	}
	return dst, nil
}

// ParseHandlerOutput decodes a handler's answer; the reactions alias b.
func ParseHandlerOutput(b []byte) (action uint32, rs []Reaction, err error) {
	if len(b) < 8 {
		return 0, nil, fmt.Errorf("%w: handler output shorter than 8 bytes", ErrMalformed)
	}
	action, n := le.Uint32(b), int(le.Uint32(b[4:]))
	if action > ActionStop {
		return 0, nil, fmt.Errorf("%w: handler action %d", ErrMalformed, action)
	}
	off := 8
	for i := 0; i < n; i++ {
		if off+ReactionFixed > len(b) {
			return 0, nil, fmt.Errorf("%w: reaction %d: truncated", ErrMalformed, i)
		}
		r := Reaction{Source: le.Uint32(b[off:]), Kind: le.Uint16(b[off+4:])}
		el, sl, pl := int(le.Uint16(b[off+6:])), int(le.Uint16(b[off+8:])), int(le.Uint32(b[off+12:]))
		off += ReactionFixed
		if off+el+sl+pl > len(b) || pl < 0 {
			return 0, nil, fmt.Errorf("%w: reaction %d: lengths out of bounds", ErrMalformed, i)
		}
		r.Entity = b[off : off+el]
		r.Scope = b[off+el : off+el+sl]
		r.Payload = b[off+el+sl : off+el+sl+pl]
		off += el + sl + pl
		rs = append(rs, r)
	}
	if off != len(b) {
		return 0, nil, fmt.Errorf("%w: %d bytes after the last reaction", ErrMalformed, len(b)-off)
	}
	return action, rs, nil
}
