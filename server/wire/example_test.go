package wire_test

import (
	"fmt"

	"github.com/batpak-go/batpak/server/wire"
)

func ExampleDecode() {
	body := []byte(`{"entity":"order:1","scope":"shop","kind":"1:1","payload":{"total":5},"colour":"red"}`)
	var req wire.AppendRequest
	err := wire.Decode(body, &req, 512)
	fmt.Println(err)
	// Output: colour: unknown field "colour"
}
