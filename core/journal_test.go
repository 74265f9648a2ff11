package core_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
)

// sealJournal lays out a compaction journal as the store writes it: the
// header, the lines, and the CRC-32C of everything before the last line.
func sealJournal(lines ...string) []byte {
	body := "batpak compaction journal 1\n" + strings.Join(lines, "\n") + "\n"
	return []byte(body + fmt.Sprintf("crc32c %08x\n", format.CRC32C([]byte(body))))
}

// storeFiles fingerprints the files of a store directory (the lock file
// aside, which Open creates): name → content digest.
func storeFiles(t testing.TB, dir string) map[string][32]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][32]byte{}
	for _, e := range ents {
		if e.IsDir() || e.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = sha256.Sum256(b)
	}
	return out
}

func sameFiles(t testing.TB, what string, got, want map[string][32]byte) {
	t.Helper()
	for n, h := range want {
		g, ok := got[n]
		switch {
		case !ok:
			t.Fatalf("%s: %s is gone", what, n)
		case g != h:
			t.Fatalf("%s: %s changed", what, n)
		}
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			t.Fatalf("%s: %s appeared", what, n)
		}
	}
}

// refusedJournal writes journal j into cfg.Dir, wants Open to fail with a
// *CorruptionError naming the journal, every file (the victim outside the
// store too) as it was, and a read-only open to show want or fail; then
// removes the journal.
func refusedJournal(t *testing.T, cfg core.Config, victim string, j []byte, want visibleState) {
	t.Helper()
	jpath := filepath.Join(cfg.Dir, "compact.journal")
	writeFile(t, jpath, j)
	before := storeFiles(t, cfg.Dir)
	s, err := core.Open(cfg)
	if err == nil {
		s.Close()
		t.Fatalf("Open with journal %q succeeded", j)
	}
	var ce *core.CorruptionError
	if !errors.As(err, &ce) || filepath.Base(ce.File) != "compact.journal" || !errors.Is(err, core.ErrCorrupt) {
		t.Fatalf("journal %q: got %v, want a *CorruptionError naming the journal", j, err)
	}
	t.Logf("refused: %v", err)
	sameFiles(t, "after a refused journal", storeFiles(t, cfg.Dir), before)
	if victim != "" {
		if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me" {
			t.Fatalf("file outside the store: %q, %v", b, err)
		}
	}
	// A read-only open refuses it as well (it reads a journal in place),
	// or, when the journal parses but its new segments are not in place,
	// reads the segments it would replace: nothing is lost either way.
	if ro, err := core.OpenReadOnly(cfg); err == nil {
		sameEvents(t, "read-only beside a refused journal", mustQuery(t, ro, core.All()), want.events)
		ro.Close()
	}
	if err := os.Remove(jpath); err != nil {
		t.Fatal(err)
	}
}

// A journal that is damaged, names files that are not this store's
// segments, or does not describe a compaction fails Open with a
// *CorruptionError naming it, and nothing is renamed or deleted: once it
// is removed by hand every event is there.
func TestCompactionJournalRefused(t *testing.T) {
	base := t.TempDir()
	cfg := checkpointBase(t, filepath.Join(base, "store"))
	victim := filepath.Join(base, "victim.txt")
	writeFile(t, victim, []byte("keep me"))
	ro, err := core.OpenReadOnly(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := captureState(t, ro)
	ro.Close()
	segs := segmentFiles(t, cfg.Dir)
	seg0, seg1 := filepath.Base(segs[0]), filepath.Base(segs[1])
	// A sound next generation of segment 0, in place under its temporary
	// name, as a compaction writes it before its commit point.
	gen1 := segGenName(segs[0], 1)
	writeFile(t, filepath.Join(cfg.Dir, gen1+".tmp"), regenerate(t, segs[0], 1))
	rename := fmt.Sprintf("rename %s.tmp %s", gen1, gen1)

	cases := []struct {
		name string
		j    []byte
	}{
		// The journal of the report: no checksum, a segment and a file
		// outside the store.
		{"unchecksummed deletes", []byte(fmt.Sprintf("delete %s\ndelete ../victim.txt\n", seg1))},
		{"checksummed path outside the store", sealJournal(rename, "delete "+seg0, "delete ../victim.txt")},
		{"absolute path", sealJournal(rename, "delete "+seg0, "delete "+victim)},
		{"separator", sealJournal(rename, "delete "+seg0, "delete sub/"+seg1)},
		{"not a segment name", sealJournal(rename, "delete "+seg0, "delete index.ckpt")},
		{"a segment name spelled otherwise", sealJournal(rename, "delete "+seg0, "delete "+strings.TrimLeft(seg1, "0"))},
		{"rename to another name", sealJournal(fmt.Sprintf("rename %s %s.tmp", seg1, gen1), "delete "+seg0)},
		{"deletes only", sealJournal("delete " + seg1)},
		{"deletes a segment it does not replace", sealJournal(rename, "delete "+seg0, "delete "+seg1)},
		{"flipped byte", func() []byte {
			j := sealJournal(rename, "delete "+seg0)
			j[len(j)/2] ^= 0x20
			return j
		}()},
		{"truncated", func() []byte {
			j := sealJournal(rename, "delete "+seg0)
			return j[:len(j)-5]
		}()},
		{"cut at a line", func() []byte {
			j := sealJournal(rename, "delete "+seg0)
			return j[:strings.Index(string(j), "crc32c")]
		}()},
		{"empty", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { refusedJournal(t, cfg, victim, c.j, want) })
	}
	if err := os.Remove(filepath.Join(cfg.Dir, gen1+".tmp")); err != nil {
		t.Fatal(err)
	}
	s := openWith(t, cfg)
	sameState(t, "after removing the refused journals", captureState(t, s), want)
	allGettable(t, s, want.events)
	mustVerify(t, s)
}

// crashImageAtCommit compacts a store and copies its directory at the
// commit point (journal synced, nothing renamed yet): what a crash there
// leaves. It returns the image's config, the state before the
// compaction, the state after it, and the journal the compaction wrote.
func crashImageAtCommit(t *testing.T) (core.Config, visibleState, visibleState, []byte) {
	t.Helper()
	cfg := checkpointBase(t, t.TempDir())
	s := openWith(t, cfg)
	before := captureState(t, s)
	image := t.TempDir()
	core.SetCompactHook(s, func(stage string) {
		if stage == "committed" {
			copyTree(t, cfg.Dir, image, func(n string) bool { return n == "LOCK" })
		}
	})
	if _, err := s.Compact(context.Background(), core.CompactConfig{Merge: true, Keep: func(ev core.StoredEvent) bool { return ev.GlobalSequence%3 != 0 }}); err != nil {
		t.Fatal(err)
	}
	after := captureState(t, s)
	j, err := os.ReadFile(filepath.Join(image, "compact.journal"))
	if err != nil {
		t.Fatalf("no journal in the image taken at the commit point: %v", err)
	}
	icfg := cfg
	icfg.Dir = image
	return icfg, before, after, j
}

// A genuine journal damaged on disk (a flipped byte, a cut) is refused
// with nothing renamed or deleted; with the damaged journal removed the
// store opens as it was before the compaction, and with the genuine one
// restored Open finishes the compaction.
func TestCompactionJournalDamaged(t *testing.T) {
	cfg, before, after, j := crashImageAtCommit(t)
	if !strings.HasPrefix(string(j), "batpak compaction journal 1\n") {
		t.Fatalf("journal %q", j)
	}
	flipped := append([]byte(nil), j...)
	flipped[len(flipped)/3] ^= 0x01
	refusedJournal(t, cfg, "", flipped, before)
	refusedJournal(t, cfg, "", j[:len(j)/2], before)
	refusedJournal(t, cfg, "", j[:len(j)-1], before)

	// The genuine journal: Open finishes the compaction.
	finished := t.TempDir()
	copyTree(t, cfg.Dir, finished, nil)
	writeFile(t, filepath.Join(finished, "compact.journal"), j)
	fcfg := cfg
	fcfg.Dir = finished
	s := openWith(t, fcfg)
	got := captureState(t, s)
	sameEvents(t, "genuine journal finished", got.events, after.events)
	mustVerify(t, s)
	s.Close()

	// Without it, the old segments stand: the state before the compaction
	// and the compaction's audit record (written before its commit point).
	s = openWith(t, cfg)
	got = captureState(t, s)
	if len(got.events) != len(before.events)+1 {
		t.Errorf("damaged journal removed: %d events, want the %d before and one audit record", len(got.events), len(before.events))
	}
	sameEvents(t, "damaged journal removed", withoutNewAudit(got.events, before.events), before.events)
	allGettable(t, s, before.events)
	mustVerify(t, s)
}
