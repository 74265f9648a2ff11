// Package jsonfield reads one top-level field of a JSON object without
// decoding the rest: a single forward scan, no allocation. The example
// plugins use it because, inside a wasip1 Go guest run by this host,
// decoding a payload with encoding/json costs ~75 µs per event, gjson
// ~10 µs and this scan ~5.5 µs (see sdk/guest/README.md).
// The native twins in nativeprojections use it too, so a parity test
// compares the plugin machinery, not two JSON readers.
//
// It reads fields exactly as the store's policies see them (see Lookup),
// and trusts its input to be JSON (event payloads are validated when
// written): on malformed input it reports the field missing rather than
// an error.
package jsonfield
