package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// damagedStore writes a store of several sealed segments and overwrites
// four bytes in the middle of the first: every command that reads it fails
// with a *core.CorruptionError. It returns the store directory and the id
// of an event written before the damage.
func damagedStore(t *testing.T) (dir, id string) {
	t.Helper()
	dir = filepath.Join(isolate(t), "store")
	ok(t, "demo", "--data-dir", dir, "--segment-max-bytes", "64KiB", "--orders", "200")
	line, _, _ := strings.Cut(ok(t, "query", "--data-dir", dir, "-o", "json", "--limit", "1"), "\n")
	id = str(t, decode[map[string]json.RawMessage](t, line), "id")
	seg := filepath.Join(dir, "00000000000000000001.seg")
	f, err := os.OpenFile(seg, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, 20000); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, id
}

// TestDamagedSegmentHint: every command refused by a damaged segment adds
// one line naming the rescue (export --salvage into a file, import it into
// a new store) and saying that the global --salvage is not it.
func TestDamagedSegmentHint(t *testing.T) {
	dir, id := damagedStore(t)
	hint := "To rescue what is readable: batpak --data-dir " + dir + " export --salvage --out rescued.ndjson, then batpak --data-dir NEW import rescued.ndjson (the global --salvage does not read past a damaged frame"
	for _, args := range [][]string{
		{"verify"}, {"stats"}, {"query"}, {"get", id}, {"--salvage", "verify"},
		{"append", "--entity", "e:1", "--scope", "s", "--kind", "1:1", "--data", "{}"},
	} {
		r := failsWith(t, exitCorrupt, append(args, "--data-dir", dir), "corrupt segment ")
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[1], hint) {
			t.Errorf("batpak %q: want the error and the rescue hint, got:\n%s", args, r.stderr)
		}
	}
	// The rescue the hint names works, and says nothing more of itself.
	rescued := filepath.Join(filepath.Dir(dir), "rescued.ndjson")
	r := batpak(t, "--data-dir", dir, "export", "--salvage", "--out", rescued)
	if r.code != exitCorrupt || strings.Contains(r.stderr, "To rescue") {
		t.Errorf("export --salvage: exit %d\n%s", r.code, r.stderr)
	}
	ok(t, "--data-dir", filepath.Join(filepath.Dir(dir), "new"), "import", rescued)
}
