package core_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/testenv"
)

// Huge files where a store keeps small records — a cursor's position,
// the compaction journal, the lock's pid — are refused by their size
// (a *CorruptionError naming the file) rather than read whole into
// memory.
func TestHugeSmallRecordsRefusedBySize(t *testing.T) {
	cfg := core.DefaultConfig(t.TempDir())
	s := openWith(t, cfg)
	mustAppend(t, s, mustCoord(t, "order:1", "shop"), kindA, `{}`)
	c, err := s.NamedCursor("billing", core.All())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Poll(100); err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	pos := filepath.Join(cfg.Dir, "cursors", "billing.pos")
	if err := os.Truncate(pos, 1<<40); err != nil {
		t.Skipf("no sparse 1 TiB file here: %v", err)
	}
	s = openWith(t, cfg)
	_, err = s.NamedCursor("billing", core.All())
	var ce *core.CorruptionError
	if !errors.As(err, &ce) || ce.File != pos || !strings.Contains(err.Error(), "bytes, a position is 20") {
		t.Fatalf("a 1 TiB cursor file: %v, want a CorruptionError naming it", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(pos); err != nil {
		t.Fatal(err)
	}
	journal := filepath.Join(cfg.Dir, "compact.journal")
	if err := os.WriteFile(journal, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(journal, 1<<40); err != nil {
		t.Fatal(err)
	}
	if _, err := core.Open(cfg); !errors.As(err, &ce) || ce.File != journal || !strings.Contains(err.Error(), "more than any journal holds") {
		t.Fatalf("a 1 TiB compaction journal: %v, want a CorruptionError naming it", err)
	}
}

// A segment file larger than any segment can be (4 GiB-1: its offsets
// are 32-bit) — sparse, or written over — is refused by its size with a
// *CorruptionError naming it, before it is mapped and scanned (a 1 TiB
// file took minutes); a footer larger than any segment is set aside and
// the segment scanned instead.
func TestHugeSegmentFilesRefusedBySize(t *testing.T) {
	cfg := core.DefaultConfig(t.TempDir())
	cfg.SegmentMaxBytes = 64 << 10
	s := openWith(t, cfg)
	for range 400 {
		mustAppend(t, s, mustCoord(t, "order:1", "shop"), kindA, `{"n":`+strings.Repeat("1", 200)+`}`)
	}
	if err := s.SealSegments(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// An index checkpoint far larger than the log it indexes is set aside
	// (the log is scanned) rather than mapped and checked whole.
	if err := os.Truncate(filepath.Join(cfg.Dir, "index.ckpt"), 4<<30); err != nil {
		t.Skipf("no sparse 4 GiB file here: %v", err)
	}
	var logs testenv.Buffer
	lcfg := cfg
	lcfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s = openWith(t, lcfg)
	if !strings.Contains(logs.String(), "more than a checkpoint of this log holds") {
		t.Fatalf("the huge checkpoint was not set aside by its size:\n%s", logs.String())
	}
	if d := s.Diagnostics().Open; d.Path == "checkpoint" || d.Restored != 0 {
		t.Fatalf("a 4 GiB checkpoint was used: %+v", d)
	}
	if n := s.Stats().Events; n != 400 {
		t.Fatalf("%d events after setting the huge checkpoint aside, want 400", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	idx, _ := filepath.Glob(filepath.Join(cfg.Dir, "*.idx"))
	if len(idx) == 0 {
		t.Fatal("no footer written")
	}
	if err := os.Remove(filepath.Join(cfg.Dir, "index.ckpt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(idx[0], 8<<30); err != nil {
		t.Skipf("no sparse 8 GiB file here: %v", err)
	}
	var flogs testenv.Buffer
	lcfg.Logger = slog.New(slog.NewTextHandler(&flogs, nil))
	s = openWith(t, lcfg)
	if !strings.Contains(flogs.String(), "larger than any segment") {
		t.Fatalf("the huge footer was not set aside by its size:\n%s", flogs.String())
	}
	if n := s.Stats().Events; n != 400 {
		t.Fatalf("%d events after setting the huge footer aside, want 400", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(cfg.Dir, "*.seg"))
	last := segs[len(segs)-1]
	if err := os.Truncate(last, 1<<40); err != nil {
		t.Fatal(err)
	}
	var ce *core.CorruptionError
	if _, err := core.Open(cfg); !errors.As(err, &ce) || ce.File != last || !strings.Contains(err.Error(), "larger than any segment") {
		t.Fatalf("a 1 TiB segment: %v, want a CorruptionError naming it", err)
	}
}

// TestSmallRecordsThatAreNotFiles: a directory where the store keeps its
// erasure epoch, a cursor's position or a journal is damage
// (ErrCorrupt, naming the file and what is there), not an I/O error (a
// named pipe: TestErasureEpochThatIsAPipe).
func TestSmallRecordsThatAreNotFiles(t *testing.T) {
	cfg := core.DefaultConfig(t.TempDir())
	s := openWith(t, cfg)
	mustAppend(t, s, mustCoord(t, "order:1", "shop"), kindA, `{}`)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, want string }{
		{"erasures", "the erasure epoch is a directory, not a file"},
		{"compact.journal", "the compaction journal is a directory, not a file"},
		{"redact.journal", "the redaction journal is damaged: a directory, not a file"},
	} {
		path := filepath.Join(cfg.Dir, tc.name)
		if err := os.RemoveAll(path); err != nil { // the store's own erasure epoch file
			t.Fatal(err)
		}
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
		var ce *core.CorruptionError
		_, err := core.Open(cfg)
		if !errors.As(err, &ce) || ce.File != path || !errors.Is(err, core.ErrCorrupt) || !strings.Contains(err.Error(), "damaged file "+path+": "+tc.want) {
			t.Fatalf("a directory named %s: %v, want a CorruptionError naming it", tc.name, err)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
	s = openWith(t, cfg)
	defer s.Close()
	pos := filepath.Join(cfg.Dir, "cursors", "billing.pos")
	if err := os.MkdirAll(pos, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NamedCursor("billing", core.All()); !errors.Is(err, core.ErrCorrupt) || !strings.Contains(err.Error(), "damaged file "+pos+": the cursor's position is a directory") {
		t.Fatalf("a directory as a cursor's position: %v", err)
	}
}
