package core

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/zeebo/blake3"
)

// Record and frame layout; the package documentation has the diagram.
const (
	frameHeaderSize = 8 // u32 record length, u32 CRC32C over (length bytes ‖ record)

	recEvent       byte = 1 // an event
	recBatchBegin  byte = 2 // the items of an atomic batch follow
	recBatchCommit byte = 3 // the batch is complete: its items count
	recFenceBegin  byte = 4 // a visibility fence opened
	recFenceCommit byte = 5 // the fence's events become visible
	recFenceCancel byte = 6 // the fence's events stay hidden for ever

	// System flags (event record byte 1; not chained).
	sysBatch    byte = 1 << 0 // the event is an item of an atomic batch
	sysFenced   byte = 1 << 1 // the event was written under a visibility fence
	sysRedacted byte = 1 << 2 // the payload was erased (zeros, or gone after compaction); its digest stays
	sysRemoved  byte = 1 << 3 // removed by compaction: a header-only stub keeping the chain

	markerSize = 16 // batch and fence records

	eventFixedSize = 192
	// the chained span starts after the hash field and runs to the end of
	// the variable strings (the payload is chained through its digest).
	chainStart = 40

	minRecordSize = 16
	maxRecordSize = 64<<20 + eventFixedSize + 3*MaxIdempotencyKeyBytes + 2*MaxCoordinatePartBytes
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var le = binary.LittleEndian

// eventRecord is the decoded form of an event record. Strings and Payload
// alias the source buffer when produced by decodeEvent.
type eventRecord struct {
	sysFlags byte // sysBatch, sysFenced
	seq      uint64
	coord    Coordinate
	idem     string
	header   Header
	payload  []byte
}

// frameLen is the encoded size of r's frame.
func (r *eventRecord) frameLen() int {
	return frameHeaderSize + eventFixedSize + len(r.coord.Entity) + len(r.coord.Scope) + len(r.idem) + len(r.payload)
}

// appendEventFrame encodes r as a frame at the end of dst, computing the
// chain hash (stored in r.header.Hash) from r.header.PrevHash and the other
// chained fields.
func appendEventFrame(dst []byte, r *eventRecord) []byte {
	start := len(dst)
	n := r.frameLen()
	dst = grow(dst, n)
	f := dst[start : start+n]
	rec := f[frameHeaderSize:]
	h := &r.header
	rec[0] = recEvent
	rec[1] = r.sysFlags
	le.PutUint16(rec[2:], 0)
	le.PutUint32(rec[4:], uint32(len(r.payload)))
	le.PutUint16(rec[40:], uint16(h.Kind))
	le.PutUint16(rec[42:], h.Flags)
	le.PutUint16(rec[44:], uint16(len(r.coord.Entity)))
	le.PutUint16(rec[46:], uint16(len(r.coord.Scope)))
	le.PutUint16(rec[48:], uint16(len(r.idem)))
	clear(rec[50:56])
	le.PutUint64(rec[56:], r.seq)
	le.PutUint64(rec[64:], h.Clock)
	le.PutUint64(rec[72:], uint64(h.Timestamp))
	copy(rec[80:96], h.ID[:])
	copy(rec[96:112], h.CorrelationID[:])
	copy(rec[112:128], h.CausationID[:])
	copy(rec[128:160], h.PayloadHash[:])
	copy(rec[160:192], h.PrevHash[:])
	p := eventFixedSize
	p += copy(rec[p:], r.coord.Entity)
	p += copy(rec[p:], r.coord.Scope)
	p += copy(rec[p:], r.idem)
	copy(rec[p:], r.payload)
	h.Hash = chainHash(rec, p)
	copy(rec[8:40], h.Hash[:])
	le.PutUint32(f[0:], uint32(len(rec)))
	le.PutUint32(f[4:], frameCRC(f[0:4], rec))
	return dst
}

// chainHash is BLAKE3 over rec[chainStart:stringsEnd]: every header field
// but the hash itself, then the coordinate and idempotency key. The payload
// enters through its digest only, so erasing payload bytes keeps the chain
// valid.
func chainHash(rec []byte, stringsEnd int) Hash {
	return blake3.Sum256(rec[chainStart:stringsEnd])
}

func payloadHash(p []byte) Hash { return blake3.Sum256(p) }

func frameCRC(lenBytes, rec []byte) uint32 {
	return crc32.Update(crc32.Update(0, crcTable, lenBytes), crcTable, rec)
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// frameAt returns the record of a valid frame starting at off, or false.
func frameAt(data []byte, off int) ([]byte, bool) {
	if off < 0 || off+frameHeaderSize > len(data) {
		return nil, false
	}
	n := int(le.Uint32(data[off:]))
	if n < minRecordSize || n > maxRecordSize || off+frameHeaderSize+n > len(data) {
		return nil, false
	}
	rec := data[off+frameHeaderSize : off+frameHeaderSize+n]
	if frameCRC(data[off:off+4], rec) != le.Uint32(data[off+4:]) {
		return nil, false
	}
	return rec, true
}

// eventView gives field access to an encoded event record without copying.
type eventView []byte

// checkEvent reports whether rec is a structurally sound event record.
func checkEvent(rec []byte) bool {
	if len(rec) < eventFixedSize || rec[0] != recEvent {
		return false
	}
	v := eventView(rec)
	return eventFixedSize+v.entityLen()+v.scopeLen()+v.idemLen()+v.payloadLen() == len(rec)
}

func (v eventView) sysFlags() byte   { return v[1] }
func (v eventView) payloadLen() int  { return int(le.Uint32(v[4:])) }
func (v eventView) hash() (h Hash)   { copy(h[:], v[8:40]); return }
func (v eventView) kind() Kind       { return Kind(le.Uint16(v[40:])) }
func (v eventView) flags() uint16    { return le.Uint16(v[42:]) }
func (v eventView) entityLen() int   { return int(le.Uint16(v[44:])) }
func (v eventView) scopeLen() int    { return int(le.Uint16(v[46:])) }
func (v eventView) idemLen() int     { return int(le.Uint16(v[48:])) }
func (v eventView) seq() uint64      { return le.Uint64(v[56:]) }
func (v eventView) clock() uint64    { return le.Uint64(v[64:]) }
func (v eventView) timestamp() int64 { return int64(le.Uint64(v[72:])) }
func (v eventView) id() (id EventID) { copy(id[:], v[80:96]); return }
func (v eventView) prevHash() (h Hash) {
	copy(h[:], v[160:192])
	return
}
func (v eventView) payloadHash() (h Hash) {
	copy(h[:], v[128:160])
	return
}
func (v eventView) entity() []byte { return v[eventFixedSize : eventFixedSize+v.entityLen()] }
func (v eventView) scope() []byte {
	s := eventFixedSize + v.entityLen()
	return v[s : s+v.scopeLen()]
}
func (v eventView) idem() []byte {
	s := eventFixedSize + v.entityLen() + v.scopeLen()
	return v[s : s+v.idemLen()]
}
func (v eventView) stringsEnd() int {
	return eventFixedSize + v.entityLen() + v.scopeLen() + v.idemLen()
}
func (v eventView) payload() []byte { return v[v.stringsEnd():] }

// decodeOwned is decode for a record in a buffer the caller owns: the
// payload aliases it instead of being copied.
func (v eventView) decodeOwned() StoredEvent {
	ev := v.decodeHeader()
	if v.sysFlags()&sysRedacted == 0 {
		ev.Payload = v.payload()
	}
	return ev
}

// decodeHeader copies everything but the payload out of the record.
func (v eventView) decodeHeader() StoredEvent {
	var h Header
	h.ID = v.id()
	copy(h.CorrelationID[:], v[96:112])
	copy(h.CausationID[:], v[112:128])
	h.PayloadHash = v.payloadHash()
	h.PrevHash = v.prevHash()
	h.Hash = v.hash()
	h.Timestamp = v.timestamp()
	h.Clock = v.clock()
	h.Kind = v.kind()
	h.Flags = v.flags()
	return StoredEvent{
		Coordinate:     Coordinate{Entity: string(v.entity()), Scope: string(v.scope())},
		Header:         h,
		GlobalSequence: v.seq(),
		IdempotencyKey: string(v.idem()),
		Redacted:       v.sysFlags()&sysRedacted != 0,
	}
}

// A marker record (batch or fence): type u8, 3 zero bytes, count u32 (batch
// items; 0 for fences), id u64 (the batch's first global sequence, or the
// fence number).
func appendMarkerFrame(dst []byte, typ byte, count uint32, id uint64) []byte {
	start := len(dst)
	dst = grow(dst, frameHeaderSize+markerSize)
	f := dst[start:]
	rec := f[frameHeaderSize:]
	rec[0] = typ
	clear(rec[1:4])
	le.PutUint32(rec[4:], count)
	le.PutUint64(rec[8:], id)
	le.PutUint32(f[0:], markerSize)
	le.PutUint32(f[4:], frameCRC(f[0:4], rec))
	return dst
}

type marker struct {
	typ   byte
	count uint32
	id    uint64
}

func decodeMarker(rec []byte) (marker, bool) {
	if len(rec) != markerSize || rec[0] < recBatchBegin || rec[0] > recFenceCancel {
		return marker{}, false
	}
	return marker{typ: rec[0], count: le.Uint32(rec[4:]), id: le.Uint64(rec[8:])}, true
}

// knownRecord reports whether rec starts like a record batpak writes; the
// torn-tail check uses it to tell a later valid frame from noise.
func knownRecord(rec []byte) bool {
	return rec[0] >= recEvent && rec[0] <= recFenceCancel
}
