package format_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/batpak-go/batpak/core/internal/format"
)

// chunkedSegment is a segment whose frames vary in size, from markers to
// events far larger than the smaller read buffers below, with a fresh
// entity every few events and a few idempotency keys.
func chunkedSegment() []byte {
	seg := format.EncodeSegmentHeader(7)
	for i := range 600 {
		e := sampleEvent()
		p := bytes.Repeat([]byte("7"), 1+(i*37)%900)
		if i%97 == 0 {
			p = bytes.Repeat([]byte("8"), 20_000)
		}
		e.Payload, e.PayloadHash, e.Seq = p, format.PayloadHash(p), uint64(i)
		e.Entity = fmt.Sprintf("order:%d", i/5)
		if i%11 == 0 {
			e.Idem = fmt.Sprintf("key-%d", i)
		}
		seg = format.AppendEvent(seg, &e)
		if i%9 == 0 {
			seg = format.AppendMarker(seg, format.RecBatchCommit, 3, uint64(i))
		}
	}
	return seg
}

// The footer built from a segment read a chunk at a time is the footer
// built from the whole segment in memory, byte for byte, whatever the
// chunk size: frames straddling two chunks, and frames larger than the
// buffer, are read whole.
func TestFooterFromChunksMatchesWholeSegment(t *testing.T) {
	seg := chunkedSegment()
	want, err := format.EncodeFooter(seg, 7)
	if err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int{format.SegmentHeaderSize, 64, 333, 4096, 32 << 10, 1 << 20} {
		parts, ok, err := format.EncodeFooterPartsAt(bytes.NewReader(seg), int64(len(seg)), 7, make([]byte, chunk))
		if err != nil || !ok {
			t.Fatalf("chunk %d: ok %v, %v", chunk, ok, err)
		}
		if got := bytes.Join(parts, nil); !bytes.Equal(got, want) {
			t.Fatalf("chunk %d: a footer of %d bytes differs from the one built whole (%d bytes)", chunk, len(got), len(want))
		}
	}
}

// A segment whose frames stop short of the size given — zeros after them,
// a torn last frame, a damaged frame in the middle — builds nothing
// (ok false, no error): the caller then scans the mapped bytes, which tell
// which of those it is.
func TestFooterFromChunksStopsShortOfSize(t *testing.T) {
	seg := chunkedSegment()
	zeros := append(append([]byte(nil), seg...), make([]byte, 5000)...)
	torn := seg[:len(seg)-3]
	damaged := append([]byte(nil), seg...)
	damaged[len(seg)/2] ^= 0xff
	for name, data := range map[string][]byte{"zero tail": zeros, "torn tail": torn, "damaged": damaged} {
		for _, chunk := range []int{64, 4096} {
			parts, ok, err := format.EncodeFooterPartsAt(bytes.NewReader(data), int64(len(data)), 7, make([]byte, chunk))
			if err != nil || ok || parts != nil {
				t.Fatalf("%s, chunk %d: ok %v, %d parts, %v; want nothing built and no error", name, chunk, ok, len(parts), err)
			}
		}
	}
}

// failingReader fails every read from off on.
type failingReader struct {
	r   io.ReaderAt
	off int64
}

var errDisk = errors.New("injected read error")

func (f failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.off {
		return 0, errDisk
	}
	return f.r.ReadAt(p, off)
}

// A read that fails part way is the footer's error, not a short footer.
func TestFooterFromChunksReportsReadErrors(t *testing.T) {
	seg := chunkedSegment()
	for _, at := range []int64{10, int64(len(seg)) / 2, int64(len(seg)) - 1} {
		_, ok, err := format.EncodeFooterPartsAt(failingReader{bytes.NewReader(seg), at}, int64(len(seg)), 7, make([]byte, 4096))
		if !errors.Is(err, errDisk) || ok {
			t.Fatalf("read failing at %d: ok %v, %v; want the read's error", at, ok, err)
		}
	}
}
