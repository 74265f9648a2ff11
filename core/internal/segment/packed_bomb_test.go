package segment

import (
	"encoding/binary"
	"errors"
	"runtime"
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
