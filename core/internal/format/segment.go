package format

import (
	"bytes"
	"fmt"
)

// Segment files: "<20-digit id>.seg", a 32-byte header, then frames.
const (
	SegmentHeaderSize = 32
	SegmentVersion    = 1
	SegmentSuffix     = ".seg"
)

// SegmentMagic starts every plain segment file.
var SegmentMagic = [8]byte{'B', 'P', 'A', 'K', 'S', 'E', 'G', 0}

// Segment keys. A segment is named by its position in the log (id, the low
// 24 bits of its key) and, once compaction has rewritten it, a generation
// (the high 8 bits): "<id>.seg" for generation 0, "<id>.<gen>.seg" after.
// A rewrite never reuses a file name, so a reader holding an old location
// fails cleanly (and retries) instead of reading another file's bytes.
const (
	SegIDBits = 24
	SegIDMask = 1<<SegIDBits - 1
)

// SegID is the position part of a segment key.
func SegID(key uint32) uint32 { return key & SegIDMask }

// SegGen is the generation part of a segment key.
func SegGen(key uint32) uint32 { return key >> SegIDBits }

// SegmentName is the file name of the segment with this key.
func SegmentName(key uint32) string {
	if g := SegGen(key); g > 0 {
		return fmt.Sprintf("%020d.%d%s", SegID(key), g, SegmentSuffix)
	}
	return fmt.Sprintf("%020d%s", key, SegmentSuffix)
}

// EncodeSegmentHeader returns the header of segment id.
func EncodeSegmentHeader(id uint32) []byte {
	h := make([]byte, SegmentHeaderSize)
	copy(h, SegmentMagic[:])
	le.PutUint16(h[8:], SegmentVersion)
	le.PutUint64(h[12:], uint64(id))
	le.PutUint32(h[20:], CRC32C(h[:20]))
	return h
}

// SegmentHeaderDamaged reports whether data's header fails its magic or
// its checksum (rather than naming another segment or version): the
// frames after it may still read, each checked by its own checksum.
func SegmentHeaderDamaged(data []byte) bool {
	return len(data) >= SegmentHeaderSize && (!bytes.Equal(data[:8], SegmentMagic[:]) || le.Uint32(data[20:]) != CRC32C(data[:20]))
}

// CheckSegmentHeader validates magic, version, checksum and id; it returns
// why the header is refused, or "".
func CheckSegmentHeader(data []byte, id uint32) string {
	switch {
	case len(data) < SegmentHeaderSize:
		return "file shorter than the segment header"
	case !bytes.Equal(data[:8], SegmentMagic[:]):
		return "bad magic (not a batpak segment)"
	case le.Uint32(data[20:]) != CRC32C(data[:20]):
		return "segment header checksum mismatch"
	case le.Uint16(data[8:]) != SegmentVersion:
		return fmt.Sprintf("unsupported segment version %d", le.Uint16(data[8:]))
	case le.Uint64(data[12:]) != uint64(id):
		return fmt.Sprintf("header names segment %d", le.Uint64(data[12:]))
	}
	return ""
}
