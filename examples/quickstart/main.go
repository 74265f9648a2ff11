package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Event kinds are part of your domain: a 4-bit category and a 12-bit type.
// Categories 0 and 0xD are reserved for batpak.
const (
	categoryOrders   = 1
	categoryPayments = 2
)

var (
	orderPlaced     = core.MustKind(categoryOrders, 1)
	orderShipped    = core.MustKind(categoryOrders, 2)
	paymentCaptured = core.MustKind(categoryPayments, 1)
)

var kindNames = map[core.Kind]string{
	orderPlaced:     "OrderPlaced",
	orderShipped:    "OrderShipped",
	paymentCaptured: "PaymentCaptured",
}

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	// 1. Open a store. A store is a directory; DefaultConfig documents every
	// default (256 MiB segments, fsync every 1000 events or 1s, ...).
	dir, err := os.MkdirTemp("", "batpak-quickstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		return err
	}
	defer s.Close() // a no-op after the explicit Close below
	fmt.Printf("opened a store in %s\n\n", dir)

	// 2. Append a root event. A coordinate is entity (the stream whose clock
	// and hash chain the event extends) plus scope (the partition it is
	// filed under). The payload is JSON.
	order, err := core.NewCoordinate("order:42", "shop")
	if err != nil {
		return err
	}
	payment, err := core.NewCoordinate("payment:42", "shop")
	if err != nil {
		return err
	}
	placed, err := s.Append(ctx, order, orderPlaced,
		[]byte(`{"customer":"cust-ada","items":[{"sku":"BAT-AA-4","qty":2}],"total_cents":998}`))
	if err != nil {
		return err
	}
	fmt.Printf("appended OrderPlaced     to %-20s id %s  seq %d  clock %d\n", order, placed.ID, placed.GlobalSequence, placed.Clock)

	// 3. Append reactions. A root event's correlation id is its own id; the
	// events it causes carry that correlation (the conversation) and name
	// their direct cause as causation.
	conversation := placed.ID
	paid, err := s.AppendReaction(ctx, payment, paymentCaptured,
		[]byte(`{"amount_cents":998,"method":"card"}`), conversation, placed.ID)
	if err != nil {
		return err
	}
	fmt.Printf("appended PaymentCaptured to %-20s id %s  seq %d  clock %d  (caused by OrderPlaced)\n", payment, paid.ID, paid.GlobalSequence, paid.Clock)

	// AppendWithOptions adds compare-and-set and idempotency: ship only if
	// the order is still at clock 0 (nobody changed it since it was placed).
	shipped, err := s.AppendWithOptions(ctx, order, orderShipped, []byte(`{"carrier":"DHL"}`), core.AppendOptions{
		ExpectedClock: core.ExpectClock(placed.Clock),
		CorrelationID: conversation,
		CausationID:   paid.ID,
	})
	if err != nil {
		return err
	}
	fmt.Printf("appended OrderShipped    to %-20s id %s  seq %d  clock %d  (caused by PaymentCaptured; expected clock %d held)\n", order, shipped.ID, shipped.GlobalSequence, shipped.Clock, placed.Clock)

	// The same expectation again fails: the order is at clock 1 now. A
	// conflict writes nothing; the caller reads the entity and decides.
	_, err = s.AppendWithOptions(ctx, order, orderShipped, []byte(`{"carrier":"UPS"}`), core.AppendOptions{
		ExpectedClock: core.ExpectClock(placed.Clock),
	})
	if !errors.Is(err, core.ErrConflict) {
		return fmt.Errorf("a second ship at clock %d: %v, want a conflict", placed.Clock, err)
	}
	fmt.Printf("compare-and-set: shipping again at clock %d is refused: %v\n\n", placed.Clock, err)

	// 4. Query: a Region selects events by entity prefix, scope, kind,
	// category and clock range; results come in global order.
	orders, err := s.Query(core.Scope("shop").WithCategory(categoryOrders))
	if err != nil {
		return err
	}
	fmt.Printf("query scope=shop category=orders: %d events\n", len(orders))
	for _, ev := range orders {
		fmt.Printf("  seq %d  %-15s %-10s %s\n", ev.GlobalSequence, kindNames[ev.Header.Kind], ev.Coordinate.Entity, ev.Payload)
	}

	// 5. Stream: one entity's events in clock order.
	stream, err := s.Stream("order:42")
	if err != nil {
		return err
	}
	fmt.Printf("\nstream order:42: %d events\n", len(stream))
	for _, ev := range stream {
		fmt.Printf("  clock %d  %-15s at %s\n", ev.Header.Clock, kindNames[ev.Header.Kind], formatMicros(ev.Header.Timestamp))
	}

	// 6. Ancestors: walk causation back from the shipment to its root cause.
	chain, err := s.Ancestors(shipped.ID, 0)
	if err != nil {
		return err
	}
	fmt.Printf("\nancestors of OrderShipped (why did this happen?):\n")
	for i, ev := range chain {
		arrow := "   "
		if i > 0 {
			arrow = " ← "
		}
		same := "same conversation"
		if ev.Header.CorrelationID != conversation {
			same = "other conversation"
		}
		fmt.Printf("  %s%-15s %-10s (%s)\n", arrow, kindNames[ev.Header.Kind], ev.Coordinate.Entity, same)
	}

	// 7. Verify re-checks every checksum and hash-chain link from disk.
	rep, err := s.Verify()
	if err != nil {
		return err
	}
	fmt.Printf("\nverify: %d events in %d entities, hash chains intact\n", rep.Events, rep.Entities)

	// 8. Close drains the writer, syncs and releases the directory lock.
	if err := s.Close(); err != nil {
		return err
	}
	fmt.Println("closed the store")
	return nil
}

// formatMicros renders an event timestamp (microseconds since the epoch).
func formatMicros(us int64) string {
	return time.UnixMicro(us).UTC().Format("2006-01-02T15:04:05.000000Z")
}
