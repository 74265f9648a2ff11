package format

// The index checkpoint, "index.ckpt": the whole in-memory index, written
// at Close with its watermark (where the log stood). Integers are
// little-endian.
//
//	"BPCKPT02" | watermark segment u32 | watermark offset u64 | entries u32 |
//	segments u32 × (id u32, data end u64) |
//	entities u32 × (name length u16, name, exists u8, clock u64, ts i64, hash [32]) |
//	scopes u32 × (name length u16, name) |
//	entries × (id [16], segment u32, offset u32, entity u32, scope u32, clock u64, kind u16, flags u8,
//	           newest child u32, next sibling u32) |
//	idempotency keys u32 × (length u16, key, sequence u32) |
//	correlation groups u32 × (correlation id [16], members u32, sequence u32 × members) |
//	CRC32C of all before it u32
const (
	CheckpointName = "index.ckpt"
	// CheckpointMagic names the layout; a checkpoint of an earlier layout
	// ("BPCKPT01", without causal links) is ignored and the log read.
	CheckpointMagic = "BPCKPT02"
	// CheckpointMagicV1 is the earlier layout's magic.
	CheckpointMagicV1 = "BPCKPT01"
	// CheckpointHeaderSize is the fixed part before the segment list:
	// magic, watermark segment, watermark offset, entries.
	CheckpointHeaderSize = 8 + 4 + 8 + 4
	// CheckpointSegmentSize is one item of the segment list (id, data end).
	CheckpointSegmentSize = 4 + 8
)
