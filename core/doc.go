// Package core is batpak's embedded event store: an append-only, segmented,
// hash-chained log of events with causal metadata, an in-memory index, and
// a single writer goroutine that turns concurrent writes into group commits.
//
// It knows nothing of policy engines, WebAssembly, HTTP or tenants; those
// plug into it from the packages above.
//
// # Using it
//
//	s, err := core.Open(core.DefaultConfig("data"))
//	coord, err := core.NewCoordinate("order:42", "shop")
//	placed := core.MustKind(1, 1)
//	r, err := s.Append(ctx, coord, placed, []byte(`{"total":99.5}`))
//	evs, err := s.Query(core.Entity("order:").WithKind(placed))
//	err = s.Close()
//
// An event lives at a Coordinate (Entity: the stream whose clock and hash
// chain it extends; Scope: the partition it is filed under) and has a Kind
// (4-bit category, 12-bit type). Applications write categories 0x1–0xC
// and 0xE–0xF; the named effect kinds of category 0xD (KindEffectAck, …)
// only as reactions naming their cause (AppendReaction, SubmitReaction,
// TrySubmitReaction, AppendReactionBatch); category 0x0 holds the store's
// own records (AppendSystem; see Kind). Payloads are I-JSON (RFC 7493): one JSON
// value in UTF-8, nested at most Config.MaxJSONDepth deep, no object
// repeating a member name (names compared with escapes decoded, as the
// policy reads them); every write path refuses anything else with a
// *PayloadError (a payload whose AppendOptions.PayloadChecked record —
// made by ijson as it validated those very bytes — covers it is not
// checked twice: the caller that passes the record vouches that the bytes
// did not change since). Every event gets a
// UUIDv7 id, a correlation id (defaulting to its own id), a causation id
// (zero for a root cause), a per-entity Clock (0, 1, 2, …), a timestamp in
// microseconds that never decreases within an entity, and a global sequence
// (0, 1, 2, … in commit order).
//
// # Writes
//
// Append blocks until the receipt; Submit returns a Ticket at once;
// TrySubmit refuses with a *RetryError instead of blocking when the writer
// mailbox is PressureRetryPct full. All three validate on the caller's
// goroutine (coordinate, kind, JSON, size, options) and then hand the event
// to the writer goroutine over a bounded mailbox. The writer drains
// everything queued (yielding the processor at most once when the
// mailbox runs dry, so that appenders it just answered can join the
// group, unless such yields have been finding nothing or keeping it
// waiting), assigns sequence, clock, timestamp and chain hash
// (a group's hashes are taken together before it is written, up to 16 at
// once where the CPU has AVX-512, so a single append's payload digest is
// left to the writer too), writes the whole group with one write call,
// syncs as configured (one
// fsync covers the group: group commit), publishes the group to the index,
// and only then resolves the tickets. Readers never see an event before its
// receipt could be returned. A durable group of 32 events or more is
// inserted into the index while its fsync runs, under the index's write
// lock held until the sync returns (at most 5 ms: a slower sync gives the
// lock back, the entries taken out again, so a slow disk holds up writes,
// not reads).
//
// AppendOptions add compare-and-set (ExpectedClock: ExpectNoEvents or
// ExpectClock(n), checked by the writer against queued and published events,
// failing with a *ConflictError), idempotency keys (a repeated key returns
// the original receipt, across restarts and crashes), correlation,
// causation and user flags.
//
// Replicated apply: AppendOptions.ID and Timestamp fix what the store would
// otherwise choose (a fresh id, the writer's clock). Everything else a write
// gets — clock, global sequence, chain hash, the correlation default (its
// own id), the compare-and-set outcome, the idempotency decision — is a
// function of the store's prior writes, so two stores given the same writes
// with the same fixed ids and timestamps, in the same order (one write at a
// time, or queued in order from one goroutine), end identical. A fixed id the
// store already holds fails with ErrDuplicateID. Writes made any other way
// (AppendSystem records, fences, compaction, redaction) are outside this
// promise unless they too are applied in the same order on every store.
//
// # Batches, outboxes and fences
//
// AppendBatch and SubmitBatch write several events atomically: all of them
// become visible together (to readers, cursors and subscribers) or none
// does, across segment rotation and across a crash at any byte. Items may
// name an earlier item as their cause (PriorItem), carry compare-and-set
// expectations (if one fails nothing is written) and idempotency keys (a
// retry of a whole batch returns the original receipts; mixing stored and
// new keys is refused). An Outbox stages events — validating each at once —
// and flushes them as one batch. Batches share group commits with single
// appends and with each other: eight writers' batches queued together are
// written with one write call and synced with one fsync, and each stays
// all-or-nothing on its own — a batch that fails (a compare-and-set miss,
// a mixed retry) is cut out of its group before anything is synced, and
// the writes queued before and after it in the group go on, with no hole
// in sequences or clocks.
//
// A Fence (BeginFence) hides writes until Commit publishes them all at
// once; Cancel, or Close before Commit, hides them for ever. They are on
// disk and in their entities' clock and hash chains either way, so an
// entity's visible clocks may skip the hidden ones. While a fence is open,
// ordinary writes fail with ErrFenceActive. A fence still open
// Config.FenceTimeout (default 30s) after it began expires: the store
// cancels it as Cancel would, records a KindFenceExpired event, and
// Commit then fails with ErrFenceExpired.
//
// Config.Batch.GroupCommitMaxBatch bounds how many queued writes share one
// write call and one fsync (0: all queued; 1: none). Idempotency keys are
// not needed for correctness in any mode — a receipt is only returned for
// a write that is written (and synced, as configured), and a failed group
// fails every ticket in it — but they are what makes retrying after an
// error safe: a write whose fsync failed may still be on disk, and under
// group commit one failure fails a whole group.
//
// # Following the log: subscriptions, cursors, workers, projections
//
// SubscribeLossy(region) announces published events as they happen. The
// writer puts each notification once into a shared ring
// (Config.BroadcastCapacity) whatever the number of subscribers, and never
// waits for one: a subscriber that falls a ring behind loses the oldest
// notifications and counts those of its region in Dropped. A subscriber
// that keeps up gets every notification of its region once, in order.
// RecvBatch takes everything ready in one call (All does the same behind
// its iterator), copying runs out of the ring: with many subscribers it
// costs the writer's CPU a fraction of what a Recv per notification does.
// Filter, Map, Take and Scan compose the iterator Subscription.All returns.
//
// Cursor(region) delivers every visible event exactly once, in global
// order (Poll); NamedCursor keeps its committed position in the store
// directory (cursors/NAME.pos, written with fsync and rename) so a consumer
// resumes where it stopped, across restarts and crashes. CursorWorker runs
// a handler over a cursor on its own goroutine: the position commits after
// the handler returns, a panic or error rewinds to the last commit
// (at-least-once) within a restart budget; a named worker's position is
// made durable only after the writes its handler made with the context it
// was handed, so a power loss never keeps a position past reactions it
// lost. React derives events from events, writing each source's
// reactions as one idempotent batch; a redelivered source keeps the
// reactions written first even when the function now answers otherwise
// (other payloads, more of them; not another place or kind).
//
// Project folds an entity's visible events through a Projection[S] (a
// stable name, a schema version, the kinds it reads, Init and Apply), with
// an optional cache (NewLRUCache, NewFileCache) from which an Incremental
// projection continues. EntityGeneration and ProjectIfChanged skip work
// when nothing changed; WatchProjection blocks until the state changes.
// Fenced and cancelled writes never reach any of these.
//
// # The gate: writes and destructive operations
//
// Config.Admission (see Admission) is asked about every write on every
// path before anything is queued, system records written by application
// code included (AppendSystem, ActionSystem; only batpak's own packages
// can write a system record the gate is not asked about; entities starting
// with ReservedEntityPrefix, "batpak:", hold the store's own records and
// refuse every application write). The destructive
// operations — Redact, EraseEntity, Compact — ask it too, through
// MaintenanceAdmission, with exactly what they would erase or remove (ids,
// entities and counts; a compaction is asked once its new segments are
// written, before they take effect), under the lock that keeps the plan
// true until it is carried out. An Admission that cannot judge them
// refuses them (ErrMaintenanceNotAdmitted): the gate fails closed. Every
// admitted operation that erases or removes events is first recorded,
// synced, as an audit event on MaintenanceAuditEntity (who the gate
// admitted — null without one —, why — WithReason —, what, how many),
// with or without an Admission; a refused one changes and records nothing.
//
// # Durability
//
// Whatever the setting, an event is handed to the operating system (write)
// before its receipt is returned, so killing the process never loses an
// acknowledged event. The sync setting bounds what an operating-system
// crash or power loss can lose:
//
//	Sync setting                 Receipt means                      OS crash / power loss can lose
//	---------------------------  ---------------------------------  ---------------------------------------
//	EveryNEvents = 1             event is on stable storage         nothing acknowledged
//	EveryNEvents = N > 1         event is written to the OS; an     up to about 2N acknowledged events (N
//	                             fsync starts in the background     since the last sync started, N more if
//	                             every N events                     the writer got ahead of a running one),
//	                                                                or one group when a group holds more
//	Interval = d > 0             event is written to the OS         events acknowledged in the last d
//	EveryNEvents = 0, Interval 0 event is written to the OS         everything since the last Sync/Close
//	Sync(ctx) / Close()          all earlier writes are on stable   nothing written before the call
//	                             storage when they return
//	Cursor.Commit (named)        the position, and every event      never a position ahead of the log
//	                             before it, are on stable storage   (Commit syncs the log first when
//	                                                                the events are not synced yet)
//
// Mode SyncData uses fdatasync and SyncAll uses fsync; both make the event
// durable on Linux (see Platforms for macOS and Windows). The default is EveryNEvents = 1000, Interval = 1s, SyncData.
// Under EveryNEvents = 1, concurrent writers share fsyncs: the writer covers
// everything queued with one write and one fsync. Directories the store
// creates (the store directory itself, cursors/, a snapshot's destination)
// have their entry synced in their parent, so a power loss cannot take a
// new store's whole directory with it.
//
// If a write or fsync fails, the writer stops: that group's tickets and
// every later write fail with the I/O error wrapped with
// ErrWriterStopped, reads keep working, and the store must be reopened
// (after an fsync failure the file's contents are unknown; reopening
// re-reads what is really on disk). Store.Stopped reports it without a
// write. A full disk fails the reservation of a segment's blocks, ahead
// of the data, never a store through the active segment's mapping.
//
// # Reads
//
// Get, Query (by Region, in global order), Stream (one entity, in clock
// order), ByScope, ByFact, Ancestors (causation links upwards),
// Descendants (what an event caused, transitively) and Correlation (every
// event of one conversation) are served from the in-memory index, which
// keeps the causation and correlation links (about 4 bytes per event, see
// causal.go), so the last two never scan the log and are bounded
// (CausalLimits, with a Truncated flag); payloads are read from memory-mapped segment files
// and checked against their CRC. At most Config.FDBudget segments are
// mapped at once. Region is the one predicate type: All, Entity(prefix),
// Scope(exact), narrowed with WithKind, WithCategory and WithClockRange.
//
// # What an open store holds
//
// A writable store holds one file descriptor for its LOCK file for as long
// as it is open. The writer holds the active segment open (a descriptor and
// a writable mapping) while it works; after a second with nothing asked of
// it (no write, sync or fence open) it syncs whatever is written but not
// yet synced — more than the sync setting asks, never less — and releases
// both, and its next request reopens them (an open and an mmap, a few
// microseconds). Reads map segments without holding descriptors (at most
// Config.FDBudget mappings). Goroutines: the writer and the sealer, plus
// one for background fsyncs once the sync setting starts one (EveryNEvents
// above 1, an Interval, or a durable group of 32 events or more). So an idle store costs one descriptor, two
// goroutines and, measured here with one small event, about 60 KiB of
// memory, and thousands can be open in one process.
//
// # On disk
//
// A store directory holds segment files "<20-digit id>.seg" (after a
// compaction or packing, "<id>.<generation>.seg"), their footers
// "<name>.idx", the index checkpoint "index.ckpt", and a LOCK file (flock,
// LockFileEx on Windows; holds the writer's pid). Integers are little-endian.
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
//	system flags: bit 0 = batch item, bit 1 = written under a fence
//
//	marker record (16 bytes): type u8 | zero [3] | count u32 | id u64
//	  type 2 batch begin   count = items, id = the batch's first global sequence
//	  type 3 batch commit  same count and id
//	  type 4 fence begin   id = fence number
//	  type 5 fence commit  type 6 fence cancel
//
// The event hash covers every header field, the coordinate and the
// idempotency key, and the payload through its digest; each event names
// the hash of the entity's previous event, so the entity's events form a
// chain. Store.Verify re-derives every digest and link and reports the
// first break as a *ChainError (segment, offset, event id). Because the
// payload enters the chain only through its digest, payload bytes can later
// be erased without breaking the chain.
//
// The active segment is zero-filled ahead of its data (an eighth of what it
// holds, 64 KiB to 4 MiB at a time) so that fdatasync flushes data only,
// with no size or extent change to journal on every commit. The zeros are
// never cut off, not even when the segment is sealed: a reader in another
// process may have the file mapped, and shrinking a mapped file would turn
// its next look at the tail into SIGBUS. Readers take the zeros as the end
// of data.
//
// # Recovery
//
// Open reads every segment frame by frame and rebuilds the index. A frame
// that fails its length or CRC check ends the scan of that segment:
//   - zeros after it: clean end (preallocated space);
//   - a valid frame anywhere after it: corruption — Open fails with a
//     *CorruptionError naming the file and offset, because data in the middle
//     of the log is never silently dropped;
//   - otherwise, in the last segment: a torn tail left by a crash mid-write;
//     it is truncated away and logged (those events were never
//     acknowledged under EveryNEvents = 1). In a sealed segment it is
//     corruption.
//
// The frames that pass these checks are then read as a log (recovery and
// Verify share this walk): batch items count only once their batch's
// commit record follows with the announced item count — a batch cut short
// by a crash, or followed by anything else, never happened, even if it
// spans segments; events written under a fence are shown once the fence's
// commit record follows, and stay hidden for ever after a cancel record, a
// crash while the fence was open, or anything else. Hidden events keep
// their global sequence and their place in the entity's chain. Open logs
// a warning when it discards batches cut short; OpenReadOnly logs it at
// debug level only, since beside a live writer the last batch is usually
// just not committed yet.
//
// Mid-log damage that Open and OpenReadOnly refuse leaves SalvageExport:
// it reads the segment files directly (no lock, nothing written), skips
// unreadable frames to the next readable one, and exports, in Export's
// format, every readable visible event it can show was acknowledged (of
// an atomic batch that damage cut, see SalvageExport), each sequence
// once, with a report of what it skipped, left out and found missing.
//
// A log shorter than the store durably recorded is not a torn tail but
// lost acknowledged events (a deleted, truncated or zeroed segment): the
// index checkpoint, every segment footer and every named cursor position
// record how far the log went, each written only once what it covers is
// on stable storage, so no crash leaves one ahead of the log. Open then
// fails with a *LogTruncatedError (ErrLogTruncated) and changes nothing;
// with Config.Salvage it opens, records the loss as a KindLogSalvaged
// event at the recorded end and never gives a lost sequence to a new
// event. A named cursor committed past the end of the log is a
// *CursorAheadError (ErrCursorAhead), never a silent skip. The check
// knows only what those files record: if the newest segment is removed
// together with its footer and the checkpoint (and no cursor got past
// it), what is left is a consistent shorter log, and Open cannot tell it
// from one that never went further.
//
// A damaged erasure epoch file ("erasures"), or one missing from a store
// with segments (a new store writes it at once), only loses which epoch
// cached projection states were tagged with: Open moves to a fresh random
// epoch no cache holds, rewrites the file, logs a warning and reports it
// in Diagnostics().Open.ErasureEpochReset. An erasure also asks the
// projection cache to drop the erased entities' states when it can
// (EntityForgetter: LRUCache and FileCache do), so no state folded from
// an erased payload stays in it.
//
// OpenReadOnly does the same without taking the lock or changing any file,
// so it can run beside a live writer process. It reads the segment set the
// compaction protocol says is live when it lists the directory (journal
// read around the listing; a compaction's new generations count once all
// are in place, and the files they replace stop counting then) and holds
// one descriptor per segment while it reads the log, so a compaction
// committing meanwhile is never taken for damage (liveset.go). Verify on
// a read-only store does the same.
//
// A compaction journal that fails its checks (checksum, names that are
// not this store's segment files, a journal that does not describe a
// compaction, new segments missing or not holding what they replace)
// fails Open with a *CorruptionError naming it, with no file renamed or
// deleted (journal.go).
//
// # Cold start: checkpoint, footers, scan
//
// Reading every frame is the slow path. Open takes the first that applies
// and reports it in Diagnostics().Open (Path, Footers, SegmentsScanned,
// Restored, TailReplayed, Elapsed); every path yields the same index:
//
//  1. checkpoint — index.ckpt, the whole index (causal links included; a
//     checkpoint of the earlier layout without them is not used) written
//     at Close (temporary file, fsync, rename) with its watermark. It is loaded, the frames it
//     covers in plain segments are CRC-checked against it (no decoding),
//     and only the log after the watermark is read. A checkpoint that is
//     damaged, from another store, or names files or places that do not
//     match is ignored. Compaction deletes it.
//  2. footers — "<segment>.idx" beside each segment, written when it is
//     sealed (rotation, by the background sealer; Close, for the segment
//     being written; compaction, for what it writes): each frame's
//     recovery data (ids, sequences, clocks, hashes, names, causation and
//     correlation ids, batch and fence records; a footer of the earlier
//     layout without the two ids is not used), replayed through the same walk as the frames. A
//     footer is used only when its CRC holds and the frame it says ends
//     its part of the segment is there with the CRC it recorded; frames
//     after that end are scanned. Other segments are scanned.
//  3. scan — every frame of every segment.
//
// # Packed segments
//
// With Config.Compression (zstd or s2), the sealer rewrites each sealed
// segment, through the compaction path (new file generation, journal,
// crash-safe), as a packed file: the plain segment's bytes cut at frame
// boundaries into ~64 KiB blocks, each compressed alone, then a block
// table and a trailer:
//
//	header (32, version 2, codec at byte 10) | blocks |
//	table: n × (logical start u32, file offset u64, stored length u32,
//	            logical length u32, CRC32C of the stored bytes u32) |
//	trailer: "BPAKBLKS" | table offset u64 | n u32 | logical size u64 |
//	         CRC32C of table and trailer u32
//
// Offsets stay those of the plain segment, so the index does not change
// and a read of one event decompresses one block (the last four blocks
// read are cached per segment). A block that fails its CRC is a
// *CorruptionError. Packed segments are never appended to or rewritten in
// place: Redact on an event in one rewrites the segment with the event as
// a redacted stub.
//
// A plain segment's frame is redacted in place with two writes (the
// record, then the frame header with its new checksum); a crash or power
// loss between them would leave a frame failing its checksum. So the
// frames about to be rewritten (segment, offset, event id and the
// checksum the frame will have; at most 4,096 at a time) are first
// recorded in the redaction journal (redact.journal, synced), and it is
// removed once they are rewritten and synced. Open finishes what a
// journal names before it reads the log (the rewrite depends only on
// bytes it does not change, so it is the same whatever part of it reached
// the disk), only where what it finds comes to the recorded checksum: a
// frame not yet synced that a power loss tore in other bytes stays a torn
// tail. The next redaction after one that failed part way finishes its
// journal first. A read-only store beside a live writer reads again while
// a journal is there. A damaged journal is a *CorruptionError naming it.
// A packed segment holding far more batch and fence records than events
// (more than two per event and 65,536 besides: no writer makes that, and
// such a file decodes to hundreds of times its size) is refused at Open.
//
// # Platforms
//
// The store builds for Linux, macOS and Windows (amd64 and arm64; other
// Unix systems use the macOS-style calls). Its tests run on Linux, where
// everything above is measured; the operating-system calls are in
// core/internal/vfs (os_unix.go, os_linux.go, os_darwin.go, os_bsd.go and
// os_windows.go), behind the file-system seam (vfs.FS) that every file
// operation of the store goes through. What differs:
//
//   - Sync modes. Linux: SyncData is fdatasync, SyncAll fsync. macOS:
//     SyncData is fsync(2), which hands the data to the drive but does not
//     flush the drive's write cache, so a power loss can still lose
//     acknowledged events; SyncAll is fcntl(F_FULLFSYNC), which does
//     (several times slower). Choose SyncAll on macOS when power loss
//     matters. Windows: both are FlushFileBuffers.
//   - Directory syncs (after creating, renaming or removing a segment,
//     footer, cursor or journal file) are fsyncs of the directory on Unix and
//     nothing on Windows, which cannot flush a directory handle; NTFS's
//     metadata journal commits those changes on its own schedule, so a power
//     loss (not a process crash) soon after one can undo it.
//   - The writer lock is flock(2) on Unix and LockFileEx on Windows; both
//     are released by the kernel when the process dies. Open keeps a lock
//     only while LOCK is still the file it locked (RemoveEmpty unlinks LOCK
//     under the lock); otherwise it creates the directory and LOCK again.
//     On Unix RemoveEmpty unlinks LOCK while holding it; Windows cannot
//     remove an open file, so there it removes LOCK just after letting go,
//     which fails, leaving the new store alone, if another Open has it open.
//   - Reads map segment files read-only on both. On Unix the active segment
//     is mapped once, past its end, and read as it grows; Windows cannot map
//     past the end of a file, so there a reader maps it again after it
//     grew. The writer copies small groups into a shared writable mapping
//     on Unix; on Windows it writes every group with WriteAt.
//   - Replacing files: compaction and packing remove or rename over segment
//     files. Unix allows that while a reader (a Get in flight, another
//     process's OpenReadOnly, a backup) has them open or mapped. Windows
//     refuses to delete or rename over a file that is open or mapped, so
//     there a compaction beside such a reader can fail with an error after
//     it committed; its journal makes the next Open finish it, as after a
//     crash at that point. This path is not exercised by the tests. Open
//     also maps segment footers and the index checkpoint while it reads
//     them, so on Windows a live writer's sealer replacing a footer beside
//     another process's OpenReadOnly can fail until that Open is done; it
//     is retried at the next sweep.
//   - Files cut short under Open: Open reads segments, footers and the
//     checkpoint through read-only mappings. A file the store wrote is
//     never cut short in place (footers and the checkpoint are replaced by
//     renaming), but another program can (a restore with rsync --inplace,
//     an operator emptying a file). Reading a mapping past a file's new
//     end faults; Open turns that fault into an error wrapping ErrCorrupt,
//     instead of the process dying of SIGBUS, and the next Open reads the
//     file as it now is.
package core
