package format_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
)

func sampleEvent() format.Event {
	p := []byte(`{"total_cents":998}`)
	return format.Event{
		SysFlags: format.SysBatch, Seq: 41, Entity: "order:42", Scope: "shop", Idem: "k-1",
		ID: [16]byte{1}, CorrelationID: [16]byte{2}, CausationID: [16]byte{3},
		Timestamp: 1700000000000000, Clock: 7, Kind: 0x1001, Flags: 0xbeef,
		PayloadHash: format.PayloadHash(p), PrevHash: [32]byte{9}, Payload: p,
	}
}

// An event encodes to a frame that reads back field for field, whose chain
// hash covers the header and strings but not the payload bytes.
func TestEventRoundTrip(t *testing.T) {
	e := sampleEvent()
	seg := format.EncodeSegmentHeader(5)
	seg = format.AppendEvent(seg, &e)
	seg = format.AppendMarker(seg, format.RecBatchCommit, 1, 41)
	if len(seg) != format.SegmentHeaderSize+e.FrameLen()+format.FrameHeaderSize+format.MarkerSize {
		t.Fatalf("encoded %d bytes", len(seg))
	}
	if why := format.CheckSegmentHeader(seg, 5); why != "" {
		t.Fatal(why)
	}
	if why := format.CheckSegmentHeader(seg, 6); why == "" {
		t.Fatal("a header for segment 5 passed as segment 6")
	}
	rec, ok := format.FrameAt(seg, format.SegmentHeaderSize)
	if !ok || !format.CheckEvent(rec) {
		t.Fatal("the event frame does not check out")
	}
	v := format.EventView(rec)
	if v.Seq() != e.Seq || v.Clock() != e.Clock || v.Timestamp() != e.Timestamp || v.Kind() != e.Kind || v.Flags() != e.Flags ||
		v.SysFlags() != e.SysFlags || v.ID() != e.ID || v.CorrelationID() != e.CorrelationID || v.CausationID() != e.CausationID ||
		v.PayloadHash() != e.PayloadHash || v.PrevHash() != e.PrevHash || v.Hash() != e.Hash ||
		string(v.Entity()) != e.Entity || string(v.Scope()) != e.Scope || string(v.Idem()) != e.Idem || !bytes.Equal(v.Payload(), e.Payload) {
		t.Fatalf("read back %x", rec)
	}
	if e.Hash != format.ChainHash(rec, v.StringsEnd()) {
		t.Fatal("the stored hash is not the chain hash of the record")
	}
	erased := format.EventView(append([]byte(nil), rec...))
	clear(erased.Payload()) // an erasure keeps the chain
	if format.ChainHash(erased, erased.StringsEnd()) != e.Hash {
		t.Fatal("erasing the payload changed the chain hash")
	}
	var seen []byte
	end, tail, err := format.ScanFrames(seg, format.SegmentHeaderSize, func(_ int, rec []byte) error {
		seen = append(seen, rec[0])
		return nil
	})
	if err != nil || tail != format.TailClean || end != len(seg) || string(seen) != string([]byte{format.RecEvent, format.RecBatchCommit}) {
		t.Fatalf("scan: end %d of %d, tail %v, records %v, %v", end, len(seg), tail, seen, err)
	}
	m, ok := format.DecodeMarker(seg[end-format.MarkerSize:])
	if !ok || m != (format.Marker{Type: format.RecBatchCommit, Count: 1, ID: 41}) {
		t.Fatalf("marker %+v", m)
	}
}

// A scan tells zero padding, a torn tail and damage in the middle apart,
// and stops at an error from its callback.
func TestScanFramesTails(t *testing.T) {
	e := sampleEvent()
	one := format.AppendEvent(format.EncodeSegmentHeader(1), &e)
	two := format.AppendEvent(append([]byte(nil), one...), &e)
	for _, tc := range []struct {
		name string
		data []byte
		end  int
		tail format.Tail
	}{
		{"zero padding", append(append([]byte(nil), two...), make([]byte, 100)...), len(two), format.TailClean},
		{"torn last frame", two[:len(two)-3], len(one), format.TailTorn},
		{"damaged first frame", func() []byte {
			d := append([]byte(nil), two...)
			d[format.SegmentHeaderSize+format.FrameHeaderSize+format.OffClock] ^= 1
			return d
		}(), format.SegmentHeaderSize, format.TailCorrupt},
		{"shorter than the header", one[:10], format.SegmentHeaderSize, format.TailClean},
	} {
		end, tail, err := format.ScanFrames(tc.data, format.SegmentHeaderSize, func(int, []byte) error { return nil })
		if err != nil || end != tc.end || tail != tc.tail {
			t.Errorf("%s: end %d tail %v (%v), want end %d tail %v", tc.name, end, tail, err, tc.end, tc.tail)
		}
	}
	stop := errors.New("stop")
	if end, _, err := format.ScanFrames(two, format.SegmentHeaderSize, func(off int, _ []byte) error {
		if off > format.SegmentHeaderSize {
			return stop
		}
		return nil
	}); err != stop || end != len(one) {
		t.Fatalf("callback error: end %d, %v", end, err)
	}
}

// Bytes after the last good frame that claim large records at every
// offset do not make the search for a later frame cost its product: the
// record type (and an event's field lengths) are checked before a CRC,
// and the CRCs are bounded (ResyncBudget). Bytes shaped so that no
// offset names a known record are a torn tail; bytes shaped so that every
// fourth does are taken as damage once the budget is spent, never as a
// clean end. A valid frame after damage is still found.
func TestScanFramesBoundsTheSearchAfterDamage(t *testing.T) {
	e := sampleEvent()
	one := format.AppendEvent(format.EncodeSegmentHeader(1), &e)
	tail := func(pattern []byte) []byte {
		return append(append([]byte(nil), one...), bytes.Repeat(pattern, 1<<20)...) // 4 MiB
	}
	for _, tc := range []struct {
		name    string
		pattern []byte
		want    format.Tail
	}{
		// Every fourth offset claims a 1 MiB record of type 0.
		{"no known record", []byte{0x00, 0x00, 0x10, 0x00}, format.TailTorn},
		// Every fourth offset claims a 1 MiB batch-commit record.
		{"a known record everywhere", []byte{format.RecBatchCommit, 0x00, 0x10, 0x00}, format.TailCorrupt},
	} {
		done := make(chan struct{})
		var end int
		var got format.Tail
		go func() {
			defer close(done)
			end, got, _ = format.ScanFrames(tail(tc.pattern), format.SegmentHeaderSize, func(int, []byte) error { return nil })
		}()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatalf("%s: the scan still runs after a minute", tc.name)
		}
		if end != len(one) || got != tc.want {
			t.Errorf("%s: end %d tail %v, want end %d tail %v", tc.name, end, got, len(one), tc.want)
		}
	}
	// A valid frame after damage is found, and the budget is spent by CRCs
	// only.
	d := append(append(append([]byte(nil), one...), bytes.Repeat([]byte{0xff}, 1000)...), format.AppendEvent(nil, &e)...)
	budget := format.ResyncBudget(1000)
	p, found, exhausted := format.NextFrame(d, len(one), &budget)
	if !found || exhausted || p != len(one)+1000 {
		t.Fatalf("NextFrame after 1000 damaged bytes: %d %v %v, want %d found", p, found, exhausted, len(one)+1000)
	}
	if spent := format.ResyncBudget(1000) - budget; spent > int64(len(d)) {
		t.Fatalf("%d bytes of CRCs spent to find one frame", spent)
	}
}

func TestSegmentNames(t *testing.T) {
	if n := format.SegmentName(7); n != "00000000000000000007.seg" {
		t.Error(n)
	}
	key := uint32(3)<<format.SegIDBits | 7
	if n := format.SegmentName(key); n != "00000000000000000007.3.seg" || format.SegID(key) != 7 || format.SegGen(key) != 3 {
		t.Error(n)
	}
}

// A footer lists every frame of a segment and decodes back to the same
// items; damage is refused with its reason.
func TestFooterRoundTrip(t *testing.T) {
	e := sampleEvent()
	seg := format.AppendMarker(format.EncodeSegmentHeader(3), format.RecBatchBegin, 1, e.Seq)
	eventOff := len(seg)
	seg = format.AppendEvent(seg, &e)
	seg = format.AppendMarker(seg, format.RecBatchCommit, 1, e.Seq)
	b, err := format.EncodeFooter(append(seg, make([]byte, 64)...), 3)
	if err != nil {
		t.Fatal(err)
	}
	f, err := format.DecodeFooter(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Key != 3 || f.End != uint64(len(seg)) || f.LastEv != uint64(eventOff) || f.LastID != e.ID || len(f.Items) != 3 {
		t.Fatalf("footer %+v", f)
	}
	it := format.ParseFooterItem(f.Items[1])
	if it.Type != format.RecEvent || it.Off != uint32(eventOff) || it.Seq != e.Seq || it.ID != e.ID || it.Clock != e.Clock ||
		it.Kind != e.Kind || it.SysFlags != e.SysFlags || it.Hash != e.Hash || string(f.Names[it.Entity]) != e.Entity ||
		string(f.Names[it.Scope]) != e.Scope || string(it.Idem) != e.Idem {
		t.Fatalf("event item %+v", it)
	}
	if m := format.ParseFooterItem(f.Items[2]); m.Type != format.RecBatchCommit || m.Count != 1 || m.MarkerID != e.Seq {
		t.Fatalf("marker item %+v", m)
	}
	if !bytes.Equal(f.Encode(), b) {
		t.Fatal("decode and encode do not round-trip")
	}
	flipped := append([]byte(nil), b...)
	flipped[len(flipped)/2] ^= 1
	for _, tc := range []struct {
		b    []byte
		want error
	}{{b[:10], format.ErrFooterMagic}, {flipped, format.ErrFooterChecksum}} {
		if _, err := format.DecodeFooter(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("DecodeFooter: %v, want %v", err, tc.want)
		}
	}
	f.Items = f.Items[:2] // an edited footer encodes again with a valid checksum
	if g, err := format.DecodeFooter(f.Encode()); err != nil || len(g.Items) != 2 {
		t.Fatalf("re-encoded footer: %v", err)
	}
}
