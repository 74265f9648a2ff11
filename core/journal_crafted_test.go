package core_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// A compaction journal crafted with a valid checksum (by anyone who can
// write to the store's directory) that names an existing next-generation
// segment as "new" and, as "deleted", the segment holding a committed
// fence's commit record and no event: Open refuses it (a replaced segment
// must have all its records, not only its events, in the new ones), where
// it once deleted the segment and silently hid the fence's acknowledged
// events.
func TestCraftedJournalCannotDeleteAFenceCommit(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t.TempDir())
	cfg.SegmentMaxBytes = 64 << 10
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := mustCoord(t, "order:1", "shop")
	big := `{"x":"` + strings.Repeat("a", 4000) + `"}`
	for i := 0; i < 40; i++ {
		mustAppend(t, s, c, kindA, big)
	}
	if _, err := s.Compact(ctx, core.CompactConfig{Merge: true}); err != nil {
		t.Fatal(err)
	}
	activeEnd := func() (string, int) {
		p := lastSegment(t, cfg.Dir)
		_, fr := readFrames(t, p)
		if len(fr) == 0 {
			return p, 0
		}
		return p, fr[len(fr)-1].end()
	}
	// Learn the frame overhead of an event of this coordinate (plain
	// appends: a fenced event differs only in a flag bit).
	mustAppend(t, s, c, kindA, `{"x":"b"}`)
	p0, e0 := activeEnd()
	mustAppend(t, s, c, kindA, `{"x":"b"}`)
	p1, e1 := activeEnd()
	if p0 != p1 {
		t.Fatal("rolled while measuring")
	}
	overhead := e1 - e0 - len(`{"x":"b"}`)
	end := e1
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	end += 24 // fence-begin marker
	submit := func(p string) {
		t.Helper()
		if _, err := f.Submit(ctx, c, kindA, []byte(p)); err != nil {
			t.Fatal(err)
		}
		end += overhead + len(p)
	}
	for {
		room := int(cfg.SegmentMaxBytes) - end
		if room > 2*4100+overhead {
			submit(big)
			continue
		}
		n := room - 10 - overhead - len(`{"x":""}`)
		if n > 4000 {
			submit(`{"x":"` + strings.Repeat("c", n/2) + `"}`)
			continue
		}
		submit(`{"x":"` + strings.Repeat("c", n) + `"}`)
		break
	}
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	visible := len(mustQuery(t, s, core.All()))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segmentFiles(t, cfg.Dir)
	var names []string
	for _, p := range segs {
		names = append(names, filepath.Base(p))
	}
	active := names[len(names)-1]
	var gen1, gen0 string
	for _, n := range names {
		if id, g, ok := strings.Cut(strings.TrimSuffix(n, ".seg"), "."); ok && g == "1" {
			gen1, gen0 = n, id+".seg"
		}
	}
	if gen1 == "" {
		t.Fatalf("no gen-1 segment in %v", names)
	}
	j := sealJournal(fmt.Sprintf("rename %s.tmp %s", gen1, gen1), "delete "+gen0, "delete "+active)
	writeFile(t, filepath.Join(cfg.Dir, "compact.journal"), j)
	_, err = core.Open(cfg)
	var ce *core.CorruptionError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "fence-commit record") {
		t.Fatalf("Open with a journal deleting the segment of a fence's commit: %v, want a CorruptionError naming the record", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, active)); err != nil {
		t.Fatalf("%s is gone after the refused journal: %v", active, err)
	}
	if err := os.Remove(filepath.Join(cfg.Dir, "compact.journal")); err != nil {
		t.Fatal(err)
	}
	s2 := openWith(t, cfg)
	if got := len(mustQuery(t, s2, core.All())); got != visible {
		t.Fatalf("after the journal is removed: %d visible events, want %d", got, visible)
	}
}

// The same kind of journal, naming the active segment as replaced: a
// read-only open refuses it as Open does, where it once dropped the
// active segment from the reader's view (and Verify passed without it).
func TestCraftedJournalCannotHideSegmentsFromReaders(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.SegmentMaxBytes = 64 << 10
	s := openWith(t, cfg)
	c := mustCoord(t, "order:1", "shop")
	k := core.MustKind(1, 1)
	pay := `{"x":"` + strings.Repeat("a", 4000) + `"}`
	for i := 0; i < 60; i++ {
		mustAppend(t, s, c, k, pay)
	}
	if _, err := s.Compact(context.Background(), core.CompactConfig{Merge: true}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		mustAppend(t, s, c, k, pay)
	}
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	total := len(mustQuery(t, s, core.All()))
	segs := segmentFiles(t, cfg.Dir)
	var names []string
	for _, p := range segs {
		names = append(names, filepath.Base(p))
	}
	// Find a gen-1 segment and the active (last) one.
	var gen1, gen0, active string
	for _, n := range names {
		base := strings.TrimSuffix(n, ".seg")
		if id, g, ok := strings.Cut(base, "."); ok && g == "1" {
			gen1, gen0 = n, id+".seg"
		}
	}
	active = names[len(names)-1]
	if gen1 == "" || active == gen1 {
		t.Fatalf("layout %v", names)
	}
	j := sealJournal(fmt.Sprintf("rename %s.tmp %s", gen1, gen1), "delete "+gen0, "delete "+active)
	writeFile(t, filepath.Join(cfg.Dir, "compact.journal"), j)

	_, err := core.OpenReadOnly(cfg)
	var ce *core.CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("OpenReadOnly with a journal replacing the active segment by an older one: %v, want a CorruptionError", err)
	}
	if err := os.Remove(filepath.Join(cfg.Dir, "compact.journal")); err != nil {
		t.Fatal(err)
	}
	ro, err := core.OpenReadOnly(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got := len(mustQuery(t, ro, core.All())); got != total {
		t.Fatalf("a reader after the journal is removed: %d events, want %d", got, total)
	}
}
