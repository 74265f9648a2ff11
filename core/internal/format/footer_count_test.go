package format_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/batpak-go/batpak/core/internal/format"
)

// craftedFooter is an empty footer whose item count says n.
func craftedFooter(n uint32) []byte {
	b := (&format.Footer{Key: 1, End: format.SegmentHeaderSize, LastEv: format.FooterNoEvent}).Encode()
	body := b[:len(b)-4]
	binary.LittleEndian.PutUint32(body[len(body)-4:], n)
	return binary.LittleEndian.AppendUint32(body, format.CRC32C(body))
}

// A footer (checksum recomputed) claiming more items than it holds is
// refused as truncated, whatever the count — also one past 2³¹, which a
// 32-bit int would read as negative.
func TestDecodeFooterRefusesCountsItCannotHold(t *testing.T) {
	for _, n := range []uint32{1, 1 << 20, 1<<31 - 1, 1 << 31, 1<<32 - 1} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("count %d: DecodeFooter panics: %v", n, p)
				}
			}()
			if _, err := format.DecodeFooter(craftedFooter(n)); !errors.Is(err, format.ErrFooterTruncated) {
				t.Errorf("count %d: %v, want %v", n, err, format.ErrFooterTruncated)
			}
		}()
	}
}
