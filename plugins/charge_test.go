package plugins_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testmodules"
	"github.com/batpak-go/batpak/plugins"
)

// meter is a HostOptions.Charge that keeps what each kind holds and
// refuses past its room (0: no room limit).
type meter struct {
	mu   sync.Mutex
	held map[plugins.MemoryKind]int64
	room map[plugins.MemoryKind]int64
}

var errNoRoom = errors.New("no room")

func newMeter() *meter {
	return &meter{held: map[plugins.MemoryKind]int64{}, room: map[plugins.MemoryKind]int64{}}
}

func (m *meter) charge(kind plugins.MemoryKind, n int64) (func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.room[kind]; r > 0 && m.held[kind]+n > r {
		return nil, errNoRoom
	}
	m.held[kind] += n
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.held[kind] -= n
	}, nil
}

func (m *meter) get(kind plugins.MemoryKind) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.held[kind]
}

func chargedHost(t *testing.T, m *meter) *plugins.Host {
	t.Helper()
	h, err := plugins.NewHost(plugins.HostOptions{CacheDir: sharedCacheDir, Logger: quietLogger(), Charge: m.charge})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

// waitHeld waits (up to 10 s) until kind holds want.
func waitHeld(t *testing.T, m *meter, kind plugins.MemoryKind, want int64, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.get(kind) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d bytes held, want %d", what, m.get(kind), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A loaded plugin's compiled code is charged its estimate for as long as
// it is loaded, and its idle instance its memory while it waits in the
// pool; unloading gives everything back.
func TestHostChargesCodeAndIdleInstances(t *testing.T) {
	m := newMeter()
	h := chargedHost(t, m)
	wasm := fixture(t, "counter")
	est, err := plugins.CodeEstimate(wasm)
	if err != nil {
		t.Fatal(err)
	}
	if est < plugins.CodeBytesPerModule {
		t.Fatalf("CodeEstimate = %d, below the per-module floor", est)
	}
	p := load(t, h, wasm, projManifest("c"))
	if got := m.get(plugins.MemoryCode); got != p.CodeBytes() || got <= plugins.CodeBytesPerModule {
		t.Fatalf("code held after Load = %d, want what was compiled (%d), above the per-module floor", got, p.CodeBytes())
	}
	// Load leaves its first instance idle: one 64 KiB page of memory, its
	// tables (8 bytes an element of the limit) and its overhead.
	idle := m.get(plugins.MemoryIdle)
	if min := int64(64<<10) + plugins.IdleInstanceOverhead + 8*int64(p.Manifest().Limits.TableElements); idle < min {
		t.Fatalf("idle held after Load = %d, want at least %d", idle, min)
	}
	// Calls at once take instances out (and new ones are made); each goes
	// back to the pool charged.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Fold(context.Background(), nil, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := m.get(plugins.MemoryIdle); got < idle || got%idle != 0 {
		t.Fatalf("idle held after calls = %d, want a multiple of %d", got, idle)
	}
	if err := h.Unload(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	if i := m.get(plugins.MemoryIdle); i != 0 {
		t.Fatalf("after Unload: idle %d held, want nothing", i)
	}
	waitHeld(t, m, plugins.MemoryCode, 0, "code once unloaded (given back once unmapped)")
}

// A module whose machine code is far larger than its size suggests (a
// br_table whose targets carry many values: a 5 KB module compiles to
// about 6 MB) is charged what was compiled, not the estimate made before:
// with room for the estimate only, the load is refused once compiled, and
// nothing stays held.
func TestHostChargesWhatWasCompiled(t *testing.T) {
	wide := testmodules.WideBranches(1, 200, 2000)
	est, err := plugins.CodeEstimate(wide)
	if err != nil {
		t.Fatal(err)
	}
	m := newMeter()
	m.room[plugins.MemoryCode] = 2 * est
	h := chargedHost(t, m)
	_, err = h.Load(context.Background(), wide, projManifest("wide"))
	var le *plugins.LoadError
	if !errors.As(err, &le) || !errors.Is(err, errNoRoom) || !strings.Contains(le.Reason, "no room for its compiled code (about 7 MiB)") {
		t.Fatalf("Load of a module compiling to about 6 MB with room for twice its estimate (%d): %v, want refused for want of room for what was compiled", est, err)
	}
	if c := m.get(plugins.MemoryCode); c != 0 {
		t.Fatalf("after the refusal %d bytes of code held", c)
	}
}

// A refused code charge refuses the load before anything is compiled,
// naming the room, and holds nothing; a refused idle charge only closes
// the instance, and calls go on.
func TestHostRefusedChargeRefusesTheLoad(t *testing.T) {
	m := newMeter()
	m.room[plugins.MemoryCode] = 1000
	h := chargedHost(t, m)
	_, err := h.Load(context.Background(), fixture(t, "counter"), projManifest("c"))
	var le *plugins.LoadError
	if !errors.As(err, &le) || !errors.Is(err, errNoRoom) || !strings.Contains(le.Reason, "no room for its compiled code") {
		t.Fatalf("Load over the code room: %v, want a LoadError saying there is no room, caused by the charge's error", err)
	}
	if _, ok := h.Plugin("c"); ok {
		t.Fatal("a refused plugin is loaded")
	}
	if c, i := m.get(plugins.MemoryCode), m.get(plugins.MemoryIdle); c != 0 || i != 0 {
		t.Fatalf("after a refused load: code %d, idle %d held, want nothing", c, i)
	}

	m.room[plugins.MemoryCode] = 0
	m.room[plugins.MemoryIdle] = 1
	p := load(t, h, fixture(t, "counter"), projManifest("c"))
	for range 3 {
		if _, err := p.Fold(context.Background(), nil, nil); err != nil {
			t.Fatalf("a call with no room for idle instances: %v", err)
		}
	}
	if got := m.get(plugins.MemoryIdle); got != 0 {
		t.Fatalf("idle held with no room = %d", got)
	}
}

// A swapped-out version gives its code back as soon as no call runs in
// it; a plugin unloaded while a call runs in it stays open until the
// call returns, then gives everything back, and later calls are refused
// with ErrUnloaded.
func TestHostGivesBackSwappedAndUnloadedCharges(t *testing.T) {
	m := newMeter()
	h := chargedHost(t, m)
	// loop's fold runs until its timeout: a call that is surely running.
	counter, slow := fixture(t, "counter"), fixture(t, "loop")
	mf := projManifest("p")
	mf.Limits.Timeout = plugins.Duration(500 * time.Millisecond)

	p := load(t, h, slow, mf)
	estSlow := p.CodeBytes()
	done := make(chan error, 1)
	go func() { _, err := p.Fold(context.Background(), nil, nil); done <- err }()
	time.Sleep(50 * time.Millisecond) // the call is running
	if err := p.Swap(context.Background(), counter, mf); err != nil {
		t.Fatal(err)
	}
	estCounter := p.CodeBytes()
	if got := m.get(plugins.MemoryCode); got != estSlow+estCounter {
		t.Fatalf("code held while a call runs on the old version = %d, want both versions' %d", got, estSlow+estCounter)
	}
	if err := <-done; !isTimeout(err) {
		t.Fatalf("the call running across the swap: %v, want its timeout", err)
	}
	waitHeld(t, m, plugins.MemoryCode, estCounter, "code once the old version's call returned")

	mq := mf
	mq.Name = "q"
	q := load(t, h, slow, mq)
	go func() { _, err := q.Fold(context.Background(), nil, nil); done <- err }()
	time.Sleep(50 * time.Millisecond)
	if err := h.Unload(context.Background(), "q"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !isTimeout(err) {
		t.Fatalf("the call running across the unload: %v, want its timeout", err)
	}
	if _, err := q.Fold(context.Background(), nil, nil); !errors.Is(err, plugins.ErrUnloaded) {
		t.Fatalf("a call after the unload: %v, want ErrUnloaded", err)
	}
	if _, err := (plugins.Projection{P: q}).Pinned().ApplyBatch(nil, nil); !errors.Is(err, plugins.ErrUnloaded) {
		t.Fatalf("a pinned fold after the unload: %v, want ErrUnloaded", err)
	}
	// An unloaded plugin cannot be brought back by a swap, which would
	// hold its charges with nothing to give them back.
	if err := q.Swap(context.Background(), counter, mq); !errors.Is(err, plugins.ErrUnloaded) {
		t.Fatalf("a swap after the unload: %v, want ErrUnloaded", err)
	}
	if err := h.Unload(context.Background(), "p"); err != nil {
		t.Fatal(err)
	}
	if i := m.get(plugins.MemoryIdle); i != 0 {
		t.Fatalf("after unloading everything: idle %d held, want nothing", i)
	}
	waitHeld(t, m, plugins.MemoryCode, 0, "code after unloading everything")
}

func isTimeout(err error) bool {
	var pf *plugins.PluginFault
	return errors.As(err, &pf) && pf.Kind == plugins.FaultTimeout
}

// An idle instance is charged its tables at their limit (a table of
// 4,194,304 elements holds 32 MiB of the host's memory), and a module's
// element segments, globals, types and custom sections are counted in
// its code's charge.
func TestHostChargesTablesElementsAndGlobals(t *testing.T) {
	m := newMeter()
	h := chargedHost(t, m)
	mf := projManifest("big")
	mf.Limits.TableElements = 4194304
	p := load(t, h, fixture(t, "bigtable"), mf)
	if idle := m.get(plugins.MemoryIdle); idle < 8*4194304 {
		t.Fatalf("idle instance of a 4M-element table charged %d bytes, want at least 32 MiB", idle)
	}
	_ = p

	// (The module is valid: it compiles, and is refused only as a plugin.)
	if _, err := h.Load(context.Background(), testmodules.PassiveElements(1000), projManifest("elems")); err == nil || !strings.Contains(err.Error(), "does not export") {
		t.Fatalf("a module of 1,000 passive element entries: %v, want it compiled and refused for its exports", err)
	}
	plain, _ := plugins.CodeEstimate(testmodules.Small())
	elems, _ := plugins.CodeEstimate(testmodules.PassiveElements(100_000))
	if elems-plain < 100_000*plugins.CodeBytesPerElement {
		t.Fatalf("100,000 element entries add %d bytes to the estimate, want at least %d", elems-plain, 100_000*plugins.CodeBytesPerElement)
	}
	// wazero keeps custom sections whole, and about 110 bytes per type.
	custom, _ := plugins.CodeEstimate(withName(testmodules.Small(), strings.Repeat("x", 100)))
	if custom-plain < 100 {
		t.Fatalf("a custom section of 100 bytes adds %d bytes to the estimate", custom-plain)
	}
	types, _ := plugins.CodeEstimate(testmodules.ManyTypes(1000))
	if types-plain < 1000*plugins.CodeBytesPerType {
		t.Fatalf("1,000 types add %d bytes to the estimate, want at least %d", types-plain, 1000*plugins.CodeBytesPerType)
	}
}

// execMapped is the size of the process's executable mappings of no file
// (wazero's machine code), from /proc/self/smaps.
func execMapped(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	var total int64
	exec := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") {
			exec = strings.Contains(f[1], "x") && len(f) == 5 // no path
			continue
		}
		if exec && len(f) >= 2 && f[0] == "Size:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			total += kb << 10
		}
	}
	return total
}

// withName is wasm with a custom section "v" holding name appended: a
// distinct module (wazero compiles each module id once per cache).
func withName(wasm []byte, name string) []byte {
	body := append([]byte{1, 'v'}, name...)
	out := append(append([]byte(nil), wasm...), 0, byte(len(body)))
	return append(out, body...)
}

// Machine code is let go with the version that compiled it, and its
// charge only once it is: Unload returns, and a load refused once
// compiled returns, after the code is unmapped (wazero unmaps it when the
// garbage collector finds it unreachable; the host runs the collections),
// so loads and unloads of two distinct modules compiling to about 7 MB
// each, and loads of two others refused for want of room once compiled, leave the
// process's executable memory where it was — with nothing else collecting
// — and every charge has come back when each call returns.
func TestUnloadedCodeIsUnmapped(t *testing.T) {
	wide := fixture(t, "widebranch")
	m := newMeter()
	h := chargedHost(t, m)
	one := load(t, h, wide, projManifest("warm")).CodeBytes() // (the cache warmed too)
	// A small plugin loaded beside it is charged its own code only.
	if small := load(t, h, fixture(t, "counter"), projManifest("small")).CodeBytes(); small > one/4 {
		t.Fatalf("counter loaded beside widebranch (%d bytes) charged %d bytes of code", one, small)
	}
	for _, name := range []string{"warm", "small"} {
		if err := h.Unload(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	before := execMapped(t)
	ballast := make([]*[1 << 20]byte, 64) // 64 MiB live: no collection comes of the test's own allocations
	for i := range ballast {
		ballast[i] = new([1 << 20]byte)
	}
	for i := range 2 {
		p := load(t, h, withName(wide, fmt.Sprint(i)), projManifest(fmt.Sprintf("w%d", i)))
		if c := p.CodeBytes(); c > one+one/4 {
			t.Fatalf("load %d charged %d bytes of code, the first %d: each is charged its own code, not the host's", i, c, one)
		}
		if err := h.Unload(context.Background(), p.Name()); err != nil {
			t.Fatal(err)
		}
		waitHeld(t, m, plugins.MemoryCode, 0, "code once unloaded") // given back once unmapped
	}
	if one < 4<<20 {
		t.Fatalf("widebranch charged %d bytes of code, want the megabytes it compiles to", one)
	}
	est, _ := plugins.CodeEstimate(wide)
	m.mu.Lock()
	m.room[plugins.MemoryCode] = 2 * est
	m.mu.Unlock()
	for i := range 2 {
		if _, err := h.Load(context.Background(), withName(wide, fmt.Sprint(10+i)), projManifest(fmt.Sprintf("r%d", i))); !errors.Is(err, errNoRoom) {
			t.Fatalf("a load with room for twice the estimate only: %v, want refused for want of room", err)
		}
		if c := m.get(plugins.MemoryCode); c != 0 {
			t.Fatalf("a refused load returned with %d bytes of code still charged", c)
		}
	}
	if grew := execMapped(t) - before; grew > one/2 {
		t.Fatalf("4 modules compiling to %d bytes each, unloaded or refused, left %d bytes of executable memory mapped", one, grew)
	}
	runtime.KeepAlive(ballast)
}

// Loads, calls and unloads in one host from several goroutines at once
// (each measuring what its module compiled to) are safe, and give every
// charge back.
func TestHostLoadsAtOnce(t *testing.T) {
	m := newMeter()
	h := chargedHost(t, m)
	counter := fixture(t, "counter")
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 15 {
				name := fmt.Sprintf("g%d-%d", g, i)
				p, err := h.Load(context.Background(), withName(counter, name), projManifest(name))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := p.Fold(context.Background(), nil, nil); err != nil {
					t.Error(err)
				}
				if err := h.Unload(context.Background(), name); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	waitHeld(t, m, plugins.MemoryCode, 0, "code after concurrent loads and unloads")
	waitHeld(t, m, plugins.MemoryIdle, 0, "idle instances after concurrent loads and unloads")
}
