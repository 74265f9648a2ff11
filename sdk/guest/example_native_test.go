package guest_test

import (
	"fmt"
	"strconv"

	"github.com/batpak-go/batpak/sdk/guest"
)

// orderTotal is a plugin's fold as its main.go would hold it: the sum of
// the total_cents of the OrderPlaced (1:1) events, as a decimal string.
// The plugin registers it from init with guest.Projection(orderTotal).
func orderTotal(state []byte, events guest.Batch) ([]byte, error) {
	total, _ := strconv.ParseInt(string(state), 10, 64) // empty the first time: 0
	err := events.Events(func(_ int, e guest.Event) bool {
		if e.Kind() == guest.Kind(1, 1) {
			if raw, ok := guest.Field(e.Payload(), "total_cents"); ok {
				n, _ := strconv.ParseInt(string(raw), 10, 64)
				total += n
			}
		}
		return true
	})
	return strconv.AppendInt(nil, total, 10), err
}

// A plugin's fold unit-tested natively (go test, no wasm build, no host):
// BatchOf encodes the events as the host sends them, CallProjection calls
// the registered fold as the host's call into the module does. In a
// plugin's main_test.go the same lines go in a Test function.
func Example_testingAFoldNatively() {
	guest.Projection(orderTotal) // the plugin's init does this

	placed, shipped := guest.Kind(1, 1), guest.Kind(1, 2)
	state, err := guest.CallProjection(nil, guest.BatchOf(
		guest.EventRecord{Seq: 1, Kind: placed, Entity: []byte("order:1"), Payload: []byte(`{"total_cents":998}`)},
		guest.EventRecord{Seq: 2, Kind: shipped, Entity: []byte("order:1"), Payload: []byte(`{}`)},
	))
	fmt.Println(string(state), err)

	// The next call gets the state the last one returned.
	state, err = guest.CallProjection(state, guest.BatchOf(
		guest.EventRecord{Seq: 3, Kind: placed, Entity: []byte("order:2"), Payload: []byte(`{"total_cents":1}`)},
	))
	fmt.Println(string(state), err)
	// Output:
	// 998 <nil>
	// 999 <nil>
}
