// Package guest is what a batpak plugin written in Go imports. Build the
// plugin with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o plugin.wasm .
//
// (or `batpak plugin build DIR`). The package exports the ABI functions
// (see plugins/abi) for you; register your code from init:
//
//	func init() {
//		guest.Projection(func(state []byte, events guest.Batch) ([]byte, error) {
//			n := guest.Uint64(state)
//			events.Events(func(_ int, e guest.Event) bool { n++; return true })
//			return guest.PutUint64(n), nil
//		})
//	}
//
//	func main() {}
//
// Events are zero-copy views over the host's bytes (Entity, Payload, … are
// slices into them, valid during the call). Decoding a payload with
// encoding/json inside a Go guest costs ~30 µs per event against ~1 µs for
// reading fields; read fields (or use a small parser such as gjson) where
// speed matters. A panic in plugin code is returned to the host as an
// error; the plugin has no files, network, environment, clock or random
// source unless its manifest grants them.
package guest
