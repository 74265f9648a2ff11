package main

import (
	"testing"

	"github.com/batpak-go/batpak/sdk/guest"
)

// The fold tested natively (go test ./examples/plugins/order-total): init
// has registered it, guest.BatchOf builds the batch the host would send.
// examples_test.go checks the built module against its native twin.
func TestFoldTotalsOrdersAndRefunds(t *testing.T) {
	ev := func(seq uint64, kind uint16, payload string) guest.EventRecord {
		return guest.EventRecord{Seq: seq, Kind: kind, Entity: []byte("order:1"), Scope: []byte("shop"), Payload: []byte(payload)}
	}
	state, err := guest.CallProjection(nil, guest.BatchOf(
		ev(1, kindOrderPlaced, `{"total_cents":998}`),
		ev(2, guest.Kind(1, 2), `{"total_cents":5}`),      // shipped: not folded
		ev(3, kindOrderRefunded, `{"amount_cents":"12"}`), // not a number: 0
	))
	if want := `{"orders":1,"total_cents":998,"refunded_cents":0}`; err != nil || string(state) != want {
		t.Fatalf("first batch: %s, %v; want %s", state, err, want)
	}
	state, err = guest.CallProjection(state, guest.BatchOf(
		ev(4, kindOrderPlaced, `{"total_cents":1.9}`), // truncated
		ev(5, kindOrderRefunded, `{"amount_cents":250}`),
	))
	if want := `{"orders":2,"total_cents":999,"refunded_cents":250}`; err != nil || string(state) != want {
		t.Fatalf("second batch: %s, %v; want %s", state, err, want)
	}
}
