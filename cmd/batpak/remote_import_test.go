package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
)

// TestRemoteImportLargerThanMaxBody: against a server taking bodies of
// at most 1 MiB, "batpak import" of an export of several MiB writes every
// event (sent in requests cut at line ends, smaller after the server's
// 413), the tenant verifies, and importing again skips every event; the
// bar counts the bytes the server acknowledged, to the file's size. An
// import refused part way names the file's line, how many events were
// imported and that running it again resumes, and its bar stops short
// of the end: run again with the line mended, it imports the rest.
func TestRemoteImportLargerThanMaxBody(t *testing.T) {
	dir := isolate(t)
	url, op := startServerWith(t, func(c *server.Config) { c.MaxBodyBytes = 1 << 20 })
	admin := []string{"--server", url, "--token", op}
	remote := func(tenant string) []string {
		ok(t, append(admin, "tenant", "create", tenant)...)
		key := keyIn(t, ok(t, append(admin, "--tenant", tenant, "key", "issue", "importer", "--role", "admin")...))
		return []string{"--server", url, "--token", key, "--tenant", tenant}
	}
	src := remote("src")
	c, err := client.New(url, src[3])
	if err != nil {
		t.Fatal(err)
	}
	const events = 4000
	pad := strings.Repeat("x", 1500)
	for b := 0; b < events/400; b++ {
		items := make([]client.AppendRequest, 400)
		for i := range items {
			items[i] = client.AppendRequest{Entity: fmt.Sprintf("order:%d", b*400+i), Scope: "shop", Kind: "1:1",
				Payload: json.RawMessage(fmt.Sprintf(`{"n":%d,"pad":%q}`, b*400+i, pad))}
		}
		if _, err := c.Tenant("src").AppendBatch(context.Background(), items); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "src.ndjson")
	ok(t, append(src, "export", "--out", file)...)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 6<<20 {
		t.Fatalf("the export is %d bytes, want several MiB", len(data))
	}

	dst := remote("copy")
	r := batpak(t, append(dst, "import", file, "--progress")...)
	if r.code != 0 || r.stdout != fmt.Sprintf("imported %d events, skipped 0 already present\n", events) {
		t.Fatalf("import of %d bytes into max_body_bytes 1 MiB: exit %d\nstdout: %s\nstderr: %s", len(data), r.code, r.stdout, r.stderr)
	}
	mb := math.Floor(float64(len(data))/1e5+0.5) / 10 // as the bar shows it (between 1 and 10 MB)
	if last := r.stderr[strings.LastIndex(r.stderr, "\r")+1:]; !strings.Contains(last, "import 100%") || !strings.Contains(last, fmt.Sprintf("(%.1f/%.1f MB", mb, mb)) {
		t.Errorf("import --progress of %d bytes: want a bar ending full, got %q", len(data), r.stderr)
	}
	if v := ok(t, append(dst, "verify")...); !strings.HasPrefix(v, fmt.Sprintf("ok: %d events in %d entities", events, events)) {
		t.Errorf("verify after the import: %q", v)
	}
	if again := ok(t, append(dst, "import", file)...); again != fmt.Sprintf("imported 0 events, skipped %d already present\n", events) {
		t.Errorf("import again: %q", again)
	}

	// Line 3500 broken: the requests before it stand, and the error says
	// so and how to go on.
	const bad = 3500
	lines := strings.SplitAfter(string(data), "\n")
	broken := filepath.Join(dir, "broken.ndjson")
	os.WriteFile(broken, []byte(strings.Join(lines[:bad-1], "")+strings.Replace(lines[bad-1], `"entity":"order:`, `"entity":"`+"\x00", 1)+strings.Join(lines[bad:], "")), 0o600)
	part := remote("part")
	r = batpak(t, append(part, "import", broken, "--progress")...)
	msg := r.stderr[strings.Index(r.stderr, "batpak: "):]
	for _, w := range []string{fmt.Sprintf("(line %d of the file)", bad), "events were imported", "run the import again to resume"} {
		if r.code != exitError || !strings.Contains(msg, w) {
			t.Errorf("an import with a broken line %d: exit %d, stderr lacks %q: %q", bad, r.code, w, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "100%") {
		t.Errorf("a failed import's bar claims it all: %q", r.stderr)
	}
	var imported int
	if m := regexp.MustCompile(`; (\d+) events were imported \(`).FindStringSubmatch(msg); m != nil {
		imported, _ = strconv.Atoi(m[1])
	}
	if imported == 0 || imported >= bad {
		t.Fatalf("a failed import reports %d events imported before line %d: %s", imported, bad, r.stderr)
	}
	if out := ok(t, append(part, "import", file)...); out != fmt.Sprintf("imported %d events, skipped %d already present\n", events-imported, imported) {
		t.Errorf("run again: %q, want %d imported and %d skipped", out, events-imported, imported)
	}
}
