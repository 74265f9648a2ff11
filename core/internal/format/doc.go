// Package format holds the byte layouts of a store's files and nothing
// else: record frames, event and marker records, segment file headers and
// names, the frame scan that finds where a segment's data ends, segment
// footers (footer.go) and the index checkpoint's layout (checkpoint.go).
// Packed (compressed) segments are core/internal/segment's, which owns the
// compression. It does
// no I/O and knows no store types (ids are [16]byte, hashes [32]byte,
// kinds uint16); package core converts. Tests import it to build and damage
// files instead of re-implementing the layouts. Integers are little-endian.
//
//	segment file
//	+----------------------------+---------+---------+-----+---------+------------------+
//	| header (32 bytes)          | frame 0 | frame 1 | ... | frame n | zeros (prealloc) |
//	+----------------------------+---------+---------+-----+---------+------------------+
//	header: magic "BPAKSEG\0" (8) | version u16 = 1 | flags u16 | segment id u64 |
//	        CRC32C of bytes 0..20 u32 | zero (8)
//
//	frame
//	+------------+---------------------------------------+----------------------+
//	| length u32 | CRC32C(length bytes ‖ record) u32     | record (length bytes) |
//	+------------+---------------------------------------+----------------------+
//
//	event record (type 1): fixed 192 bytes, then variable parts
//	  0  type u8 = 1        1 system flags u8     2 reserved u16     4 payload length u32
//	  8  event hash [32]    BLAKE3(record[40 : end of idempotency key])
//	 40  kind u16           42 user flags u16     44 entity length u16
//	 46  scope length u16   48 idempotency key length u16            50 reserved [6]
//	 56  global sequence u64                      64 clock u64
//	 72  timestamp µs i64   80 id [16]            96 correlation id [16]
//	112  causation id [16] 128 payload hash [32] = BLAKE3(payload)
//	160  previous hash [32] = event hash of the entity's previous event (zero for its first)
//	192  entity | scope | idempotency key | payload (JSON)
//	system flags: bit 0 batch item, bit 1 written under a fence,
//	              bit 2 payload erased, bit 3 removed by compaction (stub)
//
//	marker record (16 bytes): type u8 | zero [3] | count u32 | id u64
//	  type 2 batch begin   count = items, id = the batch's first global sequence
//	  type 3 batch commit  same count and id
//	  type 4 fence begin   id = fence number
//	  type 5 fence commit  type 6 fence cancel
//
// Segment files are named "<20-digit id>.seg", or "<id>.<generation>.seg"
// once compaction or packing rewrote them (SegmentName).
package format
