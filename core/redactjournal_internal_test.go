package core

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/batpak-go/batpak/core/internal/format"
)

// TestJournalLeavesAnotherTearAlone: a power loss can keep some pages of
// an event not yet synced and lose others. A redaction journal naming
// such a frame must not make it whole again: Open rewrites a journaled
// frame only when it comes to the checksum the redaction recorded, so a
// frame torn in other bytes (here the hashes, zeros) stays a torn tail,
// cut as without the journal, and Verify passes; blessing it gave an
// event whose hashes were zeros, breaking the chain for good.
func TestJournalLeavesAnotherTearAlone(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig(dir)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := NewCoordinate("acct", "s")
	var last Receipt
	for range 5 {
		if last, err = s.Append(context.Background(), c, MustKind(1, 1), []byte(`{"secret":"x"}`)); err != nil {
			t.Fatal(err)
		}
	}
	s.ix.RLock()
	seq, _ := s.ix.Lookup(last.ID)
	e := *s.ix.At(seq)
	s.ix.RUnlock()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segPath := filepath.Join(dir, format.SegmentName(e.Seg))
	data, err := os.ReadFile(segPath)
	if err != nil {
		t.Fatal(err)
	}
	rec, ok := format.FrameAt(data, int(e.Off))
	if !ok {
		t.Fatal("the last event's frame is not sound")
	}
	out, _, ok := redactedFrame(data[e.Off:int(e.Off)+format.FrameHeaderSize+len(rec)], e.ID)
	if !ok {
		t.Fatal("redactedFrame refused a sound frame")
	}
	journal := encodeRedactJournal([]redactEntry{{seg: e.Seg, off: e.Off, id: e.ID, crc: le.Uint32(out[4:])}})
	// The page with the record's hashes (bytes 96..192) was not kept.
	clear(data[int(e.Off)+format.FrameHeaderSize+96 : int(e.Off)+format.FrameHeaderSize+192])
	if err := os.WriteFile(segPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{format.CheckpointName, footerName(e.Seg)} {
		_ = os.Remove(filepath.Join(dir, f))
	}
	if err := os.WriteFile(filepath.Join(dir, redactJournal), journal, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = Open(cfg)
	if err != nil {
		t.Fatalf("Open with the journal: %v", err)
	}
	defer s.Close()
	if _, err := s.Verify(); err != nil {
		t.Fatalf("Verify: %v (the torn frame was made whole)", err)
	}
	if _, err := s.Get(last.ID); err == nil {
		t.Fatal("the torn event reads back: it was made whole")
	}
	if _, err := os.Stat(filepath.Join(dir, redactJournal)); !os.IsNotExist(err) {
		t.Fatalf("the journal is still there: %v", err)
	}
}
