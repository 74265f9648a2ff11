package main

import "github.com/batpak-go/batpak/sdk/guest"

func init() {
	guest.Projection(func(state []byte, events guest.Batch) ([]byte, error) {
		n := guest.Uint64(state)
		err := events.Events(func(_ int, e guest.Event) bool { n++; return true })
		return guest.PutUint64(n), err
	})
}

func main() {}
