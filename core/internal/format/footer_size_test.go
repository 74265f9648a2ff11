package format_test

import (
	"runtime"
	"testing"

	"github.com/batpak-go/batpak/core/internal/format"
)

// footerAlloc is how many bytes EncodeFooter allocates for data.
func footerAlloc(t *testing.T, data []byte) (uint64, []byte) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b, err := format.EncodeFooter(data, 1)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	return after.TotalAlloc - before.TotalAlloc, b
}

// Sealing a segment costs memory for its footer, not for its payloads: a
// segment of large events (a 256 MiB segment of 1 MiB payloads is a few
// hundred items) is not charged a buffer in proportion to its size, and a
// segment of small events still builds its items without regrowing.
func TestEncodeFooterAllocatesForItemsNotPayloads(t *testing.T) {
	for _, tc := range []struct {
		name     string
		payload  int
		events   int
		idem     string
		maxRatio float64 // allocated bytes per footer byte
	}{
		{"large payloads", 64 << 10, 128, "", 10},
		{"small payloads", 20, 20000, "key-0123456789", 2.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := make([]byte, tc.payload)
			for i := range p {
				p[i] = '1'
			}
			seg := format.EncodeSegmentHeader(1)
			for i := range tc.events {
				e := sampleEvent()
				e.Payload, e.PayloadHash, e.Seq, e.Idem = p, format.PayloadHash(p), uint64(i), tc.idem
				seg = format.AppendEvent(seg, &e)
				if i%10 == 0 {
					seg = format.AppendMarker(seg, format.RecBatchCommit, 1, uint64(i))
				}
			}
			n, b := footerAlloc(t, seg)
			t.Logf("footer %d bytes, segment %d, allocated %d", len(b), len(seg), n)
			if r := float64(n) / float64(len(b)); r > tc.maxRatio {
				t.Fatalf("a footer of %d bytes for a segment of %d allocated %d bytes (%.1f per footer byte)", len(b), len(seg), n, r)
			}
			if f, err := format.DecodeFooter(b); err != nil || len(f.Items) != tc.events+(tc.events+9)/10 {
				t.Fatalf("footer: %v", err)
			}
		})
	}
}

// A segment whose first frames are large and later ones small outgrows
// the buffer sized from its start, and its footer still holds every item.
func TestEncodeFooterSegmentOfMixedSizes(t *testing.T) {
	big := make([]byte, 8<<10)
	for i := range big {
		big[i] = '2'
	}
	seg := format.EncodeSegmentHeader(1)
	n := 0
	for i := range 3300 {
		e := sampleEvent()
		if i < 300 {
			e.Payload = big
		}
		e.PayloadHash, e.Seq = format.PayloadHash(e.Payload), uint64(i)
		seg = format.AppendEvent(seg, &e)
		n++
	}
	b, err := format.EncodeFooter(append(seg, make([]byte, 4096)...), 1)
	if err != nil {
		t.Fatal(err)
	}
	f, err := format.DecodeFooter(b)
	if err != nil || len(f.Items) != n || f.End != uint64(len(seg)) {
		t.Fatalf("footer of %d events: %d items, end %d of %d, %v", n, len(f.Items), f.End, len(seg), err)
	}
	if it := format.ParseFooterItem(f.Items[n-1]); it.Seq != uint64(n-1) || string(it.Idem) != "k-1" {
		t.Fatalf("last item %+v", it)
	}
}

// The sealer writes a footer as parts, never joined: they decode as the
// joined footer does, and building them allocates about one footer (the
// joined form costs a second copy, half a segment at worst).
func TestEncodeFooterPartsAllocateOneFooter(t *testing.T) {
	seg := format.EncodeSegmentHeader(1)
	for i := range 20000 {
		e := sampleEvent()
		e.PayloadHash, e.Seq = format.PayloadHash(e.Payload), uint64(i)
		seg = format.AppendEvent(seg, &e)
	}
	joined, err := format.EncodeFooter(seg, 1)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	parts, err := format.EncodeFooterParts(seg, 1)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	if string(b) != string(joined) {
		t.Fatalf("parts (%d bytes) differ from the joined footer (%d bytes)", len(b), len(joined))
	}
	if f, err := format.DecodeFooter(b); err != nil || len(f.Items) != 20000 {
		t.Fatalf("footer from parts: %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; float64(n) > 1.5*float64(len(joined)) {
		t.Fatalf("building the parts of a %d-byte footer allocated %d bytes", len(joined), n)
	}
}
