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
// slices into them, valid during the call). Decoding payloads costs far
// more inside the sandbox than outside it; measured here per event, with
// the host's interruptible calls: encoding/json ~75 µs, gjson ~11 µs, a
// hand-rolled field scan ~7 µs, reading only the fixed fields (kind,
// clock, ids) well under 1 µs. Read the fields you need with String, Int
// or Float64 (the value decoded) or Field (its raw JSON), which match
// names exactly as a write policy does (encoding/json matches them
// case-insensitively). A panic in plugin code is returned to the host as an
// error; the plugin has no files, network, environment, clock or random
// source unless its manifest grants them.
//
// Only the module's exports and the host's log import need GOOS=wasip1:
// the rest of the package is plain Go, so a plugin's main package (with
// no build constraint) compiles natively too, and go test can run its
// fold or handler on the host's machine. BatchOf builds the batch the
// host would send, CallProjection and CallHandler call what init
// registered as the host's call into the module does, and Log writes to
// standard error (see Example (TestingAFoldNatively)).
package guest
