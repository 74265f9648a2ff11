package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/sdk/client"
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

// commitCursors commits the named cursors of the store in dir at pos,
// through the library, as a consumer of the store would.
func commitCursors(t *testing.T, dir string, pos uint64, names ...string) {
	t.Helper()
	s, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		cur, err := s.NamedCursor(n, core.All())
		if err != nil {
			t.Fatal(err)
		}
		cur.Seek(pos)
		if err := cur.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedCursor: a cursor whose position file is damaged is listed as
// DAMAGED beside the sound ones (ls exits 7 after listing them all), info
// says so and how to reset it, and reset (to the beginning, or --to SEQ)
// replaces the damaged position.
func TestDamagedCursor(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	ok(t, "demo", dd, "--orders", "2") // 6 events
	commitCursors(t, dir, 4, "audit", "billing")
	pos := filepath.Join(dir, "cursors", "billing.pos")
	f, err := os.OpenFile(pos, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, 10); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	reset := `"batpak cursor reset billing" starts it again from the beginning, with --to SEQ from SEQ`
	r := batpak(t, "cursor", "ls", dd)
	if r.code != exitCorrupt || !regexpMatch(`(?m)^audit\s+4\s+2\s+-$`, r.stdout) || !regexpMatch(`(?m)^billing\s+DAMAGED\s+-\s+-$`, r.stdout) ||
		!strings.Contains(r.stdout, "cursor billing: its saved position is damaged (damaged file "+pos+": cursor position file is damaged): "+reset) ||
		!strings.HasSuffix(r.stdout, "2 cursors\n") || r.stderr != "" {
		t.Errorf("cursor ls: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = batpak(t, "cursor", "info", "billing", dd, "-o", "json")
	if c := decode[cursorJSON](t, r.stdout); r.code != exitCorrupt || c.Name != "billing" || !strings.Contains(c.Damaged, reset) {
		t.Errorf("cursor info -o json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = batpak(t, "cursor", "info", "billing", dd)
	if r.code != exitCorrupt || !regexpMatch(`(?m)^committed\s+DAMAGED: its saved position is damaged`, r.stdout) || !strings.Contains(r.stdout, reset) {
		t.Errorf("cursor info: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	if out := ok(t, "cursor", "reset", "billing", dd, "--to", "3"); out != "cursor billing reset from a damaged position to 3\n" {
		t.Errorf("cursor reset --to 3: %q", out)
	}
	if c := decode[cursorJSON](t, ok(t, "cursor", "info", "billing", dd, "-o", "json")); c != (cursorJSON{Name: "billing", Committed: 3, Lag: 3, LogEnd: 6}) {
		t.Errorf("after reset --to 3: %+v", c)
	}
	// Damaged again; reset alone starts it from the beginning.
	writeFile(t, pos, "not a cursor")
	if out := ok(t, "cursor", "reset", "billing", dd, "-o", "json"); !strings.Contains(out, `"from_damaged":true`) || !strings.Contains(out, `"committed":0`) {
		t.Errorf("cursor reset -o json: %q", out)
	}
	if out := ok(t, "cursor", "ls", dd); !regexpMatch(`(?m)^billing\s+0\s+6\s+-$`, out) {
		t.Errorf("cursor ls after reset: %q", out)
	}
}

// TestDamagedCursorRemote: against a server, a cursor whose saved position
// is damaged is listed as DAMAGED (ls and info exit 7), and reset defines
// it anew at the position asked for.
func TestDamagedCursorRemote(t *testing.T) {
	isolate(t)
	cfg := servertest.Config(t)
	srv := servertest.Start(t, cfg)
	admin := []string{"--server", srv.URL, "--token", srv.Token}
	ok(t, append(slices.Clone(admin), "tenant", "create", "acme")...)
	key := keyIn(t, ok(t, append(slices.Clone(admin), "--tenant", "acme", "key", "issue", "app", "--role", "admin")...))
	as := []string{"--server", srv.URL, "--token", key, "--tenant", "acme"}
	for range 5 {
		ok(t, append(slices.Clone(as), "append", "--entity", "order:1", "--scope", "s", "--kind", "1:1", "--data", "{}")...)
	}
	ten := must(client.New(srv.URL, key)).Tenant("acme")
	ctx := context.Background()
	if err := ten.DefineCursor(ctx, "billing", client.CursorRegion{Entity: "order:"}); err != nil {
		t.Fatal(err)
	}
	if err := ten.CommitCursor(ctx, "billing", 4); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(cfg.Root, "tenants", "acme", "cursors", "billing.pos"), "not a cursor")

	r := batpak(t, append(slices.Clone(as), "cursor", "ls")...)
	if r.code != exitCorrupt || !regexpMatch(`(?m)^billing\s+DAMAGED\s+-\s+entity "order:"\*$`, r.stdout) {
		t.Errorf("remote cursor ls: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := batpak(t, append(slices.Clone(as), "cursor", "info", "billing")...); r.code != exitCorrupt || !strings.Contains(r.stdout, "DAMAGED: its saved position is damaged") {
		t.Errorf("remote cursor info: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if out := ok(t, append(slices.Clone(as), "cursor", "reset", "billing", "--to", "3")...); out != "cursor billing reset from a damaged position to 3\n" {
		t.Errorf("remote cursor reset: %q", out)
	}
	if c := decode[cursorJSON](t, ok(t, append(slices.Clone(as), "cursor", "info", "billing", "-o", "json")...)); c.Committed != 3 || c.Lag != 2 || c.Damaged != "" {
		t.Errorf("remote cursor after reset: %+v", c)
	}
}
