package plugins_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/internal/testmodules"
	"github.com/batpak-go/batpak/plugins"
)

// TestModulesWazeroReadsDifferentlyAreRefused: a module with a construct
// that wazero reads with more bytes than the host (a ref.null, element
// segment or imported table of a heap type other than funcref and
// externref; an imported global of a typed reference; an element kind
// other than 0x00) is refused by Load and by Inspect, naming the
// construct, before wazero decodes it: past such a point wazero reads a
// length from bytes the host read as something else, and allocates it
// whole (the 32-byte module whose element offset is "ref.null 0x8b" asks
// 96 GiB and the process dies; an imported global of type 0x63 has wazero
// read an import's name of 4 GiB).
func TestModulesWazeroReadsDifferentlyAreRefused(t *testing.T) {
	const unread, typed = "a form the host does not read", "typed function references"
	want := map[string]string{
		"ref.null in an element offset": unread + ": ref.null of heap type 0x8b",
		"ref.null in a data offset":     unread + ": ref.null of heap type 0x8b",
		"ref.null exnref":               unread + ": ref.null of heap type 0x69",
		"an element reference type":     unread + ": an element segment of reference type 0x63",
		"an element kind":               unread + ": an element kind 0x1",
		"an imported global's type":     typed,
		"an imported table's type":      unread + ": an imported table of reference type 0x63",
		"an imported table with init":   unread + ": an imported table of reference type 0x40",
		"a typed reference parameter":   typed,
	}
	h := newHost(t)
	for what, wasm := range testmodules.ReadDifferently() {
		guard := newHeapGuard()
		_, err := h.Load(context.Background(), wasm, projManifest("forms"))
		if le := asLoadError(t, err); !strings.Contains(err.Error(), want[what]) {
			t.Errorf("%s: Load: %v (%s), want a refusal naming %q", what, err, le.Reason, want[what])
		}
		_, err = plugins.Inspect(context.Background(), wasm)
		if !errors.Is(err, plugins.ErrNotAModule) || !strings.Contains(err.Error(), want[what]) {
			t.Errorf("%s: Inspect: %v, want ErrNotAModule naming %q", what, err, want[what])
		}
		guard.check(t, what, 64<<20)
	}
}
