package format_test

import (
	"testing"

	"github.com/batpak-go/batpak/core/internal/format"
)

// BenchmarkEncodeFooter builds the footer of a 64 MiB segment of small
// events, joined (one buffer: what compaction writes) and in parts (what
// the sealer writes: the items, about half the segment here, are never
// copied).
//
//	go test ./core/internal/format -run '^$' -bench EncodeFooter -benchmem
func BenchmarkEncodeFooter(b *testing.B) {
	seg := format.EncodeSegmentHeader(1)
	p := []byte(`{"amount":1234,"currency":"EUR","note":"benchmark event payload of about a hundred bytes"}`)
	for i := 0; len(seg) < 64<<20; i++ {
		e := sampleEvent()
		e.Payload, e.PayloadHash, e.Seq = p, format.PayloadHash(p), uint64(i)
		seg = format.AppendEvent(seg, &e)
	}
	b.Run("joined", func(b *testing.B) {
		b.SetBytes(int64(len(seg)))
		for range b.N {
			if _, err := format.EncodeFooter(seg, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parts", func(b *testing.B) {
		b.SetBytes(int64(len(seg)))
		for range b.N {
			if _, err := format.EncodeFooterParts(seg, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}
