package plugins_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins"
)

// faultLimits keep the fault tests quick: a short timeout and a small
// memory.
var faultLimits = plugins.Limits{
	MemoryPages:    64,
	Timeout:        plugins.Duration(250 * time.Millisecond),
	MaxOutputBytes: 1 << 20,
}

// TestFaultsAreContained runs every fault fixture and expects a
// *PluginFault of the right kind, while a healthy plugin loaded on the same
// host and the store go on working: after each fault, an append and a
// projection (native and through the healthy plugin) still give the right
// answers.
func TestFaultsAreContained(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	s := openStore(t)
	good := load(t, h, fixture(t, "counter"), projManifest("good"))
	goodProj := plugins.Projection{P: good}
	want := uint64(5)
	appendEvents(t, s, "order:1", int(want), kindA)

	cases := []struct {
		name    string
		fixture string
		kind    plugins.Kind
		evKind  core.Kind // the kind of the event the plugin is given
		want    plugins.FaultKind
		mention string // in the fault's message
	}{
		{"infinite loop in fold", "loop", plugins.KindProjection, kindA, plugins.FaultTimeout, "did not finish within 250ms"},
		{"infinite loop in handle", "loop", plugins.KindHandler, kindA, plugins.FaultTimeout, "did not finish within 250ms"},
		{"memory bomb in fold", "membomb", plugins.KindProjection, kindA, plugins.FaultMemory, "limit of 64 pages"},
		{"memory bomb in handle", "membomb", plugins.KindHandler, kindA, plugins.FaultMemory, "limit of 64 pages"},
		{"trap in fold", "trap", plugins.KindProjection, kindA, plugins.FaultTrap, "unreachable"},
		{"trap in handle", "trap", plugins.KindHandler, kindA, plugins.FaultTrap, "unreachable"},
		{"oversized fold output", "bigout", plugins.KindProjection, kindA, plugins.FaultOutputLimit, "2147483647 bytes, the limit is 1048576"},
		{"oversized handler output", "bigout", plugins.KindHandler, kindA, plugins.FaultOutputLimit, "2147483647 bytes"},
		{"guest error in fold", "guesterr", plugins.KindProjection, kindA, plugins.FaultGuest, "boom: refused"},
		{"guest error in handle", "guesterr", plugins.KindHandler, kindA, plugins.FaultGuest, "boom: refused"},
		{"handler: bad action", "handler-malformed", plugins.KindHandler, kindBadAction, plugins.FaultOutput, "handler action 7"},
		{"handler: reaction lengths out of bounds", "handler-malformed", plugins.KindHandler, kindBadLength, plugins.FaultOutput, "lengths out of bounds"},
		{"handler: result outside memory", "handler-malformed", plugins.KindHandler, kindBadPtr, plugins.FaultOutput, "outside its memory"},
		{"handler: unknown source event", "handler-malformed", plugins.KindHandler, kindBadSource, plugins.FaultOutput, "source event 99 of a batch of 1"},
		{"handler: truncated output", "handler-malformed", plugins.KindHandler, kindTruncated, plugins.FaultOutput, "shorter than 8 bytes"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lim := faultLimits
			if c.want != plugins.FaultTimeout {
				// Only the timeout cases race the clock: on a loaded
				// machine a memory bomb must still meet its memory
				// limit before any deadline.
				lim.Timeout = plugins.Duration(10 * time.Second)
			}
			m := plugins.Manifest{Name: fmt.Sprintf("bad-%d", i), Version: "0.1.0", Kind: c.kind, Limits: lim}
			p := load(t, h, fixture(t, c.fixture), m)
			entity := fmt.Sprintf("case:%d", i)
			appendEvents(t, s, entity, 1, c.evKind)

			start := time.Now()
			var err error
			if c.kind == plugins.KindProjection {
				_, _, err = core.Project(s, entity, plugins.Projection{P: p}, core.Consistent())
			} else {
				evs, qerr := s.Stream(entity)
				if qerr != nil {
					t.Fatal(qerr)
				}
				_, _, err = p.Handle(ctx, evs)
			}
			elapsed := time.Since(start)
			f := asFault(t, err)
			if f.Kind != c.want {
				t.Fatalf("fault kind %q, want %q: %v", f.Kind, c.want, err)
			}
			if f.Plugin != m.Name || f.Version != m.Version {
				t.Errorf("fault names %s@%s, want %s@%s", f.Plugin, f.Version, m.Name, m.Version)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Errorf("fault %q does not mention %q", err, c.mention)
			}
			if elapsed > 10*time.Second {
				t.Errorf("the fault took %v to come back", elapsed)
			}

			// The healthy plugin and the store are unaffected.
			want++
			appendEvents(t, s, "order:1", 1, kindA)
			if got := projectCount(t, s, "order:1", goodProj); got != want {
				t.Fatalf("after the fault the healthy plugin counts %d, want %d", got, want)
			}
			if n, _, err := core.Project(s, "order:1", nativeCounter{}, core.Consistent()); err != nil || n != want {
				t.Fatalf("after the fault the native projection gives %d, %v; want %d", n, err, want)
			}

			// The faulted instance was discarded: a malformed handler answers
			// a valid batch correctly next time.
			if c.fixture == "handler-malformed" {
				evs, _ := s.Stream("order:1")
				if action, rs, err := p.Handle(ctx, evs[:1]); err != nil || action != 0 || len(rs) != 0 {
					t.Fatalf("a valid batch after the fault: %d, %v, %v", action, rs, err)
				}
			}
			if err := h.Unload(ctx, m.Name); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestGoGuestOutOfMemory: a Go guest that allocates until its memory limit
// refuses is reported as FaultMemory (a Go guest does not trap on the
// refused memory.grow itself: its runtime throws "out of memory"), and the
// next call, on a fresh instance, works.
func TestGoGuestOutOfMemory(t *testing.T) {
	m := generous(projManifest("hog"))
	m.Limits.MemoryPages = 256
	p := load(t, newHost(t), goProbe(t), m)
	_, err := p.Fold(context.Background(), nil, []core.StoredEvent{oneEvent(core.MustKind(1, 0xfff))})
	if f := asFault(t, err); f.Kind != plugins.FaultMemory {
		t.Fatalf("fault kind %q, want %q: %v", f.Kind, plugins.FaultMemory, err)
	}
	if _, err := p.Fold(context.Background(), nil, []core.StoredEvent{oneEvent(kindA)}); err != nil {
		t.Fatalf("the call after the fault: %v", err)
	}
}

// TestCallerCancellationIsNotAFault: a call whose caller gives up fails
// with the caller's context error, and does not count toward quarantine.
func TestCallerCancellationIsNotAFault(t *testing.T) {
	m := projManifest("slow")
	m.Limits = faultLimits
	m.Limits.Timeout = plugins.Duration(time.Minute)
	m.Limits.MaxFaults = 1
	p := load(t, newHost(t), fixture(t, "loop"), m)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := p.Fold(ctx, nil, []core.StoredEvent{oneEvent(kindA)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Fold with an expiring context: %v, want context.DeadlineExceeded", err)
	}
	if errors.Is(err, plugins.ErrPluginFault) {
		t.Fatalf("a call the caller abandoned is reported as a plugin fault: %v", err)
	}
	if p.Quarantined() {
		t.Fatal("a call the caller abandoned counted toward quarantine")
	}
}

// TestQuarantine: after MaxFaults consecutive faults the plugin refuses
// calls at once with FaultQuarantined; Reset lifts it, a successful call
// resets the count (only consecutive faults count), and Swap lifts it too.
func TestQuarantine(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	m := handlerManifest("flaky")
	m.Limits = faultLimits
	m.Limits.MaxFaults = 3
	p := load(t, h, fixture(t, "handler-malformed"), m)
	bad := []core.StoredEvent{oneEvent(kindBadAction)}
	good := []core.StoredEvent{oneEvent(kindA)}
	handle := func(evs []core.StoredEvent) error { _, _, err := p.Handle(ctx, evs); return err }

	// Two faults, a success, two faults: never three in a row.
	for _, evs := range [][]core.StoredEvent{bad, bad, good, bad, bad} {
		err := handle(evs)
		if &evs[0] == &good[0] {
			if err != nil {
				t.Fatalf("valid batch: %v", err)
			}
			continue
		}
		if f := asFault(t, err); f.Kind != plugins.FaultOutput {
			t.Fatalf("fault %v, want %s", err, plugins.FaultOutput)
		}
	}
	if p.Quarantined() {
		t.Fatal("quarantined after faults that were not consecutive")
	}
	// The third in a row quarantines.
	if f := asFault(t, handle(bad)); f.Kind != plugins.FaultOutput {
		t.Fatalf("third fault: %v", f)
	}
	if !p.Quarantined() {
		t.Fatal("not quarantined after MaxFaults consecutive faults")
	}
	for _, evs := range [][]core.StoredEvent{good, bad} {
		start := time.Now()
		err := handle(evs)
		if f := asFault(t, err); f.Kind != plugins.FaultQuarantined {
			t.Fatalf("call while quarantined: %v, want %s", err, plugins.FaultQuarantined)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("a quarantined call took %v; want it to fail at once", d)
		}
	}

	p.Reset()
	if p.Quarantined() {
		t.Fatal("still quarantined after Reset")
	}
	if err := handle(good); err != nil {
		t.Fatalf("after Reset: %v", err)
	}

	// Quarantine again, then Swap to a new version lifts it.
	for i := 0; i < 3; i++ {
		_ = handle(bad)
	}
	if !p.Quarantined() {
		t.Fatal("not quarantined again")
	}
	m2 := m
	m2.Version = "2.0.0"
	if err := p.Swap(ctx, fixture(t, "counter"), m2); err != nil {
		t.Fatalf("Swap: %v", err)
	}
	if p.Quarantined() {
		t.Fatal("still quarantined after Swap")
	}
	if action, _, err := p.Handle(ctx, bad); err != nil || action != 0 {
		t.Fatalf("after Swap to a healthy version: %d, %v", action, err)
	}
}

// TestLoadRefusals: what Load refuses, each with a *LoadError that says
// why, and nothing left registered.
func TestLoadRefusals(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	counter := fixture(t, "counter")

	pinned := projManifest("pinned")
	pinned.SHA256 = strings.Repeat("ab", 32)
	pinnedOK := projManifest("pinned-ok")
	pinnedOK.SHA256 = strings.ToUpper(plugins.Digest(counter)) // case does not matter
	slowStart := projManifest("slow-start")
	slowStart.Limits.Timeout = plugins.Duration(200 * time.Millisecond)

	cases := []struct {
		name    string
		wasm    []byte
		m       plugins.Manifest
		mention []string
	}{
		{"hash pin mismatch", counter, pinned, []string{"sha256 " + plugins.Digest(counter), "does not match the pinned " + pinned.SHA256}},
		{"ABI version 2", fixture(t, "abi2"), projManifest("abi2"), []string{"ABI version 2, this host speaks version 1"}},
		{"projection without batpak_fold", fixture(t, "noexport"), projManifest("noexport"), []string{"does not export batpak_fold"}},
		{"handler without batpak_handle", fixture(t, "noexport"), handlerManifest("noexport-h"), []string{"does not export batpak_handle"}},
		{"handler without batpak_handle (a projection)", fixture(t, "wasi-file"), handlerManifest("proj-as-handler"), []string{"does not export batpak_handle"}},
		{"no memory", fixture(t, "nomemory"), projManifest("nomemory"), []string{"defines no memory"}},
		{"initial memory over the limit", fixture(t, "bigmem"), projManifest("bigmem"), []string{"initial memory is 1024 pages, over the limit of 512"}},
		{"not WebAssembly", []byte("\x00asm\x01\x00\x00\x00garbage"), projManifest("garbage"), []string{"not valid WebAssembly", "section"}},
		{"start function never returns", fixture(t, "startloop"), slowStart, []string{"longer than the 200ms timeout"}},
		{"alloc returns nothing", fixture(t, "badalloc"), projManifest("badalloc"), []string{"the module's batpak_alloc is (i32) -> (), the ABI's is (i32) -> i32"}},
		{"handle returns an i32", fixture(t, "badhandle"), handlerManifest("badhandle"), []string{"the module's batpak_handle is (i32, i32) -> i32, the ABI's is (i32, i32) -> i64"}},
		{"_initialize takes a parameter", fixture(t, "badinit"), projManifest("badinit"), []string{"the module's _initialize is (i32) -> (), the ABI's is () -> ()"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			p, err := h.Load(ctx, c.wasm, c.m)
			if err == nil {
				t.Fatalf("Load succeeded: %v", p.Name())
			}
			le := asLoadError(t, err)
			if le.Plugin != c.m.Name {
				t.Errorf("LoadError.Plugin %q, want %q", le.Plugin, c.m.Name)
			}
			for _, s := range c.mention {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("refusing took %v", d)
			}
			if _, ok := h.Plugin(c.m.Name); ok {
				t.Error("the refused plugin is registered")
			}
		})
	}

	// The pin matches: loaded, and the name is then taken.
	p := load(t, h, counter, pinnedOK)
	if p.Digest() != plugins.Digest(counter) || p.Manifest().SHA256 != plugins.Digest(counter) {
		t.Errorf("Digest %s, manifest pin %s", p.Digest(), p.Manifest().SHA256)
	}
	_, err := h.Load(ctx, counter, pinnedOK)
	if le := asLoadError(t, err); !strings.Contains(le.Reason, "use Swap") {
		t.Errorf("loading a name twice: %v", err)
	}
	// Swap checks the pin and the name too, and keeps the old version.
	bad := pinnedOK
	bad.SHA256 = strings.Repeat("00", 32)
	asLoadError(t, p.Swap(ctx, fixture(t, "counter2"), bad))
	other := pinnedOK
	other.Name = "someone-else"
	asLoadError(t, p.Swap(ctx, counter, other))
	asLoadError(t, p.Swap(ctx, fixture(t, "abi2"), projManifest("pinned-ok")))
	if got, err := p.Fold(ctx, nil, []core.StoredEvent{oneEvent(kindA)}); err != nil || u64(t, got) != 1 {
		t.Fatalf("after refused swaps: %x, %v", got, err)
	}
}

// TestKindMismatch: Fold on a handler and Handle on a projection are
// refused without calling the plugin.
func TestKindMismatch(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	proj := load(t, h, fixture(t, "counter"), projManifest("proj"))
	hand := load(t, h, fixture(t, "counter"), handlerManifest("hand"))
	if _, _, err := proj.Handle(ctx, nil); err == nil || !strings.Contains(err.Error(), "not a handler") {
		t.Errorf("Handle on a projection: %v", err)
	}
	if _, err := hand.Fold(ctx, nil, nil); err == nil || !strings.Contains(err.Error(), "not a projection") {
		t.Errorf("Fold on a handler: %v", err)
	}
}

// TestHandlerReactionsBounded: a handler answering more reactions than
// its manifest's max_reactions (default 16,384) faults with
// output-limit before any is read; raising the limit lets the same
// answer through, every reaction of it.
func TestHandlerReactionsBounded(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	wasm := fixture(t, "reactflood")
	evs := []core.StoredEvent{oneEvent(kindA)}
	p := load(t, h, wasm, generous(handlerManifest("flood")))
	_, rs, err := p.Handle(ctx, evs)
	f := asFault(t, err)
	if f.Kind != plugins.FaultOutputLimit || !strings.Contains(err.Error(), "returned 20000 reactions, the limit is 16384 (limits.max_reactions)") || rs != nil {
		t.Fatalf("20,000 reactions under the default limit: %v (%d reactions)", err, len(rs))
	}
	m := generous(handlerManifest("flood-more"))
	m.Limits.MaxReactions = 20000
	p = load(t, h, wasm, m)
	if _, rs, err = p.Handle(ctx, evs); err != nil || len(rs) != 20000 || string(rs[19999].Entity) != "e" {
		t.Fatalf("20,000 reactions under a limit of 20,000: %v (%d reactions)", err, len(rs))
	}
	m.Name, m.Limits.MaxReactions = "flood-max", 1<<20+1
	if _, err := h.Load(ctx, wasm, m); err == nil || !strings.Contains(err.Error(), "limits.max_reactions 1048577: at most 1048576") {
		t.Fatalf("max_reactions past its ceiling: %v", err)
	}
}

// TestFoldInPartsThatFit: a fold over more bytes of events than a
// quarter of the plugin's memory is made in calls that each fit (at
// least one event each), with the same result: 12 events of 400 KB
// against 4 MiB of memory (one call of 4.8 MB could not be taken).
func TestFoldInPartsThatFit(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	m := generous(projManifest("small-counter"))
	m.Limits.MemoryPages = 64 // 4 MiB
	p := load(t, h, fixture(t, "counter"), m)
	pad := strings.Repeat("x", 400_000)
	evs := make([]core.StoredEvent, 12)
	for i := range evs {
		evs[i] = oneEvent(kindA)
		evs[i].Payload = []byte(`{"pad":"` + pad + `"}`)
	}
	state, err := p.Fold(ctx, nil, evs)
	if err != nil {
		t.Fatalf("Fold of 4.8 MB into 4 MiB of memory: %v", err)
	}
	if got := u64(t, state); got != 12 {
		t.Fatalf("count %d, want 12", got)
	}
}
