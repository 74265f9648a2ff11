package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Export → import into a fresh store gives equal streams (ids,
// correlation, causation, payloads), and a second import skips everything.
func TestExportImportRoundTrip(t *testing.T) {
	root := isolate(t)
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")
	ok(t, "demo", "--data-dir="+src, "--orders", "4")
	file := filepath.Join(root, "events.ndjson")
	if out := ok(t, "export", "--data-dir="+src, "-o", file); !strings.Contains(out, "exported 12 events") {
		t.Fatalf("export: %q", out)
	}
	if out := ok(t, "import", "--data-dir="+dst, file); !strings.Contains(out, "imported 12 events, skipped 0") {
		t.Fatalf("import: %q", out)
	}
	if out := ok(t, "import", "--data-dir="+dst, file); !strings.Contains(out, "imported 0 events, skipped 12") {
		t.Fatalf("re-import: %q", out)
	}
	a := parseLines(t, ok(t, "query", "--data-dir="+src, "--json"))
	b := parseLines(t, ok(t, "query", "--data-dir="+dst, "--json"))
	if len(a) != 12 || len(b) != 12 {
		t.Fatalf("streams: %d and %d events", len(a), len(b))
	}
	for i := range a {
		for _, k := range []string{"id", "entity", "scope", "kind", "correlation_id", "causation_id", "payload", "timestamp", "clock"} {
			if string(a[i][k]) != string(b[i][k]) {
				t.Errorf("event %d %s: %s vs %s", i, k, a[i][k], b[i][k])
			}
		}
	}
	ok(t, "verify", "--data-dir="+dst)
}

// TestImportLocalFailure: a local import that fails part way names how
// many events it imported and that running it again resumes; one that
// imported nothing into a directory it created removes that directory
// (and the parents it created) again, and never a directory that existed.
func TestImportLocalFailure(t *testing.T) {
	root := isolate(t)
	src := filepath.Join(root, "src")
	ok(t, "demo", "--data-dir="+src, "--orders", "100")
	file := filepath.Join(root, "events.ndjson")
	ok(t, "export", "--data-dir="+src, "--out", file)
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(good), "\n")
	if len(lines) < 300 {
		t.Fatalf("export of %d lines", len(lines))
	}
	broken := filepath.Join(root, "broken.ndjson")
	writeFile(t, broken, strings.Join(lines[:300], "")+`{"id":`+"\n")

	dst := filepath.Join(root, "dst")
	// Batches of 256: the first is written, the second fails with the line.
	failsWith(t, exitError, []string{"import", "--data-dir", dst, broken},
		"import line 301: unexpected end of JSON input; 256 events were imported (0 already present skipped): run the import again to resume")
	failsWith(t, exitError, []string{"import", "--data-dir", dst, broken},
		"import line 301: unexpected end of JSON input; 0 events were imported (256 already present skipped): run the import again to resume")

	// Nothing imported into a new directory: it is gone again, with the
	// parents the import made; the one that existed stays.
	bad := filepath.Join(root, "bad.ndjson")
	writeFile(t, bad, `{"id":`+"\n")
	fresh := filepath.Join(root, "a", "b", "store")
	failsWith(t, exitError, []string{"import", "--data-dir", fresh, bad},
		"import line 1: unexpected end of JSON input; nothing was imported, and the store directory "+fresh+" this import created is removed again")
	if _, err := os.Stat(filepath.Join(root, "a")); !os.IsNotExist(err) {
		t.Errorf("the directories the failed import created are still there: %v", err)
	}
	// An empty directory that existed before stays, and so does a store.
	empty := filepath.Join(root, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{empty, src} {
		failsWith(t, exitError, []string{"import", "--data-dir", dir, bad}, "0 events were imported")
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("import removed %s: %v", dir, err)
		}
	}
	ok(t, "verify", "--data-dir", src)
}

// TestImportLocalFailureRace: while a failed import removes the empty
// store it created, another opener of that directory (an embedder
// retrying core.Open on it) that gets in and has its event acknowledged
// keeps that event: the removal never takes a store someone else wrote.
// Without the removal under the store's lock, the opener slipped in
// between the import's Close and its removal in a few trials of ten.
func TestImportLocalFailureRace(t *testing.T) {
	root := isolate(t)
	bad := filepath.Join(root, "bad.ndjson")
	writeFile(t, bad, `{"id":`+"\n")
	ctx := context.Background()
	deadline := time.Now().Add(3 * time.Second)
	acked := 0
	for trial := 0; trial < 400 && time.Now().Before(deadline); trial++ {
		dir := filepath.Join(root, fmt.Sprintf("d%d", trial))
		stop := make(chan struct{})
		type written struct {
			id  core.EventID
			err error
		}
		done := make(chan written, 1)
		go func() {
			for {
				select {
				case <-stop:
					done <- written{}
					return
				default:
				}
				if _, err := os.Stat(filepath.Join(dir, "LOCK")); err != nil {
					continue
				}
				s, err := core.Open(core.DefaultConfig(dir))
				if errors.Is(err, core.ErrLocked) {
					continue
				}
				if err != nil {
					done <- written{err: err}
					return
				}
				c, _ := core.NewCoordinate("order:1", "shop")
				r, err := s.Append(ctx, c, core.MustKind(1, 1), []byte(`{"precious":true}`))
				if err == nil {
					err = s.Sync(ctx)
				}
				if cerr := s.Close(); err == nil {
					err = cerr
				}
				done <- written{id: r.ID, err: err}
				return
			}
		}()
		res := batpak(t, "import", "--data-dir", dir, bad)
		close(stop)
		w := <-done
		switch {
		case res.code == exitLocked: // the opener had the lock first
		case res.code != exitError || !strings.Contains(res.stderr, "import line 1"):
			t.Fatalf("trial %d: import: exit %d, %s", trial, res.code, res.stderr)
		}
		if w.err != nil {
			t.Fatalf("trial %d: the other opener failed: %v (import: %s)", trial, w.err, res.stderr)
		}
		if w.id == (core.EventID{}) {
			continue
		}
		acked++
		s, err := core.OpenReadOnly(core.DefaultConfig(dir))
		if err != nil {
			t.Fatalf("trial %d: acknowledged event %s lost: %v (import: %s)", trial, w.id, err, res.stderr)
		}
		_, err = s.Get(w.id)
		_ = s.Close()
		if err != nil {
			t.Fatalf("trial %d: acknowledged event %s lost: %v (import: %s)", trial, w.id, err, res.stderr)
		}
	}
	t.Logf("%d trials with an acknowledged event beside the failed import", acked)
}

func TestSnapshotAndRedact(t *testing.T) {
	root := isolate(t)
	dir := filepath.Join(root, "store")
	ok(t, "demo", "--data-dir="+dir, "--orders", "2")
	snap := filepath.Join(root, "snap")
	if out := ok(t, "snapshot", "--data-dir="+dir, snap); !strings.Contains(out, "snapshot of 6 sequences") {
		t.Fatalf("snapshot: %q", out)
	}
	fails(t, []string{"snapshot", "--data-dir=" + dir, snap}, "not empty")
	if err := os.Symlink(root, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	fails(t, []string{"snapshot", "--data-dir=" + dir, filepath.Join(root, "link")}, "symbolic link")
	if got := parseLines(t, ok(t, "query", "--data-dir="+snap, "--json")); len(got) != 6 {
		t.Fatalf("snapshot holds %d events", len(got))
	}

	evs := parseLines(t, ok(t, "query", "--data-dir="+dir, "--entity-prefix", "order:1", "--json"))
	id := str(t, evs[0], "id")
	if out := ok(t, "redact", "--data-dir="+dir, id); !strings.Contains(out, "redacted "+id) {
		t.Fatalf("redact: %q", out)
	}
	if out := ok(t, "get", "--data-dir="+dir, id); !strings.Contains(out, "(redacted") || strings.Contains(out, "total_cents") {
		t.Fatalf("get after redact:\n%s", out)
	}
	ok(t, "verify", "--data-dir="+dir)
	if out := ok(t, "redact", "--data-dir="+dir, "--entity", "payment:1"); out != "redacted 1 event of payment:1; recorded as an audit event on batpak:audit:maintenance\n" {
		t.Fatalf("redact --entity: %q", out)
	}
	// Again: nothing left to redact, and it says so (exit 0); an entity
	// with no events (a typo) is not found, dry run or not.
	if out := ok(t, "redact", "--data-dir="+dir, "--entity", "payment:1"); out != "redacted 0 events of payment:1: its 1 event was already redacted\n" {
		t.Fatalf("redact --entity again: %q", out)
	}
	for _, args := range [][]string{{"redact", "--data-dir=" + dir, "--entity", "paymnet:1"}, {"redact", "--data-dir=" + dir, "--entity", "paymnet:1", "--dry-run"}} {
		failsWith(t, exitNotFound, args, `no events of entity "paymnet:1" in `+dir+": nothing redacted")
	}
	// The snapshot taken before still has the payload.
	if out := ok(t, "get", "--data-dir="+snap, id); !strings.Contains(out, "total_cents") {
		t.Fatalf("snapshot lost the payload:\n%s", out)
	}
	failsWith(t, exitUsage, []string{"redact", "--data-dir=" + dir}, "redact needs an event ID, or --entity ENTITY")
	failsWith(t, exitUsage, []string{"redact", "--data-dir=" + dir, id, "--entity", "order:1"}, "give an event ID or --entity, not both")
}

func TestCompactCLI(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	seg := "--segment-max-bytes=64KiB"
	ok(t, "demo", "--data-dir="+dir, seg, "--orders", "400")
	before := decode[statsJSON](t, ok(t, "stats", "--data-dir="+dir, "--json"))
	if before.Segments < 3 {
		t.Fatalf("want several segments, have %d", before.Segments)
	}
	// Without a policy too, the summary says the compaction was recorded.
	const audited = "as an audit event on batpak:audit:maintenance (batpak query --entity-prefix batpak:audit)\n"
	if out := ok(t, "compact", "--data-dir="+dir, seg, "--max-per-entity", "1", "--dry-run"); !strings.HasSuffix(out, "\nwould be recorded "+audited) {
		t.Fatalf("compact --dry-run: %q", out)
	}
	if out := ok(t, "compact", "--data-dir="+dir, seg, "--max-per-entity", "1", "--dry-run", "-o", "json"); !strings.Contains(out, `"audit_entity":"batpak:audit:maintenance"`) {
		t.Fatalf("compact --dry-run -o json: %q", out)
	}
	out := ok(t, "compact", "--data-dir="+dir, seg, "--max-per-entity", "1", "--merge")
	if !strings.Contains(out, "events removed") || strings.Contains(out, " 0 events removed") ||
		!regexp.MustCompile(`, [0-9.]+ KiB of data reclaimed, [0-9.]+ KiB on disk reclaimed, in `).MatchString(out) ||
		!strings.HasSuffix(out, "\nrecorded "+audited) {
		t.Fatalf("compact: %q", out)
	}
	// Nothing removed: nothing recorded, and the summary says nothing of it.
	if out := ok(t, "compact", "--data-dir="+dir, seg, "--max-per-entity", "1", "-o", "json"); strings.Contains(out, "audit") {
		t.Fatalf("compact removing nothing: %q", out)
	}
	ok(t, "verify", "--data-dir="+dir)
	after := decode[statsJSON](t, ok(t, "stats", "--data-dir="+dir, "--json"))
	// One event more in the log: the compaction's audit record.
	if after.Events >= before.Events || after.GlobalSequence != before.GlobalSequence+1 || after.Bytes >= before.Bytes {
		t.Fatalf("stats before %+v after %+v", before, after)
	}
	if audit := parseLines(t, ok(t, "query", "--data-dir="+dir, "--entity-prefix", "batpak:audit:maintenance", "--json")); len(audit) != 1 ||
		!strings.Contains(string(audit[0]["payload"]), `"action":"compact"`) {
		t.Fatalf("audit records %v", audit)
	}
	failsWith(t, exitUsage, []string{"compact", "--data-dir=" + dir, "--max-per-entity", "-1"}, "must not be negative")
}

// TestSalvageFlag: a store whose log lost acknowledged events is refused
// by every command, with the flag that opens it named; --salvage shows
// what is left (read commands) or records the loss and goes on (write
// commands), after which the store opens normally.
func TestSalvageFlag(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	for i := 0; i < 10; i++ {
		ok(t, "append", dd, "--entity", "acme:order:1", "--scope", "shop", "--kind", "1:1", "--data", fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", 200)))
	}
	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v (%v), want one", segs, err)
	}
	// The events take about 2.5 KB of the file (the rest is preallocated
	// zeros and the footer): cut inside them.
	if err := os.Truncate(segs[0], 1200); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"stats", dd}, {"append", dd, "--entity", "acme:order:1", "--scope", "shop", "--kind", "1:1", "--data", "{}"}} {
		r := failsWith(t, exitCorrupt, args, "acknowledged events are missing; --salvage (salvage: true, BATPAK_SALVAGE) opens it anyway")
		if strings.Contains(r.stderr, "Config.") || strings.Count(r.stderr, "--salvage") != 1 {
			t.Errorf("batpak %q: want one hint, the CLI's:\n%s", args, r.stderr)
		}
	}
	left := decode[statsJSON](t, ok(t, "stats", dd, "--json", "--salvage")).Events
	if left == 0 || left >= 10 {
		t.Fatalf("read with --salvage shows %d events, want some of 10", left)
	}
	// The read wrote nothing: without the flag the store is still refused.
	failsWith(t, exitCorrupt, []string{"stats", dd}, "--salvage")
	ok(t, "append", dd, "--salvage", "--entity", "acme:order:1", "--scope", "shop", "--kind", "1:1", "--data", "{}")
	// The loss is recorded; plain opens work again and count it.
	if n := storeEvents(t, dd); n != left+2 {
		t.Fatalf("%d events after a salvaged append, want %d (left) + the loss record + the append", n, left)
	}
	if out := ok(t, "query", dd, "--entity-prefix", "batpak:log", "--json"); !strings.Contains(out, `"lost":`) {
		t.Errorf("no loss record in the log:\n%s", out)
	}
}

// TestMessagesNameFlags: a local refusal names the CLI's flag and config
// key for the limit it hit, not core.Config's field, and an import's line
// error carries one "batpak: ".
func TestMessagesNameFlags(t *testing.T) {
	root := isolate(t)
	dd := "--data-dir=" + filepath.Join(root, "store")
	deep := strings.Repeat("[", 600) + strings.Repeat("]", 600)
	r := failsWith(t, exitError, []string{"append", dd, "--entity", "e", "--scope", "s", "--kind", "1:1", "--data", deep},
		"nested deeper than 512 levels (--max-json-depth, max_json_depth)")
	ok(t, "append", dd, "--entity", "e", "--scope", "s", "--kind", "1:1", "--data", "{}")

	big := filepath.Join(root, "big.ndjson")
	writeFile(t, big, `{"id":"01a252c1-0206-7334-8eb0-c2415d9f9403","entity":"e","scope":"s","kind":"0x1:0x1","payload":{"p":"`+strings.Repeat("x", 70000)+`"}}`+"\n")
	r2 := failsWith(t, exitError, []string{"import", dd, "--single-append-max-bytes", "64KiB", big},
		"batpak: import line 1: payload too large: payload of ", "the limit is 65536 (--single-append-max-bytes, single_append_max_bytes)")
	badKind := filepath.Join(root, "kind.ndjson")
	writeFile(t, badKind, `{"id":"01a252c1-0206-7334-8eb0-c2415d9f9404","entity":"e","scope":"s","kind":"0x0:0x1","payload":{}}`+"\n")
	r3 := failsWith(t, exitError, []string{"import", dd, badKind}, "batpak: import line 1: invalid event kind")
	for _, r := range []result{r, r2, r3} {
		if strings.Contains(r.stderr, "Config.") || strings.Count(r.stderr, "batpak: ") != 1 {
			t.Errorf("a Go API name or a second prefix:\n%s", r.stderr)
		}
	}
}
