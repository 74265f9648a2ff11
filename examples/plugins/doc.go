// Package examples holds the tests of the example plugins beside it:
// counter (Go), order-total (Go, reads payload fields as the policy does),
// shipper (a Go handler), c-counter (freestanding C), and the native Go
// twins in nativeprojections they are compared with. Each example directory
// is a plugin with its manifest.json; `go test ./examples/plugins` builds
// and runs them all.
package examples
