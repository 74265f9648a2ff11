package format

// Record types (the first byte of a record).
const (
	RecEvent       byte = 1 // an event
	RecBatchBegin  byte = 2 // the items of an atomic batch follow
	RecBatchCommit byte = 3 // the batch is complete: its items count
	RecFenceBegin  byte = 4 // a visibility fence opened
	RecFenceCommit byte = 5 // the fence's events become visible
	RecFenceCancel byte = 6 // the fence's events stay hidden for ever
)

// System flags (event record byte 1; not chained).
const (
	SysBatch    byte = 1 << 0 // the event is an item of an atomic batch
	SysFenced   byte = 1 << 1 // the event was written under a visibility fence
	SysRedacted byte = 1 << 2 // the payload was erased (zeros, or gone after compaction); its digest stays
	SysRemoved  byte = 1 << 3 // removed by compaction: a header-only stub keeping the chain
)

// Event record layout.
const (
	// EventFixedSize is the fixed part of an event record.
	EventFixedSize = 192
	// ChainStart is where the chained span starts (after the hash field);
	// it runs to the end of the idempotency key (the payload is chained
	// through its digest).
	ChainStart = 40
	// Offsets of fields within an event record (see the package doc).
	OffSysFlags    = 1
	OffHash        = 8
	OffKind        = 40
	OffEntityLen   = 44
	OffScopeLen    = 46
	OffIdemLen     = 48
	OffSeq         = 56
	OffClock       = 64
	OffID          = 80
	OffPayloadHash = 128
)

// Event is an event record's fields. ID, CorrelationID and CausationID are
// UUIDs; the hashes are BLAKE3-256.
type Event struct {
	SysFlags      byte
	Seq           uint64
	Entity, Scope string
	Idem          string
	ID            [16]byte
	CorrelationID [16]byte
	CausationID   [16]byte
	Timestamp     int64 // µs since the Unix epoch
	Clock         uint64
	Kind          uint16
	Flags         uint16
	PayloadHash   [32]byte
	PrevHash      [32]byte
	Hash          [32]byte // set by AppendEvent
	Payload       []byte
}

// FrameLen is the encoded size of e's frame.
func (e *Event) FrameLen() int {
	return FrameHeaderSize + EventFixedSize + len(e.Entity) + len(e.Scope) + len(e.Idem) + len(e.Payload)
}

// AppendEvent encodes e as a frame at the end of dst, computing the chain
// hash (stored in e.Hash) from e.PrevHash and the other chained fields.
// e.PayloadHash must already be BLAKE3(e.Payload).
func AppendEvent(dst []byte, e *Event) []byte {
	start := len(dst)
	dst = AppendEventUnsealed(dst, e)
	f := dst[start:]
	rec := f[FrameHeaderSize:]
	e.Hash = ChainHash(rec, EventView(rec).StringsEnd())
	copy(rec[OffHash:OffHash+32], e.Hash[:])
	SealFrame(f)
	return dst
}

// AppendEventUnsealed encodes e as a frame at the end of dst as AppendEvent
// does, but leaves the record's chain hash and the frame's length and CRC
// unset: SealEvents sets them, for many frames at once. e.Hash is not
// set. Until it is sealed the frame is not valid.
func AppendEventUnsealed(dst []byte, e *Event) []byte {
	start := len(dst)
	n := e.FrameLen()
	dst = Grow(dst, n)
	f := dst[start : start+n]
	rec := f[FrameHeaderSize:]
	rec[0] = RecEvent
	rec[1] = e.SysFlags
	le.PutUint16(rec[2:], 0)
	le.PutUint32(rec[4:], uint32(len(e.Payload)))
	le.PutUint16(rec[40:], e.Kind)
	le.PutUint16(rec[42:], e.Flags)
	le.PutUint16(rec[44:], uint16(len(e.Entity)))
	le.PutUint16(rec[46:], uint16(len(e.Scope)))
	le.PutUint16(rec[48:], uint16(len(e.Idem)))
	clear(rec[50:56])
	le.PutUint64(rec[56:], e.Seq)
	le.PutUint64(rec[64:], e.Clock)
	le.PutUint64(rec[72:], uint64(e.Timestamp))
	copy(rec[80:96], e.ID[:])
	copy(rec[96:112], e.CorrelationID[:])
	copy(rec[112:128], e.CausationID[:])
	copy(rec[128:160], e.PayloadHash[:])
	copy(rec[OffPrevHash:OffPrevHash+32], e.PrevHash[:])
	p := EventFixedSize
	p += copy(rec[p:], e.Entity)
	p += copy(rec[p:], e.Scope)
	p += copy(rec[p:], e.Idem)
	copy(rec[p:], e.Payload)
	return dst
}

// OffPrevHash is where an event record holds its entity's previous hash.
const OffPrevHash = 160

// SetPrevHash sets the previous hash of the unsealed event frame at off of
// buf (AppendEventUnsealed), for a writer that learns it after placing.
func SetPrevHash(buf []byte, off int, h [32]byte) {
	copy(buf[off+FrameHeaderSize+OffPrevHash:], h[:])
}

// HashPayloads takes the payload digests of the unsealed event frames
// (AppendEventUnsealed, with no PayloadHash) that start at offsets offs of
// buf, many at once (Digests), and stores each in its record, for a
// writer that defers them to the seal.
func HashPayloads(buf []byte, offs []int) {
	Digests(len(offs), func(i int) []byte {
		v := EventView(buf[offs[i]+FrameHeaderSize:])
		end := v.StringsEnd()
		return v[end : end+v.PayloadLen()]
	}, func(i int, d [32]byte) {
		copy(buf[offs[i]+FrameHeaderSize+OffPayloadHash:], d[:])
	})
}

// EventDigests sets payload[i] and chain[i] to the payload digest and the
// chain hash that the event record recs[i] (checked by CheckEvent) should
// carry — PayloadHash of its payload, ChainHash of its chained span —
// many at once (Digests), for a reader re-deriving every event's digests
// (Verify). len(payload) and len(chain) must be at least len(recs).
func EventDigests(recs []EventView, payload, chain [][32]byte) {
	Digests(len(recs), func(i int) []byte { return recs[i].Payload() },
		func(i int, d [32]byte) { payload[i] = d })
	Digests(len(recs), func(i int) []byte { return recs[i][ChainStart:recs[i].StringsEnd()] },
		func(i int, d [32]byte) { chain[i] = d })
}

// SealEvents seals the unsealed event frames (AppendEventUnsealed) that
// start at offsets offs of buf: each record gets its chain hash, also
// stored in hashes[i], and each frame its length and CRC. The frames'
// chained fields (the previous hash included) must be final. The hashes
// are taken many at once (Digests), so a writer placing events of several
// entities seals them together. len(hashes) must be at least len(offs).
func SealEvents(buf []byte, offs []int, hashes [][32]byte) {
	Digests(len(offs), func(i int) []byte {
		rec := buf[offs[i]+FrameHeaderSize:]
		return rec[ChainStart:EventView(rec).StringsEnd()]
	}, func(i int, d [32]byte) {
		hashes[i] = d
		v := EventView(buf[offs[i]+FrameHeaderSize:])
		copy(v[OffHash:OffHash+32], d[:])
		SealFrame(buf[offs[i] : offs[i]+FrameHeaderSize+v.StringsEnd()+v.PayloadLen()])
	})
}

// ChainHash is BLAKE3 over rec[ChainStart:stringsEnd]: every header field
// but the hash itself, then the coordinate and idempotency key. The payload
// enters through its digest only, so erasing payload bytes keeps the chain
// valid.
func ChainHash(rec []byte, stringsEnd int) [32]byte {
	return sum256(rec[ChainStart:stringsEnd])
}

// PayloadHash is the digest of a payload.
func PayloadHash(p []byte) [32]byte { return sum256(p) }

// Digests hands out(i, d) the BLAKE3-256 digest d of in(i) for every
// i < n, taking up to 16 inputs of at most 1 KiB at once where the CPU
// has AVX-512 (about five times faster per input than one at a time; see
// sum256Many): a group's payloads and record headers are independent
// inputs. Each input's bytes must stay unchanged until its out call;
// in(i) is called before out(i, _), and out calls come in order of i.
func Digests(n int, in func(i int) []byte, out func(i int, d [32]byte)) {
	var inputs [64][]byte
	var digests [64][32]byte
	for lo := 0; lo < n; lo += len(inputs) {
		k := min(n-lo, len(inputs))
		for i := range k {
			inputs[i] = in(lo + i)
		}
		sum256Many(inputs[:k], digests[:k])
		for i := range k {
			out(lo+i, digests[i])
		}
	}
}

// EventView gives field access to an encoded event record without
// copying. Check it with CheckEvent first.
type EventView []byte

// CheckEvent reports whether rec is a structurally sound event record
// (type, and lengths that add up to the record's size).
func CheckEvent(rec []byte) bool {
	if len(rec) < EventFixedSize || rec[0] != RecEvent {
		return false
	}
	v := EventView(rec)
	return EventFixedSize+v.EntityLen()+v.ScopeLen()+v.IdemLen()+v.PayloadLen() == len(rec)
}

// Accessors of the fixed fields.
func (v EventView) SysFlags() byte               { return v[1] }
func (v EventView) PayloadLen() int              { return int(le.Uint32(v[4:])) }
func (v EventView) Hash() (h [32]byte)           { copy(h[:], v[8:40]); return }
func (v EventView) Kind() uint16                 { return le.Uint16(v[40:]) }
func (v EventView) Flags() uint16                { return le.Uint16(v[42:]) }
func (v EventView) EntityLen() int               { return int(le.Uint16(v[44:])) }
func (v EventView) ScopeLen() int                { return int(le.Uint16(v[46:])) }
func (v EventView) IdemLen() int                 { return int(le.Uint16(v[48:])) }
func (v EventView) Seq() uint64                  { return le.Uint64(v[56:]) }
func (v EventView) Clock() uint64                { return le.Uint64(v[64:]) }
func (v EventView) Timestamp() int64             { return int64(le.Uint64(v[72:])) }
func (v EventView) ID() (id [16]byte)            { copy(id[:], v[80:96]); return }
func (v EventView) CorrelationID() (id [16]byte) { copy(id[:], v[96:112]); return }
func (v EventView) CausationID() (id [16]byte)   { copy(id[:], v[112:128]); return }
func (v EventView) PayloadHash() (h [32]byte)    { copy(h[:], v[128:160]); return }
func (v EventView) PrevHash() (h [32]byte)       { copy(h[:], v[160:192]); return }

// Entity, Scope, Idem and Payload are the variable parts (slices of v).
func (v EventView) Entity() []byte { return v[EventFixedSize : EventFixedSize+v.EntityLen()] }
func (v EventView) Scope() []byte {
	s := EventFixedSize + v.EntityLen()
	return v[s : s+v.ScopeLen()]
}
func (v EventView) Idem() []byte {
	s := EventFixedSize + v.EntityLen() + v.ScopeLen()
	return v[s : s+v.IdemLen()]
}

// StringsEnd is where the chained span ends and the payload starts.
func (v EventView) StringsEnd() int {
	return EventFixedSize + v.EntityLen() + v.ScopeLen() + v.IdemLen()
}
func (v EventView) Payload() []byte { return v[v.StringsEnd():] }

// MarkerSize is the size of a marker record.
const MarkerSize = 16

// AppendMarker appends a marker record (batch or fence) framed to dst:
// type u8, 3 zero bytes, count u32 (batch items; 0 for fences), id u64
// (the batch's first global sequence, or the fence number).
func AppendMarker(dst []byte, typ byte, count uint32, id uint64) []byte {
	start := len(dst)
	dst = Grow(dst, FrameHeaderSize+MarkerSize)
	f := dst[start:]
	rec := f[FrameHeaderSize:]
	rec[0] = typ
	clear(rec[1:4])
	le.PutUint32(rec[4:], count)
	le.PutUint64(rec[8:], id)
	SealFrame(f)
	return dst
}

// Marker is a decoded marker record.
type Marker struct {
	Type  byte
	Count uint32
	ID    uint64
}

// DecodeMarker decodes a marker record, or reports false.
func DecodeMarker(rec []byte) (Marker, bool) {
	if len(rec) != MarkerSize || rec[0] < RecBatchBegin || rec[0] > RecFenceCancel {
		return Marker{}, false
	}
	return Marker{Type: rec[0], Count: le.Uint32(rec[4:]), ID: le.Uint64(rec[8:])}, true
}

// KnownRecord reports whether rec starts like a record batpak writes; the
// torn-tail check uses it to tell a later valid frame from noise.
func KnownRecord(rec []byte) bool {
	return rec[0] >= RecEvent && rec[0] <= RecFenceCancel
}
