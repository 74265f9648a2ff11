package core

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/batpak-go/batpak/core/internal/format"
)

// A read-only Verify beside a live writer maps the active segment while
// the writer copies a frame in, header first: a frame whose payload is
// still the preallocated zeros must not be hashed ahead, or Verify would
// report a sound event as tampered once the copy is done. The walk is
// replayed with the calls Verify makes (reset, the frame scan, at), the
// copy finishing while the walk is at the first frame.
func TestVerifyReadAheadSkipsFramesBeingWritten(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := NewCoordinate("e", "s")
	payload := []byte(`{"note":"` + string(make([]byte, 0, 600)) + `"}`)
	for i := 0; i < 600; i++ {
		payload = append(payload[:len(payload)-2], 'a'+byte(i%26), '"', '}')
	}
	for range 3 {
		if _, err := s.Append(context.Background(), c, MustKind(1, 1), payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(names) != 1 {
		t.Fatalf("segments %v", names)
	}
	final, err := os.ReadFile(names[0])
	if err != nil {
		t.Fatal(err)
	}
	var offs []int
	end, _, _ := format.ScanFrames(final, format.SegmentHeaderSize, func(off int, rec []byte) error {
		if rec[0] == format.RecEvent {
			offs = append(offs, off)
		}
		return nil
	})
	if len(offs) != 3 {
		t.Fatalf("%d event frames", len(offs))
	}
	// The third frame's header is copied in, its payload not yet.
	live := append([]byte(nil), final...)
	v3 := format.EventView(final[offs[2]+format.FrameHeaderSize : end])
	payStart := offs[2] + format.FrameHeaderSize + v3.StringsEnd()
	clear(live[payStart:end])

	var ahead digestsAhead
	ahead.resetAt(live, 0)
	checked := 0
	_, _, err = format.ScanFrames(live, format.SegmentHeaderSize, func(off int, rec []byte) error {
		if rec[0] != format.RecEvent {
			return nil
		}
		v := format.EventView(rec)
		payload, chain := ahead.at(off, v)
		if payload != v.PayloadHash() || chain != v.Hash() {
			t.Errorf("event at %d: Verify's digests do not match a whole, sound frame", off)
		}
		checked++
		if off == offs[0] {
			copy(live[payStart:end], final[payStart:end]) // the copy completes
		}
		return nil
	})
	if err != nil || checked != 3 {
		t.Fatalf("walked %d events, %v", checked, err)
	}
}
