package core_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/batpak-go/batpak/core"
)

// Kinds are declared once, as constants of your domain.
var (
	orderPlaced  = core.MustKind(1, 1)
	orderShipped = core.MustKind(1, 2)
	paymentTaken = core.MustKind(2, 1)
)

func tempStore() (*core.Store, func()) {
	dir, err := os.MkdirTemp("", "batpak-example-")
	if err != nil {
		log.Fatal(err)
	}
	s, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		log.Fatal(err)
	}
	return s, func() { s.Close(); os.RemoveAll(dir) }
}

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "batpak-example-")
	defer os.RemoveAll(dir)

	cfg := core.DefaultConfig(dir)
	cfg.Sync.EveryNEvents = 1 // every receipt means "on disk"
	s, err := core.Open(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	coord, _ := core.NewCoordinate("order:1", "shop")
	r, err := s.Append(context.Background(), coord, orderPlaced, []byte(`{"total":42}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sequence", r.GlobalSequence, "clock", r.Clock)
	// Output: sequence 0 clock 0
}

func ExampleStore_Query() {
	s, done := tempStore()
	defer done()
	ctx := context.Background()
	for i, scope := range []string{"eu", "us", "eu"} {
		coord, _ := core.NewCoordinate(fmt.Sprintf("order:%d", i), scope)
		s.Append(ctx, coord, orderPlaced, []byte(`{}`))
		s.Append(ctx, coord, orderShipped, []byte(`{}`))
	}
	shippedInEU, _ := s.Query(core.Scope("eu").WithKind(orderShipped))
	for _, ev := range shippedInEU {
		fmt.Println(ev.Coordinate.Entity, ev.Header.Kind, ev.GlobalSequence)
	}
	// Output:
	// order:0 0x1:0x2 1
	// order:2 0x1:0x2 5
}

func ExampleStore_AppendWithOptions() {
	s, done := tempStore()
	defer done()
	ctx := context.Background()
	coord, _ := core.NewCoordinate("account:7", "bank")

	// Compare-and-set: only the first writer that saw "no events" wins.
	_, err := s.AppendWithOptions(ctx, coord, paymentTaken, []byte(`{"opened":true}`),
		core.AppendOptions{ExpectedClock: core.ExpectNoEvents()})
	fmt.Println("first:", err)
	_, err = s.AppendWithOptions(ctx, coord, paymentTaken, []byte(`{"opened":true}`),
		core.AppendOptions{ExpectedClock: core.ExpectNoEvents()})
	var conflict *core.ConflictError
	fmt.Println("second:", errors.As(err, &conflict), conflict.Actual)

	// Idempotency: a retried write returns the original receipt.
	opts := core.AppendOptions{IdempotencyKey: "payment-123"}
	a, _ := s.AppendWithOptions(ctx, coord, paymentTaken, []byte(`{"amount":10}`), opts)
	b, _ := s.AppendWithOptions(ctx, coord, paymentTaken, []byte(`{"amount":10}`), opts)
	fmt.Println("same event:", a.ID == b.ID, "deduplicated:", b.Deduplicated)
	// Output:
	// first: <nil>
	// second: true last clock 0
	// same event: true deduplicated: true
}

func ExampleStore_Submit() {
	s, done := tempStore()
	defer done()
	ctx := context.Background()
	coord, _ := core.NewCoordinate("order:1", "shop")

	// Submit queues the write and returns at once; Wait collects the receipt.
	var tickets []*core.Ticket
	for i := 0; i < 3; i++ {
		t, err := s.Submit(ctx, coord, orderPlaced, []byte(fmt.Sprintf(`{"n":%d}`, i)))
		if err != nil {
			log.Fatal(err)
		}
		tickets = append(tickets, t)
	}
	for _, t := range tickets {
		r, err := t.Wait(ctx)
		fmt.Println(r.Clock, err)
	}
	// Output:
	// 0 <nil>
	// 1 <nil>
	// 2 <nil>
}

func ExampleStore_Ancestors() {
	s, done := tempStore()
	defer done()
	ctx := context.Background()
	order, _ := core.NewCoordinate("order:9", "shop")
	payment, _ := core.NewCoordinate("payment:9", "shop")

	placed, _ := s.Append(ctx, order, orderPlaced, []byte(`{"total":30}`))
	paid, _ := s.AppendReaction(ctx, payment, paymentTaken, []byte(`{"amount":30}`), placed.ID, placed.ID)
	shipped, _ := s.AppendReaction(ctx, order, orderShipped, []byte(`{}`), placed.ID, paid.ID)

	chain, _ := s.Ancestors(shipped.ID, 0)
	for _, ev := range chain {
		fmt.Println(ev.Coordinate.Entity, ev.Header.Kind, ev.Header.CorrelationID == placed.ID)
	}
	// Output:
	// order:9 0x1:0x2 true
	// payment:9 0x2:0x1 true
	// order:9 0x1:0x1 true
}

func ExampleStore_Verify() {
	s, done := tempStore()
	defer done()
	coord, _ := core.NewCoordinate("order:1", "shop")
	for i := 0; i < 5; i++ {
		s.Append(context.Background(), coord, orderPlaced, []byte(`{}`))
	}
	rep, err := s.Verify()
	fmt.Println(rep.Events, rep.Entities, err)
	// Output: 5 1 <nil>
}

// A consistent copy of a running store, which opens as a store of its
// own. Snapshot syncs the copy; SnapshotWithOptions with NoSync does not,
// for a staging copy read back at once into an archive that is synced.
func ExampleStore_Snapshot() {
	s, done := tempStore()
	defer done()
	c, _ := core.NewCoordinate("order:1", "shop")
	if _, err := s.Append(context.Background(), c, orderPlaced, []byte(`{"total_cents":998}`)); err != nil {
		log.Fatal(err)
	}
	dest, _ := os.MkdirTemp("", "batpak-snapshot-")
	defer os.RemoveAll(dest)
	rep, err := s.Snapshot(context.Background(), dest)
	if err != nil {
		log.Fatal(err)
	}
	cp, err := core.Open(core.DefaultConfig(dest))
	if err != nil {
		log.Fatal(err)
	}
	defer cp.Close()
	fmt.Println("copied events:", rep.GlobalSequence, "- the copy holds:", cp.Stats().Events)
	// Output: copied events: 1 - the copy holds: 1
}

func ExampleStore_AppendBatch() {
	s, done := tempStore()
	defer done()
	ctx := context.Background()
	order, _ := core.NewCoordinate("order:5", "shop")
	payment, _ := core.NewCoordinate("payment:5", "shop")

	// Both events become visible together, or neither does.
	receipts, err := s.AppendBatch(ctx, []core.BatchItem{
		{Coordinate: order, Kind: orderPlaced, Payload: []byte(`{"total":20}`),
			Options: core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}},
		{Coordinate: payment, Kind: paymentTaken, Payload: []byte(`{"amount":20}`),
			Causation: core.PriorItem(0)},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(receipts), receipts[1].CorrelationID == receipts[0].ID)

	// A failed expectation writes nothing and names the item.
	_, err = s.AppendBatch(ctx, []core.BatchItem{
		{Coordinate: payment, Kind: paymentTaken, Payload: []byte(`{"refund":20}`)},
		{Coordinate: order, Kind: orderPlaced, Payload: []byte(`{}`),
			Options: core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}},
	})
	var item *core.BatchItemError
	fmt.Println(errors.As(err, &item), item.Index, errors.Is(err, core.ErrConflict))
	st := s.Stats()
	fmt.Println(st.Events)
	// Output:
	// 2 true
	// true 1 true
	// 2
}

func ExampleStore_BeginFence() {
	s, done := tempStore()
	defer done()
	ctx := context.Background()
	coord, _ := core.NewCoordinate("import:1", "etl")

	fence, err := s.BeginFence(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer fence.Close() // cancels if we return before Commit

	var tickets []*core.Ticket
	for i := 0; i < 3; i++ {
		t, _ := fence.Submit(ctx, coord, orderPlaced, []byte(fmt.Sprintf(`{"row":%d}`, i)))
		tickets = append(tickets, t)
	}
	before, _ := s.Stream("import:1")
	if err := fence.Commit(ctx); err != nil {
		log.Fatal(err)
	}
	after, _ := s.Stream("import:1")
	r, _ := tickets[2].Wait(ctx)
	fmt.Println(len(before), len(after), r.Clock)
	// Output: 0 3 2
}

func ExampleOutbox() {
	s, done := tempStore()
	defer done()
	ctx := context.Background()
	coord, _ := core.NewCoordinate("cart:9", "shop")

	box := s.Outbox()
	box.Stage(coord, orderPlaced, []byte(`{"sku":"A"}`))
	box.Stage(coord, orderPlaced, []byte(`{"sku":"B"}`))
	// Staging validates at once: this never reaches the store.
	err := box.Stage(coord, orderPlaced, []byte(`{not json`))
	fmt.Println(errors.Is(err, core.ErrInvalidPayload), box.Len())

	receipts, err := box.Flush(ctx)
	fmt.Println(len(receipts), err, box.Len())
	// Output:
	// true 2
	// 2 <nil> 0
}

// The Go idiom for event-sourced state: typed kinds as constants, a state
// struct, and one apply function per kind, dispatched by Apply. No
// typestate macros or monads: a projection is a plain value.
type cartState struct {
	Items map[string]int `json:"items"`
	Total int            `json:"total"`
}

var (
	itemAdded   = core.MustKind(3, 1)
	itemRemoved = core.MustKind(3, 2)
)

type itemEvent struct {
	SKU   string `json:"sku"`
	Price int    `json:"price"`
}

type cartProjection struct{}

func (cartProjection) Name() string          { return "cart" }
func (cartProjection) SchemaVersion() uint32 { return 1 }
func (cartProjection) Kinds() []core.Kind    { return []core.Kind{itemAdded, itemRemoved} }
func (cartProjection) Init() cartState       { return cartState{Items: map[string]int{}} }

func (p cartProjection) Apply(st cartState, ev core.StoredEvent) cartState {
	var e itemEvent
	if json.Unmarshal(ev.Payload, &e) != nil {
		return st
	}
	switch ev.Header.Kind {
	case itemAdded:
		return addItem(st, e)
	case itemRemoved:
		return removeItem(st, e)
	}
	return st
}

func addItem(st cartState, e itemEvent) cartState {
	st.Items[e.SKU]++
	st.Total += e.Price
	return st
}

func removeItem(st cartState, e itemEvent) cartState {
	if st.Items[e.SKU] > 0 {
		st.Items[e.SKU]--
		st.Total -= e.Price
	}
	return st
}

func ExampleProject() {
	s, done := tempStore()
	defer done()
	ctx := context.Background()
	cart, _ := core.NewCoordinate("cart:1", "shop")
	s.Append(ctx, cart, itemAdded, []byte(`{"sku":"A","price":5}`))
	s.Append(ctx, cart, itemAdded, []byte(`{"sku":"B","price":7}`))
	s.Append(ctx, cart, itemRemoved, []byte(`{"sku":"A","price":5}`))

	st, found, err := core.Project(s, "cart:1", cartProjection{}, core.Consistent())
	fmt.Println(found, err, st.Total, st.Items["A"], st.Items["B"])
	// Output: true <nil> 7 0 1
}

func ExampleStore_Cursor() {
	s, done := tempStore()
	defer done()
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		c, _ := core.NewCoordinate(fmt.Sprintf("order:%d", i), "shop")
		s.Append(ctx, c, orderPlaced, []byte(`{}`))
	}
	cur := s.Cursor(core.All())
	for _, max := range []int{3, 3, 100, 100} {
		evs, _ := cur.Poll(max)
		fmt.Print(len(evs), " ")
	}
	fmt.Println()
	// Output: 3 3 4 0
}

func ExampleStore_SubscribeLossy() {
	s, done := tempStore()
	defer done()
	ctx := context.Background()
	sub := s.SubscribeLossy(core.Entity("order:"))
	defer sub.Close()
	for i := 0; i < 5; i++ {
		c, _ := core.NewCoordinate(fmt.Sprintf("order:%d", i), "shop")
		s.Append(ctx, c, orderPlaced, []byte(`{}`))
	}
	// Running count of notifications, first three only.
	counts := core.Scan(core.Take(sub.All(ctx), 3), 0, func(n int, _ core.Notification) int { return n + 1 })
	for n := range counts {
		fmt.Print(n, " ")
	}
	fmt.Println("dropped:", sub.Dropped())
	// Output: 1 2 3 dropped: 0
}

func ExampleStore_CursorWorker() {
	s, done := tempStore()
	defer done()
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		c, _ := core.NewCoordinate(fmt.Sprintf("order:%d", i), "shop")
		s.Append(ctx, c, orderPlaced, []byte(`{}`))
	}
	seen := 0
	w, _ := s.CursorWorker(ctx, core.Entity("order:"), core.WorkerConfig{BatchSize: 2},
		func(ctx context.Context, batch []core.StoredEvent) (core.WorkerAction, error) {
			seen += len(batch)
			if seen == 3 {
				return core.Stop, nil
			}
			return core.Continue, nil
		})
	fmt.Println(w.Join(), seen)
	// Output: <nil> 3
}
