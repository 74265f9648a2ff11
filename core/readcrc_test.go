package core_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// flipOnDisk xors one byte of the file at path, in place (the store's
// mapping of it sees the change).
func flipOnDisk(t testing.TB, path string, off int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x04
	if _, err := f.WriteAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
}

// A payload byte flipped on disk in a plain (uncompressed) segment beside
// an open store, after the event was written and read once (the segment
// is mapped): Get and Query fail with a *CorruptionError naming the file,
// for the segment being written and for a sealed one; the other events
// stay readable, and the event reads again once the byte is restored.
func TestReadChecksPlainSegmentFrames(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Compression = core.CompressionNone
	smallSegments(&cfg)
	s := openWith(t, cfg)
	c := mustCoord(t, "acct:1", "eu")
	sealedEv := mustAppend(t, s, c, kindA, `{"note":"sealed segment"}`)
	rotate(t, s)
	activeEv := mustAppend(t, s, c, kindA, `{"note":"active segment"}`)
	other := mustAppend(t, s, mustCoord(t, "acct:2", "eu"), kindA, `{"note":"untouched"}`)

	for _, tc := range []struct {
		name string
		r    core.Receipt
	}{{"sealed", sealedEv}, {"active", activeEv}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Get(tc.r.ID); err != nil { // mapped and read once
				t.Fatal(err)
			}
			path, off := "", -1
			for _, seg := range segmentFiles(t, cfg.Dir) {
				data, fs := readFrames(t, seg)
				for _, f := range fs {
					if recordID(data, f) == tc.r.ID {
						path, off = seg, payloadOffset(data, f)+3
					}
				}
			}
			if off < 0 {
				t.Fatalf("event %s not found in any segment", tc.r.ID)
			}
			flipOnDisk(t, path, off)
			wantCorrupt := func(what string, err error) {
				t.Helper()
				var ce *core.CorruptionError
				if !errors.Is(err, core.ErrCorrupt) || !errors.As(err, &ce) || filepath.Base(ce.File) != filepath.Base(path) {
					t.Fatalf("%s of a damaged event: %v, want a *CorruptionError naming %s", what, err, filepath.Base(path))
				}
			}
			ev, err := s.Get(tc.r.ID)
			if err == nil {
				t.Fatalf("Get of a damaged event succeeded: payload %s", ev.Payload)
			}
			wantCorrupt("Get", err)
			_, err = s.Query(core.All())
			wantCorrupt("Query", err)
			_, err = s.Query(core.Entity("acct:1"))
			wantCorrupt("Query of the entity", err)
			if _, err := s.Get(other.ID); err != nil {
				t.Fatalf("Get of an undamaged event: %v", err)
			}
			flipOnDisk(t, path, off)
			if _, err := s.Get(tc.r.ID); err != nil {
				t.Fatalf("Get once the byte is restored: %v", err)
			}
		})
	}
}
