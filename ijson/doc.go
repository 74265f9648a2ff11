// Package ijson checks and reads JSON the way batpak's store accepts it
// and its policies read it.
//
// The store accepts an event payload when it is exactly one JSON value
// (RFC 8259) in valid UTF-8, nested no deeper than a limit, whose objects
// never repeat a member name (I-JSON, RFC 7493 section 2.3). Member names
// are compared after decoding escapes exactly as encoding/json decodes
// them — the decoder the policy input is built with — so "a" and "\u0061"
// are one name, and an unpaired surrogate escape (\ud800) reads as U+FFFD,
// like a literal U+FFFD. Validate checks all of it in one pass without
// recursion: time linear in the input; memory proportional to the nesting
// depth plus the member names of the objects open at once (names without
// escapes are not copied).
//
// Lookup and Unquote read members with the same decoding, so a plugin
// reading a payload field sees what the policy saw.
//
// The package uses only the standard library and builds for every GOOS,
// wasip1 guests included.
package ijson
