package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/plugins"
)

// TestRemotePluginVerbs pushes plugins to a server's tenant with the CLI
// (a file with --manifest, and a directory), lists them, swaps, shows
// the status, and refuses a reader's push with the server's reason.
func TestRemotePluginVerbs(t *testing.T) {
	testdata, err := filepath.Abs(filepath.Join("..", "..", "plugins", "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	dir := isolate(t)
	url, op := startServer(t)
	admin := []string{"--server", url, "--token", op}
	ok(t, append(admin, "tenant", "create", "acme")...)
	adminKey := keyIn(t, ok(t, append(admin, "--tenant", "acme", "key", "issue", "ops", "--role", "admin")...))
	readerKey := keyIn(t, ok(t, append(admin, "--tenant", "acme", "key", "issue", "ro", "--role", "reader")...))
	remote := []string{"--server", url, "--token", adminKey, "--tenant", "acme"}
	cmd := func(args ...string) []string { return append(slices.Clone(remote), args...) }

	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(testdata, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v1, v2 := read("counter.wasm"), read("counter2.wasm")
	write := func(path string, b []byte) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "c1.wasm"), v1)
	write(filepath.Join(dir, "m1.json"), []byte(`{"name":"count","version":"1","kind":"projection"}`))
	out := ok(t, cmd("plugin", "push", filepath.Join(dir, "c1.wasm"), "--manifest", filepath.Join(dir, "m1.json"))...)
	if want := "pushed plugin count: active version 1 (sha256 " + plugins.Digest(v1) + "), 1 version kept\n"; out != want {
		t.Fatalf("push: %q, want %q", out, want)
	}
	// A directory with manifest.json (pinned) and the module.
	write(filepath.Join(dir, "v2", "count.wasm"), v2)
	write(filepath.Join(dir, "v2", "manifest.json"), []byte(`{"name":"count","version":"2","kind":"projection","sha256":"`+plugins.Digest(v2)+`"}`))
	if out := ok(t, cmd("plugin", "push", filepath.Join(dir, "v2"))...); !strings.Contains(out, "active version 2") || !strings.HasSuffix(out, "2 versions kept\n") {
		t.Fatalf("push DIR: %q", out)
	}
	out = ok(t, cmd("plugin", "list")...)
	if !strings.HasPrefix(out, "NAME ") || !strings.Contains(out, "count ") || !strings.Contains(out, plugins.Digest(v2)) || !strings.HasSuffix(out, "1 plugin\n") {
		t.Fatalf("list: %q", out)
	}
	if out := ok(t, cmd("plugin", "swap", "count", "1")...); !strings.HasPrefix(out, "swapped plugin count: active version 1 ") {
		t.Fatalf("swap: %q", out)
	}
	out = ok(t, cmd("plugin", "status", "count")...)
	if !strings.HasPrefix(out, "plugin count: active version 1, loaded\nsha256 "+plugins.Digest(v1)) || !strings.Contains(out, "1 *") {
		t.Fatalf("status: %q", out)
	}
	if out := ok(t, cmd("plugin", "status", "count", "--json")...); !strings.Contains(out, `"active":"1"`) {
		t.Fatalf("status --json: %q", out)
	}
	// A manifest pinning other bytes, and a reader's push: refused with
	// the server's reason, nonzero exit.
	write(filepath.Join(dir, "bad.json"), []byte(`{"name":"count","version":"3","kind":"projection","sha256":"`+plugins.Digest(v1)+`"}`))
	r := batpak(t, cmd("plugin", "push", filepath.Join(dir, "v2", "count.wasm"), "--manifest", filepath.Join(dir, "bad.json"))...)
	if r.code == 0 || !strings.Contains(r.stderr, "PLUGIN_REJECTED") || !strings.Contains(r.stderr, "is not the manifest's sha256") {
		t.Fatalf("mismatched pin: exit %d, %q", r.code, r.stderr)
	}
	r = batpak(t, "--server", url, "--token", readerKey, "--tenant", "acme", "plugin", "push", filepath.Join(dir, "v2"))
	if r.code == 0 || !strings.Contains(r.stderr, "FORBIDDEN") {
		t.Fatalf("reader push: exit %d, %q", r.code, r.stderr)
	}
	if r := batpak(t, "plugin", "list"); r.code == 0 || !strings.Contains(r.stderr, "--server") {
		t.Fatalf("plugin list without a server: exit %d, %q", r.code, r.stderr)
	}
}
