package core

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/batpak-go/batpak/core/internal/index"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
	"github.com/batpak-go/batpak/ijson"
)

// Store is an open event store. All methods are safe for concurrent use.
// Writes go through one writer goroutine; reads are served from the
// in-memory index and the segment files.
type Store struct {
	cfg      Config
	readOnly bool
	log      *slog.Logger

	ix   *index.Index
	segs *segment.Cache
	bc   *broadcaster
	lock vfs.File
	fs   vfs.FS // every file operation goes through it

	// stopped is the writer's first failure once it has one (Stopped).
	stopped atomic.Pointer[error]

	mailbox chan *request
	// gatherNeed and gatherFull let the writer sleep while it waits for
	// the rest of a group instead of waking at every arrival: it sets how
	// many queued requests would wake it — those that complete the group,
	// or one after a large batch (placeEachMinEvents) — and the sender
	// that queues them wakes the writer once (see noteQueued,
	// writer.gather).
	gatherNeed atomic.Int64
	gatherFull chan struct{}
	closeMu    sync.RWMutex // held shared while sending to mailbox
	closed     bool
	w          *writer

	closeOnce sync.Once
	closeErr  error
	shut      atomic.Bool // Close finished: reads fail with ErrClosed

	fence atomic.Pointer[Fence] // the open visibility fence, if any
	// rewriteMu orders in-place rewrites of published frames (redaction)
	// against snapshots copying them.
	rewriteMu sync.RWMutex
	// rewrites counts in-place rewrites begun and ended (odd while one
	// runs): a read that fails its checksum retries only if one overlapped.
	rewrites atomic.Uint64
	erasures atomic.Uint64 // the erasure epoch (see redact.go)
	// erasureMu serialises erasures (Redact, EraseEntity, Compact): each
	// raises the epoch once, and looks up the locations it rewrites while
	// no compaction can move them. Taken before rewriteMu.
	erasureMu sync.Mutex
	// compactions counts committed compactions: a read that fails while it
	// changed is planned again (see readRetry).
	compactions atomic.Uint64

	openReport OpenReport
	noFooters  bool // recovery reads frames, not segment footers
	// maintClosed is set by Close under erasureMu: maintenance that takes
	// erasureMu afterwards (Compact, Redact, EraseEntity, the sealer)
	// does nothing, so no file changes once Close has written its footer
	// and checkpoint and released the lock.
	maintClosed bool
	sl          *sealer
	// snap: the segment files recovery reads (during Open only).
	snap *segmentSnapshot

	compactHook func(stage string) // tests only (export_test.go)

	// repairs are the changes recovery decided on (a torn tail zeroed, a
	// stale footer removed, a segment header rewritten), made only once
	// the log is known not to be shorter than recorded: a refused Open
	// changes nothing.
	repairs []func() error
	// salvaged: Open found the log shorter than recorded and Config.Salvage
	// was set; the loss is recorded once the writer runs (see logend.go).
	salvaged *LogTruncatedError

	endsMu sync.Mutex
	ends   map[uint32]int64 // segment id → end of its data (active: see writer.stat)
}

// segmentEnd returns where a segment's data ends.
func (s *Store) segmentEnd(id uint32) int64 {
	s.endsMu.Lock()
	defer s.endsMu.Unlock()
	return s.ends[id]
}

// dropSegmentEnd forgets a removed segment.
func (s *Store) dropSegmentEnd(id uint32) {
	s.endsMu.Lock()
	delete(s.ends, id)
	s.endsMu.Unlock()
}

// setSegmentEnd records where a segment's data ends, for Stats.
func (s *Store) setSegmentEnd(id uint32, end int64) {
	s.endsMu.Lock()
	if s.ends == nil {
		s.ends = map[uint32]int64{}
	}
	s.ends[id] = end
	s.endsMu.Unlock()
}

// Open opens (creating if needed) the store in cfg.Dir for reading and
// writing. It takes the directory's exclusive lock (a second writer process
// gets a *LockedError naming the holder's pid), then rebuilds the index from
// the segment files. A torn tail (a partly written last frame, as left by a
// crash) is overwritten with zeros (the file never shrinks: a reader in
// another process may have it mapped) and logged; a frame that fails its checks with
// valid frames after it, or a damaged segment header, fails Open with a
// *CorruptionError naming the file and offset. A compaction journal left
// by a crash is finished only when it passes its checks; otherwise Open
// fails with a *CorruptionError naming the journal, with no file renamed
// or deleted.
func Open(cfg Config) (*Store, error) {
	return open(cfg, false)
}

// OpenReadOnly opens an existing store for reading only: no lock is taken
// (it works beside a live writer process), no writer goroutine runs, nothing
// on disk is changed, and every write returns ErrReadOnly. It shows the
// events that were written when it opened. Beside a live writer, a segment
// the writer rewrites later (Compact, Redact in a packed segment, or the
// packing of sealed segments under Config.Compression) has a new file
// name: reads of it fail with an error saying so until the read-only
// store is reopened. A compaction committing while it opens is never
// reported as damage: it reads the segments the compaction protocol says
// are live (see core/doc.go), holding one file descriptor per segment
// until its index is built. A damaged compaction journal fails it with a
// *CorruptionError naming the journal.
func OpenReadOnly(cfg Config) (*Store, error) {
	return open(cfg, true)
}

func open(cfg Config, readOnly bool) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fillRuntimeDefaults()
	s := &Store{cfg: cfg, readOnly: readOnly, log: cfg.Logger, ix: index.New(), bc: newBroadcaster(cfg.BroadcastCapacity), fs: cfg.fs}
	if s.fs == nil {
		s.fs = vfs.Default()
	}
	if readOnly {
		if _, err := s.fs.Stat(cfg.Dir); err != nil {
			return nil, fmt.Errorf("batpak: open read-only: %w", err)
		}
	} else {
		l, err := createAndLock(s.fs, cfg.Dir)
		if err != nil {
			return nil, err
		}
		s.lock = l
	}
	activeMapLen := 0
	if !readOnly {
		activeMapLen = int(cfg.SegmentMaxBytes) + cfg.SingleAppendMaxBytes + 1<<20 + segment.PreallocStep
	}
	s.segs = segment.NewCache(s.fs, cfg.Dir, cfg.FDBudget, activeMapLen)
	rec, err := s.recoverStore()
	if err != nil {
		s.segs.Close()
		_ = segment.Unlock(s.fs, s.lock)
		return nil, err
	}
	if readOnly {
		return s, nil
	}
	w, err := newWriter(s, rec)
	if err != nil {
		s.segs.Close()
		_ = segment.Unlock(s.fs, s.lock)
		return nil, err
	}
	s.w = w
	s.mailbox = make(chan *request, cfg.ChannelCapacity)
	s.gatherFull = make(chan struct{}, 1)
	go w.run()
	s.startSealer()
	if s.salvaged != nil {
		if err := s.recordSalvage(s.salvaged); err != nil {
			_ = s.Close()
			return nil, err
		}
	}
	return s, nil
}

// lockAttempts bounds how often Open creates the store directory and
// takes its lock again after finding them removed under it.
const lockAttempts = 16

// createAndLock creates the store directory dir (with its parents) and
// takes its writer lock. A directory or LOCK file removed meanwhile (by
// RemoveEmpty, in this process or another: it removes an empty store
// under its lock, LOCK last, then the directory) is created again and the
// lock taken on the new LOCK, never on the removed one, up to lockAttempts
// times; so Open never writes into a directory that is being removed.
func createAndLock(fsys vfs.FS, dir string) (vfs.File, error) {
	for attempt := 1; ; attempt++ {
		err := segment.MkdirDurable(fsys, dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && attempt < lockAttempts {
				continue // a parent removed while it was being created
			}
			return nil, fmt.Errorf("batpak: create store directory: %w", err)
		}
		l, err := segment.Lock(fsys, dir)
		if err != nil {
			if (errors.Is(err, segment.ErrLockMoved) || errors.Is(err, fs.ErrNotExist)) && attempt < lockAttempts {
				continue
			}
			return nil, segErr(err)
		}
		return l, nil
	}
}

// Close drains the writer mailbox (every accepted write is written),
// syncs (the active segment keeps its preallocated zeros), writes the
// footer of the active segment and the index checkpoint, and releases the
// lock. Later writes fail with ErrClosed; reads keep working until Close
// returns and then fail with ErrClosed. Close is safe to call twice; the
// second call returns the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		defer s.shut.Store(true)
		defer s.bc.close()
		if s.readOnly {
			s.segs.Close()
			return
		}
		s.closeMu.Lock()
		s.closed = true
		s.closeMu.Unlock()
		t := newTicket()
		s.mailbox <- &request{op: opClose, t: t}
		select { // a writer waiting for the rest of a group takes the close now
		case s.gatherFull <- struct{}{}:
		default:
		}
		<-t.Done()
		s.closeErr = t.err
		<-s.w.exited
		s.stopSealer()
		// Held to the end: a Redact or Compact still running finishes
		// first, and none starts after (see maintClosed).
		s.erasureMu.Lock()
		defer s.erasureMu.Unlock()
		s.maintClosed = true
		if s.closeErr == nil {
			// A footer or checkpoint that fails to write costs the next Open
			// a scan, nothing else: report it, keep closing.
			seg, off := s.w.stat()
			s.footerOnClose(seg, off)
			if err := s.writeCheckpoint(seg, off); err != nil {
				s.log.Warn("batpak: index checkpoint not written", "err", err)
			}
		}
		s.segs.Close()
		if err := segment.Unlock(s.fs, s.lock); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

// Sync forces every write accepted so far to stable storage, whatever the
// sync setting.
func (s *Store) Sync(ctx context.Context) error {
	t, err := s.enqueue(&request{op: opSync, t: newTicket()})
	if err != nil {
		return err
	}
	_, err = t.Wait(ctx)
	return err
}

// Dir returns the store directory.
func (s *Store) Dir() string { return s.cfg.Dir }

// Stopped returns nil while the store takes writes, and once a write or
// sync has failed the error every later write returns: that failure,
// wrapped with ErrWriterStopped. Such a store still serves reads; Close
// and Open it again to write on. A host of many stores (a server) asks it
// to reopen a store whose writer stopped, without making a write to find
// out. It is a cheap atomic read.
func (s *Store) Stopped() error {
	if p := s.stopped.Load(); p != nil {
		return *p
	}
	return nil
}

// Config returns the configuration the store was opened with.
func (s *Store) Config() Config { return s.cfg }

// WriterPressure reports how full the writer mailbox is.
func (s *Store) WriterPressure() WriterPressure {
	if s.mailbox == nil {
		return WriterPressure{Capacity: s.cfg.ChannelCapacity}
	}
	return WriterPressure{QueueLen: len(s.mailbox), Capacity: cap(s.mailbox)}
}

// Stats is a point-in-time summary of the store.
type Stats struct {
	Events         uint64 // visible events
	GlobalSequence uint64 // the sequence the next event will get
	Entities       int    // entities with at least one visible event
	Segments       int
	Bytes          int64 // bytes of segment data (headers and frames; zero-filled space excluded)
	IndexBytes     int64 // estimate of the heap the index holds
	Fsyncs         uint64
	// SyncTime is the time spent in the fsyncs that commit groups since
	// Open (not counting those that create, extend or seal segment files):
	// with the count of those fsyncs, the average latency the disk gives.
	SyncTime time.Duration
	// GroupCommits counts the writer's groups since Open: each group is
	// every write queued when the writer took it (single appends and
	// batches alike), written with one write call and synced, when the
	// sync setting asks, with one fsync.
	GroupCommits uint64
}

// StatsEstimated is Stats with IndexBytes the running estimate
// (Usage.IndexBytes) rather than a walk of the index: the same cost at
// any store size, for a server answering a tenant's request.
func (s *Store) StatsEstimated() Stats {
	s.ix.RLock()
	st := Stats{GlobalSequence: uint64(s.ix.Len()), Entities: s.ix.LiveEntities(), Events: uint64(s.ix.Events())}
	s.ix.RUnlock()
	u := s.Usage()
	st.IndexBytes = u.IndexBytes
	st.Bytes, st.Segments, st.Fsyncs, st.GroupCommits, st.SyncTime = u.Bytes, u.Segments, u.Fsyncs, u.GroupCommits, u.SyncTime
	return st
}

// Stats reports counts and sizes. It walks the index to estimate
// IndexBytes (work proportional to the entities; StatsEstimated does
// not); Usage is the cheap part.
func (s *Store) Stats() Stats {
	s.ix.RLock()
	st := Stats{GlobalSequence: uint64(s.ix.Len()), Entities: s.ix.LiveEntities(), Events: uint64(s.ix.Events())}
	s.ix.RUnlock()
	st.IndexBytes = s.ix.MemoryBytes()
	u := s.Usage()
	st.Bytes, st.Segments, st.Fsyncs, st.GroupCommits, st.SyncTime = u.Bytes, u.Segments, u.Fsyncs, u.GroupCommits, u.SyncTime
	return st
}

// Usage is the part of Stats that costs the same at any store size: what
// a server checks on every write (storage quota, fsync counters).
type Usage struct {
	GlobalSequence uint64 // as Stats.GlobalSequence
	Segments       int
	Bytes          int64 // as Stats.Bytes
	Fsyncs         uint64
	GroupCommits   uint64        // as Stats.GroupCommits
	SyncTime       time.Duration // as Stats.SyncTime
	// IndexBytes is a running estimate of the heap the index holds, kept
	// as it grows: a fixed cost per event (its entry, postings and id
	// slot) plus each entity's, scope's and held idempotency key's name
	// and overhead. It is close to Stats.IndexBytes, which walks the
	// index, and what a server holds a tenant's memory quota to.
	IndexBytes int64
}

// Usage reports the log end, segment bytes and fsyncs without walking the
// index
// (equal to the same fields of Stats taken at the same moment).
func (s *Store) Usage() Usage {
	var u Usage
	s.ix.RLock()
	u.GlobalSequence = uint64(s.ix.Len())
	u.IndexBytes = s.ix.EstimatedBytes()
	s.ix.RUnlock()
	var activeID uint32
	var activeEnd int64 = -1
	if s.w != nil {
		activeID, activeEnd = s.w.stat()
	}
	s.endsMu.Lock()
	for id, end := range s.ends {
		if id == activeID && activeEnd >= 0 {
			end = activeEnd
		}
		u.Bytes += end
	}
	u.Segments = len(s.ends)
	s.endsMu.Unlock()
	if s.w != nil {
		u.Fsyncs = s.w.fsyncs.Load()
		u.GroupCommits = s.w.groups.Load()
		u.SyncTime = time.Duration(s.w.syncer.totalNs.Load())
	}
	return u
}

// validateWrite checks a single event's coordinate, payload and options on
// the caller's goroutine (kinds are checked by the callers: user writes
// refuse reserved categories, system events require them).
func (s *Store) validateWrite(coord Coordinate, payload []byte, opts *AppendOptions) error {
	if err := coord.Validate(); err != nil {
		return err
	}
	if len(payload) > s.cfg.SingleAppendMaxBytes {
		return fmt.Errorf("%w: %d bytes, the limit is %d (Config.SingleAppendMaxBytes)", ErrPayloadTooLarge, len(payload), s.cfg.SingleAppendMaxBytes)
	}
	if depth := s.maxJSONDepth(); !opts.PayloadChecked.Covers(payload, depth) {
		if err := ijson.Validate(payload, depth); err != nil {
			return payloadError(err)
		}
	}
	if len(opts.IdempotencyKey) > MaxIdempotencyKeyBytes {
		return fmt.Errorf("%w: idempotency key is %d bytes, the limit is %d", ErrInvalidOptions, len(opts.IdempotencyKey), MaxIdempotencyKeyBytes)
	}
	if !utf8.ValidString(opts.IdempotencyKey) {
		return fmt.Errorf("%w: idempotency key is not valid UTF-8", ErrInvalidOptions)
	}
	if opts.Timestamp < 0 {
		return fmt.Errorf("%w: timestamp %d is negative (microseconds since the Unix epoch)", ErrInvalidOptions, opts.Timestamp)
	}
	return nil
}

// maxJSONDepth is Config.MaxJSONDepth with 0 read as the default.
func (s *Store) maxJSONDepth() int {
	if s.cfg.MaxJSONDepth == 0 {
		return DefaultMaxJSONDepth
	}
	return s.cfg.MaxJSONDepth
}

// payloadError turns the validator's refusal into a *PayloadError.
func payloadError(err error) error {
	var e *ijson.Error
	if !errors.As(err, &e) {
		return fmt.Errorf("%w: %v", ErrInvalidPayload, err)
	}
	reason := e.Msg
	if e.Msg == "empty input" {
		reason = "empty payload (use {} or null for no data)"
	}
	return &PayloadError{Offset: e.Offset, Rule: e.Rule, Limit: e.Limit, Key: e.Key, Reason: reason}
}

// noteQueued wakes the writer when it waits for the rest of a group and
// the mailbox now holds what it waits for (gatherNeed requests), or r is
// a control request (which ends a group). A wake-up lost to a race costs the writer only the rest of its
// gather wait.
func (s *Store) noteQueued(r *request) {
	n := s.gatherNeed.Load()
	if n > 0 && (!r.op.write() || int64(len(s.mailbox)) >= n) && s.gatherNeed.CompareAndSwap(n, 0) {
		select {
		case s.gatherFull <- struct{}{}:
		default:
		}
	}
}

// enqueue hands a request to the writer, blocking while the mailbox is
// full. It fails with ErrReadOnly, ErrClosed or ErrFenceActive without
// enqueueing.
func (s *Store) enqueue(r *request) (*Ticket, error) {
	return s.send(r, false)
}

// tryEnqueue is enqueue that refuses instead of blocking: a *RetryError
// under pressure, a *CancelledError while a fence is active.
func (s *Store) tryEnqueue(r *request) (*Ticket, error) {
	return s.send(r, true)
}

func (s *Store) send(r *request, try bool) (*Ticket, error) {
	if s.readOnly {
		return nil, ErrReadOnly
	}
	if s.cfg.Replicator != nil && !r.local {
		switch r.op {
		case opAppend, opBatch:
			if r.fence != nil {
				return nil, fmt.Errorf("%w: writes through a fence", ErrReplicated)
			}
			return s.replicate(r)
		case opFenceBegin:
			return nil, fmt.Errorf("%w: fences", ErrReplicated)
		}
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	if r.fence == nil && (r.op == opAppend || r.op == opBatch) && s.fence.Load() != nil {
		if try {
			return nil, &CancelledError{Reason: "a visibility fence is active", Cause: ErrFenceActive}
		}
		return nil, ErrFenceActive
	}
	if !try {
		s.mailbox <- r
		s.noteQueued(r)
		return r.t, nil
	}
	q, c := len(s.mailbox), cap(s.mailbox)
	if q*100 >= c*s.cfg.PressureRetryPct {
		return nil, &RetryError{After: s.w.retryAfter(q), Reason: fmt.Sprintf("writer mailbox holds %d of %d", q, c)}
	}
	select {
	case s.mailbox <- r:
		s.noteQueued(r)
		return r.t, nil
	default:
		return nil, &RetryError{After: s.w.retryAfter(q), Reason: "writer mailbox is full"}
	}
}

// checkReadable fails reads after Close.
func (s *Store) checkReadable() error {
	if s.shut.Load() {
		return ErrClosed
	}
	return nil
}

// nowMicros is the configured wall clock in microseconds.
func (s *Store) nowMicros() int64 { return s.cfg.Now().UnixMicro() }
