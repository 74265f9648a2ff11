package plugins_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins"
)

// TestParityWithNative folds 10,000 events through core.Project with the
// Go counter plugin, the C counter plugin and a native Go projection doing
// the same counting, and expects the same state from all three; then
// again for one kind only (Projection.Only, filtered by the store).
func TestParityWithNative(t *testing.T) {
	const n = 10_000
	s := openStore(t)
	counts := appendEvents(t, s, "order:1", n, kindA, kindB, kindA)
	appendEvents(t, s, "order:2", 10, kindA) // another entity, not folded

	native, found, err := core.Project(s, "order:1", nativeCounter{}, core.Consistent())
	if err != nil || !found || native != n {
		t.Fatalf("native: %d, %v, %v; want %d", native, found, err, n)
	}
	nativeA, _, err := core.Project(s, "order:1", nativeCounter{only: []core.Kind{kindA}}, core.Consistent())
	if err != nil || nativeA != uint64(counts[kindA]) {
		t.Fatalf("native kind A: %d, %v; want %d", nativeA, err, counts[kindA])
	}

	guests := map[string]func(testing.TB) []byte{"go-counter": goCounter, "c-counter": cCounter}
	for name, build := range guests {
		t.Run(name, func(t *testing.T) {
			p := load(t, newHost(t), build(t), projManifest(name))
			if got := projectCount(t, s, "order:1", plugins.Projection{P: p}); got != native {
				t.Errorf("%s: %d events, native %d", name, got, native)
			}
			if got := projectCount(t, s, "order:1", plugins.Projection{P: p, Only: []core.Kind{kindA}}); got != nativeA {
				t.Errorf("%s, kind A only: %d events, native %d", name, got, nativeA)
			}
		})
	}
}

// TestCCounterPerKind: the C counter counts one kind when the manifest
// grants COUNTER_KIND, and reports a bad value as a guest error.
func TestCCounterPerKind(t *testing.T) {
	wasm := cCounter(t)
	h := newHost(t)
	s := openStore(t)
	counts := appendEvents(t, s, "order:1", 1000, kindA, kindB, kindB)

	// The example's own manifest.
	em, err := plugins.LoadManifest(filepath.Join(moduleRoot, "examples", "plugins", "c-counter", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got := projectCount(t, s, "order:1", plugins.Projection{P: load(t, h, wasm, em)}); got != 1000 {
		t.Fatalf("with manifest.json: %d, want 1000", got)
	}

	m := projManifest("c-counter-b")
	m.Grants.Env = map[string]string{"COUNTER_KIND": "0x1002"} // kindB
	p := load(t, h, wasm, m)
	if got := projectCount(t, s, "order:1", plugins.Projection{P: p}); got != uint64(counts[kindB]) {
		t.Fatalf("COUNTER_KIND=0x1002: %d, want %d", got, counts[kindB])
	}

	m = projManifest("c-counter-bad")
	m.Grants.Env = map[string]string{"COUNTER_KIND": "lots"}
	p = load(t, h, wasm, m)
	_, err = p.Fold(context.Background(), nil, []core.StoredEvent{oneEvent(kindA)})
	if f := asFault(t, err); f.Kind != plugins.FaultGuest {
		t.Fatalf("bad COUNTER_KIND: fault %v, want %s", f, plugins.FaultGuest)
	}
}

// TestCCounterOutOfMemory: with a 2-page memory limit the C counter cannot
// take an event of 200 KB: its batpak_alloc is refused memory and traps,
// which the host reports as FaultMemory; 1,000 small events then fold,
// in as many calls as fit a quarter of its memory each.
func TestCCounterOutOfMemory(t *testing.T) {
	m := projManifest("c-counter-small")
	m.Limits.MemoryPages = 2
	p := load(t, newHost(t), cCounter(t), m)
	huge := oneEvent(kindA)
	huge.Payload = []byte(`{"pad":"` + strings.Repeat("x", 200_000) + `"}`)
	_, err := p.Fold(context.Background(), nil, []core.StoredEvent{huge})
	if f := asFault(t, err); f.Kind != plugins.FaultMemory {
		t.Fatalf("fault kind %q, want %q: %v", f.Kind, plugins.FaultMemory, err)
	}
	small := make([]core.StoredEvent, 1000)
	for i := range small {
		small[i] = oneEvent(kindA)
	}
	st, err := p.Fold(context.Background(), nil, small)
	if err != nil || u64(t, st) != 1000 {
		t.Fatalf("1,000 small events after the fault: %x, %v", st, err)
	}
}
