package core

import (
	"encoding/binary"

	"github.com/batpak-go/batpak/core/internal/format"
)

// The store's side of the record layout (core/internal/format): decoding
// a record into the store's types.

var le = binary.LittleEndian

// decodeOwned decodes the event record v, whose buffer the caller owns:
// the payload aliases it instead of being copied.
func decodeOwned(v format.EventView) StoredEvent {
	ev := decodeHeader(v)
	if v.SysFlags()&format.SysRedacted == 0 {
		ev.Payload = v.Payload()
	}
	return ev
}

// decodeHeader copies everything but the payload out of the record v.
func decodeHeader(v format.EventView) StoredEvent {
	return StoredEvent{
		Coordinate: Coordinate{Entity: string(v.Entity()), Scope: string(v.Scope())},
		Header: Header{
			ID:            v.ID(),
			CorrelationID: v.CorrelationID(),
			CausationID:   v.CausationID(),
			PayloadHash:   v.PayloadHash(),
			PrevHash:      v.PrevHash(),
			Hash:          v.Hash(),
			Timestamp:     v.Timestamp(),
			Clock:         v.Clock(),
			Kind:          Kind(v.Kind()),
			Flags:         v.Flags(),
		},
		GlobalSequence: v.Seq(),
		IdempotencyKey: string(v.Idem()),
		Redacted:       v.SysFlags()&format.SysRedacted != 0,
	}
}
