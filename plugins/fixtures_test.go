package plugins_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFixturesMatchSources checks that each committed testdata/*.wasm is
// what wat2wasm makes of the .wat next to it (run testdata/build.sh after
// editing one). It needs the wat2wasm version the fixtures were built with
// (testdata/WAT2WASM_VERSION): another version may encode differently.
func TestFixturesMatchSources(t *testing.T) {
	tool, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Skip("wat2wasm not found (apt-get install wabt)")
	}
	want, err := os.ReadFile(filepath.Join("testdata", "WAT2WASM_VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command(tool, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if v, w := strings.TrimSpace(string(got)), strings.TrimSpace(string(want)); v != w {
		t.Skipf("wat2wasm %s, the fixtures were built with %s", v, w)
	}
	sources, err := filepath.Glob(filepath.Join("testdata", "*.wat"))
	if err != nil || len(sources) == 0 {
		t.Fatalf("no .wat fixtures: %v", err)
	}
	dir := t.TempDir()
	for _, src := range sources {
		name := strings.TrimSuffix(filepath.Base(src), ".wat")
		out := filepath.Join(dir, name+".wasm")
		if b, err := exec.Command(tool, src, "-o", out).CombinedOutput(); err != nil {
			t.Errorf("wat2wasm %s: %v\n%s", src, err, b)
			continue
		}
		built, _ := os.ReadFile(out)
		committed, err := os.ReadFile(strings.TrimSuffix(src, ".wat") + ".wasm")
		if err != nil {
			t.Errorf("%s has no committed .wasm: %v", src, err)
			continue
		}
		if !bytes.Equal(built, committed) {
			t.Errorf("testdata/%s.wasm is stale: run testdata/build.sh", name)
		}
	}
}
