package segment

import (
	"bytes"
	"math/rand"
	"testing"

	"github.com/batpak-go/batpak/core/internal/format"
)

// framesOfSizes is a plain segment (key 1) of frames whose records have
// the sizes given, each half random and half zeros.
func framesOfSizes(sizes []int) []byte {
	b := format.EncodeSegmentHeader(1)
	r := rand.New(rand.NewSource(1))
	for _, n := range sizes {
		rec := make([]byte, n)
		// half random, half compressible
		r.Read(rec[:n/2])
		b = format.AppendFrame(b, rec)
	}
	return b
}

// Sound packed files of both codecs, with frames larger than a block,
// one at the largest record size, read back whole and frame by frame.
// Sound packed files of both codecs — small frames, frames just over and
// exactly a block, 1 MiB frames, one at the largest record size — read
// back whole and frame by frame under the block and table checks.
func TestPackedRoundTripsFramesOfEverySize(t *testing.T) {
	cases := map[string][]int{
		"small":        {100, 200, 3000, 40},
		"just-over":    {100, packedBlockSize - format.FrameHeaderSize + 1, 50},
		"exact-block":  {packedBlockSize - format.FrameHeaderSize, 20},
		"1MiB-between": {100, 1 << 20, 100, 70 << 10, 64 << 10},
		"max-record":   {100, format.MaxRecordSize, 100},
	}
	for name, sizes := range cases {
		for _, codec := range []Codec{CodecZstd, CodecS2} {
			logical := framesOfSizes(sizes)
			file, err := encodePacked(logical, 1, codec, false)
			if err != nil {
				t.Fatal(err)
			}
			p, err := ParsePacked(file, 1)
			if err != nil {
				t.Fatalf("%s/%s: parse: %v", name, codec, err)
			}
			got, err := p.Logical(file, 1)
			if err != nil || !bytes.Equal(got[format.SegmentHeaderSize:], logical[format.SegmentHeaderSize:]) {
				t.Fatalf("%s/%s: logical: %v", name, codec, err)
			}
			for off := format.SegmentHeaderSize; off < len(logical); {
				fr, ok, err := p.Frame(file, off)
				if err != nil || !ok {
					t.Fatalf("%s/%s: frame at %d: %v %v", name, codec, off, ok, err)
				}
				off += len(fr)
			}
		}
	}
}
