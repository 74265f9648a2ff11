package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/examples/plugins/wasmbuild"
	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/plugins"
)

// repoRoot is the repository root, resolved before any test changes
// directory (isolate does).
var repoRoot = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Join(wd, "..", "..")
}()

// pluginCacheForTests is the compilation cache every plugin test shares
// (across runs too), so that each Go guest compiles once, not per test.
var pluginCacheForTests = filepath.Join(os.TempDir(), "batpak-wazero-cache-cmdtest")

var (
	builtMu sync.Mutex
	built   = map[string]string{}
)

// exampleWasm builds examples/plugins/NAME (cached under os.TempDir by a
// hash of its sources, see wasmbuild) and returns the .wasm path.
func exampleWasm(t *testing.T, name string) string {
	t.Helper()
	builtMu.Lock()
	defer builtMu.Unlock()
	if p, ok := built[name]; ok {
		return p
	}
	p, _, err := wasmbuild.Build(context.Background(), filepath.Join(repoRoot, "examples", "plugins", name))
	if err != nil {
		t.Fatalf("building %s: %v", name, err)
	}
	built[name] = p
	return p
}

// pluginIsolate is isolate plus the shared compilation cache; it copies
// the named examples' modules into the test's directory as NAME.wasm.
func pluginIsolate(t *testing.T, examples ...string) string {
	t.Helper()
	paths := make([]string, len(examples))
	for i, name := range examples {
		paths[i] = exampleWasm(t, name)
	}
	dir := isolate(t)
	t.Setenv(pluginCacheEnv, pluginCacheForTests)
	for i, name := range examples {
		b, err := os.ReadFile(paths[i])
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name+".wasm"), string(b))
	}
	return dir
}

func wantIn(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, s)
		}
	}
}

// entityFacts opens the CLI's default store read-only and returns the
// entity's generation and its OrderPlaced total_cents.
func entityFacts(t *testing.T, entity string) (gen uint64, totalCents int64) {
	t.Helper()
	s, err := core.OpenReadOnly(core.DefaultConfig(defaultDataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs, err := s.Query(core.Entity(entity).WithKind(kindOrderPlaced))
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Coordinate.Entity == entity {
			totalCents += gjson.GetBytes(ev.Payload, "total_cents").Int()
		}
	}
	return s.EntityGeneration(entity), totalCents
}

func TestPluginProject(t *testing.T) {
	const counter, orderTotal = "counter.wasm", "order-total.wasm"
	otManifest := filepath.Join(repoRoot, "examples", "plugins", "order-total", "manifest.json")
	pluginIsolate(t, "counter", "order-total")
	ok(t, "demo", "--orders", "3")
	ok(t, "append", "--entity", "order:1", "--scope", "shop", "--kind", "1:3", "--data", `{"amount_cents":250,"reason":"dented"}`)
	gen, total := entityFacts(t, "order:1")
	if gen == 0 || total <= 0 {
		t.Fatalf("order:1: generation %d, total %d", gen, total)
	}

	// The counter: 8 bytes, shown as hex and as a little-endian uint64.
	out := ok(t, "plugin", "project", "--plugin", counter, "--entity", "order:1")
	wantIn(t, "counter project", out,
		"plugin      counter 0.0.0 (sha256 ",
		"entity      order:1\n",
		"found       true\n",
		"generation  "+itoa(gen)+"\n",
		"state       0300000000000000 (8 bytes; as a little-endian uint64: 3)\n")
	m := decode[map[string]json.RawMessage](t, ok(t, "plugin", "project", "--plugin", counter, "--entity", "order:1", "--json"))
	if num(t, m, "state_uint64") != 3 || num(t, m, "generation") != gen || str(t, m, "state_hex") != "0300000000000000" ||
		string(m["found"]) != "true" || str(t, m, "plugin") != "counter" || num(t, m, "state_bytes") != 8 {
		t.Fatalf("counter --json: %s", out)
	}
	if _, has := m["state"]; has {
		t.Fatalf("an 8-byte binary state has no JSON state: %v", m)
	}
	// --kinds folds only those kinds.
	m = decode[map[string]json.RawMessage](t, ok(t, "plugin", "project", "--plugin", counter, "--entity", "order:1", "--kinds", "1:1,1:3", "--json"))
	if num(t, m, "state_uint64") != 2 {
		t.Fatalf("--kinds 1:1,1:3: %v", m)
	}

	// order-total with its manifest: a JSON state.
	want := `{"orders":1,"total_cents":` + itoa(uint64(total)) + `,"refunded_cents":250}`
	out = ok(t, "plugin", "project", "--plugin", orderTotal, "--manifest", otManifest, "--entity", "order:1")
	wantIn(t, "order-total project", out, "plugin      order-total 1.0.0 (", "state       "+want+"\n")
	m = decode[map[string]json.RawMessage](t, ok(t, "plugin", "project", "--plugin", orderTotal, "--manifest", otManifest, "--entity", "order:1", "--json"))
	if string(m["state"]) != want || str(t, m, "version") != "1.0.0" || num(t, m, "generation") != gen {
		t.Fatalf("order-total --json: %v", m)
	}
	if _, has := m["state_hex"]; has {
		t.Fatalf("a JSON state has no hex: %v", m)
	}
	// Another entity, and one with no events at all.
	_, total2 := entityFacts(t, "order:2")
	m = decode[map[string]json.RawMessage](t, ok(t, "plugin", "project", "--plugin", orderTotal, "--entity", "order:2", "--json"))
	if string(m["state"]) != `{"orders":1,"total_cents":`+itoa(uint64(total2))+`,"refunded_cents":0}` {
		t.Fatalf("order:2: %v", m)
	}
	out = ok(t, "plugin", "project", "--plugin", orderTotal, "--entity", "order:99")
	wantIn(t, "empty entity", out, "found       false\n", "generation  0\n", "state       (empty)\n")

	// The compilation cache is where the environment says.
	if ents, err := os.ReadDir(pluginCacheForTests); err != nil || len(ents) == 0 {
		t.Fatalf("compilation cache %s: %v, %d entries", pluginCacheForTests, err, len(ents))
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func TestPluginProjectErrors(t *testing.T) {
	const counter = "counter.wasm"
	dir := pluginIsolate(t, "counter")
	shipperManifest := filepath.Join(repoRoot, "examples", "plugins", "shipper", "manifest.json")

	r := batpak(t, "plugin", "project", "--json")
	if r.code != exitUsage || !strings.Contains(r.stderr, "missing required flags --plugin, --entity") || !strings.Contains(r.stderr, "Run 'batpak plugin project --help' for usage.") {
		t.Fatalf("missing flags: %d %s", r.code, r.stderr)
	}
	failsWith(t, exitNotFound, []string{"plugin", "project", "--plugin", counter, "--entity", "order:1"}, "no store at", "batpak demo")
	ok(t, "demo", "--orders", "1")
	fails(t, []string{"plugin", "project", "--plugin", "nope.wasm", "--entity", "order:1"}, "--plugin: nope.wasm does not exist", "plugin build")
	writeFile(t, filepath.Join(dir, "text.wasm"), "hello, world")
	fails(t, []string{"plugin", "project", "--plugin", "text.wasm", "--entity", "order:1"}, "not a WebAssembly module")
	fails(t, []string{"plugin", "project", "--plugin", counter, "--manifest", shipperManifest, "--entity", "order:1"},
		"--manifest: ", "describes a handler plugin")
	writeFile(t, filepath.Join(dir, "bad.json"), `{"name":"counter","version":"1","kind":"projection","limitz":{}}`)
	fails(t, []string{"plugin", "project", "--plugin", counter, "--manifest", "bad.json", "--entity", "order:1"},
		"--manifest: ", "invalid plugin manifest", "limitz")
	writeFile(t, filepath.Join(dir, "pinned.json"), `{"name":"counter","version":"1","kind":"projection","sha256":"`+strings.Repeat("0", 64)+`"}`)
	fails(t, []string{"plugin", "project", "--plugin", counter, "--manifest", "pinned.json", "--entity", "order:1"},
		"loading "+counter, "does not match the pinned")
	fails(t, []string{"plugin", "project", "--plugin", counter, "--entity", "order:1", "--kinds", "0:1"}, "--kinds: ")
}

// abi2Module is a hand-assembled module whose only export is
// batpak_abi_version, returning 2.
var abi2Module = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
	0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
	0x03, 0x02, 0x01, 0x00, // func 0: type 0
	0x07, 0x16, 0x01, 0x12, // export: 1 of 18 bytes
	'b', 'a', 't', 'p', 'a', 'k', '_', 'a', 'b', 'i', '_', 'v', 'e', 'r', 's', 'i', 'o', 'n',
	0x00, 0x00, // func 0
	0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x02, 0x0b, // code: i32.const 2
}

func TestPluginInspect(t *testing.T) {
	const counter, shipper = "counter.wasm", "shipper.wasm"
	shipperManifest := filepath.Join(repoRoot, "examples", "plugins", "shipper", "manifest.json")
	dir := pluginIsolate(t, "counter", "shipper")
	wasm, err := os.ReadFile(counter)
	if err != nil {
		t.Fatal(err)
	}
	digest := plugins.Digest(wasm)

	out := ok(t, "plugin", "inspect", counter)
	wantIn(t, "inspect counter", out,
		"file         "+counter+"\n",
		"sha256       "+digest+"\n",
		"abi version  1\n",
		"kind         projection or handler",
		"loads        yes, with manifest default (name counter, kind projection)\n",
		"  batpak_fold ", "(i32, i32, i32, i32) -> i64\n",
		"  batpak_alloc ", "(i32) -> i32\n",
		"  _initialize ",
		"  memory ", "memory\n",
		"imports (",
		"  wasi_snapshot_preview1.fd_write ")

	var rep inspectReport
	if err := json.Unmarshal([]byte(ok(t, "plugin", "inspect", counter, "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.ABIVersion == nil || *rep.ABIVersion != 1 || !rep.Loads || rep.SHA256 != digest || rep.Size != len(wasm) ||
		strings.Join(rep.Kinds, ",") != "projection,handler" || rep.Memory == nil || rep.Memory.MinPages == 0 {
		t.Fatalf("inspect --json: %+v", rep)
	}
	for _, imp := range rep.Imports {
		if imp.Module != "wasi_snapshot_preview1" && imp.Module != "batpak" {
			t.Errorf("unexpected import %s.%s", imp.Module, imp.Name)
		}
	}

	// A handler, checked against its manifest.
	out = ok(t, "plugin", "inspect", shipper, "--manifest", shipperManifest)
	wantIn(t, "inspect shipper", out, "loads        yes, with manifest "+shipperManifest+"\n", "  batpak_handle ", "(i32, i32) -> i64\n")

	// A module the host refuses: the report, then exit 1.
	writeFile(t, filepath.Join(dir, "abi2.wasm"), string(abi2Module))
	r := batpak(t, "plugin", "inspect", "abi2.wasm")
	if r.code != exitError || r.stderr != "" {
		t.Fatalf("abi2: exit %d, stderr %q", r.code, r.stderr)
	}
	wantIn(t, "inspect abi2", r.stdout,
		"abi version  2 (this host speaks version 1)\n",
		"kind         none (exports neither batpak_fold nor batpak_handle)\n",
		"memory       none\n",
		"loads        NO, with manifest default (name abi2, kind projection): ",
		"exports (1)\n  batpak_abi_version  () -> i32\n",
		"imports (0)\n")

	fails(t, []string{"plugin", "inspect", "missing.wasm"}, "missing.wasm does not exist")
	writeFile(t, filepath.Join(dir, "junk.wasm"), "\x00asm\x01\x00\x00\x00\xff\xff")
	fails(t, []string{"plugin", "inspect", "junk.wasm"}, "not a WebAssembly module wazero accepts")
}

// A plugin with no dependencies in a module of its own: it exports the
// ABI by hand (what sdk/guest does for Go plugins).
const tinyPlugin = `//go:build wasip1

package main

import "unsafe"

var buf []byte

//go:wasmexport batpak_abi_version
func abiVersion() int32 { return 1 }

//go:wasmexport batpak_alloc
func alloc(n uint32) uint32 {
	buf = make([]byte, n)
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))
}

//go:wasmexport batpak_fold
func fold(sp, sn, bp, bn uint32) uint64 { return 0 }

func main() {}
`

func TestPluginBuild(t *testing.T) {
	// isolate moves HOME; keep the go command's caches where they are, or
	// every run would rebuild the runtime for wasip1.
	goEnv, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH").Output()
	if err != nil {
		testenv.Skipf(t, "go env: %v", err)
	}
	dir := pluginIsolate(t)
	for i, v := range strings.Fields(string(goEnv)) {
		t.Setenv([]string{"GOCACHE", "GOMODCACHE", "GOPATH"}[i], v)
	}
	goMod := "module example.com/tiny\n\ngo 1.24\n"
	writeFile(t, filepath.Join(dir, "tiny", "go.mod"), goMod)
	writeFile(t, filepath.Join(dir, "tiny", "main.go"), tinyPlugin)

	out := ok(t, "plugin", "build", "tiny")
	wantIn(t, "build", out, "built   "+filepath.Join("tiny", "tiny.wasm")+" (", "sha256  ")
	wasm, err := os.ReadFile(filepath.Join(dir, "tiny", "tiny.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	wantIn(t, "build", out, "sha256  "+plugins.Digest(wasm)+"\n")
	// -o, and the result loads.
	ok(t, "plugin", "build", "./tiny", "--out", "out/t.wasm")
	out = ok(t, "plugin", "inspect", "out/t.wasm")
	wantIn(t, "inspect tiny", out, "abi version  1\n", "kind         projection\n", "loads        yes")
	// -trimpath: the same sources give the same module.
	if again, _ := os.ReadFile("out/t.wasm"); plugins.Digest(again) != plugins.Digest(wasm) {
		t.Fatal("two builds of the same sources differ")
	}

	writeFile(t, filepath.Join(dir, "broken", "go.mod"), goMod)
	writeFile(t, filepath.Join(dir, "broken", "main.go"), "package main\n\nfunc main() { undefined() }\n")
	// go build's messages come first, then batpak's line.
	r := batpak(t, "plugin", "build", "broken")
	if r.code != exitError {
		t.Fatalf("broken: exit %d", r.code)
	}
	wantIn(t, "broken build", r.stderr, "undefined: undefined", "\nbatpak: go build of broken failed", "messages are above")
	fails(t, []string{"plugin", "build", "nowhere"}, "DIR: ")
	fails(t, []string{"plugin", "build", "tiny/go.mod"}, "is not a directory")
	// A plugin in another language is told which tool builds it.
	writeFile(t, filepath.Join(dir, "inc", "counter.c"), "int batpak_abi_version(void) { return 1; }\n")
	writeFile(t, filepath.Join(dir, "inc", "counter_test.go"), "package main\n")
	fails(t, []string{"plugin", "build", "inc"}, "holds no .go files", "plugins written in Go", "c-counter/build.sh")

	t.Setenv("PATH", t.TempDir())
	fails(t, []string{"plugin", "build", "tiny"}, "needs the go command", "not on PATH", "https://go.dev/dl/")
}

func TestPluginCacheDir(t *testing.T) {
	isolate(t)
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	t.Setenv(pluginCacheEnv, "")
	if got := pluginCacheDir(""); got != filepath.Join("/xdg", "batpak", "wazero") {
		t.Errorf("default: %s", got)
	}
	t.Setenv(pluginCacheEnv, "/env/cache")
	if got := pluginCacheDir(""); got != "/env/cache" {
		t.Errorf("env: %s", got)
	}
	if got := pluginCacheDir("/flag"); got != "/flag" {
		t.Errorf("flag: %s", got)
	}
	if got := pluginCacheDir("none"); got != "" {
		t.Errorf("none: %q", got)
	}
	t.Setenv(pluginCacheEnv, "none")
	if got := pluginCacheDir(""); got != "" {
		t.Errorf("env none: %q", got)
	}
}

func TestDefaultManifest(t *testing.T) {
	for file, want := range map[string]string{
		"counter.wasm":            "counter",
		"dir/Order Total.wasm":    "order-total",
		"x/.hidden":               "plugin",
		"___.wasm":                "plugin",
		"my_plugin.v2.wasm":       "my_plugin.v2",
		strings.Repeat("a", 80):   strings.Repeat("a", 64),
		"ÜBER-plugin.wasm":        "ber-plugin",
		"/abs/path/shipper.wasm":  "shipper",
		"counter-3f2a9c.wasm.bak": "counter-3f2a9c.wasm",
	} {
		m := defaultManifest(file, plugins.KindProjection)
		if m.Name != want || m.Version != "0.0.0" || m.Kind != plugins.KindProjection {
			t.Errorf("defaultManifest(%q) = %+v, want name %q", file, m, want)
		}
	}
}

// TestPluginOutputIsEscaped: plugin project with a plugin that logs lines
// forging the CLI's output (newlines, ANSI escapes, NUL, invalid UTF-8)
// and then a flood, and with one whose error forges it: the flood is cut
// to the call's log budget and noted, every plugin line is attributed and
// printed on one escaped line, stdout has the real state, and the guest's
// error prints as one escaped line.
func TestPluginOutputIsEscaped(t *testing.T) {
	dir := pluginIsolate(t)
	for _, f := range []string{"logflood", "guesterr-forge", "importname-forge", "inspect-forge"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, "plugins", "testdata", f+".wasm"))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, f+".wasm"), string(b))
	}
	ok(t, "demo", "--orders", "1")

	clean := func(what, s string) {
		t.Helper()
		if !utf8.ValidString(s) || strings.ContainsAny(s, "\r\x00\x1b\u0085\u2028") {
			t.Errorf("%s holds control characters or invalid UTF-8: %q", what, s[:min(len(s), 2000)])
		}
		for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
			if !strings.HasPrefix(line, "batpak: ") || strings.HasPrefix(line, "batpak: state") {
				t.Errorf("%s: a line that is not the CLI's own: %q", what, line[:min(len(line), 200)])
			}
		}
	}

	r := batpak(t, "plugin", "project", "--plugin", "logflood.wasm", "--entity", "order:1")
	if r.code != exitOK {
		t.Fatalf("plugin project: exit %d: %s", r.code, r.stderr[:min(len(r.stderr), 2000)])
	}
	wantIn(t, "stdout", r.stdout, "state       (empty)\n")
	t.Logf("stderr: %d bytes, %d lines", len(r.stderr), strings.Count(r.stderr, "\n"))
	if len(r.stderr) > 128<<10 {
		t.Errorf("stderr has %d bytes: the 600 KiB the plugin logged were not cut to its 64 KiB budget", len(r.stderr))
	}
	clean("stderr", r.stderr)
	wantIn(t, "stderr", r.stderr,
		`batpak: warning: plugin logflood@0.0.0: fold ok\nbatpak: state {"total_cents":1}\n\x1b[31mRED\x1b[0m\x00nul\xff\u0085\u2028end\n`+"\n",
		"batpak: warning: plugin logflood@0.0.0: batpak: state {\"total_cents\":1} (stream=stderr)\n",
		"batpak: warning: plugin call over its log budget; the excess was dropped (plugin=logflood, version=0.0.0, dropped_lines=")

	r = batpak(t, "plugin", "project", "--plugin", "guesterr-forge.wasm", "--entity", "order:1")
	if r.code != exitError || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("a guest error: exit %d, stderr %q; want exit 1 and one line", r.code, r.stderr)
	}
	clean("the guest error", r.stderr)
	wantIn(t, "the guest error", r.stderr, `guest-error: boom\nbatpak: state {"total_cents":1}\n\x1b[2J\x00`)

	// A module whose import names forge lines: refused at load, the error
	// (which quotes the names) on one escaped line.
	r = batpak(t, "plugin", "project", "--plugin", "importname-forge.wasm", "--entity", "order:1")
	if r.code != exitError || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("a module with forged import names: exit %d, stderr %q; want exit 1 and one line", r.code, r.stderr)
	}
	clean("the load error", r.stderr)
	wantIn(t, "the load error", r.stderr, `batpak: state {"forged":1}\n`)

	// plugin inspect prints the names a module declares escaped (and
	// exits 1: the module does not load).
	out := batpak(t, "plugin", "inspect", "inspect-forge.wasm").stdout
	if strings.ContainsAny(out, "\r\x1b") || strings.Contains(out, "\nbatpak: state") {
		t.Errorf("inspect printed a module's names raw:\n%q", out)
	}
	wantIn(t, "inspect", out, `\x1b[2K\rbatpak: state {"forged":1}\n.f\n\x1b[31m`)
}
