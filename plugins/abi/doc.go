// Package abi is batpak's plugin ABI, version 1: the names a WebAssembly
// plugin exports and imports, and the byte layouts of what crosses the
// boundary. The host (package plugins) and the Go guest SDK (sdk/guest)
// both use it; it has no dependencies, so it compiles for GOOS=wasip1 too.
// Any language that can export these functions can be a plugin.
//
// # Exports and imports
//
//	batpak_abi_version() -> i32          must return Version (1); checked at load
//	batpak_alloc(size i32) -> i32        a guest buffer of size bytes for the host to fill
//	batpak_fold(state_ptr, state_len, batch_ptr, batch_len i32) -> i64
//	                                     projection plugins: the new state
//	batpak_handle(batch_ptr, batch_len i32) -> i64
//	                                     handler plugins: continue/stop and reactions
//	import "batpak" "log"(level, ptr, len i32)
//	                                     the one host function: a log line (level 0 debug,
//	                                     1 info, 2 warn, 3 error)
//
// A Go guest built with -buildmode=c-shared also exports _initialize,
// which the host runs first. The host calls batpak_alloc for each input
// it passes, writes the bytes, then calls fold or handle. Inputs are valid
// until the call returns. The i64 result packs a pointer and a length into
// guest memory (see PackResult): the bytes of the new state, the handler
// output, or — with the error bit set — a UTF-8 error message.
//
// # Event batch (little-endian)
//
//	batch  = count u32 | event × count
//	event  = size u32 (bytes after this field) |
//	         global sequence u64 | clock u64 | timestamp µs i64 |
//	         kind u16 | flags u16 | id [16] | correlation id [16] | causation id [16] |
//	         entity length u16 | scope length u16 | payload length u32 |
//	         entity | scope | payload (JSON)
//
// The fixed part after size is EventFixed (84) bytes. Kind is category <<
// 12 | type.
//
// # Handler output
//
//	output   = action u32 (0 continue, 1 stop) | count u32 | reaction × count
//	reaction = source u32 (index in the batch of the event it reacts to) |
//	           kind u16 | entity length u16 | scope length u16 | reserved u16 |
//	           payload length u32 | entity | scope | payload (JSON)
//
// The host writes each reaction with correlation = the source event's
// correlation id and causation = the source event's id, through the
// store's write gates.
package abi
