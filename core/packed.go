package core

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/vfs"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Compression says how sealed segments are stored.
type Compression uint8

const (
	// CompressionNone keeps sealed segments as written: reads map them.
	CompressionNone Compression = iota
	// CompressionZstd stores sealed segments as zstd blocks: the best ratio
	// (several times on JSON payloads), a block decompressed per cold read.
	CompressionZstd
	// CompressionS2 stores sealed segments as S2 blocks: a lower ratio than
	// zstd, several times cheaper to compress and to read.
	CompressionS2
)

func (c Compression) String() string {
	switch c {
	case CompressionZstd:
		return "zstd"
	case CompressionS2:
		return "s2"
	case CompressionNone:
		return "none"
	}
	return fmt.Sprintf("Compression(%d)", uint8(c))
}

// ParseCompression parses "none", "zstd" or "s2" (any case).
func ParseCompression(s string) (Compression, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "none", "":
		return CompressionNone, nil
	case "zstd":
		return CompressionZstd, nil
	case "s2":
		return CompressionS2, nil
	}
	return 0, fmt.Errorf("batpak: unknown compression %q (want none, zstd or s2)", s)
}

// Packed segments. A sealed segment can be stored compressed, as a new
// generation of its file (written like a compaction's, see compact.go):
//
//	header (32 bytes, as a plain segment's, version 2, codec at byte 10,
//	        byte 11 = 1 when every frame kept its offset, see packedSamePlaces) |
//	blocks | block table | trailer
//	block table: n × (logical start u32, file offset u64, stored length u32,
//	                  logical length u32, CRC32C of the stored bytes u32)
//	trailer (32 bytes): "BPAKBLKS" | table offset u64 | blocks u32 |
//	                  logical size u64 | CRC32C of table and trailer u32
//
// The logical content is the plain segment — its header, then its frames
// at the same offsets — cut into blocks of about packedBlockSize at frame
// boundaries (a frame never spans blocks), each compressed on its own.
// Index entries keep naming logical offsets, so reading one event
// decompresses one block, never the segment.
const (
	packedVersion   = 2
	packedTrailer   = 32
	packedTableItem = 24
	packedBlockSize = 64 << 10
)

var packedMagic = [8]byte{'B', 'P', 'A', 'K', 'B', 'L', 'K', 'S'}

// packedSamePlaces (header byte 11) marks a packed segment written by the
// sealer from the previous generation byte for byte: every frame is at the
// offset it had there. A reader whose index names the previous generation
// (a read-only store that opened before the packing) reads this one.
const packedSamePlaces = 1

// repackedKey is the generation that packing segment key produces.
func repackedKey(key uint32) uint32 {
	if format.SegGen(key) == 255 {
		return format.SegID(key) | 1<<format.SegIDBits
	}
	return format.SegID(key) | (format.SegGen(key)+1)<<format.SegIDBits
}

var (
	zstdEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	zstdDec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderLowmem(true))
)

type packedBlock struct {
	start  uint32 // logical offset
	fileAt int64
	stored uint32
	length uint32 // logical length
	crc    uint32
}

// packedSeg is the block table of a packed segment file.
type packedSeg struct {
	codec  Compression
	size   int64 // logical size
	blocks []packedBlock

	mu    sync.Mutex
	cache [4]struct {
		idx  int
		data []byte // immutable once cached
	}
	next int
}

// encodePacked compresses the logical segment data (header included) into
// a packed segment file's bytes.
func encodePacked(data []byte, key uint32, codec Compression, samePlaces bool) ([]byte, error) {
	out := make([]byte, 0, len(data)/3+1024)
	h := encodeSegmentHeaderVersion(key, packedVersion, codec, samePlaces)
	out = append(out, h...)
	var table []byte
	pos := format.SegmentHeaderSize
	nblocks := 0
	for pos < len(data) {
		end := pos
		for end < len(data) && (end == pos || end-pos < packedBlockSize) {
			if end+format.FrameHeaderSize > len(data) {
				return nil, fmt.Errorf("batpak: pack segment: no frame at offset %d", end)
			}
			n := int(le.Uint32(data[end:]))
			if n < format.MinRecordSize || end+format.FrameHeaderSize+n > len(data) {
				return nil, fmt.Errorf("batpak: pack segment: no frame at offset %d", end)
			}
			if end != pos && end+format.FrameHeaderSize+n-pos > packedBlockSize {
				break
			}
			end += format.FrameHeaderSize + n
		}
		at := len(out)
		switch codec {
		case CompressionZstd:
			out = zstdEnc.EncodeAll(data[pos:end], out)
		case CompressionS2:
			out = append(out, s2.EncodeBetter(nil, data[pos:end])...)
		default:
			return nil, fmt.Errorf("batpak: pack segment: codec %s", codec)
		}
		stored := out[at:]
		table = le.AppendUint32(table, uint32(pos))
		table = le.AppendUint64(table, uint64(at))
		table = le.AppendUint32(table, uint32(len(stored)))
		table = le.AppendUint32(table, uint32(end-pos))
		table = le.AppendUint32(table, format.CRC32C(stored))
		nblocks++
		pos = end
	}
	tableAt := len(out)
	out = append(out, table...)
	out = append(out, packedMagic[:]...)
	out = le.AppendUint64(out, uint64(tableAt))
	out = le.AppendUint32(out, uint32(nblocks))
	out = le.AppendUint64(out, uint64(len(data)))
	out = le.AppendUint32(out, format.CRC32C(out[tableAt:]))
	return out, nil
}

func encodeSegmentHeaderVersion(key uint32, version uint16, codec Compression, samePlaces bool) []byte {
	h := make([]byte, format.SegmentHeaderSize)
	copy(h, format.SegmentMagic[:])
	le.PutUint16(h[8:], version)
	h[10] = byte(codec)
	if samePlaces {
		h[11] = packedSamePlaces
	}
	le.PutUint64(h[12:], uint64(key))
	le.PutUint32(h[20:], format.CRC32C(h[:20]))
	return h
}

// isPackedHeader reports whether data starts with a sound packed-segment
// header.
func isPackedHeader(data []byte) bool {
	return len(data) >= format.SegmentHeaderSize && string(data[:8]) == string(format.SegmentMagic[:]) &&
		le.Uint16(data[8:]) == packedVersion && le.Uint32(data[20:]) == format.CRC32C(data[:20])
}

// errPacked marks a packed segment whose structure is damaged.
var errPacked = errors.New("packed segment damaged")

// parsePacked reads the block table of a packed segment file (the whole
// file in data). It checks the header, the trailer and the table; block
// contents are checked when read.
func parsePacked(data []byte, key uint32) (*packedSeg, error) {
	if len(data) < format.SegmentHeaderSize+packedTrailer {
		return nil, fmt.Errorf("%w: file shorter than header and trailer", errPacked)
	}
	if le.Uint64(data[12:]) != uint64(key) {
		return nil, fmt.Errorf("%w: header names segment %d", errPacked, le.Uint64(data[12:]))
	}
	codec := Compression(data[10])
	if codec != CompressionZstd && codec != CompressionS2 {
		return nil, fmt.Errorf("%w: unknown codec %d", errPacked, data[10])
	}
	tr := data[len(data)-packedTrailer:]
	if string(tr[:8]) != string(packedMagic[:]) {
		return nil, fmt.Errorf("%w: no block table trailer (a segment packed only in part)", errPacked)
	}
	tableAt, n, size := int64(le.Uint64(tr[8:])), int(le.Uint32(tr[16:])), int64(le.Uint64(tr[20:]))
	if tableAt < format.SegmentHeaderSize || tableAt+int64(n)*packedTableItem != int64(len(data)-packedTrailer) {
		return nil, fmt.Errorf("%w: block table out of place", errPacked)
	}
	if format.CRC32C(data[tableAt:len(data)-4]) != le.Uint32(tr[28:]) {
		return nil, fmt.Errorf("%w: block table checksum mismatch", errPacked)
	}
	p := &packedSeg{codec: codec, size: size, blocks: make([]packedBlock, n)}
	want := uint32(format.SegmentHeaderSize)
	for i := range p.blocks {
		t := data[tableAt+int64(i)*packedTableItem:]
		b := packedBlock{start: le.Uint32(t), fileAt: int64(le.Uint64(t[4:])), stored: le.Uint32(t[12:]), length: le.Uint32(t[16:]), crc: le.Uint32(t[20:])}
		if b.start != want || b.fileAt < format.SegmentHeaderSize || b.fileAt+int64(b.stored) > tableAt || b.length == 0 {
			return nil, fmt.Errorf("%w: block %d out of place", errPacked, i)
		}
		want += b.length
		p.blocks[i] = b
	}
	if int64(want) != size && !(n == 0 && size == format.SegmentHeaderSize) {
		return nil, fmt.Errorf("%w: blocks cover %d bytes, the trailer says %d", errPacked, want, size)
	}
	for i := range p.cache {
		p.cache[i].idx = -1
	}
	return p, nil
}

// block returns the logical bytes of block i, checked and decompressed
// (the last few are cached). The result must not be modified.
func (p *packedSeg) block(file []byte, i int) ([]byte, error) {
	p.mu.Lock()
	for _, c := range p.cache {
		if c.idx == i {
			p.mu.Unlock()
			return c.data, nil
		}
	}
	p.mu.Unlock()
	d, err := p.decode(file, i, nil)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.cache[p.next] = struct {
		idx  int
		data []byte
	}{i, d}
	p.next = (p.next + 1) % len(p.cache)
	p.mu.Unlock()
	return d, nil
}

// decode decompresses block i into dst (appending).
func (p *packedSeg) decode(file []byte, i int, dst []byte) ([]byte, error) {
	b := p.blocks[i]
	stored := file[b.fileAt : b.fileAt+int64(b.stored)]
	if format.CRC32C(stored) != b.crc {
		return nil, fmt.Errorf("%w: block %d (file offset %d) fails its checksum", errPacked, i, b.fileAt)
	}
	start := len(dst)
	var err error
	switch p.codec {
	case CompressionZstd:
		dst, err = zstdDec.DecodeAll(stored, dst)
	case CompressionS2:
		var n int
		if n, err = s2.DecodedLen(stored); err == nil {
			dst = format.Grow(dst, n)
			_, err = s2.Decode(dst[start:], stored)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: block %d (file offset %d): %v", errPacked, i, b.fileAt, err)
	}
	if len(dst)-start != int(b.length) {
		return nil, fmt.Errorf("%w: block %d holds %d bytes, the table says %d", errPacked, i, len(dst)-start, b.length)
	}
	return dst, nil
}

// frame returns a copy of the frame (header and record) at logical offset
// off, or false when no whole frame starts there.
func (p *packedSeg) frame(file []byte, off int) ([]byte, bool, error) {
	i := sort.Search(len(p.blocks), func(i int) bool { return int(p.blocks[i].start) > off }) - 1
	if i < 0 {
		return nil, false, nil
	}
	d, err := p.block(file, i)
	if err != nil {
		return nil, false, err
	}
	rel := off - int(p.blocks[i].start)
	rec, ok := format.FrameAt(d, rel)
	if !ok {
		return nil, false, nil
	}
	return append([]byte(nil), d[rel:rel+format.FrameHeaderSize+len(rec)]...), true, nil
}

// logical decompresses every block into the plain segment's bytes (header
// included: a plain header for key, so frame scans apply unchanged).
func (p *packedSeg) logical(file []byte, key uint32) ([]byte, error) {
	out := make([]byte, 0, p.size)
	out = append(out, format.EncodeSegmentHeader(key)...)
	for i := range p.blocks {
		var err error
		if out, err = p.decode(file, i, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// loadSegment returns the logical bytes of segment file path (key):
// a read-only mapping of a plain segment, the decompressed content of a
// packed one. packed reports which; release frees the bytes. A damaged
// packed segment is a *CorruptionError.
func loadSegment(fsys vfs.FS, path string, key uint32) (data []byte, packed bool, release func(), err error) {
	data, unmap, err := mapFile(fsys, path)
	if err != nil {
		return nil, false, nil, err
	}
	if !isPackedHeader(data) {
		return data, false, unmap, nil
	}
	defer unmap()
	p, err := parsePacked(data, key)
	if err != nil {
		return nil, true, nil, &CorruptionError{File: path, Reason: err.Error()}
	}
	out, err := p.logical(data, key)
	if err != nil {
		return nil, true, nil, &CorruptionError{File: path, Reason: err.Error()}
	}
	return out, true, func() {}, nil
}

// writePackedFile writes a packed segment to path and syncs it.
func writePackedFile(fsys vfs.FS, path string, data []byte, key uint32, codec Compression, samePlaces bool) (int64, error) {
	b, err := encodePacked(data, key, codec, samePlaces)
	if err != nil {
		return 0, err
	}
	return writePlainFile(fsys, path, b)
}

// fileHeader reads the first format.SegmentHeaderSize bytes of the file at path
// and its size; ok is false when it cannot be opened or is shorter.
func fileHeader(fsys vfs.FS, path string) (h []byte, size int64, f vfs.File, ok bool) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, 0, nil, false
	}
	st, err := f.Stat()
	h = make([]byte, format.SegmentHeaderSize)
	if err != nil || st.Size() < format.SegmentHeaderSize {
		f.Close()
		return nil, 0, nil, false
	}
	if _, err := f.ReadAt(h, 0); err != nil {
		f.Close()
		return nil, 0, nil, false
	}
	return h, st.Size(), f, true
}

// logicalSize is the size of a segment's plain content: the file size of
// a plain segment, the size its trailer records for a packed one.
func logicalSize(fsys vfs.FS, path string) (int64, error) {
	h, size, f, ok := fileHeader(fsys, path)
	if !ok {
		st, err := fsys.Stat(path)
		if err != nil {
			return 0, err
		}
		return st.Size(), nil
	}
	defer f.Close()
	if !isPackedHeader(h) || size < format.SegmentHeaderSize+packedTrailer {
		return size, nil
	}
	tr := make([]byte, packedTrailer)
	if _, err := f.ReadAt(tr, size-packedTrailer); err != nil {
		return 0, err
	}
	return int64(le.Uint64(tr[20:])), nil
}

// samePlacesPacked reports whether path is a packed segment whose frames
// kept the offsets of the previous generation (see packedSamePlaces).
func samePlacesPacked(fsys vfs.FS, path string) bool {
	h, _, f, ok := fileHeader(fsys, path)
	if ok {
		f.Close()
	}
	return ok && isPackedHeader(h) && h[11] == packedSamePlaces
}

// isPackedFile reports whether the segment file at path is packed.
func isPackedFile(fsys vfs.FS, path string) bool {
	h, _, f, ok := fileHeader(fsys, path)
	if ok {
		f.Close()
	}
	return ok && isPackedHeader(h)
}
