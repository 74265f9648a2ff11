package core_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
)

// TestVerifyFindsALyingFooter: a segment footer whose checksum holds but
// whose items name another entity or clock for an event than its frame
// does (crafted, or damaged before its checksum was taken) is trusted by
// Open, which reads footers instead of frames; Verify compares the index
// built from it with the frames and fails naming the event, so the
// damage is found before a write chains onto a head that is not there.
func TestVerifyFindsALyingFooter(t *testing.T) {
	src := t.TempDir()
	cfg := testConfig(src)
	cfg.SegmentMaxBytes = 64 << 10
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 200)
	for i := range 400 {
		mustAppend(t, s, mustCoord(t, fmt.Sprintf("order:%d", i%5), "shop"), core.MustKind(1, 1), fmt.Sprintf(`{"i":%d,"p":%q}`, i, pad))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(src, format.CheckpointName)); err != nil {
		t.Fatal(err)
	}
	footer := strings.TrimSuffix(format.SegmentName(2), format.SegmentSuffix) + format.FooterSuffix
	for name, lie := range map[string]func(f *format.Footer){
		"none": func(*format.Footer) {},
		"entity": func(f *format.Footer) { // item 3 filed under item 4's entity
			copy(f.Items[3][84:88], f.Items[4][84:88])
		},
		"clock": func(f *format.Footer) {
			binary.LittleEndian.PutUint64(f.Items[3][33:], 999)
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, footer)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			f, err := format.DecodeFooter(b)
			if err != nil {
				t.Fatal(err)
			}
			for i := range f.Items {
				f.Items[i] = append([]byte(nil), f.Items[i]...)
			}
			lie(f)
			if err := os.WriteFile(p, f.Encode(), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := core.OpenReadOnly(testConfig(dir))
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			_, err = s.Verify()
			if name == "none" {
				if err != nil {
					t.Fatalf("Verify of a store whose footers tell the truth: %v", err)
				}
				return
			}
			if !errors.Is(err, core.ErrChainBroken) || !strings.Contains(err.Error(), "rebuild the index") {
				t.Fatalf("Verify with a footer lying about an event's %s: %v, want it to name the index's disagreement", name, err)
			}
		})
	}
}

// TestWriteOntoALyingHeadIsRefused: a checkpoint whose checksum holds
// but which gives an entity a head its newest event does not have (another
// clock or hash) makes Open restore that head; the first write to the
// entity then matches the head with the event's frame and is refused
// naming the entity, instead of chaining onto a hash the log does not
// hold; other entities take writes, and the log still verifies.
func TestWriteOntoALyingHeadIsRefused(t *testing.T) {
	for _, lie := range []string{"hash", "clock"} {
		t.Run(lie, func(t *testing.T) {
			dir := t.TempDir()
			s, err := core.Open(testConfig(dir))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				mustAppend(t, s, mustCoord(t, fmt.Sprintf("order:%d", i%2), "shop"), core.MustKind(1, 1), fmt.Sprintf(`{"i":%d}`, i))
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// The checkpoint lists each entity's head as its name, then
			// clock, timestamp and hash: find order:1's and change it.
			p := filepath.Join(dir, format.CheckpointName)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			at := strings.Index(string(b), "order:1")
			if at < 0 {
				t.Fatal("order:1 not found in the checkpoint")
			}
			headAt := forgeCheckpointHead(t, b, at+len("order:1"), lie)
			if err := os.WriteFile(p, headAt, 0o644); err != nil {
				t.Fatal(err)
			}
			s, err = core.Open(testConfig(dir))
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			_, err = s.Append(context.Background(), mustCoord(t, "order:1", "shop"), core.MustKind(1, 1), []byte(`{"i":20}`))
			if !errors.Is(err, core.ErrCorrupt) || !strings.Contains(err.Error(), `head of entity "order:1"`) {
				t.Fatalf("a write onto a head the checkpoint lies about (%s): %v, want a corruption error naming the entity", lie, err)
			}
			mustAppend(t, s, mustCoord(t, "order:0", "shop"), core.MustKind(1, 1), `{"i":21}`)
			if _, err := s.Verify(); err != nil {
				t.Fatalf("the log after the refused write: %v", err)
			}
		})
	}
}

// forgeCheckpointHead returns the checkpoint b with the entity head
// whose name ends at at changed (its hash, or its clock one lower) and
// the checksum taken again, as a crafted file would have it.
func forgeCheckpointHead(t *testing.T, b []byte, at int, lie string) []byte {
	t.Helper()
	b = append([]byte(nil), b...)
	if b[at] != 1 {
		t.Fatalf("the head after the name is not marked as existing (%d)", b[at])
	}
	switch lie {
	case "hash":
		b[at+1+8+8] ^= 0xFF
	case "clock":
		c := binary.LittleEndian.Uint64(b[at+1:])
		binary.LittleEndian.PutUint64(b[at+1:], c-1)
	}
	binary.LittleEndian.PutUint32(b[len(b)-4:], format.CRC32C(b[:len(b)-4]))
	return b
}
