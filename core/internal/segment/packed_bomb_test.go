package segment

import (
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/batpak-go/batpak/core/internal/format"
)

// A packed block whose checksum holds but whose contents say they decode to
// far more than the block table's length (a damaged or crafted file) is
// refused without allocating what it claims: five changed bytes of an S2
// block once made a read allocate 4 GiB, and a zstd frame's content size
// works the same way.
func TestPackedBlockDecodesWithinItsLength(t *testing.T) {
	logical := plainSegment(1, 2000, 7)
	bombs := map[Codec]func(t *testing.T) []byte{
		// S2: a stream header claiming 4 GiB.
		CodecS2: func(*testing.T) []byte { return []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0} },
		// zstd: 256 MiB of zeros, which compress to a few kilobytes.
		CodecZstd: func(t *testing.T) []byte {
			enc, err := zstd.NewWriter(nil)
			if err != nil {
				t.Fatal(err)
			}
			return enc.EncodeAll(make([]byte, 256<<20), nil)
		},
	}
	for codec, bomb := range bombs {
		t.Run(codec.String(), func(t *testing.T) {
			file, err := encodePacked(logical, 1, codec, false)
			if err != nil {
				t.Fatal(err)
			}
			file = replaceBlock0(t, file, bomb(t))
			p, err := ParsePacked(file, 1)
			if err != nil {
				t.Fatal(err)
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err = p.block(file, 0)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, errPacked) {
				t.Fatalf("block 0 read: %v, want a damaged packed segment", err)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
				t.Fatalf("reading the block allocated %d MiB", grew>>20)
			}
		})
	}
}

// A block table naming a block longer than any block can be is damaged.
func TestPackedTableRefusesOverlongBlocks(t *testing.T) {
	file, err := encodePacked(plainSegment(1, 10, 7), 1, CodecS2, false)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	tr := file[len(file)-PackedTrailerSize:]
	tableAt := le.Uint64(tr[8:])
	le.PutUint32(file[tableAt+16:], maxPackedBlock+1)
	le.PutUint32(tr[28:], format.CRC32C(file[tableAt:len(file)-4]))
	if _, err := ParsePacked(file, 1); !errors.Is(err, errPacked) {
		t.Fatalf("ParsePacked: %v, want a damaged packed segment", err)
	}
}

// replaceBlock0 rebuilds a packed file with block 0's stored bytes
// replaced by stored (the table keeps its lengths; checksums are redone).
func replaceBlock0(t *testing.T, file, stored []byte) []byte {
	t.Helper()
	le := binary.LittleEndian
	tr := file[len(file)-PackedTrailerSize:]
	tableAt, n := le.Uint64(tr[8:]), le.Uint32(tr[16:])
	table := append([]byte(nil), file[tableAt:tableAt+uint64(n)*PackedTableItemSize]...)
	oldAt, oldStored := le.Uint64(table[4:]), uint64(le.Uint32(table[12:]))
	out := append([]byte(nil), file[:oldAt]...)
	out = append(out, stored...)
	shift := int64(len(stored)) - int64(oldStored)
	out = append(out, file[oldAt+oldStored:tableAt]...)
	le.PutUint32(table[12:], uint32(len(stored)))
	le.PutUint32(table[20:], format.CRC32C(stored))
	for i := uint32(1); i < n; i++ {
		t := table[i*PackedTableItemSize:]
		le.PutUint64(t[4:], uint64(int64(le.Uint64(t[4:]))+shift))
	}
	newTableAt := len(out)
	out = append(out, table...)
	out = append(out, PackedMagic[:]...)
	out = le.AppendUint64(out, uint64(newTableAt))
	out = le.AppendUint32(out, n)
	out = le.AppendUint64(out, le.Uint64(tr[20:]))
	return le.AppendUint32(out, format.CRC32C(out[newTableAt:]))
}

// A block table whose blocks share stored bytes, cover more than a
// segment can hold (a 32-bit running sum once wrapped there), or name a
// block larger than 64 KiB that is not a single frame, is damaged: a few
// kilobytes of file once decoded to gigabytes that way.
func TestPackedTableRefusesAmplification(t *testing.T) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	zeros := enc.EncodeAll(make([]byte, 64<<20), nil)
	frame := format.AppendFrame(nil, make([]byte, 64<<20-format.FrameHeaderSize))
	oneFrame := enc.EncodeAll(frame, nil)
	for _, tc := range []struct {
		name   string
		blocks [][]byte // stored bytes per block, each 64 MiB logical
		shared bool     // every table entry names the first block's bytes
		want   string
	}{
		{"shared stored bytes", [][]byte{zeros, zeros, zeros}, true, "out of place"},
		{"more than a segment holds", repeat(oneFrame, 65), false, "blocks cover more than"},
		{"a large block that is not one frame", [][]byte{zeros}, false, "is not one frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := craftPacked(tc.blocks, 64<<20, tc.shared)
			p, err := ParsePacked(file, 1)
			if err == nil {
				_, err = p.Logical(file, 1)
			}
			if !errors.Is(err, errPacked) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a damaged packed segment: %q", err, tc.want)
			}
		})
	}
	// The same blocks, each its own stored bytes and one frame, are sound.
	file := craftPacked(repeat(oneFrame, 2), 64<<20, false)
	p, err := ParsePacked(file, 1)
	if err != nil {
		t.Fatal(err)
	}
	if data, err := p.Logical(file, 1); err != nil || len(data) != format.SegmentHeaderSize+2*len(frame) {
		t.Fatalf("two sound one-frame blocks: %d bytes, %v", len(data), err)
	}
}

func repeat(b []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// craftPacked lays out a packed segment (key 1, zstd) whose blocks hold
// the stored bytes given, each decoding to length bytes; with shared,
// every table entry names the first block's stored bytes.
func craftPacked(blocks [][]byte, length uint32, shared bool) []byte {
	le := binary.LittleEndian
	out := encodeSegmentHeaderVersion(1, PackedVersion, CodecZstd, false)
	var table []byte
	start := uint64(format.SegmentHeaderSize)
	first := len(out)
	for i, stored := range blocks {
		at := len(out)
		if shared && i > 0 {
			at = first
		} else {
			out = append(out, stored...)
		}
		table = le.AppendUint32(table, uint32(start))
		table = le.AppendUint64(table, uint64(at))
		table = le.AppendUint32(table, uint32(len(stored)))
		table = le.AppendUint32(table, length)
		table = le.AppendUint32(table, format.CRC32C(stored))
		start += uint64(length)
	}
	tableAt := len(out)
	out = append(out, table...)
	out = append(out, PackedMagic[:]...)
	out = le.AppendUint64(out, uint64(tableAt))
	out = le.AppendUint32(out, uint32(len(blocks)))
	out = le.AppendUint64(out, uint64(uint32(start)))
	return le.AppendUint32(out, format.CRC32C(out[tableAt:]))
}

// Reading a whole packed segment (Verify, compaction, recovery without a
// footer) costs about its size, whatever the codec: decoding each block
// within its length once made a zstd segment's reading quadratic (64 GiB
// allocated for 64 MiB).
func TestPackedLogicalAllocatesLinearly(t *testing.T) {
	logical := plainSegment(1, 60000, 9) // ~2.5 MiB in ~40 blocks
	for _, codec := range []Codec{CodecZstd, CodecS2} {
		file, err := encodePacked(logical, 1, codec, false)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParsePacked(file, 1)
		if err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		got, err := p.Logical(file, 1)
		runtime.ReadMemStats(&after)
		if err != nil || len(got) != len(logical) {
			t.Fatalf("%s: %d bytes, %v", codec, len(got), err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 6*uint64(len(logical)) {
			t.Fatalf("%s: reading a %d KiB segment of %d blocks allocated %d KiB", codec, len(logical)>>10, len(p.Blocks()), grew>>10)
		}
	}
}
