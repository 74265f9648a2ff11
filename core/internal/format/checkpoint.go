package format

// The index checkpoint, "index.ckpt": the whole in-memory index, written
// at Close with its watermark (where the log stood). Integers are
// little-endian.
//
//	"BPCKPT01" | watermark segment u32 | watermark offset u64 | entries u32 |
//	segments u32 × (id u32, data end u64) |
//	entities u32 × (name length u16, name, exists u8, clock u64, ts i64, hash [32]) |
//	scopes u32 × (name length u16, name) |
//	entries × (id [16], segment u32, offset u32, entity u32, scope u32, clock u64, kind u16, flags u8) |
//	idempotency keys u32 × (length u16, key, sequence u32) |
//	CRC32C of all before it u32
const (
	CheckpointName  = "index.ckpt"
	CheckpointMagic = "BPCKPT01"
	// CheckpointHeaderSize is the fixed part before the segment list:
	// magic, watermark segment, watermark offset, entries.
	CheckpointHeaderSize = 8 + 4 + 8 + 4
	// CheckpointSegmentSize is one item of the segment list (id, data end).
	CheckpointSegmentSize = 4 + 8
)
