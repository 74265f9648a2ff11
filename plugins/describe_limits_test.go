package plugins_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testmodules"
	"github.com/batpak-go/batpak/plugins"
)

// A module whose functions wazero would look up in many exports or
// local-name entries — work growing with the square of its size, in the
// host's process at every load (a 720 KB module took 11 s) — is refused
// by Load and Inspect in well under a second, naming what it holds; so is
// one importing more functions than the host allows.
func TestModulesCostlyToDescribeAreRefused(t *testing.T) {
	for what, c := range map[string]struct {
		wasm []byte
		want string
	}{
		"20,000 imports, 40,000 local-name entries": {testmodules.ManyImportsAndLocalNames(20_000, 40_000), "lookups, over the limit"},
		"20,000 imports, each exported":             {testmodules.ManyImportsAndExports(20_000), "lookups, over the limit"},
		"60,000 imports":                            {testmodules.ManyImportsAndLocalNames(60_000, 0), "imports and defines 60000 functions"},
		"20,000 functions of 20,000 types":          {testmodules.TypesAndFunctions(20_000, 20_000), "each function is compiled with each in view"},
	} {
		start := time.Now()
		_, err := newHost(t).Load(context.Background(), c.wasm, projManifest("describe"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Load: %v, want a refusal naming %q", what, err, c.want)
		}
		if _, err := plugins.Inspect(context.Background(), c.wasm); !errors.Is(err, plugins.ErrNotAModule) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Inspect: %v, want ErrNotAModule naming %q", what, err, c.want)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s: refused after %s", what, took)
		}
	}
	// Within the bound: 2,000 imports, 2,000 local-name entries.
	if _, err := plugins.Inspect(context.Background(), testmodules.ManyImportsAndLocalNames(2_000, 2_000)); err != nil && strings.Contains(err.Error(), "lookups") {
		t.Errorf("2,000 imports and local-name entries: %v", err)
	}
}

// A module's DWARF sections are not parsed: a 76 KB module whose
// abbreviation tables debug/dwarf would hold with the square of their
// count (1.4 GB, and a 152 KB one killed the process) costs Load and
// Inspect about its size.
func TestDWARFSectionsAreNotParsed(t *testing.T) {
	wasm := testmodules.DWARF(4000)
	h := newHost(t)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _ = h.Load(context.Background(), wasm, projManifest("dwarf"))
	_, _ = plugins.Inspect(context.Background(), wasm)
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 64<<20 {
		t.Errorf("Load and Inspect of a %d-byte module with DWARF sections allocated %d MiB", len(wasm), got>>20)
	}
}
