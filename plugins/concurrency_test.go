package plugins_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins"
)

// TestConcurrentProjections: 8 goroutines project through one Go plugin at
// once (each its own entity, and all a shared one that keeps growing) and
// every state matches the native projection. Run with -race.
func TestConcurrentProjections(t *testing.T) {
	const workers, rounds = 8, 6
	s := openStore(t)
	p := load(t, newHost(t), goCounter(t), generous(projManifest("go-counter")))
	pr := plugins.Projection{P: p}
	for i := 0; i < workers; i++ {
		appendEvents(t, s, fmt.Sprintf("own:%d", i), 50*(i+1), kindA, kindB)
	}
	appendEvents(t, s, "shared", 300, kindA)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	var appended atomic.Int64
	appended.Store(300)
	wg.Add(1)
	go func() { // keeps appending to the shared entity
		defer wg.Done()
		c := coord(t, "shared")
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Append(context.Background(), c, kindA, []byte(`{}`)); err != nil {
				t.Errorf("Append: %v", err)
				return
			}
			appended.Add(1)
		}
	}()
	errs := make(chan error, workers*rounds*2)
	var pw sync.WaitGroup
	for i := 0; i < workers; i++ {
		pw.Add(1)
		go func(i int) {
			defer pw.Done()
			own := fmt.Sprintf("own:%d", i)
			for r := 0; r < rounds; r++ {
				st, _, err := core.Project(s, own, pr, core.Consistent())
				if err != nil {
					errs <- err
					return
				}
				if got, want := u64(t, st), uint64(50*(i+1)); got != want {
					errs <- fmt.Errorf("%s: %d, want %d", own, got, want)
				}
				before := appended.Load()
				st, _, err = core.Project(s, "shared", pr, core.Consistent())
				if err != nil {
					errs <- err
					return
				}
				// The shared entity grows during the call: the state is at
				// least what was appended before it.
				if got := int64(u64(t, st)); got < before {
					errs <- fmt.Errorf("shared: %d, but %d were appended before the call", got, before)
				}
			}
		}(i)
	}
	pw.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	native, _, err := core.Project(s, "shared", nativeCounter{}, core.Consistent())
	if err != nil {
		t.Fatal(err)
	}
	if got := projectCount(t, s, "shared", pr); got != native || int64(native) != appended.Load() {
		t.Fatalf("shared at rest: plugin %d, native %d, appended %d", got, native, appended.Load())
	}
}

// TestHotSwap: Swap to a new version while 4 goroutines call the plugin.
// No call fails; each answers as version 1 or version 2; every call that
// starts after Swap returns answers as version 2; and the projection's
// cache key changes, so no state of version 1 is served for version 2.
func TestHotSwap(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, func(c *core.Config) { c.ProjectionCache = core.NewLRUCache(64) })
	appendEvents(t, s, "order:1", 10, kindA)
	p := load(t, newHost(t), fixture(t, "counter"), projManifest("swappy"))
	pr := plugins.Projection{P: p}
	if got := projectCount(t, s, "order:1", pr); got != 10 {
		t.Fatalf("version 1 projects %d, want 10", got)
	}
	v1Name := pr.Name()

	evs := []core.StoredEvent{oneEvent(kindA), oneEvent(kindA), oneEvent(kindA)}
	var swapped atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	var calls, v2calls atomic.Int64
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(20 * time.Second)
			sawV2 := 0
			for sawV2 < 20 && time.Now().Before(deadline) {
				after := swapped.Load()
				st, err := p.Fold(ctx, nil, evs)
				if err != nil {
					errs <- err
					return
				}
				calls.Add(1)
				switch n := u64(t, st); {
				case n == 6:
					sawV2++
					v2calls.Add(1)
				case n == 3 && !after:
				default:
					errs <- fmt.Errorf("a call started after Swap (%v) answered %d", after, n)
					return
				}
			}
			if sawV2 < 20 {
				errs <- fmt.Errorf("version 2 answered only %d calls", sawV2)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	m2 := projManifest("swappy")
	m2.Version = "2.0.0"
	if err := p.Swap(ctx, fixture(t, "counter2"), m2); err != nil {
		t.Fatalf("Swap: %v", err)
	}
	swapped.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d calls, %d answered by version 2", calls.Load(), v2calls.Load())

	if p.Manifest().Version != "2.0.0" || p.Digest() != plugins.Digest(fixture(t, "counter2")) {
		t.Errorf("after Swap: version %s, digest %s", p.Manifest().Version, p.Digest())
	}
	if pr.Name() == v1Name {
		t.Errorf("the projection's name (cache key) did not change with the version: %s", v1Name)
	}
	if got := projectCount(t, s, "order:1", pr); got != 20 {
		t.Fatalf("version 2 projects %d, want 20 (not version 1's cached 10)", got)
	}
}

// TestPinnedProjectionRefusesAnotherVersion: a pinned projection keeps
// the name (the projection cache's key) of the version it was pinned to,
// and once the plugin is swapped it folds nothing (ErrSwapped) instead of
// folding with the new version under the old name, which once filed a
// version's state under another's name in the cache during hot swaps.
func TestPinnedProjectionRefusesAnotherVersion(t *testing.T) {
	ctx := context.Background()
	p := load(t, newHost(t), fixture(t, "counter"), projManifest("pinned"))
	pr := plugins.Projection{P: p, Ctx: ctx}.Pinned()
	v1Name := pr.Name()
	evs := []core.StoredEvent{oneEvent(kindA), oneEvent(kindA)}
	if st, err := pr.ApplyBatch(nil, evs); err != nil || u64(t, st) != 2 {
		t.Fatalf("pinned fold before the swap: %v", err)
	}
	m2 := projManifest("pinned")
	m2.Version = "2.0.0"
	if err := p.Swap(ctx, fixture(t, "counter2"), m2); err != nil {
		t.Fatal(err)
	}
	if pr.Name() != v1Name {
		t.Fatalf("the pinned name moved to %q from %q", pr.Name(), v1Name)
	}
	if _, err := pr.ApplyBatch(nil, evs); !errors.Is(err, plugins.ErrSwapped) {
		t.Fatalf("pinned fold after the swap: %v, want ErrSwapped", err)
	}
	again := plugins.Projection{P: p, Ctx: ctx}.Pinned()
	if st, err := again.ApplyBatch(nil, evs); err != nil || u64(t, st) != 4 || again.Name() == v1Name {
		t.Fatalf("a projection pinned after the swap: %v, name %q", err, again.Name())
	}
}

// TestProjectionNameCoversTheManifest: the same module under the same
// name and version, loaded with another manifest (other grants: an
// environment a fold may read), is another projection to the cache —
// a version deleted and pushed again with another manifest never meets
// the states the first one made — and the same manifest is the same.
func TestProjectionNameCoversTheManifest(t *testing.T) {
	ctx := context.Background()
	m := projManifest("env")
	a := plugins.Projection{P: load(t, newHost(t), fixture(t, "counter"), m), Ctx: ctx}.Name()
	same := plugins.Projection{P: load(t, newHost(t), fixture(t, "counter"), m), Ctx: ctx}.Name()
	m.Grants.Env = map[string]string{"MODE": "big"}
	other := plugins.Projection{P: load(t, newHost(t), fixture(t, "counter"), m), Ctx: ctx}.Name()
	if a != same || a == other {
		t.Fatalf("names: first %q, same manifest %q, other grants %q", a, same, other)
	}
}
