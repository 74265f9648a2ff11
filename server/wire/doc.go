// Package wire holds the JSON shapes of the batpak server's HTTP API and the
// parsing every request goes through: bounded, strict JSON decoding
// (Decode), event kinds ("1:1" or a number, ParseKind), regions (from a
// query string or a stored control.Region, ParseRegion) and the mapping of
// append requests onto core's write calls (AppendRequest.Item).
//
// Decoding contract (Decode):
//   - the body must be UTF-8 (invalid bytes: *Error with Code INVALID_JSON);
//   - arrays and objects may nest at most the given depth (the envelope
//     included); deeper: INVALID_JSON naming the limit, refused before
//     encoding/json sees it;
//   - exactly one JSON value; unknown fields are refused (INVALID_REQUEST
//     naming the field), as are values of the wrong type (naming the field).
//
// Event JSON (responses, export lines, SSE data):
//
//	{"id":"0190…","global_sequence":7,"entity":"order:1","scope":"shop","kind":"1:1","clock":0,
//	 "timestamp":"2026-…Z","timestamp_us":…,"correlation_id":"…","causation_id":null,
//	 "idempotency_key":null,"flags":0,"payload":{…},"redacted":false}
//
// Nothing here touches a store; the package depends only on core and
// server/control types.
package wire
