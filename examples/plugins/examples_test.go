//go:build !wasip1

package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/examples/plugins/nativeprojections"
	"github.com/batpak-go/batpak/examples/plugins/wasmbuild"
	"github.com/batpak-go/batpak/plugins"
)

var (
	kindPlaced   = nativeprojections.KindOrderPlaced
	kindRefunded = nativeprojections.KindOrderRefunded
	kindShipped  = core.MustKind(1, 2)
	kindPayment  = core.MustKind(2, 1)
	kindShipReq  = nativeprojections.KindShipmentRequested
)

// newHost returns a plugin host whose compilation cache persists under
// os.TempDir, so reruns skip compiling the Go guests (~1 s each cold).
func newHost(t testing.TB) *plugins.Host {
	t.Helper()
	h, err := plugins.NewHost(plugins.HostOptions{
		CacheDir: filepath.Join(os.TempDir(), "batpak-wazero-cache-test"),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	return h
}

// load builds the example in dir and loads it with its manifest.json.
func load(t testing.TB, h *plugins.Host, dir string) *plugins.Plugin {
	t.Helper()
	wasm := wasmbuild.ForTest(t, dir)
	m, err := plugins.LoadManifest(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Load(context.Background(), wasm, m)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func openStore(t testing.TB, cache core.ProjectionCache) *core.Store {
	t.Helper()
	cfg := core.DefaultConfig(t.TempDir())
	cfg.Sync.EveryNEvents = 0
	cfg.Sync.Interval = 0
	cfg.ProjectionCache = cache
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func coord(t testing.TB, entity, scope string) core.Coordinate {
	t.Helper()
	c, err := core.NewCoordinate(entity, scope)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// orderEvent returns the i-th event of a deterministic order workload:
// mostly OrderPlaced, some OrderRefunded, some kinds the projection
// ignores, and payloads with nested, missing, negative, fractional and
// large fields.
func orderEvent(i int) (core.Kind, []byte) {
	switch {
	case i%10 == 3:
		return kindRefunded, fmt.Appendf(nil, `{"order":"order:%d","amount_cents":%d,"reason":"damaged"}`, i, 100+i%77)
	case i%10 == 7:
		return kindShipped, fmt.Appendf(nil, `{"order":"order:%d","carrier":"DHL","total_cents":999999}`, i)
	case i%97 == 0:
		return kindPlaced, []byte(`{"order":"x","items":[{"total_cents":5}]}`) // no top-level total
	case i%89 == 0:
		return kindPlaced, []byte(`{"total_cents":-250,"note":"correction"}`)
	case i%83 == 0:
		return kindPlaced, []byte(`{"total_cents":12.9}`)
	case i%79 == 0:
		return kindPlaced, []byte(`{"total_cents":4000000000000}`)
	}
	return kindPlaced, fmt.Appendf(nil, `{"order":"order:%d","customer":"cust-%d","items":[{"sku":"BAT-AA-4","qty":%d,"price_cents":499}],"total_cents":%d,"currency":"EUR"}`,
		i, i%13, 1+i%5, 499*(1+i%5))
}

func writeOrders(t testing.TB, s *core.Store, entity string, from, n int) {
	t.Helper()
	c := coord(t, entity, "shop")
	items := make([]core.BatchItem, 0, 200)
	flush := func() {
		if _, err := s.AppendBatch(context.Background(), items); err != nil {
			t.Fatal(err)
		}
		items = items[:0]
	}
	for i := from; i < from+n; i++ {
		k, p := orderEvent(i)
		items = append(items, core.BatchItem{Coordinate: c, Kind: k, Payload: p})
		if len(items) == cap(items) {
			flush()
		}
	}
	flush()
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOrderTotalParity folds the same 2000 events through the order-total
// plugin (core.Project over plugins.Projection, 256 events per call) and
// through the native projection, then 500 more incrementally from the
// projection cache, and wants byte-identical states.
func TestOrderTotalParity(t *testing.T) {
	h := newHost(t)
	p := load(t, h, "order-total")
	s := openStore(t, core.NewLRUCache(16))
	writeOrders(t, s, "ledger:shop", 0, 2000)
	writeOrders(t, s, "order:lonely", 5, 1) // one event: a batch of one

	check := func(entity string) {
		t.Helper()
		got, found, err := core.Project(s, entity, plugins.Projection{P: p}, core.Consistent())
		if err != nil || !found {
			t.Fatalf("plugin Project(%s): found %v, err %v", entity, found, err)
		}
		want, found, err := core.Project(s, entity, nativeprojections.OrderTotal{}, core.Consistent())
		if err != nil || !found {
			t.Fatalf("native Project(%s): found %v, err %v", entity, found, err)
		}
		if wb := mustJSON(t, want); !bytes.Equal(got, wb) {
			t.Fatalf("%s: plugin state %s, native %s", entity, got, wb)
		}
	}
	check("ledger:shop")
	check("order:lonely")

	// An independent tally (encoding/json, not gjson), so that parity is
	// not two equal mistakes.
	var tally nativeprojections.OrderTotals
	for i := range 2000 {
		k, pl := orderEvent(i)
		var f struct {
			Total  float64 `json:"total_cents"`
			Amount float64 `json:"amount_cents"`
		}
		if err := json.Unmarshal(pl, &f); err != nil {
			t.Fatal(err)
		}
		switch k {
		case kindPlaced:
			tally.Orders++
			tally.TotalCents += int64(f.Total)
		case kindRefunded:
			tally.RefundedCents += int64(f.Amount)
		}
	}
	got, _, _ := core.Project(s, "ledger:shop", plugins.Projection{P: p}, core.Consistent())
	if want := mustJSON(t, tally); !bytes.Equal(got, want) {
		t.Fatalf("plugin state %s, tally %s", got, want)
	}
	t.Logf("2000 events: %s", got)

	// Incremental: the cached state continues with only the new events.
	writeOrders(t, s, "ledger:shop", 2000, 500)
	check("ledger:shop")

	// Restricting the kinds gives the same totals (the fold ignores the
	// others anyway) with fewer events crossing into the sandbox.
	only := []core.Kind{kindPlaced, kindRefunded}
	a, _, err := core.Project(s, "ledger:shop", plugins.Projection{P: p, Only: only}, core.Consistent())
	if err != nil {
		t.Fatal(err)
	}
	if b, _, _ := core.Project(s, "ledger:shop", plugins.Projection{P: p}, core.Consistent()); !bytes.Equal(a, b) {
		t.Fatalf("with Only: %s, without: %s", a, b)
	}

	// No events: not found, empty state (the plugin is not called).
	st, found, err := core.Project(s, "order:none", plugins.Projection{P: p}, core.Consistent())
	if err != nil || found || len(st) != 0 {
		t.Fatalf("empty entity: state %q found %v err %v", st, found, err)
	}
}

// TestCounterParity checks the counter example against its native twin.
func TestCounterParity(t *testing.T) {
	h := newHost(t)
	p := load(t, h, "counter")
	s := openStore(t, nil)
	writeOrders(t, s, "ledger:shop", 0, 700)
	got, _, err := core.Project(s, "ledger:shop", plugins.Projection{P: p}, core.Consistent())
	if err != nil {
		t.Fatal(err)
	}
	want, _, _ := core.Project(s, "ledger:shop", nativeprojections.Counter{}, core.Consistent())
	if len(got) != 8 || binaryLE(got) != want || want != 700 {
		t.Fatalf("plugin %x, native %d", got, want)
	}
}

func binaryLE(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// placeOrders writes n orders order:1..order:n in scope "shop": an
// OrderPlaced (a root cause) and a PaymentCaptured caused by it. It
// returns the OrderPlaced events by entity.
func placeOrders(t *testing.T, s *core.Store, from, n int) map[string]core.StoredEvent {
	t.Helper()
	ctx := context.Background()
	placed := map[string]core.StoredEvent{}
	for i := from; i < from+n; i++ {
		entity := fmt.Sprintf("order:%d", i)
		r, err := s.Append(ctx, coord(t, entity, "shop"), kindPlaced, fmt.Appendf(nil, `{"total_cents":%d}`, 100*i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendReaction(ctx, coord(t, fmt.Sprintf("payment:%d", i), "shop"), kindPayment,
			fmt.Appendf(nil, `{"amount_cents":%d}`, 100*i), r.CorrelationID, r.ID); err != nil {
			t.Fatal(err)
		}
		ev, err := s.Get(r.ID)
		if err != nil {
			t.Fatal(err)
		}
		placed[entity] = ev
	}
	return placed
}

// checkShipments wants exactly one ShipmentRequested per placed order,
// with the right entity, scope, payload, correlation and causation.
func checkShipments(t *testing.T, s *core.Store, placed map[string]core.StoredEvent) {
	t.Helper()
	got, err := s.Query(core.All().WithKind(kindShipReq))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(placed) {
		t.Fatalf("%d ShipmentRequested events, want %d (one per OrderPlaced)", len(got), len(placed))
	}
	seen := map[string]bool{}
	for _, ev := range got {
		order := gjson.GetBytes(ev.Payload, "order").String()
		src, ok := placed[order]
		switch {
		case !ok:
			t.Fatalf("shipment %s names unknown order %q: %s", ev.Coordinate, order, ev.Payload)
		case seen[order]:
			t.Fatalf("two shipments for %s", order)
		case ev.Coordinate.Entity != "shipment:"+order[len("order:"):] || ev.Coordinate.Scope != src.Coordinate.Scope:
			t.Fatalf("shipment for %s at %s", order, ev.Coordinate)
		case ev.Header.CorrelationID != src.Header.CorrelationID:
			t.Fatalf("shipment for %s: correlation %s, want %s", order, ev.Header.CorrelationID, src.Header.CorrelationID)
		case ev.Header.CausationID != src.Header.ID:
			t.Fatalf("shipment for %s: causation %s, want %s", order, ev.Header.CausationID, src.Header.ID)
		case gjson.GetBytes(ev.Payload, "order_event").String() != src.Header.ID.String():
			t.Fatalf("shipment for %s: payload %s, want order_event %s", order, ev.Payload, src.Header.ID)
		case !json.Valid(ev.Payload):
			t.Fatalf("payload %q is not JSON", ev.Payload)
		}
		seen[order] = true
	}
}

// lastSeq is the global sequence of the store's latest event.
func lastSeq(t *testing.T, s *core.Store, r core.Region) uint64 {
	t.Helper()
	evs, err := s.Query(r)
	if err != nil || len(evs) == 0 {
		t.Fatalf("query: %d events, err %v", len(evs), err)
	}
	return evs[len(evs)-1].GlobalSequence
}

// runWorker runs h on a cursor worker until it has handled the event at
// sequence upTo, then stops it and returns it and Join's error.
func runWorker(t *testing.T, s *core.Store, r core.Region, cfg core.WorkerConfig, h core.Handler, upTo uint64) (*core.Worker, error) {
	t.Helper()
	var reached atomic.Bool
	w, err := s.CursorWorker(context.Background(), r, cfg, func(ctx context.Context, batch []core.StoredEvent) (core.WorkerAction, error) {
		a, err := h(ctx, batch)
		if err == nil && batch[len(batch)-1].GlobalSequence >= upTo {
			reached.Store(true)
		}
		return a, err
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for !reached.Load() {
		select {
		case <-w.Done():
			return w, w.Join()
		case <-deadline:
			t.Fatalf("worker did not reach sequence %d in 10 s", upTo)
		case <-time.After(2 * time.Millisecond):
		}
	}
	w.Stop()
	return w, w.Join()
}

// TestShipperWorker runs the shipper handler plugin on a cursor worker:
// one ShipmentRequested per OrderPlaced, with correlation and causation
// from the order. The first batch fails after its reactions are written,
// so the worker restarts and redelivers it; a named cursor resumes where
// it stopped; and a fresh cursor (a lost position) redelivers every
// order. Nothing is written twice.
func TestShipperWorker(t *testing.T) {
	h := newHost(t)
	p := load(t, h, "shipper")
	s := openStore(t, nil)
	placed := placeOrders(t, s, 1, 150)
	region := core.Scope("shop").WithCategory(1) // orders only
	cfg := core.WorkerConfig{Name: "shipper", BatchSize: 64}

	// A handler that fails once, after the plugin's reactions are written.
	inner := p.Handler(s)
	failed := false
	flaky := func(ctx context.Context, batch []core.StoredEvent) (core.WorkerAction, error) {
		a, err := inner(ctx, batch)
		if err == nil && !failed {
			failed = true
			return a, errors.New("lost the commit")
		}
		return a, err
	}
	w, err := runWorker(t, s, region, cfg, flaky, lastSeq(t, s, region))
	if err != nil {
		t.Fatal(err)
	}
	if w.Restarts() != 1 {
		t.Fatalf("%d restarts, want 1", w.Restarts())
	}
	checkShipments(t, s, placed)

	// A fresh cursor redelivers everything in the same batches.
	if _, err := runWorker(t, s, region, core.WorkerConfig{BatchSize: 64}, p.Handler(s), lastSeq(t, s, region)); err != nil {
		t.Fatal(err)
	}
	checkShipments(t, s, placed)

	// More orders while it is stopped; the named cursor resumes after the
	// ones it handled.
	for k, v := range placeOrders(t, s, 151, 20) {
		placed[k] = v
	}
	if _, err := runWorker(t, s, region, cfg, p.Handler(s), lastSeq(t, s, region)); err != nil {
		t.Fatal(err)
	}
	checkShipments(t, s, placed)
}

// TestShipperRedeliveryShiftedBatch redelivers events in batches cut
// differently from the first delivery — as after a crash between writing
// the reactions and committing the cursor, followed by a restart with
// another BatchSize, or by a replay from a lost cursor once more events
// have arrived. An at-least-once handler must still write each reaction
// once.
func TestShipperRedeliveryShiftedBatch(t *testing.T) {
	h := newHost(t)
	p := load(t, h, "shipper")
	s := openStore(t, nil)
	placed := placeOrders(t, s, 1, 8)
	evs, err := s.Query(core.Scope("shop").WithKind(kindPlaced))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	handle := p.Handler(s)
	if _, err := handle(ctx, evs[:4]); err != nil {
		t.Fatal(err)
	}
	t.Run("suffix", func(t *testing.T) {
		// evs[2:4] again, alone: their reactions are the 3rd and 4th of
		// the first call but the 1st and 2nd of this one.
		if _, err := handle(ctx, evs[2:4]); err != nil {
			t.Fatal(err)
		}
		if n := countKind(t, s, kindShipReq); n != 4 {
			t.Fatalf("%d shipments for 4 orders: a redelivery cut differently wrote reactions again", n)
		}
	})
	t.Run("grown", func(t *testing.T) {
		// evs[0:8]: four already handled, four new.
		if _, err := handle(ctx, evs); err != nil {
			t.Fatalf("a redelivered batch with more events than the first delivery: %v", err)
		}
		checkShipments(t, s, placed)
	})
}

func countKind(t *testing.T, s *core.Store, k core.Kind) int {
	t.Helper()
	evs, err := s.Query(core.All().WithKind(k))
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

// BenchmarkOrderTotal folds 2000 order events per op: through the
// order-total plugin and its native twin with core.Project (no projection
// cache, so everything is read and folded each time), and through the
// plugin alone (Plugin.Fold over events already read, 256 per call).
func BenchmarkOrderTotal(b *testing.B) {
	const n = 2000
	h := newHost(b)
	p, cp := load(b, h, "order-total"), load(b, h, "counter")
	s := openStore(b, nil)
	writeOrders(b, s, "ledger:shop", 0, n)
	perEvent := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
	}
	b.Run("native-project", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := core.Project(s, "ledger:shop", nativeprojections.OrderTotal{}, core.Consistent()); err != nil {
				b.Fatal(err)
			}
		}
		perEvent(b)
	})
	b.Run("plugin-project", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := core.Project(s, "ledger:shop", plugins.Projection{P: p}, core.Consistent()); err != nil {
				b.Fatal(err)
			}
		}
		perEvent(b)
	})
	evs, err := s.Query(core.Entity("ledger:shop"))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("plugin-fold", func(b *testing.B) {
		ctx := context.Background()
		for b.Loop() {
			var st []byte
			for i := 0; i < len(evs); i += core.ProjectBatchSize {
				if st, err = p.Fold(ctx, st, evs[i:min(i+core.ProjectBatchSize, len(evs))]); err != nil {
					b.Fatal(err)
				}
			}
		}
		perEvent(b)
	})
	b.Run("counter-fold", func(b *testing.B) {
		ctx := context.Background()
		for b.Loop() {
			var st []byte
			for i := 0; i < len(evs); i += core.ProjectBatchSize {
				if st, err = cp.Fold(ctx, st, evs[i:min(i+core.ProjectBatchSize, len(evs))]); err != nil {
					b.Fatal(err)
				}
			}
		}
		perEvent(b)
	})
}

// BenchmarkShipperHandle runs the shipper on batches of 64 OrderPlaced
// events (Plugin.Handle: the plugin call and parsing its reactions; no
// writes).
func BenchmarkShipperHandle(b *testing.B) {
	h := newHost(b)
	p := load(b, h, "shipper")
	s := openStore(b, nil)
	ctx := context.Background()
	for i := range 64 {
		if _, err := s.Append(ctx, coord(b, fmt.Sprintf("order:%d", i), "shop"), kindPlaced, []byte(`{"total_cents":100}`)); err != nil {
			b.Fatal(err)
		}
	}
	evs, err := s.Query(core.All())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, rs, err := p.Handle(ctx, evs); err != nil || len(rs) != 64 {
			b.Fatal(len(rs), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/event")
}
