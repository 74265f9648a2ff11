package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/batpak-go/batpak/core"
)

// The raft log entry format: one command per entry (varints are
// encoding/binary's; fixed fields big-endian). Two versions exist; a node
// decodes both.
//
// Version 1 (a write; what every node writes for appends and batches, so
// that nodes not yet upgraded keep applying writes during a rolling
// upgrade):
//
//	version   1 byte: 1
//	tenant    uvarint length, bytes
//	write     the write body below
//
// Version 2 (any operation):
//
//	version   1 byte: 2
//	op        1 byte: 0 write, 1 cursor commit, 2 drop store, 3 put blob,
//	          4 write group
//	tenant    uvarint length, bytes (empty for a blob and a write group)
//	body      write: the write body below
//	          cursor commit: name (uvarint length, bytes), position (uvarint)
//	          drop store: nothing
//	          put blob: the bytes (uvarint length, bytes)
//	          write group: count (uvarint, at least 2), then each write's
//	          own entry (uvarint length, bytes: version 1, or version 2
//	          op 0), applied in that order
//
// The write body:
//
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
// A node refuses an entry whose version byte, or version-2 op, it does not
// know (a newer node's format) rather than guessing at it: see Node.Err.
const (
	commandVersion    byte = 1 // a write
	commandVersionOps byte = 2 // an op byte, then the op's body
)

// Command ops (version 2).
const (
	opWrite  byte = 0
	opCursor byte = 1
	opDrop   byte = 2
	opBlob   byte = 3
	opGroup  byte = 4 // writes the leader gathered into one entry
)

// command is one raft entry. A write (Op opWrite) holds writes to one
// tenant, each item an independent append, or (Batch) one atomic batch;
// a cursor commit holds Cursor's committed position Pos; a drop names the
// tenant only; a blob holds Blob (Tenant empty); a write group holds its
// writes in Group (Tenant empty), each an independent write command.
type command struct {
	Op     byte
	Tenant string
	Batch  bool
	Items  []wireItem
	Cursor string
	Pos    uint64
	Blob   []byte
	Group  []*command
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
	switch c.Op {
	case opWrite:
	case opCursor:
		b := []byte{commandVersionOps, opCursor}
		b = appendString(b, c.Tenant)
		b = appendString(b, c.Cursor)
		return binary.AppendUvarint(b, c.Pos), nil
	case opDrop:
		return appendString([]byte{commandVersionOps, opDrop}, c.Tenant), nil
	case opBlob:
		b := make([]byte, 0, len(c.Blob)+16)
		b = append(b, commandVersionOps, opBlob)
		b = appendString(b, "")
		b = binary.AppendUvarint(b, uint64(len(c.Blob)))
		return append(b, c.Blob...), nil
	default:
		return nil, fmt.Errorf("cluster: command op %d", c.Op)
	}
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

// encodeGroup is the write group entry holding writes (each an encoded
// write command, at least two) in order.
func encodeGroup(writes [][]byte) []byte {
	n := 8
	for _, w := range writes {
		n += len(w) + binary.MaxVarintLen32
	}
	b := make([]byte, 0, n)
	b = append(b, commandVersionOps, opGroup)
	b = appendString(b, "")
	b = binary.AppendUvarint(b, uint64(len(writes)))
	for _, w := range writes {
		b = binary.AppendUvarint(b, uint64(len(w)))
		b = append(b, w...)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeCommand reads an entry's data. An unknown version or op is an
// *UnknownFormatError; payloads alias data.
func decodeCommand(data []byte) (*command, error) {
	if len(data) == 0 {
		return nil, &UnknownFormatError{Version: -1, Op: -1}
	}
	d := decoder{b: data[1:]}
	c := &command{}
	switch data[0] {
	case commandVersion:
		c.Tenant = d.str()
		d.write(c)
	case commandVersionOps:
		c.Op = d.byte()
		if d.err != nil {
			return nil, fmt.Errorf("cluster: undecodable command: %w", d.err)
		}
		c.Tenant = d.str()
		switch c.Op {
		case opWrite:
			d.write(c)
		case opCursor:
			c.Cursor = d.str()
			c.Pos = d.uvarint()
		case opDrop:
		case opBlob:
			c.Blob = d.bytes()
		case opGroup:
			if err := d.group(c); err != nil {
				return nil, err
			}
		default:
			return nil, &UnknownFormatError{Version: int(data[0]), Op: int(c.Op)}
		}
	default:
		return nil, &UnknownFormatError{Version: int(data[0]), Op: -1}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the command", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("cluster: undecodable command: %w", d.err)
	}
	return c, nil
}

// group reads a write group's writes into c.Group. A write in an
// unknown format is that format's *UnknownFormatError; anything but a
// write (a nested group, another op) is undecodable.
func (d *decoder) group(c *command) error {
	count := d.uvarint()
	if d.err == nil && (count < 2 || count > uint64(len(d.b))) { // each write is at least one byte
		d.fail(fmt.Errorf("a write group of %d writes in %d bytes", count, len(d.b)))
	}
	if d.err != nil {
		return nil
	}
	c.Group = make([]*command, count)
	for i := range c.Group {
		w := d.bytes()
		if d.err != nil {
			return nil
		}
		if len(w) >= 2 && w[0] == commandVersionOps && w[1] == opGroup {
			// Refused before decoding it: nesting would recurse as
			// deep as the entry is long.
			d.fail(fmt.Errorf("write %d of the group is op %d, not a write", i, opGroup))
			return nil
		}
		sub, err := decodeCommand(w)
		var uf *UnknownFormatError
		if errors.As(err, &uf) {
			return err
		}
		if err != nil {
			d.fail(fmt.Errorf("write %d of the group: %w", i, err))
			return nil
		}
		if sub.Op != opWrite {
			d.fail(fmt.Errorf("write %d of the group is op %d, not a write", i, sub.Op))
			return nil
		}
		c.Group[i] = sub
	}
	return nil
}

// write reads a write body into c.
func (d *decoder) write(c *command) {
	c.Batch = d.byte()&1 != 0
	count := d.uvarint()
	if d.err == nil && count > uint64(len(d.b))/minItemBytes { // checked before allocating
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
}

var errShort = errors.New("truncated")

// minItemBytes is the smallest encoding of a write item: one-byte lengths
// and varints, the kind, the three ids, the expectation and the flags.
const minItemBytes = 1 + 1 + 2 + 16 + 1 + 1 + 1 + 16 + 16 + 2 + 1 + 1

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
