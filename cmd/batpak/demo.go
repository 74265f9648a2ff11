package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// The demo's event kinds: category 1 is orders, category 2 payments.
const (
	categoryOrders   = 0x1
	categoryPayments = 0x2
)

var (
	kindOrderPlaced     = core.MustKind(categoryOrders, 0x1)
	kindOrderShipped    = core.MustKind(categoryOrders, 0x2)
	kindPaymentCaptured = core.MustKind(categoryPayments, 0x1)
)

var demoKindNames = map[core.Kind]string{
	kindOrderPlaced:     "OrderPlaced",
	kindOrderShipped:    "OrderShipped",
	kindPaymentCaptured: "PaymentCaptured",
}

const demoScope = "shop"

// The demo's payloads.
type (
	lineItem struct {
		SKU        string `json:"sku"`
		Name       string `json:"name"`
		Qty        int    `json:"qty"`
		PriceCents int    `json:"price_cents"`
	}
	orderPlaced struct {
		Order      string     `json:"order"`
		Customer   string     `json:"customer"`
		Items      []lineItem `json:"items"`
		TotalCents int        `json:"total_cents"`
		Currency   string     `json:"currency"`
	}
	paymentCaptured struct {
		Order       string `json:"order"`
		AmountCents int    `json:"amount_cents"`
		Currency    string `json:"currency"`
		Method      string `json:"method"`
		PSPRef      string `json:"psp_ref"`
	}
	orderShipped struct {
		Order    string `json:"order"`
		Carrier  string `json:"carrier"`
		Tracking string `json:"tracking"`
	}
)

var (
	demoCatalog = []lineItem{
		{SKU: "BAT-AA-4", Name: "AA batteries, 4-pack", PriceCents: 499},
		{SKU: "BAT-9V-2", Name: "9V batteries, 2-pack", PriceCents: 899},
		{SKU: "CHG-USB-C", Name: "USB-C charger", PriceCents: 1999},
		{SKU: "BAT-AAA-8", Name: "AAA batteries, 8-pack", PriceCents: 749},
	}
	demoCustomers = []string{"cust-ada", "cust-grace", "cust-linus", "cust-barbara", "cust-ken", "cust-margaret"}
	demoCarriers  = []string{"DHL", "UPS", "PostNL"}
	demoMethods   = []string{"card", "ideal", "paypal"}
)

func newDemoCmd(a *app) *cobra.Command {
	var orders int
	cmd := &cobra.Command{
		Use:     "demo [--orders N]",
		Short:   "Write a small causal order/payment/shipping workload",
		GroupID: "write",
		Long: `Write N orders (default 5) into the store, each a causal chain of three
events in scope "shop":

  OrderPlaced      entity order:<n>    kind 1:1  a root cause
  PaymentCaptured  entity payment:<n>  kind 2:1  caused by OrderPlaced
  OrderShipped     entity order:<n>    kind 1:2  caused by PaymentCaptured

All three share the OrderPlaced event's id as their correlation id. Then it
prints the last shipment's ancestors (shipped <- payment <- placed) and the
store's statistics.

Running demo again on the same store adds N new orders: numbering continues
after the highest order:<n> or payment:<n> entity already in the store. Each
order's first event and each payment are written with an "entity has no
events" expectation and the shipment with "order is at clock 0", so a
numbering collision (say, a hand-written order:7) fails loudly instead of
mixing two orders; the payment also carries an idempotency key, as a
payment provider's capture call would.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if orders < 1 {
				return badInput("--orders", fmt.Errorf("%d: want at least 1", orders))
			}
			s, res, ctx, err := a.openWrite(cmd.Context())
			if err != nil {
				return err
			}
			defer closeStore(s, &err)
			w := cmd.OutOrStdout()

			last, err := highestOrderNumber(s)
			if err != nil {
				return err
			}
			first := last + 1
			already := ""
			if last > 0 {
				already = fmt.Sprintf(", continuing after order:%d", last)
			}
			fmt.Fprintf(w, "demo: writing %s to %s (order:%d..order:%d%s)\n\n",
				plural(orders, "order", "orders"), res.cfg.Dir, first, first+orders-1, already)

			const shown = 10
			var chain demoOrder
			for i := range orders {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted after %d of %d orders (%d events written): %w", i, orders, 3*i, ctx.Err())
				}
				chain, err = writeDemoOrder(ctx, s, first+i)
				var den *policy.Denial
				switch {
				case errors.As(err, &den):
					return fmt.Errorf("order:%d: %w", first+i, denialError(den))
				case err != nil:
					return fmt.Errorf("order:%d: %w", first+i, err)
				}
				if i < shown {
					fmt.Fprintf(w, "  %s\n", chain.summary)
				} else if i == shown {
					fmt.Fprintf(w, "  ... and %d more\n", orders-shown)
				}
			}
			fmt.Fprintf(w, "\nwrote %d events: %s × (OrderPlaced → PaymentCaptured → OrderShipped)\n\n", 3*orders, plural(orders, "order", "orders"))

			anc, err := s.Ancestors(chain.shipped.ID, 0)
			if err != nil {
				return err
			}
			if err := printChain(w, anc); err != nil {
				return err
			}

			st := s.Stats()
			synced := plural(int(st.Fsyncs), "fsync", "fsyncs") + " so far"
			if st.Fsyncs == 0 {
				synced = "synced to disk as the demo closes the store"
			}
			fmt.Fprintf(w, "\nstore: %s, %s, %s, %s; %s\n",
				plural(int(st.Events), "event", "events"), plural(st.Entities, "entity", "entities"),
				plural(st.Segments, "segment", "segments"), humanBytes(st.Bytes), synced)
			dirFlag := ""
			if a.flagChanged("data-dir") {
				dirFlag = " --data-dir " + shellQuote(res.cfg.Dir)
			}
			self := selfCommand(os.Args[0])
			fmt.Fprintf(w, "\n%s ancestors %s%s walks that chain again.\n", self, chain.shipped.ID, dirFlag)
			_, err = fmt.Fprintf(w, "try: %s query --entity-prefix order: -o json%s\n", self, dirFlag)
			return err
		},
	}
	cmd.Flags().IntVar(&orders, "orders", 5, "number of orders to write (3 events each)")
	return cmd
}

var orderNumberRE = regexp.MustCompile(`^(?:order|payment):([0-9]+)$`)

// highestOrderNumber finds the largest n of an order:<n> or payment:<n>
// entity in the store (0 when there is none).
func highestOrderNumber(s *core.Store) (int, error) {
	highest := 0
	for _, prefix := range []string{"order:", "payment:"} {
		// Clock 0 only: one event per entity is enough to learn its name.
		evs, err := s.Query(core.Entity(prefix).WithClockRange(0, 0))
		if err != nil {
			return 0, err
		}
		for _, ev := range evs {
			m := orderNumberRE.FindStringSubmatch(ev.Coordinate.Entity)
			if m == nil {
				continue
			}
			if n, err := strconv.Atoi(m[1]); err == nil && n > highest {
				highest = n
			}
		}
	}
	return highest, nil
}

// demoOrder is what writeDemoOrder wrote.
type demoOrder struct {
	placed, payment, shipped core.Receipt
	summary                  string
}

// writeDemoOrder writes order n's causal chain: placed → payment → shipped.
func writeDemoOrder(ctx context.Context, s *core.Store, n int) (demoOrder, error) {
	var out demoOrder
	orderEntity, paymentEntity := fmt.Sprintf("order:%d", n), fmt.Sprintf("payment:%d", n)
	orderAt, err := core.NewCoordinate(orderEntity, demoScope)
	if err != nil {
		return out, err
	}
	paymentAt, err := core.NewCoordinate(paymentEntity, demoScope)
	if err != nil {
		return out, err
	}

	item := demoCatalog[n%len(demoCatalog)]
	item.Qty = 1 + n%3
	placed := orderPlaced{
		Order: orderEntity, Customer: demoCustomers[n%len(demoCustomers)],
		Items: []lineItem{item}, TotalCents: item.Qty * item.PriceCents, Currency: "EUR",
	}
	out.placed, err = appendJSON(ctx, s, orderAt, kindOrderPlaced, placed, core.AppendOptions{
		ExpectedClock: core.ExpectNoEvents(),
	})
	if err != nil {
		return out, err
	}
	// A root event's correlation id is its own id (core's default); the
	// reactions join that conversation.
	conversation := out.placed.ID

	out.payment, err = appendJSON(ctx, s, paymentAt, kindPaymentCaptured, paymentCaptured{
		Order: orderEntity, AmountCents: placed.TotalCents, Currency: placed.Currency,
		Method: demoMethods[n%len(demoMethods)], PSPRef: fmt.Sprintf("psp_%08x", uint32(n)*2654435761),
	}, core.AppendOptions{
		ExpectedClock:  core.ExpectNoEvents(),
		IdempotencyKey: "demo:capture:" + orderEntity,
		CorrelationID:  conversation,
		CausationID:    out.placed.ID,
	})
	if err != nil {
		return out, err
	}

	carrier := demoCarriers[n%len(demoCarriers)]
	out.shipped, err = appendJSON(ctx, s, orderAt, kindOrderShipped, orderShipped{
		Order: orderEntity, Carrier: carrier, Tracking: fmt.Sprintf("%s%010d", strings.ToUpper(carrier[:2]), 7919*n),
	}, core.AppendOptions{
		ExpectedClock: core.ExpectClock(out.placed.Clock),
		CorrelationID: conversation,
		CausationID:   out.payment.ID,
	})
	if err != nil {
		return out, err
	}
	out.summary = fmt.Sprintf("%-9s placed by %s: %d × %s (%d.%02d EUR) → %s captured → shipped with %s",
		orderEntity, placed.Customer, item.Qty, item.Name, placed.TotalCents/100, placed.TotalCents%100, paymentEntity, carrier)
	return out, nil
}

func appendJSON(ctx context.Context, s *core.Store, at core.Coordinate, k core.Kind, v any, opts core.AppendOptions) (core.Receipt, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return core.Receipt{}, err
	}
	return s.AppendWithOptions(ctx, at, k, payload, opts)
}

// printChain prints an Ancestors result: the event first, then its causes.
func printChain(w io.Writer, anc []core.StoredEvent) error {
	if len(anc) == 0 {
		return nil
	}
	names := make([]string, len(anc))
	for i, ev := range anc {
		names[i] = demoKindNames[ev.Header.Kind]
	}
	fmt.Fprintf(w, "ancestors of the last shipment (%s):\n", strings.Join(names, " ← "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, ev := range anc {
		h := ev.Header
		arrow := "  "
		if i > 0 {
			arrow = "← "
		}
		note := ""
		if h.CausationID.IsZero() {
			note = "  (root cause)"
		}
		fmt.Fprintf(tw, "  %s%s\t%s\t%s\tclock %d\tseq %d\t%s%s\n",
			arrow, names[i], ev.Coordinate.Entity, h.Kind, h.Clock, ev.GlobalSequence, h.ID, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "  all three carry correlation id %s\n", anc[0].Header.CorrelationID)
	return err
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:@%+=,-]+$`)

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// selfCommand is how the user can run this command again: "batpak" when
// that name on $PATH is this program, "go run ./cmd/batpak" for a binary
// go run built (in the build cache), otherwise the path it was started
// by.
func selfCommand(arg0 string) string {
	if p, err := exec.LookPath("batpak"); err == nil {
		if self, err := os.Executable(); err == nil && sameFile(p, self) {
			return "batpak"
		}
	}
	if strings.Contains(filepath.ToSlash(arg0), "/go-build") {
		return "go run ./cmd/batpak"
	}
	return shellQuote(arg0)
}

// sameFile reports whether paths a and b name the same file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}
