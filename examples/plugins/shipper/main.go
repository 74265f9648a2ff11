// Command shipper is a handler plugin: for each OrderPlaced event (kind
// 1:1) on entity "order:<n>" it asks the host to write a ShipmentRequested
// event (kind 4:1) on entity "shipment:<n>", in the same scope, with the
// payload
//
//	{"order":"order:<n>","order_event":"<OrderPlaced event id>"}
//
// The host gives each reaction the source event's correlation id, the
// source event's id as causation, and an idempotency key derived from the
// source, so a redelivered batch writes nothing twice. Other events are
// ignored; the answer is always Continue.
//
// Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o shipper.wasm ./examples/plugins/shipper
package main

import (
	"bytes"
	"unicode/utf8"

	"github.com/batpak-go/batpak/sdk/guest"
)

var (
	kindOrderPlaced       = guest.Kind(1, 1)
	kindShipmentRequested = guest.Kind(4, 1)
)

func init() {
	guest.Handler(func(events guest.Batch) (guest.Action, []guest.Reaction, error) {
		var rs []guest.Reaction
		err := events.Events(func(i int, e guest.Event) bool {
			if e.Kind() != kindOrderPlaced {
				return true
			}
			rs = append(rs, guest.Reaction{
				Source:  uint32(i),
				Kind:    kindShipmentRequested,
				Entity:  shipmentEntity(e.Entity()),
				Scope:   e.Scope(), // the host copies reactions before the call returns
				Payload: payload(e),
			})
			return true
		})
		return guest.Continue, rs, err
	})
}

// shipmentEntity maps "order:42" to "shipment:42" (an entity without a
// colon is used whole: "o42" gives "shipment:o42").
func shipmentEntity(order []byte) []byte {
	suffix := order
	if i := bytes.IndexByte(order, ':'); i >= 0 {
		suffix = order[i+1:]
	}
	return append([]byte("shipment:"), suffix...)
}

func payload(e guest.Event) []byte {
	b := make([]byte, 0, 96+len(e.Entity()))
	b = append(b, `{"order":`...)
	b = appendJSONString(b, e.Entity())
	b = append(b, `,"order_event":"`...)
	b = appendUUID(b, e.ID())
	return append(b, `"}`...)
}

const hexDigits = "0123456789abcdef"

// appendUUID writes 16 bytes in the canonical 8-4-4-4-12 form.
func appendUUID(b, id []byte) []byte {
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return b
}

// appendJSONString quotes s as a JSON string (entities are any UTF-8
// without NUL, so quotes, backslashes and control characters occur).
func appendJSONString(b, s []byte) []byte {
	b = append(b, '"')
	for len(s) > 0 {
		c := s[0]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		case c < utf8.RuneSelf:
			b = append(b, c)
		default:
			r, n := utf8.DecodeRune(s)
			if r == utf8.RuneError && n == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[:n]...)
			}
			s = s[n:]
			continue
		}
		s = s[1:]
	}
	return append(b, '"')
}

func main() {}
