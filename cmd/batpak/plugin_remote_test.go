package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/sdk/client"
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
	// A single server is the one node of --all-nodes.
	out = ok(t, cmd("plugin", "status", "count", "--all-nodes")...)
	if !strings.HasPrefix(out, "plugin count: active version 1, loaded\nrequests 0, calls 0 (0.000s), faults 0, log lines 0 (0 dropped): 1 of 1 nodes\nNODE ") ||
		!strings.Contains(out, "\n-     loaded") {
		t.Fatalf("status --all-nodes: %q", out)
	}
	if out := ok(t, cmd("plugin", "status", "count", "--all-nodes", "--json")...); !strings.Contains(out, `"answered":1`) || !strings.Contains(out, `"nodes":[{"node":""`) {
		t.Fatalf("status --all-nodes --json: %q", out)
	}
	if out := ok(t, cmd("plugin", "list", "--all-nodes")...); !strings.Contains(out, "\ncount ") || !strings.Contains(out, " loaded ") || !strings.HasSuffix(out, "1 plugin, as 1 of 1 nodes answered\n") {
		t.Fatalf("list --all-nodes: %q", out)
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

// plugin status --all-nodes prints where the plugin is quarantined, the
// summed counters, a row per node (a node that did not answer says why)
// and each fault with its node; a server's text stays on its line.
func TestPrintPluginClusterStatus(t *testing.T) {
	st := client.PluginClusterStatus{TenantPlugin: client.TenantPlugin{Name: "trap", Active: "1"},
		Stats: client.PluginStats{Requests: 5, Calls: 4, Faults: 3}, Quarantined: true, Answered: 2, Unanswered: 1,
		Nodes: []client.PluginNodeStatus{
			{Node: "n3", Active: "1", Loaded: true, Stats: client.PluginStats{Requests: 1, Calls: 1, Faults: 1},
				Faults: []client.PluginFault{{Time: time.Date(2026, 12, 5, 1, 2, 3, 0, time.UTC), Version: "1", Kind: "trap", Message: "boom\nnext"}}},
			{Node: "n2", Active: "1", Loaded: true, Quarantined: true, Stats: client.PluginStats{Requests: 4, Calls: 3, Faults: 2}},
			{Node: "n1", Error: "unreachable: connection refused"},
			{Node: "n4", Active: "1"},
		}}
	var b strings.Builder
	if err := printPluginClusterStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"plugin trap: active version 1, quarantined on n2 (plugin reset NAME lifts it on every node); not loaded on n4\n",
		"\nn4    not loaded yet ",
		"requests 5, calls 4 (0.000s), faults 3, log lines 0 (0 dropped): 2 of 3 nodes\n",
		"\nn2    quarantined",
		"\nn1    error",
		"\nnode n1: no part: unreachable: connection refused\n",
		"\nfault n3 2026-12-05T01:02:03Z trap@1: boom\\nnext\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// plugin list --all-nodes names the nodes where a plugin is quarantined
// or not loaded, and the nodes that gave no list.
func TestPrintPluginClusterList(t *testing.T) {
	l := client.PluginClusterList{Answered: 2, Unanswered: 1, Plugins: []client.PluginClusterSummary{
		{PluginSummary: client.PluginSummary{Name: "trap", Kind: "projection", Active: "1", Versions: 1, Quarantined: true}, QuarantinedOn: []string{"n2"}, NotLoadedOn: []string{"n3"}},
		{PluginSummary: client.PluginSummary{Name: "count", Kind: "projection", Active: "2", Versions: 2, Loaded: true}},
	}}
	l.Nodes = append(l.Nodes, client.PluginListNode{Node: "n1", Error: "unreachable: connection refused"})
	var b strings.Builder
	if err := printPluginClusterList(&b, l); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"quarantined on n2; not-loaded on n3", "\ncount  projection  2       2         loaded", "node n1: no list: unreachable: connection refused\n", "2 plugins, as 2 of 3 nodes answered\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestPluginPushImmutableVersion: pushing a kept version again with the
// same module and manifest (spelled otherwise) is idempotent; with
// another manifest it is refused (409 CONFLICT, exit 4) and the version
// keeps its manifest. Manifests repeating a member, asking a negative
// timeout or pinning a malformed sha256 are refused saying so.
func TestPluginPushImmutableVersion(t *testing.T) {
	testdata, err := filepath.Abs(filepath.Join("..", "..", "plugins", "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	dir := isolate(t)
	url, op := startServer(t)
	admin := []string{"--server", url, "--token", op}
	ok(t, append(admin, "tenant", "create", "acme")...)
	adminKey := keyIn(t, ok(t, append(admin, "--tenant", "acme", "key", "issue", "ops", "--role", "admin")...))
	cmd := func(args ...string) []string {
		return append([]string{"--server", url, "--token", adminKey, "--tenant", "acme"}, args...)
	}
	wasm := filepath.Join(dir, "count.wasm")
	b, err := os.ReadFile(filepath.Join(testdata, "counter.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, wasm, string(b))
	sum := plugins.Digest(b)
	push := func(manifest string) []string {
		mf := filepath.Join(dir, "manifest.json")
		writeFile(t, mf, manifest)
		return cmd("plugin", "push", wasm, "--manifest", mf)
	}

	ok(t, push(`{"name":"count","version":"1","kind":"projection","sha256":"`+sum+`","limits":{"timeout":"200ms"}}`)...)
	// The same manifest, spelled otherwise (order, spacing, pin's case).
	ok(t, push(`{ "kind": "projection", "limits": {"timeout": "200ms"}, "sha256": "`+strings.ToUpper(sum)+`", "version": "1", "name": "count" }`)...)
	// Another manifest for the kept version: refused, the version as it was.
	failsWith(t, exitConflict, push(`{"name":"count","version":"1","kind":"projection","sha256":"`+sum+`","limits":{"timeout":"500ms"}}`),
		"CONFLICT", "version 1", "kept with another manifest", "immutable", "new version")
	if out := ok(t, cmd("plugin", "status", "count", "--json")...); !strings.Contains(out, `200ms`) || strings.Contains(out, `500ms`) {
		t.Fatalf("status after the refused push: %s", out)
	}
	// As a new version it is taken.
	if out := ok(t, push(`{"name":"count","version":"2","kind":"projection","sha256":"`+sum+`","limits":{"timeout":"500ms"}}`)...); !strings.Contains(out, "active version 2") {
		t.Fatalf("push of version 2: %q", out)
	}

	// Manifests refused by the server (sent as the CLI reads them) …
	fails(t, push(`{"name":"count","version":"3","kind":"projection","sha256":"`+sum+`","limits":{"timeout":"-1s"}}`),
		"plugin count refused", "limits.timeout -1s is negative")
	fails(t, push(`{"name":"count","version":"3","kind":"projection","sha256":"ZZ"}`), "sha256", `"ZZ"`, "malformed")
	fails(t, push(`{"name":"count","version":"3","kind":"projection","sha256":"`+sum+`","limits":{"timeout":"1x"}}`),
		"plugin manifest refused", "not a plugin manifest")
	// … and by the CLI before it sends (it would decode the last "name").
	fails(t, push(`{"name":"count","version":"3","kind":"projection","name":"other"}`), "manifest.json", `"name" appears twice`)
	if r := batpak(t, cmd("plugin", "list")...); r.code != 0 || strings.Contains(r.stdout, "other") {
		t.Fatalf("plugin list: %+v", r)
	}
}
