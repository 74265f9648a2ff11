package core

import (
	"log/slog"
	"time"

	"github.com/batpak-go/batpak/core/internal/vfs"
)

// SyncMode chooses the system call that makes writes durable.
type SyncMode uint8

const (
	// SyncData uses fdatasync: file data and the metadata needed to read it
	// back (size). The default. On macOS it is fsync, which does not flush
	// the drive's cache (see Platforms in the package doc).
	SyncData SyncMode = iota
	// SyncAll uses fsync: data and all file metadata (timestamps too). On
	// macOS it is F_FULLFSYNC, which also flushes the drive's cache.
	SyncAll
)

func (m SyncMode) String() string {
	if m == SyncAll {
		return "all"
	}
	return "data"
}

// SyncConfig says when the writer forces written events to stable storage.
// Whatever the setting, an event is written to the operating system (so it
// survives the process being killed) before its receipt is returned; the
// setting bounds what an operating-system crash or power loss can lose.
// See the package documentation's durability table.
type SyncConfig struct {
	// EveryNEvents: fsync once at least this many events were written since
	// the last fsync. 1 means every receipt is returned only after its event
	// is on stable storage (group commit makes this cheap under concurrency).
	// 0 disables count-based syncing. Default 1000; range 0..1<<20.
	EveryNEvents int
	// Interval: fsync at most this long after an unsynced write, even when
	// EveryNEvents was not reached. 0 disables. Default 1s; range 0..1h.
	Interval time.Duration
	// Mode: SyncData (fdatasync, default) or SyncAll (fsync).
	Mode SyncMode
}

// BatchConfig bounds atomic batches and sets group commit.
type BatchConfig struct {
	// MaxSize is the most items one batch may hold. Default 256; range 1..4096.
	MaxSize int
	// MaxBytes bounds the sum of a batch's payload sizes. Default 1 MiB;
	// range 1..16 MiB.
	MaxBytes int
	// GroupCommitMaxBatch is how many queued writes the writer may cover
	// with one write call and one fsync: 1 turns group commit off (every
	// write is written, and synced if the sync setting says so, alone),
	// N > 1 coalesces up to N, 0 (the default) takes everything queued.
	// Range 0..1<<20.
	//
	// Idempotency keys are not required for correctness in any mode: a
	// receipt is returned only after the writes of its group are written
	// (and synced, if configured), and a failed group fails every ticket in
	// it and publishes nothing. They are what makes a retry after an error
	// safe, though, in every mode: a write whose fsync failed may still be
	// on disk and come back on reopen, and under group commit one failure
	// fails every write of its group at once. Writers that retry on errors
	// should send keys.
	GroupCommitMaxBatch int
}

// Config configures a Store. Start from DefaultConfig and change what you
// need; Open calls Validate.
type Config struct {
	// Dir is the store directory; Open creates it (mode 0o755) if missing.
	Dir string
	// SegmentMaxBytes: a segment file is sealed and a new one started once
	// the next write would take it past this size. Default 256 MiB; range
	// 64 KiB..4 GiB-1. An event larger than this gets a segment of its own.
	SegmentMaxBytes int64
	// FDBudget bounds the segment files kept memory-mapped for reads
	// (least recently used are unmapped first; a mapping holds no
	// descriptor once made). Default 64; range 2..65536. Besides these, a
	// writable store holds its LOCK file open, and the active segment
	// while the writer is not idle (see "What an open store holds" in the
	// package documentation).
	// A read-only store's Open and Verify also hold one descriptor per
	// segment while they read the whole log (see OpenReadOnly).
	FDBudget int
	// SingleAppendMaxBytes bounds one event's payload: exactly this many
	// bytes are accepted, one more is refused with ErrPayloadTooLarge.
	// Default 16 MiB; range 1..64 MiB.
	SingleAppendMaxBytes int
	// BroadcastCapacity is how many notifications the store holds for lossy
	// subscriptions: one that falls further behind loses the oldest (see
	// Subscription.Dropped). Default 8192; range 1..1<<20.
	BroadcastCapacity int
	// MaxJSONDepth bounds how deeply a payload's arrays and objects may
	// nest (1 is depth 0, [] and {} depth 1, [{}] depth 2): exactly this
	// depth is accepted, one more is refused with a *PayloadError (rule
	// "depth"). 0 means DefaultMaxJSONDepth (512); range 0..MaxMaxJSONDepth
	// (4096: with room to spare for the envelopes a payload travels in, an
	// export line or a policy input, within the 10000 levels encoding/json
	// reads).
	MaxJSONDepth int
	// ChannelCapacity is the writer mailbox size: Submit blocks and TrySubmit
	// answers Retry when it is full. Default 4096; range 1..1<<20.
	ChannelCapacity int
	// PressureRetryPct: TrySubmit answers Retry once the mailbox holds at least
	// this percentage of ChannelCapacity. Default 75; range 1..100.
	PressureRetryPct int
	// Sync sets durability; see SyncConfig.
	Sync SyncConfig
	// Batch sets batch limits and group commit; see BatchConfig.
	Batch BatchConfig
	// Compression stores sealed segments compressed in blocks (zstd or
	// s2): a background task packs each segment once it is sealed, and a
	// read of one event decompresses one block of about 64 KiB. The segment
	// being written is never compressed. Default CompressionNone. Changing
	// it later affects segments sealed (or compacted) from then on; a store
	// holds plain and packed segments side by side.
	Compression Compression
	// Admission, when set, is asked about every write before it is queued
	// (see Admission); the policy package provides gates. Default nil:
	// every valid write is admitted.
	Admission Admission
	// Replicator, when set, takes every admitted write (appends, batches,
	// reactions, imports, plugin and system writes) to a replicated log
	// instead of this store's writer; the log's state machine writes it
	// back with SubmitReplicated on every replica (see Replicator). Fences,
	// Redact, EraseEntity and Compact are refused with ErrReplicated.
	// Default nil: the store writes its own log.
	Replicator Replicator
	// ProjectionCache keeps projected states between Project calls (see
	// NewLRUCache, NewFileCache). Default nil: no cache.
	ProjectionCache ProjectionCache
	// Now is the wall clock used for event timestamps; tests inject a fake
	// one. Default time.Now. Timestamps never decrease within an entity even
	// if Now goes backwards.
	Now func() time.Time
	// FenceTimeout is how long a visibility fence may stay open: when it
	// passes, the store cancels the fence (its writes stay hidden, as after
	// Cancel) and records a KindFenceExpired event, so a forgotten fence
	// cannot refuse ordinary writes for ever. BeginFenceTimeout sets one
	// fence's own. Default 30s; range 1ms..24h.
	FenceTimeout time.Duration
	// Salvage opens a store whose log is shorter than the store durably
	// recorded (a damaged, truncated or deleted segment: see
	// LogTruncatedError) instead of failing: the loss is recorded as a
	// KindLogSalvaged system event, logged, counted in
	// Diagnostics().Open.LostSequences, and the next sequence moves past
	// the recorded end so no sequence is given twice. Default false: such
	// a store fails Open with a *LogTruncatedError. A read-only open with
	// Salvage shows what is left and writes nothing.
	Salvage bool
	// Logger receives recovery and maintenance messages (a truncated torn
	// tail, for example). Default: slog.Default().
	Logger *slog.Logger

	// fs is the file system the store uses; nil is the operating system's
	// (tests set another through export_test.go).
	fs vfs.FS
}

// Defaults, exported so callers and documentation can name them.
const (
	DefaultSegmentMaxBytes      = 256 << 20
	DefaultFDBudget             = 64
	DefaultSingleAppendMaxBytes = 16 << 20
	DefaultChannelCapacity      = 4096
	DefaultBroadcastCapacity    = 8192
	DefaultPressureRetryPct     = 75
	DefaultSyncEveryNEvents     = 1000
	DefaultSyncInterval         = time.Second
	DefaultBatchMaxSize         = 256
	DefaultBatchMaxBytes        = 1 << 20
	DefaultMaxJSONDepth         = 512
	MaxMaxJSONDepth             = 4096
)

// DefaultConfig returns the documented defaults for a store in dir.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:                  dir,
		SegmentMaxBytes:      DefaultSegmentMaxBytes,
		FDBudget:             DefaultFDBudget,
		SingleAppendMaxBytes: DefaultSingleAppendMaxBytes,
		ChannelCapacity:      DefaultChannelCapacity,
		BroadcastCapacity:    DefaultBroadcastCapacity,
		PressureRetryPct:     DefaultPressureRetryPct,
		Sync: SyncConfig{
			EveryNEvents: DefaultSyncEveryNEvents,
			Interval:     DefaultSyncInterval,
			Mode:         SyncData,
		},
		Batch:        BatchConfig{MaxSize: DefaultBatchMaxSize, MaxBytes: DefaultBatchMaxBytes},
		FenceTimeout: DefaultFenceTimeout,
	}
}

// Validate checks every field against its documented range. The error is a
// *ConfigError naming the first field out of range (errors.Is(err,
// ErrInvalidConfig)).
func (c Config) Validate() error {
	bad := func(field string, v any, want string) error {
		return &ConfigError{Field: field, Value: v, Want: want}
	}
	switch {
	case c.Dir == "":
		return bad("Dir", `""`, "a directory path")
	case c.SegmentMaxBytes < 64<<10 || c.SegmentMaxBytes > 1<<32-1:
		return bad("SegmentMaxBytes", c.SegmentMaxBytes, "64 KiB..4 GiB-1")
	case c.FDBudget < 2 || c.FDBudget > 65536:
		return bad("FDBudget", c.FDBudget, "2..65536")
	case c.SingleAppendMaxBytes < 1 || c.SingleAppendMaxBytes > 64<<20:
		return bad("SingleAppendMaxBytes", c.SingleAppendMaxBytes, "1..64 MiB")
	case c.MaxJSONDepth < 0 || c.MaxJSONDepth > MaxMaxJSONDepth:
		return bad("MaxJSONDepth", c.MaxJSONDepth, "0..4096 (0: 512)")
	case c.BroadcastCapacity < 1 || c.BroadcastCapacity > 1<<20:
		return bad("BroadcastCapacity", c.BroadcastCapacity, "1..1048576")
	case c.ChannelCapacity < 1 || c.ChannelCapacity > 1<<20:
		return bad("ChannelCapacity", c.ChannelCapacity, "1..1048576")
	case c.PressureRetryPct < 1 || c.PressureRetryPct > 100:
		return bad("PressureRetryPct", c.PressureRetryPct, "1..100")
	case c.Sync.EveryNEvents < 0 || c.Sync.EveryNEvents > 1<<20:
		return bad("Sync.EveryNEvents", c.Sync.EveryNEvents, "0..1048576")
	case c.Sync.Interval < 0 || c.Sync.Interval > time.Hour:
		return bad("Sync.Interval", c.Sync.Interval, "0..1h")
	case c.Sync.Mode != SyncData && c.Sync.Mode != SyncAll:
		return bad("Sync.Mode", c.Sync.Mode, "SyncData or SyncAll")
	case c.Batch.MaxSize < 1 || c.Batch.MaxSize > 4096:
		return bad("Batch.MaxSize", c.Batch.MaxSize, "1..4096")
	case c.Batch.MaxBytes < 1 || c.Batch.MaxBytes > 16<<20:
		return bad("Batch.MaxBytes", c.Batch.MaxBytes, "1..16 MiB")
	case c.Compression > CompressionS2:
		return bad("Compression", c.Compression, "CompressionNone, CompressionZstd or CompressionS2")
	case c.Batch.GroupCommitMaxBatch < 0 || c.Batch.GroupCommitMaxBatch > 1<<20:
		return bad("Batch.GroupCommitMaxBatch", c.Batch.GroupCommitMaxBatch, "0..1048576")
	case c.FenceTimeout < MinFenceTimeout || c.FenceTimeout > MaxFenceTimeout:
		return bad("FenceTimeout", c.FenceTimeout, "1ms..24h")
	}
	return nil
}

func (c *Config) fillRuntimeDefaults() {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}
