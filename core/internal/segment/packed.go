package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/vfs"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

var le = binary.LittleEndian

// Codec is how a packed segment's blocks are compressed; the values are
// core.Compression's (and the byte stored in a packed header).
type Codec uint8

// The codecs a packed segment can use.
const (
	CodecZstd Codec = 1
	CodecS2   Codec = 2
)

func (c Codec) String() string {
	switch c {
	case CodecZstd:
		return "zstd"
	case CodecS2:
		return "s2"
	}
	return fmt.Sprintf("codec %d", uint8(c))
}

// Packed segment layout (see doc.go).
const (
	// PackedVersion is the segment header version of a packed file.
	PackedVersion = 2
	// PackedTrailerSize is the trailer at the end of a packed file.
	PackedTrailerSize = 32
	// PackedTableItemSize is one entry of the block table.
	PackedTableItemSize = 24
	packedBlockSize     = 64 << 10
	// maxPackedBlock is the most one block holds: packedBlockSize of
	// frames, or a single frame larger than that. A block table naming a
	// longer block is damaged.
	maxPackedBlock = max(packedBlockSize, format.FrameHeaderSize+format.MaxRecordSize)
	// MaxPackedSize is the most a packed segment's blocks may cover (its
	// logical size, header included): frame offsets are 32-bit, and a
	// segment never holds more (Config.SegmentMaxBytes is at most that).
	MaxPackedSize = 1<<32 - 1
)

// PackedMagic starts a packed file's trailer.
var PackedMagic = [8]byte{'B', 'P', 'A', 'K', 'B', 'L', 'K', 'S'}

// packedSamePlaces (header byte 11) marks a packed segment written by the
// sealer from the previous generation byte for byte: every frame is at the
// offset it had there. A reader whose index names the previous generation
// (a read-only store that opened before the packing) reads this one.
const packedSamePlaces = 1

// RepackedKey is the generation that packing segment key produces.
func RepackedKey(key uint32) uint32 {
	if format.SegGen(key) == 255 {
		return format.SegID(key) | 1<<format.SegIDBits
	}
	return format.SegID(key) | (format.SegGen(key)+1)<<format.SegIDBits
}

var (
	zstdEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	// zstdDec decodes no more than the room its destination has (decode
	// gives it exactly the block's length): a block whose frame says, or
	// turns out, larger fails instead of allocating what it claims.
	zstdDec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderLowmem(true),
		zstd.WithDecodeAllCapLimit(true), zstd.WithDecoderMaxMemory(maxPackedBlock))
)

// PackedBlock is one entry of a packed file's block table.
type PackedBlock struct {
	Start  uint32 // logical offset of its first byte
	FileAt int64  // where its stored bytes start in the file
	Stored uint32 // stored (compressed) length
	Length uint32 // logical length
	CRC    uint32 // CRC32C of the stored bytes
}

// Packed is the block table of a packed segment file, from ParsePacked.
// It keeps the last few decompressed blocks; safe for concurrent use. The
// file bytes passed to its methods must be the ones it was parsed from.
type Packed struct {
	codec  Codec
	size   int64 // logical size
	blocks []PackedBlock

	mu    sync.Mutex
	cache [4]struct {
		idx  int
		data []byte // immutable once cached
	}
	next int
}

// encodePacked compresses the logical segment data (header included) into
// a packed segment file's bytes.
func encodePacked(data []byte, key uint32, codec Codec, samePlaces bool) ([]byte, error) {
	out := make([]byte, 0, len(data)/3+1024)
	h := encodeSegmentHeaderVersion(key, PackedVersion, codec, samePlaces)
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
		case CodecZstd:
			out = zstdEnc.EncodeAll(data[pos:end], out)
		case CodecS2:
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
	out = append(out, PackedMagic[:]...)
	out = le.AppendUint64(out, uint64(tableAt))
	out = le.AppendUint32(out, uint32(nblocks))
	out = le.AppendUint64(out, uint64(len(data)))
	out = le.AppendUint32(out, format.CRC32C(out[tableAt:]))
	return out, nil
}

func encodeSegmentHeaderVersion(key uint32, version uint16, codec Codec, samePlaces bool) []byte {
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

// IsPackedHeader reports whether data starts with a sound packed-segment
// header.
func IsPackedHeader(data []byte) bool {
	return len(data) >= format.SegmentHeaderSize && string(data[:8]) == string(format.SegmentMagic[:]) &&
		le.Uint16(data[8:]) == PackedVersion && le.Uint32(data[20:]) == format.CRC32C(data[:20])
}

// errPacked (wrapped, with what failed) marks a packed segment whose
// structure is damaged.
var errPacked = errors.New("packed segment damaged")

// ParsePacked reads the block table of a packed segment file (the whole
// file in data). It checks the header, the trailer and the table; block
// contents are checked when read.
func ParsePacked(data []byte, key uint32) (*Packed, error) {
	if len(data) < format.SegmentHeaderSize+PackedTrailerSize {
		return nil, fmt.Errorf("%w: file shorter than header and trailer", errPacked)
	}
	if le.Uint64(data[12:]) != uint64(key) {
		return nil, fmt.Errorf("%w: header names segment %d", errPacked, le.Uint64(data[12:]))
	}
	codec := Codec(data[10])
	if codec != CodecZstd && codec != CodecS2 {
		return nil, fmt.Errorf("%w: unknown codec %d", errPacked, data[10])
	}
	tr := data[len(data)-PackedTrailerSize:]
	if string(tr[:8]) != string(PackedMagic[:]) {
		return nil, fmt.Errorf("%w: no block table trailer (a segment packed only in part)", errPacked)
	}
	tableAt, n, size := int64(le.Uint64(tr[8:])), int(le.Uint32(tr[16:])), int64(le.Uint64(tr[20:]))
	if tableAt < format.SegmentHeaderSize || tableAt+int64(n)*PackedTableItemSize != int64(len(data)-PackedTrailerSize) {
		return nil, fmt.Errorf("%w: block table out of place", errPacked)
	}
	if format.CRC32C(data[tableAt:len(data)-4]) != le.Uint32(tr[28:]) {
		return nil, fmt.Errorf("%w: block table checksum mismatch", errPacked)
	}
	// The blocks' stored bytes follow the header one after another up to
	// the table, and their logical bytes one after another from the header
	// up to the trailer's size, at most MaxPackedSize: no two blocks share
	// stored bytes, so what a file decodes to grows with the file.
	p := &Packed{codec: codec, size: size, blocks: make([]PackedBlock, n)}
	want, at := uint64(format.SegmentHeaderSize), int64(format.SegmentHeaderSize)
	for i := range p.blocks {
		t := data[tableAt+int64(i)*PackedTableItemSize:]
		b := PackedBlock{Start: le.Uint32(t), FileAt: int64(le.Uint64(t[4:])), Stored: le.Uint32(t[12:]), Length: le.Uint32(t[16:]), CRC: le.Uint32(t[20:])}
		if uint64(b.Start) != want || b.FileAt != at || b.FileAt+int64(b.Stored) > tableAt || b.Length == 0 || b.Length > maxPackedBlock {
			return nil, fmt.Errorf("%w: block %d out of place", errPacked, i)
		}
		want += uint64(b.Length)
		at += int64(b.Stored)
		if want > MaxPackedSize {
			return nil, fmt.Errorf("%w: blocks cover more than %d bytes", errPacked, uint64(MaxPackedSize))
		}
		p.blocks[i] = b
	}
	if at != tableAt {
		return nil, fmt.Errorf("%w: %d bytes between the last block and the table", errPacked, tableAt-at)
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
func (p *Packed) block(file []byte, i int) ([]byte, error) {
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
func (p *Packed) decode(file []byte, i int, dst []byte) ([]byte, error) {
	b := p.blocks[i]
	stored := file[b.FileAt : b.FileAt+int64(b.Stored)]
	if format.CRC32C(stored) != b.CRC {
		return nil, fmt.Errorf("%w: block %d (file offset %d) fails its checksum", errPacked, i, b.FileAt)
	}
	// What the block decodes to is checked against the table's length
	// before that room is allocated, so a damaged (or crafted) block whose
	// checksum holds costs at most its own length, not what it claims.
	start := len(dst)
	var err error
	switch p.codec {
	case CodecZstd:
		// Decoded into the block's room only (the cap limit fails rather
		// than grow it), then dst goes on with the grown buffer's
		// capacity, so that Logical's blocks append in amortized linear
		// time rather than copying all decoded so far for each.
		grown := format.Grow(dst, int(b.Length))
		var out []byte
		if out, err = zstdDec.DecodeAll(stored, grown[:start:start+int(b.Length)]); err == nil {
			dst = append(grown[:start], out[start:]...)
		}
	case CodecS2:
		var n int
		if n, err = s2.DecodedLen(stored); err == nil && n != int(b.Length) {
			err = fmt.Errorf("decodes to %d bytes", n)
		}
		if err == nil {
			dst = format.Grow(dst, n)
			_, err = s2.Decode(dst[start:], stored)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: block %d (file offset %d): %v", errPacked, i, b.FileAt, err)
	}
	if len(dst)-start != int(b.Length) {
		return nil, fmt.Errorf("%w: block %d holds %d bytes, the table says %d", errPacked, i, len(dst)-start, b.Length)
	}
	if b.Length > packedBlockSize {
		// Only a single frame larger than a block makes one: it must be
		// that frame, whole and sound.
		if rec, ok := format.FrameAt(dst[start:], 0); !ok || format.FrameHeaderSize+len(rec) != int(b.Length) {
			return nil, fmt.Errorf("%w: block %d holds %d bytes and is not one frame", errPacked, i, b.Length)
		}
	}
	return dst, nil
}

// Frame returns a copy of the frame (header and record) at logical offset
// off, or false when no whole frame starts there.
func (p *Packed) Frame(file []byte, off int) ([]byte, bool, error) {
	i := sort.Search(len(p.blocks), func(i int) bool { return int(p.blocks[i].Start) > off }) - 1
	if i < 0 {
		return nil, false, nil
	}
	d, err := p.block(file, i)
	if err != nil {
		return nil, false, err
	}
	rel := off - int(p.blocks[i].Start)
	rec, ok := format.FrameAt(d, rel)
	if !ok {
		return nil, false, nil
	}
	return append([]byte(nil), d[rel:rel+format.FrameHeaderSize+len(rec)]...), true, nil
}

// Logical decompresses every block into the plain segment's bytes (header
// included: a plain header for key, so frame scans apply unchanged).
func (p *Packed) Logical(file []byte, key uint32) ([]byte, error) {
	// Grown as blocks decode (from at most 64 MiB): a damaged file is
	// refused at its first bad block, before its claimed size is taken.
	out := make([]byte, 0, min(p.size, 64<<20))
	out = append(out, format.EncodeSegmentHeader(key)...)
	for i, b := range p.blocks {
		var err error
		if out, err = p.decode(file, i, out); err != nil {
			return nil, err
		}
		// Each block holds whole frames (the packer cuts blocks between
		// them): a crafted file of blocks of zeros, every checksum right,
		// is refused at its first block, not after decoding gigabytes.
		d := out[len(out)-int(b.Length):]
		if end, _, _ := format.ScanFrames(d, 0, func(int, []byte) error { return nil }); end != len(d) {
			return nil, fmt.Errorf("%w: block %d holds no whole frame at logical offset %d", errPacked, i, int(b.Start)+end)
		}
	}
	return out, nil
}

// ScanBlocks hands fn the frames of every block in turn, with their
// logical offsets, decompressing one block at a time, each into memory of
// its own (fn may keep what it is handed): a packed segment is read in
// memory of one block, not of all it decodes to. A block that does not
// hold whole frames to its end (the packer cuts blocks between frames) is
// refused there, as is a block failing its checks; those errors say
// Damaged. fn's error is returned as it is.
func (p *Packed) ScanBlocks(file []byte, fn func(off int, rec []byte) error) error {
	i := 0
	return p.EachBlock(file, false, func(start int, d []byte) error {
		end, _, err := format.ScanFrames(d, 0, func(off int, rec []byte) error { return fn(start+off, rec) })
		if err != nil {
			return err
		}
		if end != len(d) {
			return fmt.Errorf("%w: block %d holds no whole frame at logical offset %d", errPacked, i, start+end)
		}
		i++
		return nil
	})
}

// EachBlock hands fn every block's decompressed bytes in turn with the
// logical offset they start at: a packed segment is read in memory of
// one block. With reuse, every block is decoded into the last one's
// memory (fn must not keep what it is handed past its return); without,
// each into memory of its own. A block failing its checks is refused
// there (an error saying Damaged); fn's error is returned as it is. The
// caller checks that a block holds whole frames.
func (p *Packed) EachBlock(file []byte, reuse bool, fn func(start int, d []byte) error) error {
	var buf []byte
	for i, b := range p.blocks {
		d, err := p.decode(file, i, buf[:0])
		if err != nil {
			return err
		}
		if reuse {
			buf = d
		}
		if err := fn(int(b.Start), d); err != nil {
			return err
		}
	}
	return nil
}

// Damaged reports whether err is a packed segment's damage (from
// ParsePacked, Logical, Frame or ScanBlocks).
func Damaged(err error) bool { return errors.Is(err, errPacked) }

// Load returns the logical bytes of segment file path (key):
// a read-only mapping of a plain segment, the decompressed content of a
// packed one. packed reports which; release frees the bytes. A damaged
// packed segment is a *CorruptError; I/O errors are returned as they are.
func Load(fsys vfs.FS, path string, key uint32) (data []byte, packed bool, release func(), err error) {
	data, p, unmap, err := Map(fsys, path, key)
	if err != nil || p == nil {
		return data, false, unmap, err
	}
	defer unmap()
	out, err := p.Logical(data, key)
	if err != nil {
		return nil, true, nil, &CorruptError{File: path, Reason: err.Error()}
	}
	return out, true, func() {}, nil
}

// Map maps segment file path (key) read-only: data is a plain segment's
// bytes (p nil), or a packed one's file with its parsed table (p), whose
// blocks the caller decodes (EachBlock, ScanBlocks) rather than the whole
// segment at once. release unmaps it. A damaged packed table is a
// *CorruptError; I/O errors are returned as they are.
func Map(fsys vfs.FS, path string, key uint32) (data []byte, p *Packed, release func(), err error) {
	if st, err := fsys.Stat(path); err == nil {
		if err := CheckFileSize(path, st.Size()); err != nil {
			return nil, nil, nil, err
		}
	}
	data, unmap, err := mapFile(fsys, path)
	if err != nil {
		return nil, nil, nil, err
	}
	if !IsPackedHeader(data) {
		return data, nil, unmap, nil
	}
	if p, err = ParsePacked(data, key); err != nil {
		unmap()
		return nil, nil, nil, &CorruptError{File: path, Reason: err.Error()}
	}
	return data, p, unmap, nil
}

// MaxFileBytes is the largest a segment file can be: its frames' offsets
// are 32-bit (Config.SegmentMaxBytes is at most 4 GiB-1).
const MaxFileBytes = 1<<32 - 1

// CheckFileSize refuses a segment file larger than MaxFileBytes (a
// sparse or overwritten file: mapping and scanning it would take time and
// memory for its whole size) with a *CorruptError naming it.
func CheckFileSize(path string, size int64) error {
	if size > MaxFileBytes {
		return &CorruptError{File: path, Reason: fmt.Sprintf("file of %d bytes, larger than any segment (%d: offsets are 32-bit)", size, int64(MaxFileBytes))}
	}
	return nil
}

// WritePacked writes a packed segment to path and syncs it (not its
// directory); it returns the file's size.
func WritePacked(fsys vfs.FS, path string, data []byte, key uint32, codec Codec, samePlaces bool) (int64, error) {
	b, err := encodePacked(data, key, codec, samePlaces)
	if err != nil {
		return 0, err
	}
	return WriteSynced(fsys, path, b)
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

// LogicalSize is the size of a segment's plain content: the file size of
// a plain segment, the size its trailer records for a packed one.
func LogicalSize(fsys vfs.FS, path string) (int64, error) {
	h, size, f, ok := fileHeader(fsys, path)
	if !ok {
		st, err := fsys.Stat(path)
		if err != nil {
			return 0, err
		}
		return st.Size(), nil
	}
	defer f.Close()
	if !IsPackedHeader(h) || size < format.SegmentHeaderSize+PackedTrailerSize {
		return size, nil
	}
	tr := make([]byte, PackedTrailerSize)
	if _, err := f.ReadAt(tr, size-PackedTrailerSize); err != nil {
		return 0, err
	}
	return int64(le.Uint64(tr[20:])), nil
}

// SamePlacesPacked reports whether path is a packed segment whose frames
// kept the offsets of the previous generation (see packedSamePlaces).
func SamePlacesPacked(fsys vfs.FS, path string) bool {
	h, _, f, ok := fileHeader(fsys, path)
	if ok {
		f.Close()
	}
	return ok && IsPackedHeader(h) && h[11] == packedSamePlaces
}

// IsPackedFile reports whether the segment file at path is packed.
func IsPackedFile(fsys vfs.FS, path string) bool {
	h, _, f, ok := fileHeader(fsys, path)
	if ok {
		f.Close()
	}
	return ok && IsPackedHeader(h)
}

// Blocks returns the block table (a copy).
func (p *Packed) Blocks() []PackedBlock { return append([]PackedBlock(nil), p.blocks...) }

// Codec is the codec the file's blocks are stored with.
func (p *Packed) Codec() Codec { return p.codec }

// Size is the logical size of the segment (the plain segment's size).
func (p *Packed) Size() int64 { return p.size }

// mapFile maps a whole file read-only.
func mapFile(fsys vfs.FS, path string) ([]byte, func(), error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	return MapOpened(fsys, f, path)
}

// MapOpened maps the whole of the open file f (at path) read-only; an
// empty file gives nil bytes. Call the returned function to unmap.
func MapOpened(fsys vfs.FS, f vfs.File, path string) ([]byte, func(), error) {
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.Size() == 0 {
		return nil, func() {}, nil
	}
	data, err := fsys.MmapRead(f, int(st.Size()))
	if err != nil {
		return nil, nil, fmt.Errorf("batpak: mmap %s: %w", path, err)
	}
	return data, func() { _ = fsys.Munmap(data) }, nil
}
