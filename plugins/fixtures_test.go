package plugins_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/internal/testenv"
)

// wabt is what the fixture checks run: wat2wasm and wasm2wat, and the
// wat2wasm version the committed fixtures were built with.
type wabt struct {
	wat2wasm, wasm2wat string
	version            string // of the installed wat2wasm
	builtWith          string // testdata/WAT2WASM_VERSION
}

func needWabt(t *testing.T) wabt {
	t.Helper()
	w := wabt{
		wat2wasm: testenv.NeedTool(t, "wat2wasm", "apt-get install wabt"),
		wasm2wat: testenv.NeedTool(t, "wasm2wat", "apt-get install wabt"),
	}
	v, err := exec.Command(w.wat2wasm, "--version").Output()
	if err != nil {
		t.Fatalf("wat2wasm --version: %v", err)
	}
	b, err := os.ReadFile(filepath.Join("testdata", "WAT2WASM_VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	w.version, w.builtWith = strings.TrimSpace(string(v)), strings.TrimSpace(string(b))
	return w
}

// staleFixtures compiles every dir/*.wat and returns the names of those
// whose committed .wasm does not match. With the wat2wasm version the
// fixtures were built with, the bytes must be equal. Another version may
// encode the same module differently, so then the two modules must
// disassemble (wasm2wat) to the same text: any difference in what the
// module declares or does still shows.
func (w wabt) staleFixtures(t *testing.T, dir string) []string {
	t.Helper()
	sources, err := filepath.Glob(filepath.Join(dir, "*.wat"))
	if err != nil || len(sources) == 0 {
		t.Fatalf("no .wat fixtures in %s: %v", dir, err)
	}
	tmp := t.TempDir()
	var stale []string
	for _, src := range sources {
		name := strings.TrimSuffix(filepath.Base(src), ".wat")
		built := filepath.Join(tmp, name+".wasm")
		args := append(watFlags(t, src), src, "-o", built)
		if b, err := exec.Command(w.wat2wasm, args...).CombinedOutput(); err != nil {
			t.Fatalf("wat2wasm %s: %v\n%s", src, err, b)
		}
		committed := strings.TrimSuffix(src, ".wat") + ".wasm"
		if _, err := os.Stat(committed); err != nil {
			t.Errorf("%s has no committed .wasm: %v", src, err)
			continue
		}
		var same bool
		if w.version == w.builtWith {
			same = bytes.Equal(readFile(t, built), readFile(t, committed))
		} else {
			same = w.disassemble(t, built) == w.disassemble(t, committed)
		}
		if !same {
			stale = append(stale, name)
		}
	}
	return stale
}

// watFlags returns the wat2wasm flags a fixture names on its first line
// (";; wat2wasm flags: --no-check"), as build.sh reads them.
func watFlags(t *testing.T, src string) []string {
	t.Helper()
	first, _, _ := strings.Cut(string(readFile(t, src)), "\n")
	flags, ok := strings.CutPrefix(first, ";; wat2wasm flags: ")
	if !ok {
		return nil
	}
	return strings.Fields(flags)
}

func (w wabt) disassemble(t *testing.T, path string) string {
	t.Helper()
	// --no-check: some fixtures are invalid on purpose.
	out, err := exec.Command(w.wasm2wat, "--no-check", path).Output()
	if err != nil {
		t.Fatalf("wasm2wat %s: %v", path, err)
	}
	return string(out)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFixturesMatchSources checks that each committed testdata/*.wasm is
// what wat2wasm makes of the .wat next to it (run testdata/build.sh after
// editing one), whatever wat2wasm version is installed.
func TestFixturesMatchSources(t *testing.T) {
	w := needWabt(t)
	if w.version != w.builtWith {
		t.Logf("wat2wasm %s, the fixtures were built with %s: comparing disassembled modules", w.version, w.builtWith)
	}
	for _, name := range w.staleFixtures(t, "testdata") {
		t.Errorf("testdata/%s.wasm does not match %s.wat: run testdata/build.sh", name, name)
	}
}

// TestFixtureCheckFindsStale checks that the fixture check reports a
// committed .wasm built from something else than its .wat, both when the
// installed wat2wasm is the version the fixtures were built with and when
// it is another.
func TestFixtureCheckFindsStale(t *testing.T) {
	w := needWabt(t)
	dir := t.TempDir()
	for _, f := range []string{"counter.wat", "counter.wasm", "trap.wat", "loop.wat"} {
		if err := os.WriteFile(filepath.Join(dir, f), readFile(t, filepath.Join("testdata", f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// trap.wasm holds another module; loop.wasm is trap's module built
	// with the installed wat2wasm; counter.wasm is current.
	if err := os.WriteFile(filepath.Join(dir, "trap.wasm"), readFile(t, filepath.Join("testdata", "counter.wasm")), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(w.wat2wasm, filepath.Join(dir, "trap.wat"), "-o", filepath.Join(dir, "loop.wasm")).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	for _, builtWith := range []string{w.version, "0.0.0 (another version)"} {
		w.builtWith = builtWith
		if got, want := w.staleFixtures(t, dir), []string{"loop", "trap"}; !slices.Equal(got, want) {
			t.Errorf("fixtures built with %q: stale %v, want %v", builtWith, got, want)
		}
	}
}
