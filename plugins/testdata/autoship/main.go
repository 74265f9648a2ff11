//go:build wasip1

// Command autoship is a test plugin: a handler that answers each
// OrderPlaced event (kind 1:1) with an OrderShipped event (kind 1:2) on the
// same entity and scope, payload {"carrier":"DHL"}. Reactions land in the
// tenant of the order, so the tests can show a tenant's plugin admitted
// into its own tenant and refused in another. The plugin tests build it
// from source.
package main

import "github.com/batpak-go/batpak/sdk/guest"

var (
	kindOrderPlaced  = guest.Kind(1, 1)
	kindOrderShipped = guest.Kind(1, 2)
)

func init() {
	guest.Handler(func(events guest.Batch) (guest.Action, []guest.Reaction, error) {
		var rs []guest.Reaction
		err := events.Events(func(i int, e guest.Event) bool {
			if e.Kind() == kindOrderPlaced {
				rs = append(rs, guest.Reaction{
					Source: uint32(i), Kind: kindOrderShipped,
					Entity: e.Entity(), Scope: e.Scope(), Payload: []byte(`{"carrier":"DHL"}`),
				})
			}
			return true
		})
		return guest.Continue, rs, err
	})
}

func main() {}
