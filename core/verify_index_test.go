package core_test

import (
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
