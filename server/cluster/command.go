package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/batpak-go/batpak/core"
)

// The raft log entry format: one command per entry, little-endian-free
// (varints are encoding/binary's; fixed fields big-endian).
//
//	version   1 byte: commandVersion (1)
//	tenant    uvarint length, bytes
//	flags     1 byte: bit 0 set = one atomic batch
//	count     uvarint: items
//	item …    entity (uvarint length, bytes), scope (same),
//	          kind (2 bytes), id (16), timestamp (varint, µs),
//	          expectation (1 byte: 0 none, 1 no events, 2 clock; then
//	          uvarint clock when 2), idempotency key (uvarint length,
//	          bytes), correlation id (16), causation id (16), flags (2),
//	          prior item + 1 (uvarint, 0 none), payload (uvarint length,
//	          bytes)
//
// A node refuses an entry whose version byte it does not know (a newer
// node's format) rather than guessing at it: see Node.Err.
const commandVersion byte = 1

// command is one raft entry: writes to one tenant, each item an
// independent append, or (batch) one atomic batch.
type command struct {
	Tenant string
	Batch  bool
	Items  []wireItem
}

type wireItem struct {
	Entity      string
	Scope       string
	Kind        uint16
	Payload     []byte
	ID          core.EventID
	Timestamp   int64
	Expect      uint8
	Clock       uint64
	Idem        string
	Correlation core.EventID
	Causation   core.EventID
	Flags       uint16
	Prior       int
}

// toWire renders a prepared item (id and timestamp fixed).
func toWire(it core.BatchItem) wireItem {
	w := wireItem{
		Entity: it.Coordinate.Entity, Scope: it.Coordinate.Scope, Kind: uint16(it.Kind),
		Payload: it.Payload, ID: it.Options.ID, Timestamp: it.Options.Timestamp,
		Idem: it.Options.IdempotencyKey, Correlation: it.Options.CorrelationID,
		Causation: it.Options.CausationID, Flags: it.Options.Flags,
	}
	exp := it.Options.ExpectedClock
	if c, ok := exp.Clock(); ok {
		w.Expect, w.Clock = 2, c
	} else if exp.NoEvents() {
		w.Expect = 1
	}
	if id, ok := it.Causation.Event(); ok {
		w.Causation = id
	}
	if i, ok := it.Causation.Prior(); ok {
		w.Prior = i + 1
	}
	return w
}

// item is the core.BatchItem a wire item describes.
func (w *wireItem) item() core.BatchItem {
	it := core.BatchItem{
		Coordinate: core.Coordinate{Entity: w.Entity, Scope: w.Scope},
		Kind:       core.Kind(w.Kind),
		Payload:    w.Payload,
		Options: core.AppendOptions{
			IdempotencyKey: w.Idem, CorrelationID: w.Correlation, CausationID: w.Causation,
			Flags: w.Flags, ID: w.ID, Timestamp: w.Timestamp,
		},
	}
	switch w.Expect {
	case 1:
		it.Options.ExpectedClock = core.ExpectNoEvents()
	case 2:
		it.Options.ExpectedClock = core.ExpectClock(w.Clock)
	}
	if w.Prior > 0 {
		it.Causation = core.PriorItem(w.Prior - 1)
	}
	return it
}

func encodeCommand(c *command) ([]byte, error) {
	n := 16 + len(c.Tenant)
	for i := range c.Items {
		it := &c.Items[i]
		n += 90 + len(it.Entity) + len(it.Scope) + len(it.Idem) + len(it.Payload)
	}
	b := make([]byte, 0, n)
	b = append(b, commandVersion)
	b = appendString(b, c.Tenant)
	var flags byte
	if c.Batch {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(c.Items)))
	for i := range c.Items {
		it := &c.Items[i]
		b = appendString(b, it.Entity)
		b = appendString(b, it.Scope)
		b = binary.BigEndian.AppendUint16(b, it.Kind)
		b = append(b, it.ID[:]...)
		b = binary.AppendVarint(b, it.Timestamp)
		b = append(b, it.Expect)
		if it.Expect == 2 {
			b = binary.AppendUvarint(b, it.Clock)
		}
		b = appendString(b, it.Idem)
		b = append(b, it.Correlation[:]...)
		b = append(b, it.Causation[:]...)
		b = binary.BigEndian.AppendUint16(b, it.Flags)
		if it.Prior < 0 {
			return nil, fmt.Errorf("cluster: prior item %d", it.Prior-1)
		}
		b = binary.AppendUvarint(b, uint64(it.Prior))
		b = binary.AppendUvarint(b, uint64(len(it.Payload)))
		b = append(b, it.Payload...)
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeCommand reads an entry's data. An unknown version is an
// *UnknownFormatError; payloads alias data.
func decodeCommand(data []byte) (*command, error) {
	if len(data) == 0 {
		return nil, &UnknownFormatError{Version: -1}
	}
	if data[0] != commandVersion {
		return nil, &UnknownFormatError{Version: int(data[0])}
	}
	d := decoder{b: data[1:]}
	c := &command{Tenant: d.str()}
	c.Batch = d.byte()&1 != 0
	count := d.uvarint()
	if d.err == nil && count > uint64(len(d.b)) { // every item takes bytes
		d.err = errShort
	}
	if d.err == nil {
		c.Items = make([]wireItem, count)
	}
	for i := range c.Items {
		it := &c.Items[i]
		it.Entity, it.Scope = d.str(), d.str()
		it.Kind = d.uint16()
		d.id(&it.ID)
		it.Timestamp = d.varint()
		if it.Expect = d.byte(); it.Expect == 2 {
			it.Clock = d.uvarint()
		} else if it.Expect > 2 {
			d.fail(fmt.Errorf("expectation %d", it.Expect))
		}
		it.Idem = d.str()
		d.id(&it.Correlation)
		d.id(&it.Causation)
		it.Flags = d.uint16()
		it.Prior = int(min(d.uvarint(), 1<<30))
		it.Payload = d.bytes()
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the last item", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("cluster: undecodable command: %w", d.err)
	}
	return c, nil
}

var errShort = errors.New("truncated")

// decoder reads a command; the first error sticks and later reads
// return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *decoder) take(n uint64) []byte {
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail(errShort)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) uint16() uint16 {
	if v := d.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (d *decoder) id(dst *core.EventID) {
	if v := d.take(16); v != nil {
		copy(dst[:], v)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte { return d.take(d.uvarint()) }

func (d *decoder) str() string { return string(d.bytes()) }
