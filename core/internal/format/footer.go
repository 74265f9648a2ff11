package format

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
)

// Segment footers, "<segment name>.idx": for every frame of a sealed
// segment, what recovery needs from it without the frame's bytes.
//
//	"BPFOOT03" | segment key u32 | covered end u64 | last frame offset u64 |
//	last event offset u64 (all ones: none) | last event id [16] |
//	names u32 × (length u16, bytes) |
//	items u32 × item | CRC32C of all before it u32
//	item: type u8 | offset u32 | frame length u32 | then, for an event:
//	  sequence u64, id [16], clock u64, timestamp i64, kind u16,
//	  system flags u8, hash [32], entity name u32, scope name u32,
//	  causation id [16], correlation id [16],
//	  idempotency key (length u16, bytes);
//	  for a batch or fence record: count u32, id u64
const (
	FooterSuffix = ".idx"
	// FooterMagic names the layout; a footer of an earlier layout
	// ("BPFOOT02", without causation and correlation ids) is refused
	// (ErrFooterMagic) and its segment scanned instead.
	FooterMagic = "BPFOOT03"
	// FooterMagicV2 is the earlier layout's magic.
	FooterMagicV2 = "BPFOOT02"
	// FooterHeaderSize is the fixed part before the name table.
	FooterHeaderSize = 8 + 4 + 8 + 8 + 8 + 16
	// Offsets within an item.
	FooterItemOffFrameOff = 1
	FooterItemOffFrameLen = 5
	FooterItemOffSeq      = 9
	FooterItemOffID       = 17
	FooterItemOffSysFlags = 51
	// FooterItemEventFixed is an event item up to its idempotency key's
	// length; FooterItemMarker a batch or fence item.
	FooterItemEventFixed = 1 + 4 + 4 + 8 + 16 + 8 + 8 + 2 + 1 + 32 + 4 + 4 + 16 + 16
	FooterItemMarker     = 1 + 4 + 4 + 4 + 8
	// FooterNoEvent is LastEv when the footer lists no event.
	FooterNoEvent = ^uint64(0)
)

// Footer is a decoded segment footer. Items are raw, in order (see
// ParseFooterItem).
type Footer struct {
	Key     uint32
	End     uint64 // covered end
	LastOff uint64 // offset of the last frame
	LastEv  uint64 // offset of the last event, or FooterNoEvent
	LastID  [16]byte
	Names   [][]byte
	Items   [][]byte
}

// Encode returns f's bytes, checksum included.
func (f *Footer) Encode() []byte {
	n := 0
	for _, it := range f.Items {
		n += len(it)
	}
	items := make([]byte, 0, n)
	for _, it := range f.Items {
		items = append(items, it...)
	}
	return f.encode(items, len(f.Items))
}

// encode lays out the footer around count items already encoded one after
// another in items (f.Items is not read).
func (f *Footer) encode(items []byte, count int) []byte {
	p := f.encodeParts(items, count)
	b := make([]byte, 0, len(p[0])+len(p[1])+len(p[2]))
	return append(append(append(b, p[0]...), p[1]...), p[2]...)
}

// encodeParts is encode without joining: the footer is parts[0] (header,
// names, count), parts[1] (items, not copied) and parts[2] (checksum),
// one after another. A segment's items run to half its size, so the
// sealer writes the parts as they are rather than copy them into one
// buffer the size of the footer.
func (f *Footer) encodeParts(items []byte, count int) [][]byte {
	n := FooterHeaderSize + 8
	for _, x := range f.Names {
		n += 2 + len(x)
	}
	b := make([]byte, 0, n)
	b = append(b, FooterMagic...)
	b = le.AppendUint32(b, f.Key)
	b = le.AppendUint64(b, f.End)
	b = le.AppendUint64(b, f.LastOff)
	b = le.AppendUint64(b, f.LastEv)
	b = append(b, f.LastID[:]...)
	b = le.AppendUint32(b, uint32(len(f.Names)))
	for _, x := range f.Names {
		b = le.AppendUint16(b, uint16(len(x)))
		b = append(b, x...)
	}
	b = le.AppendUint32(b, uint32(count))
	crc := crc32.Update(CRC32C(b), crcTable, items)
	return [][]byte{b, items, le.AppendUint32(nil, crc)}
}

// Reasons DecodeFooter refuses a footer.
var (
	ErrFooterMagic     = errors.New("bad magic")
	ErrFooterChecksum  = errors.New("checksum mismatch")
	ErrFooterTruncated = errors.New("truncated")
	ErrFooterItem      = errors.New("bad item")
	ErrFooterLeftover  = errors.New("bytes left over")
)

// DecodeFooter checks and decodes a footer's bytes; the error is one of
// the ErrFooter reasons.
func DecodeFooter(b []byte) (*Footer, error) {
	if len(b) < FooterHeaderSize+8 || string(b[:len(FooterMagic)]) != FooterMagic {
		return nil, ErrFooterMagic
	}
	body := b[:len(b)-4]
	if le.Uint32(b[len(b)-4:]) != CRC32C(body) {
		return nil, ErrFooterChecksum
	}
	f := &Footer{Key: le.Uint32(body[8:]), End: le.Uint64(body[12:]), LastOff: le.Uint64(body[20:]), LastEv: le.Uint64(body[28:])}
	copy(f.LastID[:], body[36:52])
	p := FooterHeaderSize
	take := func(n int) []byte {
		if n < 0 || p+n > len(body) {
			return nil
		}
		p += n
		return body[p-n : p]
	}
	u32 := func() (uint32, bool) {
		x := take(4)
		if x == nil {
			return 0, false
		}
		return le.Uint32(x), true
	}
	nn, ok := u32()
	for i := uint32(0); ok && i < nn; i++ {
		l := take(2)
		if l == nil {
			return nil, ErrFooterTruncated
		}
		name := take(int(le.Uint16(l)))
		if name == nil && le.Uint16(l) != 0 {
			return nil, ErrFooterTruncated
		}
		f.Names = append(f.Names, name)
	}
	n, ok2 := u32()
	if !ok || !ok2 || uint64(n) > uint64(len(body)) {
		return nil, ErrFooterTruncated
	}
	// n comes from the file: the items it can hold bound it (compared as
	// uint64: an int may be 32 bits).
	f.Items = make([][]byte, 0, int(min(uint64(n), uint64((len(body)-p)/FooterItemMarker))))
	for i := uint32(0); i < n; i++ {
		if p >= len(body) {
			return nil, ErrFooterTruncated
		}
		size := FooterItemMarker
		switch t := body[p]; {
		case t == RecEvent:
			if p+FooterItemEventFixed+2 > len(body) {
				return nil, ErrFooterTruncated
			}
			size = FooterItemEventFixed + 2 + int(le.Uint16(body[p+FooterItemEventFixed:]))
		case t < RecBatchBegin || t > RecFenceCancel:
			return nil, fmt.Errorf("%w: type %d", ErrFooterItem, t)
		}
		it := take(size)
		if it == nil {
			return nil, ErrFooterTruncated
		}
		f.Items = append(f.Items, it)
	}
	if p != len(body) {
		return nil, ErrFooterLeftover
	}
	return f, nil
}

// FooterItem is a parsed footer item.
type FooterItem struct {
	Type     byte
	Off, Len uint32 // the frame's offset and record length
	// Events:
	Seq           uint64
	ID            [16]byte
	Clock         uint64
	Timestamp     int64
	Kind          uint16
	SysFlags      byte
	Hash          [32]byte
	Entity, Scope uint32 // indexes into Footer.Names
	Cause, Corr   [16]byte
	Idem          []byte
	// Batch and fence records:
	Count    uint32
	MarkerID uint64
}

// ParseFooterItem parses one of a decoded Footer's Items.
func ParseFooterItem(it []byte) FooterItem {
	x := FooterItem{Type: it[0], Off: le.Uint32(it[1:]), Len: le.Uint32(it[5:])}
	if x.Type != RecEvent {
		x.Count, x.MarkerID = le.Uint32(it[9:]), le.Uint64(it[13:])
		return x
	}
	x.Seq = le.Uint64(it[9:])
	copy(x.ID[:], it[17:33])
	x.Clock = le.Uint64(it[33:])
	x.Timestamp = int64(le.Uint64(it[41:]))
	x.Kind = le.Uint16(it[49:])
	x.SysFlags = it[51]
	copy(x.Hash[:], it[52:84])
	x.Entity, x.Scope = le.Uint32(it[84:]), le.Uint32(it[88:])
	copy(x.Cause[:], it[92:108])
	copy(x.Corr[:], it[108:124])
	x.Idem = it[FooterItemEventFixed+2:]
	return x
}

// footerSampleFrames is how many frames footerItemsSize reads to size a
// segment's items.
const footerSampleFrames = 256

// footerItemsSize is about the size of the footer items of a segment of
// total logical bytes whose first bytes are data, from offset from on:
// exact for a segment of at most footerSampleFrames frames, otherwise
// scaled from the first ones (an eighth more, so a segment like its start
// fits; one whose later frames carry smaller payloads grows the buffer).
// It reads frame lengths only, not checksums, and never counts an item
// larger than its frame, so it is never larger than total.
func footerItemsSize(data []byte, from, total int) int {
	items, frames := 0, 0
	off := from
	for ; frames < footerSampleFrames && off+FrameHeaderSize <= len(data); frames++ {
		l := int(le.Uint32(data[off:]))
		if l < MinRecordSize || l > MaxRecordSize || off+FrameHeaderSize+l > total {
			return items
		}
		rec := data[off+FrameHeaderSize : min(off+FrameHeaderSize+l, len(data))]
		switch {
		case len(rec) == 0: // its type is past the bytes at hand
			items += min(FooterItemEventFixed+2+MaxIdempotencyKeyBytes, l)
		case rec[0] == RecEvent && l >= EventFixedSize:
			// A valid frame holds its key: a damaged length counts
			// no more than the frame.
			key := MaxIdempotencyKeyBytes // its length is past the bytes at hand
			if len(rec) >= OffIdemLen+2 {
				key = int(le.Uint16(rec[OffIdemLen:]))
			}
			items += min(FooterItemEventFixed+2+key, l)
		default:
			items += FooterItemMarker
		}
		off += FrameHeaderSize + l
		if off > len(data) {
			// The frame goes on past the bytes at hand (data is the first
			// chunk of a segment): it counts in the sample, and ends it.
			break
		}
	}
	if off <= from || off+FrameHeaderSize > total {
		return items
	}
	est := int(float64(items) * float64(total-from) / float64(off-from) * 9 / 8)
	return min(est, total)
}

// EncodeFooter builds the footer of segment key from its logical bytes
// (header included, frames after it; trailing zeros allowed).
func EncodeFooter(data []byte, key uint32) ([]byte, error) {
	p, err := EncodeFooterParts(data, key)
	if err != nil {
		return nil, err
	}
	return append(append(p[0], p[1]...), p[2]...), nil
}

// EncodeFooterParts is EncodeFooter without the final copy: the footer's
// bytes are the parts one after another (write them in order). Its items,
// the bulk of it, are encoded once and never copied.
func EncodeFooterParts(data []byte, key uint32) ([][]byte, error) {
	fb := NewFooterBuilder(key, footerItemsSize(data, SegmentHeaderSize, len(data)))
	end, tail, err := ScanFrames(data, SegmentHeaderSize, fb.Add)
	if err != nil {
		return nil, fmt.Errorf("batpak: segment footer: %w", err)
	}
	if tail != TailClean {
		return nil, fmt.Errorf("batpak: segment footer: unreadable frame at offset %d", end)
	}
	return fb.Parts(end), nil
}

// EncodeFooterPartsAt is EncodeFooterParts over a segment of size bytes
// read from r a chunk at a time into buf (ScanFramesAt), for a segment
// whose frames run exactly to size: ok is false, and nothing built, when
// a frame short of size fails its checks (zeros, a torn tail, damage).
// Errors are r's and malformed records.
func EncodeFooterPartsAt(r io.ReaderAt, size int64, key uint32, buf []byte) (parts [][]byte, ok bool, err error) {
	first := buf[:min(int64(len(buf)), size)]
	if err := readFull(r, first, 0); err != nil {
		return nil, false, fmt.Errorf("batpak: segment footer: %w", err)
	}
	fb := NewFooterBuilder(key, footerItemsSize(first, SegmentHeaderSize, int(size)))
	end, reached, err := scanFramesAt(r, size, SegmentHeaderSize, buf, int64(len(first)), fb.Add)
	if err != nil {
		return nil, false, fmt.Errorf("batpak: segment footer: %w", err)
	}
	if !reached {
		return nil, false, nil
	}
	return fb.Parts(int(end)), true, nil
}

// FooterBuilder builds a segment's footer from its frames, given one after
// another in log order (Add), so a footer can be built from frames read a
// chunk at a time. It copies what it keeps: a frame's bytes need to stay
// valid only during Add. Not safe for concurrent use.
type FooterBuilder struct {
	f     Footer
	names map[string]uint32
	it    []byte // the items, one after another
	count int
	// The scope (and often the entity) repeats from one event to the
	// next: the last names looked up are remembered (by their copies in
	// f.Names, which outlive the frame).
	lastEnt, lastScope   []byte
	lastEntN, lastScopeN uint32
}

// NewFooterBuilder starts the footer of segment key; itemsHint sizes the
// items' buffer (growing it was a tenth of a busy server's CPU while it
// sealed).
func NewFooterBuilder(key uint32, itemsHint int) *FooterBuilder {
	return &FooterBuilder{
		f:     Footer{Key: key, LastEv: FooterNoEvent},
		names: map[string]uint32{},
		it:    make([]byte, 0, max(itemsHint, 0)),
	}
}

func (fb *FooterBuilder) name(b []byte) uint32 {
	if i, ok := fb.names[string(b)]; ok {
		return i
	}
	i := uint32(len(fb.names))
	fb.names[string(b)] = i
	fb.f.Names = append(fb.f.Names, slices.Clone(b))
	return i
}

// Add lists the frame at offset off, whose record is rec (checked by its
// frame's CRC): an event, a batch record or a fence record. It fails on
// a malformed event or an unknown record type.
func (fb *FooterBuilder) Add(off int, rec []byte) error {
	if rec[0] == RecEvent {
		if !CheckEvent(rec) {
			return fmt.Errorf("malformed event record at offset %d", off)
		}
		v := EventView(rec)
		ent, scope, idem := v.Entity(), v.Scope(), v.Idem()
		if fb.lastEnt == nil || string(ent) != string(fb.lastEnt) {
			fb.lastEntN = fb.name(ent)
			fb.lastEnt = fb.f.Names[fb.lastEntN]
		}
		if fb.lastScope == nil || string(scope) != string(fb.lastScope) {
			fb.lastScopeN = fb.name(scope)
			fb.lastScope = fb.f.Names[fb.lastScopeN]
		}
		// One item, written in place: type, offset, length, sequence,
		// id, clock, timestamp, kind, system flags, hash, entity and
		// scope numbers, causation and correlation ids, idempotency key.
		n := len(fb.it)
		size := FooterItemEventFixed + 2 + len(idem)
		fb.it = slices.Grow(fb.it, size)[:n+size]
		b := fb.it[n:]
		b[0] = rec[0]
		le.PutUint32(b[1:], uint32(off))
		le.PutUint32(b[5:], uint32(len(rec)))
		le.PutUint64(b[9:], v.Seq())
		id := v.ID()
		copy(b[17:33], id[:])
		le.PutUint64(b[33:], v.Clock())
		le.PutUint64(b[41:], uint64(v.Timestamp()))
		le.PutUint16(b[49:], v.Kind())
		b[51] = v.SysFlags()
		h := v.Hash()
		copy(b[52:84], h[:])
		le.PutUint32(b[84:], fb.lastEntN)
		le.PutUint32(b[88:], fb.lastScopeN)
		cause, corr := v.CausationID(), v.CorrelationID()
		copy(b[92:108], cause[:])
		copy(b[108:124], corr[:])
		le.PutUint16(b[124:], uint16(len(idem)))
		copy(b[126:], idem)
		fb.f.LastEv, fb.f.LastID = uint64(off), id
	} else {
		m, ok := DecodeMarker(rec)
		if !ok {
			return fmt.Errorf("unknown record at offset %d", off)
		}
		fb.it = append(fb.it, rec[0])
		fb.it = le.AppendUint32(fb.it, uint32(off))
		fb.it = le.AppendUint32(fb.it, uint32(len(rec)))
		fb.it = le.AppendUint32(fb.it, m.Count)
		fb.it = le.AppendUint64(fb.it, m.ID)
	}
	fb.count++
	fb.f.LastOff = uint64(off)
	return nil
}

// Parts returns the footer of the frames added so far, covering the
// segment up to end (where the last frame ends), as EncodeFooterParts
// does. The builder must not be used after it.
func (fb *FooterBuilder) Parts(end int) [][]byte {
	fb.f.End = uint64(end)
	return fb.f.encodeParts(fb.it, fb.count)
}
