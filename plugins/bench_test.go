package plugins_test

// Benchmarks of the plugin host. Reproduce with
//
//	go test -run '^$' -bench . -benchtime 20x ./plugins/
//
// (one run; every sub-benchmark of a group does the same work). Fold10k
// reports ns/event, Load and Call ns/op, Worker events/s.

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/plugins"
)

const benchEvents = 10_000

// benchGuests are the counter plugins: the Go example, the C example and,
// as a floor, the WAT counter (which reads only the batch's count).
func benchGuests(b *testing.B) []struct {
	name string
	wasm []byte
} {
	gs := []struct {
		name string
		wasm []byte
	}{{"go-guest", goCounter(b)}}
	if haveClang() || testenv.Required() {
		gs = append(gs, struct {
			name string
			wasm []byte
		}{"c-guest", cCounter(b)})
	} else {
		b.Log("no clang and wasm-ld: the C guest is left out (apt-get install clang lld)")
	}
	return append(gs, struct {
		name string
		wasm []byte
	}{"wat-guest", fixture(b, "counter")})
}

// BenchmarkFold10k folds 10,000 events of one entity into a count.
//
// project: core.Project through the store (reading the events included),
// no projection cache; native is a core.Projection doing the same counting
// (core streams the events to Apply), native-batch the same as a
// core.BatchApplier (core reads ProjectBatchSize events at a time into a
// slice, as it does for the plugins).
//
// fold: the events already in memory; native is the loop of Apply calls,
// the guests get ProjectBatchSize events per call (encoding the batch,
// copying it into the sandbox, calling, copying the state out).
func BenchmarkFold10k(b *testing.B) {
	s := openStore(b)
	appendEvents(b, s, "order:1", benchEvents, kindA, kindB)
	evs, err := s.Stream("order:1")
	if err != nil {
		b.Fatal(err)
	}
	h := newHost(b)
	type guest struct {
		name string
		p    *plugins.Plugin
	}
	var guests []guest
	for _, g := range benchGuests(b) {
		guests = append(guests, guest{g.name, load(b, h, g.wasm, projManifest(g.name))})
	}
	perEvent := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchEvents, "ns/event")
	}

	b.Run("project/native", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			n, _, err := core.Project(s, "order:1", nativeCounter{}, core.Consistent())
			if err != nil || n != benchEvents {
				b.Fatal(n, err)
			}
		}
		perEvent(b)
	})
	b.Run("project/native-batch", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			n, _, err := core.Project(s, "order:1", nativeBatchCounter{}, core.Consistent())
			if err != nil || n != benchEvents {
				b.Fatal(n, err)
			}
		}
		perEvent(b)
	})
	for _, g := range guests {
		pr := plugins.Projection{P: g.p}
		b.Run("project/"+g.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if got := projectCount(b, s, "order:1", pr); got != benchEvents {
					b.Fatal(got)
				}
			}
			perEvent(b)
		})
	}

	b.Run("fold/native", func(b *testing.B) {
		nc := nativeCounter{}
		for i := 0; i < b.N; i++ {
			n := nc.Init()
			for _, ev := range evs {
				n = nc.Apply(n, ev)
			}
			if n != benchEvents {
				b.Fatal(n)
			}
		}
		perEvent(b)
	})
	for _, g := range guests {
		pr := plugins.Projection{P: g.p}
		b.Run("fold/"+g.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				st := pr.Init()
				for j := 0; j < len(evs); j += core.ProjectBatchSize {
					var err error
					if st, err = pr.ApplyBatch(st, evs[j:min(j+core.ProjectBatchSize, len(evs))]); err != nil {
						b.Fatal(err)
					}
				}
				if got := u64(b, st); got != benchEvents {
					b.Fatal(got)
				}
			}
			perEvent(b)
		})
	}
}

// BenchmarkLoad loads a plugin on a new host: cold (an empty compilation
// cache directory: the module is compiled) and cached (a directory that
// already holds the compiled module).
func BenchmarkLoad(b *testing.B) {
	ctx := context.Background()
	for _, g := range benchGuests(b) {
		loadOnce := func(b *testing.B, dir string) {
			h, err := plugins.NewHost(plugins.HostOptions{CacheDir: dir, Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := h.Load(ctx, g.wasm, projManifest(g.name)); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := h.Close(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.Run("cold/"+g.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := b.TempDir()
				b.StartTimer()
				loadOnce(b, dir)
			}
		})
		b.Run("cached/"+g.name, func(b *testing.B) {
			dir := b.TempDir()
			loadOnce(b, dir) // fills the cache
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				loadOnce(b, dir)
			}
		})
	}
}

// BenchmarkCall is a trivial call: a fold of one event. It is the fixed
// cost of a call: checking an instance out of the pool, the per-call
// timeout, allocating the input in the guest, the call and copying the
// state out.
func BenchmarkCall(b *testing.B) {
	h := newHost(b)
	evs := []core.StoredEvent{oneEvent(kindA)}
	ctx := context.Background()
	for _, g := range benchGuests(b) {
		p := load(b, h, g.wasm, projManifest(g.name))
		b.Run(g.name, func(b *testing.B) {
			var st []byte
			for i := 0; i < b.N; i++ {
				var err error
				if st, err = p.Fold(ctx, st, evs); err != nil {
					b.Fatal(err)
				}
			}
			if got := u64(b, st); got != uint64(b.N) {
				b.Fatal(got)
			}
		})
	}
}

// BenchmarkWorker runs a cursor worker with a plugin handler over events
// already in the store (batches of 64) and reports events/s:
//
// continue: the WAT handler answers continue, no reactions (the cost of
// the worker and the plugin call);
//
// echo: testdata/handler-flaky.wat writes one reaction per event through
// the store (an atomic batch per handler call).
func BenchmarkWorker(b *testing.B) {
	run := func(b *testing.B, n int, fixtureName string, written func(s *core.Store) int) {
		var processed time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			s := openStore(b)
			appendEvents(b, s, "order:1", n, kindA)
			h := newHost(b)
			p := load(b, h, fixture(b, fixtureName), handlerManifest("bench"))
			// handler-flaky traps on the instance made at load: spend that
			// trap before timing.
			_, _, _ = p.Handle(context.Background(), []core.StoredEvent{oneEvent(kindA)})
			p.Reset()
			var seen atomic.Int64
			done := make(chan struct{})
			handler := p.Handler(s)
			b.StartTimer()
			start := time.Now()
			w, err := s.CursorWorker(context.Background(), core.All().WithCategory(1), core.WorkerConfig{},
				func(ctx context.Context, batch []core.StoredEvent) (core.WorkerAction, error) {
					a, err := handler(ctx, batch)
					if err == nil && seen.Add(int64(len(batch))) == int64(n) {
						close(done)
					}
					return a, err
				})
			if err != nil {
				b.Fatal(err)
			}
			select {
			case <-done:
			case <-w.Done():
				b.Fatalf("the worker stopped: %v", w.Join())
			}
			processed += time.Since(start)
			b.StopTimer()
			w.Stop()
			if err := w.Join(); err != nil {
				b.Fatal(err)
			}
			if written != nil {
				if got := written(s); got != n {
					b.Fatalf("%d reactions written, want %d", got, n)
				}
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(n)*float64(b.N)/processed.Seconds(), "events/s")
	}
	b.Run("continue", func(b *testing.B) { run(b, benchEvents, "counter", nil) })
	b.Run("echo", func(b *testing.B) {
		run(b, 2000, "handler-flaky", func(s *core.Store) int {
			evs, err := s.Stream("echo")
			if err != nil {
				b.Fatal(err)
			}
			return len(evs)
		})
	})
}

// nativeBatchCounter is nativeCounter as a core.BatchApplier.
type nativeBatchCounter struct{ nativeCounter }

func (nativeBatchCounter) ApplyBatch(s uint64, evs []core.StoredEvent) (uint64, error) {
	return s + uint64(len(evs)), nil
}
