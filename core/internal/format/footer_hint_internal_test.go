package format

import (
	"bytes"
	"testing"
)

// The items' size estimated from a segment's first chunk counts a frame
// that runs past the chunk: a segment of three small events and then
// events of 3 MiB is estimated at its few items, not scaled from the
// three small ones to the whole segment (66 % of it, before).
func TestFooterItemsHintFromFirstChunk(t *testing.T) {
	seg := EncodeSegmentHeader(7)
	ev := func(seq int, p []byte) {
		e := Event{Seq: uint64(seq), Entity: "order:1", Scope: "shop", ID: [16]byte{byte(seq), 1},
			Timestamp: 1, Clock: uint64(seq), Kind: 1, PayloadHash: PayloadHash(p), Payload: p}
		seg = AppendEvent(seg, &e)
	}
	for i := range 3 {
		ev(i, []byte("small"))
	}
	big := bytes.Repeat([]byte("x"), 3<<20)
	for i := 3; i < 40; i++ { // ~111 MiB
		ev(i, big)
	}
	buf := make([]byte, 1<<20)
	hint := footerItemsSize(seg[:len(buf)], SegmentHeaderSize, len(seg))
	parts, ok, err := EncodeFooterPartsAt(bytes.NewReader(seg), int64(len(seg)), 7, buf)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if items := len(parts[1]); hint > 100*items {
		t.Errorf("items of %d bytes estimated at %d bytes (%.0f %% of the segment)", items, hint, 100*float64(hint)/float64(len(seg)))
	}
}
