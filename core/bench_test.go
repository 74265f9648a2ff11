package core_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// Benchmarks. Reproduce with:
//
//	go test ./core -run '^$' -bench . -benchtime 200000x -count 1
//
// The 1M-event read/open benchmarks build their store once per process
// (a few seconds) under $TMPDIR.

// payload100 is a realistic 100-byte JSON payload.
var payload100 = []byte(`{"order":"order-000123","sku":"SKU-12345","qty":3,"price":19.99,"note":"gift wrap, leave at door!!"}`)

func init() {
	if len(payload100) != 100 {
		panic(fmt.Sprintf("payload100 is %d bytes", len(payload100)))
	}
}

func benchStore(b *testing.B, every int) *core.Store {
	b.Helper()
	cfg := core.DefaultConfig(b.TempDir())
	cfg.Sync.EveryNEvents = every
	s, err := core.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func reportRate(b *testing.B, events int) {
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

// reportBound reports the average fsync latency L the store met and the
// rate as a share of the durable bound P/L (each of P producers waits for
// one fsync per event).
func reportBound(b *testing.B, st core.Stats, producers, events int) {
	if st.GroupCommits == 0 {
		return
	}
	l := st.SyncTime.Seconds() / float64(st.GroupCommits)
	b.ReportMetric(l*1e6, "fsync-µs")
	b.ReportMetric(100*float64(events)/b.Elapsed().Seconds()/(float64(producers)/l), "%bound")
}

// BenchmarkSubmitPipelined: one goroutine submits without waiting (tickets
// are checked in windows of 4096), buffered durability (sync every 1000).
func BenchmarkSubmitPipelined(b *testing.B) {
	s := benchStore(b, 1000)
	kind := core.MustKind(1, 1)
	coords := make([]core.Coordinate, 64)
	for i := range coords {
		coords[i], _ = core.NewCoordinate(fmt.Sprintf("order:%d", i), "shop")
	}
	cpu0, _ := processCPU()
	b.ResetTimer()
	submitPipelined(b, s, func(i int) core.Coordinate { return coords[i&63] }, kind)
	b.StopTimer()
	reportRate(b, b.N)
	if cpu1, ok := processCPU(); ok {
		b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/event")
	}
}

// submitPipelined submits b.N events without waiting, checking the
// tickets in windows of 4096.
func submitPipelined(b *testing.B, s *core.Store, coord func(i int) core.Coordinate, kind core.Kind) {
	ctx := context.Background()
	window := make([]*core.Ticket, 0, 4096)
	for i := 0; i < b.N; i++ {
		t, err := s.Submit(ctx, coord(i), kind, payload100)
		if err != nil {
			b.Fatal(err)
		}
		window = append(window, t)
		if len(window) == cap(window) {
			waitAll(b, window)
			window = window[:0]
		}
	}
	waitAll(b, window)
}

func waitAll(b *testing.B, ts []*core.Ticket) {
	for _, t := range ts {
		if _, err := t.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendBlocking: one goroutine, Append waits for each receipt,
// buffered durability (sync every 1000).
func BenchmarkAppendBlocking(b *testing.B) {
	s := benchStore(b, 1000)
	ctx := context.Background()
	kind := core.MustKind(1, 1)
	coord, _ := core.NewCoordinate("order:1", "shop")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Append(ctx, coord, kind, payload100); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b, b.N)
}

// BenchmarkAppendDurable: P producers each Append (ack after fsync:
// EveryNEvents = 1); group commit shares fsyncs between them.
func BenchmarkAppendDurable(b *testing.B) {
	for _, producers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) { benchProducers(b, 1, producers) })
	}
}

// BenchmarkAppendBuffered: P producers each Append with EveryNEvents =
// 1000 (ack once written to the OS).
func BenchmarkAppendBuffered(b *testing.B) {
	for _, producers := range []int{8, 64} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) { benchProducers(b, 1000, producers) })
	}
}

// benchProducers runs b.N appends from P goroutines, each to its own
// entity, on a store syncing every `every` events.
func benchProducers(b *testing.B, every, producers int) {
	s := benchStore(b, every)
	b.ResetTimer()
	n := appendFromProducers(b, s, producers)
	b.StopTimer()
	st := s.Stats()
	reportRate(b, n)
	b.ReportMetric(float64(n)/float64(max(st.Fsyncs, 1)), "events/fsync")
	b.ReportMetric(float64(n)/float64(max(st.GroupCommits, 1)), "events/group")
	if every == 1 {
		reportBound(b, st, producers, n)
	}
}

// appendFromProducers appends b.N events (rounded up to a multiple of P)
// from P goroutines, each to its own entity, and returns how many.
func appendFromProducers(b *testing.B, s *core.Store, producers int) int {
	ctx := context.Background()
	kind := core.MustKind(1, 1)
	var wg sync.WaitGroup
	per := (b.N + producers - 1) / producers
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			coord, _ := core.NewCoordinate(fmt.Sprintf("order:%d", p), "shop")
			for i := 0; i < per; i++ {
				if _, err := s.Append(ctx, coord, kind, payload100); err != nil {
					b.Error(err)
					return
				}
			}
		}(p)
	}
	wg.Wait()
	return per * producers
}

// big is a 1M-event store shared by the read and open benchmarks.
var big struct {
	once sync.Once
	dir  string
	err  error
}

const bigEvents = 1_000_000

func bigStore(b *testing.B) string {
	big.once.Do(func() {
		big.dir, big.err = os.MkdirTemp("", "batpak-bench-1m-")
		if big.err != nil {
			return
		}
		cfg := core.DefaultConfig(big.dir)
		s, err := core.Open(cfg)
		if err != nil {
			big.err = err
			return
		}
		ctx := context.Background()
		kinds := []core.Kind{core.MustKind(1, 1), core.MustKind(1, 2), core.MustKind(2, 1)}
		scopes := []string{"eu", "us", "apac"}
		window := make([]*core.Ticket, 0, 4096)
		for i := 0; i < bigEvents; i++ {
			coord, _ := core.NewCoordinate(fmt.Sprintf("order:%d", i%10000), scopes[i%10000%3])
			t, err := s.Submit(ctx, coord, kinds[i%3], payload100)
			if err != nil {
				big.err = err
				return
			}
			window = append(window, t)
			if len(window) == cap(window) {
				for _, t := range window {
					if _, err := t.Wait(ctx); err != nil {
						big.err = err
						return
					}
				}
				window = window[:0]
			}
		}
		for _, t := range window {
			if _, err := t.Wait(ctx); err != nil {
				big.err = err
				return
			}
		}
		if big.err = s.SealSegments(ctx); big.err != nil {
			return
		}
		big.err = s.Close()
	})
	if big.err != nil {
		b.Fatal(big.err)
	}
	return big.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if big.dir != "" {
		os.RemoveAll(big.dir)
	}
	if causalBig.dir != "" {
		os.RemoveAll(causalBig.dir)
	}
	os.Exit(code)
}

// BenchmarkOpen1M: index rebuild of 1M events, from the checkpoint the
// last Close wrote (frames still CRC-checked), from the segment footers
// (the checkpoint moved aside), and by a full scan (footers moved aside
// too).
//
//	go test ./core -run '^$' -bench Open1M -benchtime 5x
func BenchmarkOpen1M(b *testing.B) {
	dir := bigStore(b)
	aside := func(b *testing.B, pattern string) {
		paths, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, p := range paths {
			if err := os.Rename(p, p+".aside"); err != nil {
				b.Fatal(err)
			}
		}
		b.Cleanup(func() {
			for _, p := range paths {
				os.Rename(p+".aside", p)
			}
		})
	}
	for _, path := range []string{"checkpoint", "footers", "scan"} {
		b.Run(path, func(b *testing.B) {
			if path != "checkpoint" {
				aside(b, "index.ckpt")
			}
			if path == "scan" {
				aside(b, "*.idx")
			}
			for i := 0; i < b.N; i++ {
				s, err := core.OpenReadOnly(core.DefaultConfig(dir))
				if err != nil {
					b.Fatal(err)
				}
				d := s.Diagnostics()
				if d.Events != bigEvents || d.Open.Path != path {
					b.Fatalf("events = %d, path %s", d.Events, d.Open.Path)
				}
				s.Close()
			}
		})
	}
}

// BenchmarkIndexMemory1M reports heap bytes held per indexed event.
func BenchmarkIndexMemory1M(b *testing.B) {
	dir := bigStore(b)
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s, err := core.OpenReadOnly(core.DefaultConfig(dir))
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/bigEvents, "heapB/event")
		b.ReportMetric(float64(s.Stats().IndexBytes)/bigEvents, "estB/event")
		runtime.KeepAlive(s)
		s.Close()
	}
}

// bigReader opens the shared 1M-event store read-only for b.
func bigReader(b *testing.B) *core.Store { return readerOf(b, bigStore(b)) }

// readerOf opens the store in dir read-only, closed when b ends.
func readerOf(b *testing.B, dir string) *core.Store {
	s, err := core.OpenReadOnly(core.DefaultConfig(dir))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkQuery1M: queries over the 1M-event store, payloads included.
func BenchmarkQuery1M(b *testing.B) {
	s := bigReader(b)
	cases := []struct {
		name string
		r    core.Region
	}{
		{"all", core.All()},
		{"kind", core.All().WithKind(core.MustKind(1, 2))},
		{"scope", core.Scope("eu")},
		{"entity-prefix=order:99", core.Entity("order:99")},
		{"scope+kind+clock", core.Scope("us").WithKind(core.MustKind(2, 1)).WithClockRange(10, 20)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			n := 0
			for i := 0; i < b.N; i++ {
				evs, err := s.Query(c.r)
				if err != nil {
					b.Fatal(err)
				}
				n += len(evs)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(n)/float64(b.N), "events/op")
		})
	}
}

// BenchmarkStream1M: one entity's stream (100 events) and Get by id.
func BenchmarkStream1M(b *testing.B) {
	s := bigReader(b)
	b.Run("stream", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			evs, err := s.Stream(fmt.Sprintf("order:%d", i%10000))
			if err != nil || len(evs) != 100 {
				b.Fatal(len(evs), err)
			}
		}
	})
	evs, _ := s.Stream("order:7")
	b.Run("get", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := s.Get(evs[i%len(evs)].Header.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppendBatch: one goroutine writes atomic batches with
// EveryNEvents = 1, so every batch costs exactly one fsync; size=1 is the
// single-append baseline (AppendBatch of one item), and "single" is plain
// Append of the same events. b.N counts events.
//
//	go test ./core -run '^$' -bench AppendBatch -benchtime 20000x
func BenchmarkAppendBatch(b *testing.B) {
	kind := core.MustKind(1, 1)
	for _, size := range []int{1, 10, 100, 256} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			s := benchStore(b, 1)
			ctx := context.Background()
			items := make([]core.BatchItem, size)
			for i := range items {
				c, _ := core.NewCoordinate(fmt.Sprintf("order:%d", i%16), "shop")
				items[i] = core.BatchItem{Coordinate: c, Kind: kind, Payload: payload100}
			}
			batches := (b.N + size - 1) / size
			b.ResetTimer()
			for i := 0; i < batches; i++ {
				if _, err := s.AppendBatch(ctx, items); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportRate(b, batches*size)
			b.ReportMetric(float64(batches*size)/float64(max(s.Stats().Fsyncs, 1)), "events/fsync")
		})
	}
	// Eight producers with batches of 100: their batches share group
	// commits, so one fsync covers several. A batch's items go to 16
	// entities of its producer, or all to one (an aggregate's events, as
	// ../shared/peerbench writes them: each batch one chain of 100).
	for _, entities := range []int{16, 1} {
		name := "size=100/producers=8"
		if entities == 1 {
			name += "/one-entity"
		}
		b.Run(name, func(b *testing.B) { benchConcurrentBatches(b, entities) })
	}
	b.Run("single", func(b *testing.B) {
		s := benchStore(b, 1)
		ctx := context.Background()
		c, _ := core.NewCoordinate("order:1", "shop")
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := s.Append(ctx, c, kind, payload100); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		reportRate(b, b.N)
	})
}

// countProj counts an entity's events (incremental).
type countProj struct{}

func (countProj) Name() string                        { return "bench-count" }
func (countProj) SchemaVersion() uint32               { return 1 }
func (countProj) Kinds() []core.Kind                  { return nil }
func (countProj) Init() int                           { return 0 }
func (countProj) Apply(n int, _ core.StoredEvent) int { return n + 1 }
func (countProj) SupportsIncremental() bool           { return true }

// BenchmarkProject: one entity of 1k or 10k events, folded cold (no cache)
// and cached (LRU cache, nothing new since the last Project).
//
//	go test ./core -run '^$' -bench Project -benchtime 2s
func BenchmarkProject(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, cached := range []bool{false, true} {
			name := fmt.Sprintf("events=%d/cold", n)
			if cached {
				name = fmt.Sprintf("events=%d/cached", n)
			}
			b.Run(name, func(b *testing.B) {
				cfg := core.DefaultConfig(b.TempDir())
				if cached {
					cfg.ProjectionCache = core.NewLRUCache(16)
				}
				s, err := core.Open(cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				ctx := context.Background()
				c, _ := core.NewCoordinate("order:1", "shop")
				kind := core.MustKind(1, 1)
				for i := 0; i < n; i++ {
					if _, err := s.Submit(ctx, c, kind, payload100); err != nil {
						b.Fatal(err)
					}
				}
				if err := s.Sync(ctx); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					st, _, err := core.Project(s, "order:1", countProj{}, core.Consistent())
					if err != nil || st != n {
						b.Fatal(st, err)
					}
				}
			})
		}
	}
}

// BenchmarkAppendWithSubscribers: pipelined Submit (as in
// BenchmarkSubmitPipelined) with no subscriber, then while 1, 10 or 100
// lossy subscribers each receive every notification on their own
// goroutine: by Recv, by ranging over All, or by RecvBatch into a buffer of
// 256. The writer's cost of n subscribers is 1 - events/s(n) ÷
// events/s(subscribers=0); dropped-% is the share of notifications the
// subscribers lost by falling behind (a subscriber that skips costs less).
// cpu-ns/event is the process's CPU time (writer, producer and subscribers)
// per event: on a machine whose cores are all busy — shared, or serving
// other stores — it is what bounds throughput, and it varies far less with
// the load than events/s does.
//
//	go test ./core -run '^$' -bench AppendWithSubscribers -benchtime 300000x
func BenchmarkAppendWithSubscribers(b *testing.B) {
	benchSubscribers(b, "none", 0)
	for _, mode := range []string{"recv", "all", "batch"} {
		for _, subs := range []int{1, 10, 100} {
			benchSubscribers(b, mode, subs)
		}
	}
}

func benchSubscribers(b *testing.B, mode string, subs int) {
	b.Run(fmt.Sprintf("%s/subscribers=%d", mode, subs), func(b *testing.B) {
		s := benchStore(b, 1000)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var wg sync.WaitGroup
		all := make([]*core.Subscription, subs)
		for i := range all {
			sub := s.SubscribeLossy(core.All())
			all[i] = sub
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch mode {
				case "recv":
					for {
						if _, err := sub.Recv(ctx); err != nil {
							return
						}
					}
				case "all":
					for range sub.All(ctx) {
					}
				case "batch":
					buf := make([]core.Notification, 256)
					for {
						if _, err := sub.RecvBatch(ctx, buf); err != nil {
							return
						}
					}
				}
			}()
		}
		kind := core.MustKind(1, 1)
		c, _ := core.NewCoordinate("order:1", "shop")
		cpu0, _ := processCPU()
		b.ResetTimer()
		submitPipelined(b, s, func(int) core.Coordinate { return c }, kind)
		b.StopTimer()
		reportRate(b, b.N)
		if cpu1, ok := processCPU(); ok {
			b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/event")
		}
		cancel()
		wg.Wait()
		if subs == 0 {
			return
		}
		// Read what is left so that every loss is counted.
		var dropped uint64
		for _, sub := range all {
			for {
				if _, ok, err := sub.TryRecv(); err != nil || !ok {
					break
				}
			}
			dropped += sub.Dropped()
			sub.Close()
		}
		b.ReportMetric(100*float64(dropped)/float64(subs*b.N), "dropped-%")
	})
}

// BenchmarkAppendDurableWithSubscribers: 8 producers Append durably (as in
// BenchmarkAppendDurable) while 0 or 100 lossy subscribers wait for every
// group by RecvBatch: groups are small, so what a group's wake-up costs the
// writer shows.
//
//	go test ./core -run '^$' -bench AppendDurableWithSubscribers -benchtime 20000x
func BenchmarkAppendDurableWithSubscribers(b *testing.B) {
	for _, subs := range []int{0, 100} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			s := benchStore(b, 1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var rwg sync.WaitGroup
			for range subs {
				sub := s.SubscribeLossy(core.All())
				rwg.Add(1)
				go func() {
					defer rwg.Done()
					defer sub.Close()
					buf := make([]core.Notification, 256)
					for {
						if _, err := sub.RecvBatch(ctx, buf); err != nil {
							return
						}
					}
				}()
			}
			b.ResetTimer()
			n := appendFromProducers(b, s, 8)
			b.StopTimer()
			reportRate(b, n)
			cancel()
			rwg.Wait()
		})
	}
}

// BenchmarkCursorPoll: a cursor reading 100k events in polls of 256.
//
//	go test ./core -run '^$' -bench CursorPoll -benchtime 5x
func BenchmarkCursorPoll(b *testing.B) {
	s := benchStore(b, 1000)
	ctx := context.Background()
	kind := core.MustKind(1, 1)
	const n = 100_000
	for i := 0; i < n; i++ {
		c, _ := core.NewCoordinate(fmt.Sprintf("order:%d", i%100), "shop")
		if _, err := s.Submit(ctx, c, kind, payload100); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	total := 0
	for i := 0; i < b.N; i++ {
		cur := s.Cursor(core.All())
		for {
			evs, err := cur.Poll(256)
			if err != nil {
				b.Fatal(err)
			}
			if len(evs) == 0 {
				break
			}
			total += len(evs)
		}
	}
	b.StopTimer()
	reportRate(b, total)
}

// benchConcurrentBatches: eight producers writing durable batches of 100,
// each batch's items spread over the producer's first `entities` entities.
func benchConcurrentBatches(b *testing.B, entities int) {
	const size, producers = 100, 8
	kind := core.MustKind(1, 1)
	s := benchStore(b, 1)
	ctx := context.Background()
	batches := (b.N + size*producers - 1) / (size * producers)
	var wg sync.WaitGroup
	cpu0, _ := processCPU()
	b.ResetTimer()
	for p := 0; p < producers; p++ {
		items := make([]core.BatchItem, size)
		for i := range items {
			c, _ := core.NewCoordinate(fmt.Sprintf("order:%d:%d", p, i%entities), "shop")
			items[i] = core.BatchItem{Coordinate: c, Kind: kind, Payload: payload100}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < batches; i++ {
				if _, err := s.AppendBatch(ctx, items); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	reportRate(b, batches*size*producers)
	st := s.Stats()
	b.ReportMetric(float64(batches*size*producers)/float64(max(st.Fsyncs, 1)), "events/fsync")
	b.ReportMetric(float64(batches*producers)/float64(max(st.GroupCommits, 1)), "batches/group")
	// A group's cycle: its producers' next batches, placing, the write,
	// the fsync (fsync-µs of it) and the wake-ups of its producers.
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(max(st.GroupCommits, 1)), "µs/group")
	b.ReportMetric(float64(st.SyncTime.Microseconds())/float64(max(st.GroupCommits, 1)), "fsync-µs")
	if cpu1, ok := processCPU(); ok {
		b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(batches*size*producers), "cpu-ns/event")
	}
}

// BenchmarkVerify1M: Verify of the 1M-event store (every payload digest,
// chain hash and link re-derived from the segment files).
//
//	go test ./core -run '^$' -bench Verify1M -benchtime 3x
func BenchmarkVerify1M(b *testing.B) {
	s := bigReader(b)
	b.ResetTimer()
	for range b.N {
		rep, err := s.Verify()
		if err != nil || rep.Events != bigEvents {
			b.Fatalf("Verify: %+v, %v", rep, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/bigEvents, "ns/event")
}
