package plugins_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/plugins"
)

// Shared fixtures and helpers. The WebAssembly fixtures in testdata/ are
// committed binaries built from the .wat next to them (testdata/build.sh);
// the Go guests and the C counter are built from source on first use and
// cached in os.TempDir() under a hash of their sources.

var (
	kindA = core.MustKind(1, 1)
	kindB = core.MustKind(1, 2)
	// Kinds that select a mode of testdata/handler-malformed.wat (the
	// fixture switches on the first event's type).
	kindBadAction = core.MustKind(3, 1)
	kindBadLength = core.MustKind(3, 2)
	kindBadPtr    = core.MustKind(3, 3)
	kindBadSource = core.MustKind(3, 4)
	kindTruncated = core.MustKind(3, 5)
	// kindEcho is what testdata/handler-flaky.wat writes.
	kindEcho = core.Kind(0x2001)
)

// moduleRoot is the repository root (the tests run in plugins/).
const moduleRoot = ".."

// sharedCacheDir is the compilation cache every test host shares, so a Go
// guest is compiled once per test binary, not once per test (compiling is
// much slower under -race).
var sharedCacheDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "batpak-plugins-test-cache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedCacheDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newHost returns a host on the shared compilation cache, closed when the
// test ends.
func newHost(t testing.TB) *plugins.Host {
	t.Helper()
	h, err := plugins.NewHost(plugins.HostOptions{CacheDir: sharedCacheDir, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("NewHost: %v", err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

// load loads wasm as a plugin or fails the test.
func load(t testing.TB, h *plugins.Host, wasm []byte, m plugins.Manifest) *plugins.Plugin {
	t.Helper()
	p, err := h.Load(context.Background(), wasm, m)
	if err != nil {
		t.Fatalf("Load(%s): %v", m.Name, err)
	}
	return p
}

func projManifest(name string) plugins.Manifest {
	return plugins.Manifest{Name: name, Version: "1.0.0", Kind: plugins.KindProjection}
}

// generous gives m a call deadline a loaded machine meets, for tests of
// something other than time: a Go guest's first call instantiates it,
// which under -race on a busy machine can take longer than the default
// second.
func generous(m plugins.Manifest) plugins.Manifest {
	m.Limits.Timeout = plugins.Duration(30 * time.Second)
	return m
}

func handlerManifest(name string) plugins.Manifest {
	return plugins.Manifest{Name: name, Version: "1.0.0", Kind: plugins.KindHandler}
}

// fixture reads testdata/NAME.wasm.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".wasm"))
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	return b
}

var (
	buildMu    sync.Mutex
	buildCache = map[string][]byte{}
)

// cached returns the module built by build into a file, keyed by name and
// the hash of inputs: from memory, from os.TempDir(), or by building.
func cached(t testing.TB, name string, inputs []string, extra string, build func(out string) error) []byte {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", name, extra)
	for _, f := range inputs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("build %s: %v", name, err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(b))
		h.Write(b)
	}
	key := hex.EncodeToString(h.Sum(nil))[:24]
	if b, ok := buildCache[key]; ok {
		return b
	}
	dir := filepath.Join(os.TempDir(), "batpak-plugin-test-builds")
	path := filepath.Join(dir, name+"-"+key+".wasm")
	if b, err := os.ReadFile(path); err == nil {
		buildCache[key] = b
		return b
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("build %s: %v", name, err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	if err := build(tmp); err != nil {
		os.Remove(tmp)
		t.Fatalf("build %s: %v", name, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("build %s: %v", name, err)
	}
	// Builds of older sources are not needed any more.
	if old, err := filepath.Glob(filepath.Join(dir, name+"-*.wasm")); err == nil {
		for _, f := range old {
			if f != path {
				os.Remove(f)
			}
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("build %s: %v", name, err)
	}
	buildCache[key] = b
	return b
}

// goFiles lists the .go files under dirs (recursively), sorted.
func goFiles(t testing.TB, dirs ...string) []string {
	t.Helper()
	var out []string
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !e.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
				out = append(out, p)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("listing %s: %v", d, err)
		}
	}
	sort.Strings(out)
	return out
}

// buildGoGuest builds the Go plugin in pkg (relative to the module root)
// for wasip1 as a c-shared module.
func buildGoGuest(t testing.TB, pkg string) []byte {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	inputs := goFiles(t, filepath.Join(moduleRoot, pkg), filepath.Join(moduleRoot, "sdk", "guest"), filepath.Join(moduleRoot, "plugins", "abi"))
	inputs = append(inputs, filepath.Join(moduleRoot, "go.mod"), filepath.Join(moduleRoot, "go.sum"))
	return cached(t, strings.ReplaceAll(pkg, "/", "_"), inputs, runtime.Version(), func(out string) error {
		abs, err := filepath.Abs(out)
		if err != nil {
			return err
		}
		cmd := exec.Command(goTool, "build", "-buildmode=c-shared", "-o", abs, "./"+pkg)
		cmd.Dir = moduleRoot
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./%s: %v\n%s", pkg, err, b)
		}
		return nil
	})
}

func goCounter(t testing.TB) []byte { return buildGoGuest(t, "examples/plugins/counter") }

func goProbe(t testing.TB) []byte { return buildGoGuest(t, "plugins/testdata/goprobe") }

// haveClang reports whether the C plugin can be built here.
func haveClang() bool {
	for _, tool := range []string{"clang", "wasm-ld"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false
		}
	}
	return true
}

// cCounter builds examples/plugins/c-counter with its build.sh, or skips
// the test when clang or wasm-ld is missing (fails, with
// BATPAK_REQUIRE_TOOLS=1).
func cCounter(t testing.TB) []byte {
	t.Helper()
	for _, tool := range []string{"clang", "wasm-ld"} {
		testenv.NeedTool(t, tool, "the C plugin needs clang and wasm-ld: apt-get install clang lld (Debian/Ubuntu)")
	}
	dir := filepath.Join(moduleRoot, "examples", "plugins", "c-counter")
	inputs := []string{filepath.Join(dir, "counter.c"), filepath.Join(dir, "build.sh")}
	version, _ := exec.Command("clang", "--version").Output() // a new compiler rebuilds
	return cached(t, "c-counter", inputs, string(version), func(out string) error {
		abs, err := filepath.Abs(out)
		if err != nil {
			return err
		}
		cmd := exec.Command("sh", "build.sh", abs)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("c-counter/build.sh: %v\n%s", err, b)
		}
		return nil
	})
}

// openStore opens a store in a temporary directory, closed when the test
// ends.
func openStore(t testing.TB, adjust ...func(*core.Config)) *core.Store {
	t.Helper()
	cfg := core.DefaultConfig(t.TempDir())
	cfg.Logger = quietLogger()
	for _, f := range adjust {
		f(&cfg)
	}
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func coord(t testing.TB, entity string) core.Coordinate {
	t.Helper()
	c, err := core.NewCoordinate(entity, "test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// appendEvents appends n events to entity, cycling through kinds, in
// batches, and returns how many of each kind it wrote.
func appendEvents(t testing.TB, s *core.Store, entity string, n int, kinds ...core.Kind) map[core.Kind]int {
	t.Helper()
	if len(kinds) == 0 {
		kinds = []core.Kind{kindA}
	}
	c := coord(t, entity)
	counts := map[core.Kind]int{}
	for i := 0; i < n; {
		items := make([]core.BatchItem, 0, 256)
		for ; i < n && len(items) < cap(items); i++ {
			k := kinds[i%len(kinds)]
			counts[k]++
			items = append(items, core.BatchItem{Coordinate: c, Kind: k, Payload: []byte(fmt.Sprintf(`{"i":%d}`, i))})
		}
		if _, err := s.AppendBatch(context.Background(), items); err != nil {
			t.Fatalf("AppendBatch: %v", err)
		}
	}
	return counts
}

// nativeCounter is the native projection the counter plugins are compared
// with: the same counting work, in Go.
type nativeCounter struct{ only []core.Kind }

func (nativeCounter) Name() string                              { return "native-counter" }
func (nativeCounter) SchemaVersion() uint32                     { return 1 }
func (n nativeCounter) Kinds() []core.Kind                      { return n.only }
func (nativeCounter) Init() uint64                              { return 0 }
func (nativeCounter) Apply(s uint64, _ core.StoredEvent) uint64 { return s + 1 }

// u64 decodes a counter plugin's state.
func u64(t testing.TB, state []byte) uint64 {
	t.Helper()
	if len(state) != 8 {
		t.Fatalf("state is %d bytes (%x), want 8", len(state), state)
	}
	return binary.LittleEndian.Uint64(state)
}

// projectCount projects entity through a counter plugin and decodes it.
func projectCount(t testing.TB, s *core.Store, entity string, pr plugins.Projection) uint64 {
	t.Helper()
	st, _, err := core.Project(s, entity, pr, core.Consistent())
	if err != nil {
		t.Fatalf("Project(%s, %s): %v", entity, pr.Name(), err)
	}
	return u64(t, st)
}

// asFault returns err's *PluginFault or fails the test.
func asFault(t testing.TB, err error) *plugins.PluginFault {
	t.Helper()
	var f *plugins.PluginFault
	if !errors.As(err, &f) {
		t.Fatalf("error %v (%T) is not a *plugins.PluginFault", err, err)
	}
	if !errors.Is(err, plugins.ErrPluginFault) {
		t.Fatalf("errors.Is(%v, ErrPluginFault) = false", err)
	}
	return f
}

// asLoadError returns err's *LoadError or fails the test.
func asLoadError(t testing.TB, err error) *plugins.LoadError {
	t.Helper()
	var le *plugins.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("error %v (%T) is not a *plugins.LoadError", err, err)
	}
	return le
}

// oneEvent returns a stored event to fold directly (without a store).
func oneEvent(kind core.Kind) core.StoredEvent {
	return core.StoredEvent{
		Coordinate: core.Coordinate{Entity: "e", Scope: "test"},
		Header:     core.Header{ID: core.NewEventID(), Kind: kind},
		Payload:    []byte(`{}`),
	}
}
