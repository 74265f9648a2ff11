//go:build !wasip1

package nativeprojections

import (
	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/sdk/guest"
)

// The order kinds the examples use.
var (
	KindOrderPlaced       = core.MustKind(1, 1) // {"total_cents": N, ...}
	KindOrderRefunded     = core.MustKind(1, 3) // {"amount_cents": N, ...}
	KindShipmentRequested = core.MustKind(4, 1) // written by the shipper plugin
)

// OrderTotals is the state of OrderTotal. Its JSON encoding is
// byte-identical to the order-total plugin's state.
type OrderTotals struct {
	Orders        int64 `json:"orders"`
	TotalCents    int64 `json:"total_cents"`
	RefundedCents int64 `json:"refunded_cents"`
}

// OrderTotal is the native twin of examples/plugins/order-total: it folds
// OrderPlaced (orders += 1, total_cents += payload total_cents) and
// OrderRefunded (refunded_cents += payload amount_cents). It reads
// fields as the plugin does (guest.Int): a missing or non-numeric
// field counts as 0, a fractional one is truncated.
type OrderTotal struct {
	// Only restricts the kinds folded, as plugins.Projection.Only does.
	// Nil means all kinds (the fold ignores the ones it does not know).
	Only []core.Kind
}

var _ core.Projection[OrderTotals] = OrderTotal{}

// Name implements core.Projection.
func (OrderTotal) Name() string { return "native:order-total" }

// SchemaVersion implements core.Projection.
func (OrderTotal) SchemaVersion() uint32 { return 1 }

// Kinds implements core.Projection.
func (p OrderTotal) Kinds() []core.Kind { return p.Only }

// Init implements core.Projection.
func (OrderTotal) Init() OrderTotals { return OrderTotals{} }

// Apply implements core.Projection.
func (OrderTotal) Apply(s OrderTotals, ev core.StoredEvent) OrderTotals {
	switch ev.Header.Kind {
	case KindOrderPlaced:
		n, _ := guest.Int(ev.Payload, "total_cents")
		s.Orders++
		s.TotalCents += n
	case KindOrderRefunded:
		n, _ := guest.Int(ev.Payload, "amount_cents")
		s.RefundedCents += n
	}
	return s
}

// SupportsIncremental implements core.Incremental.
func (OrderTotal) SupportsIncremental() bool { return true }

// Counter is the native twin of examples/plugins/counter: the number of
// events folded.
type Counter struct{}

var _ core.Projection[uint64] = Counter{}

// Name implements core.Projection.
func (Counter) Name() string { return "native:counter" }

// SchemaVersion implements core.Projection.
func (Counter) SchemaVersion() uint32 { return 1 }

// Kinds implements core.Projection.
func (Counter) Kinds() []core.Kind { return nil }

// Init implements core.Projection.
func (Counter) Init() uint64 { return 0 }

// Apply implements core.Projection.
func (Counter) Apply(n uint64, _ core.StoredEvent) uint64 { return n + 1 }

// SupportsIncremental implements core.Incremental.
func (Counter) SupportsIncremental() bool { return true }
