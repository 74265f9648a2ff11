package tenancy

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Errors of the package. Every error Acquire and Remove return matches one
// of these with errors.Is, or wraps the store's own error (a
// *core.CorruptionError, *core.LockedError, an I/O error) from opening it.
var (
	// ErrTooManyOpen: MaxOpen tenants are open and every one is leased, so
	// none can be closed to make room. Retryable once a lease ends.
	ErrTooManyOpen = errors.New("tenancy: too many tenants open")
	// ErrUnknownTenant: the tenant does not exist (Config.Exists said no),
	// or it is being removed.
	ErrUnknownTenant = errors.New("tenancy: unknown tenant")
	// ErrInvalidID: the id does not match ValidID's pattern; nothing on
	// disk was looked at.
	ErrInvalidID = errors.New("tenancy: invalid tenant id")
	// ErrClosed: the registry was closed.
	ErrClosed = errors.New("tenancy: registry is closed")
)

// Defaults and ranges of Config.
const (
	DefaultMaxOpen     = 10000
	MaxMaxOpen         = 1 << 20
	DefaultIdleTimeout = 5 * time.Minute
	// MaxIDLength is the longest tenant id ValidID accepts.
	MaxIDLength = 63
	// trashPrefix starts the name a removed tenant's directory is renamed
	// to before it is deleted; no valid id starts with '.'.
	trashPrefix = ".trash-"
)

// ValidID reports whether id can name a tenant: 1 to 63 characters of
// lower-case ASCII letters, digits and '-', not starting with '-'
// (^[a-z0-9][a-z0-9-]{0,62}$). Such an id is a single path element that
// is neither "." nor "..", so <Root>/<id> is always a directory directly
// inside Root. The error matches ErrInvalidID and says what is wrong.
func ValidID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidID)
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("%w: %d characters, the limit is %d", ErrInvalidID, len(id), MaxIDLength)
	}
	if id[0] == '-' {
		return fmt.Errorf("%w: starts with '-'", ErrInvalidID)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w: byte %d is not one of a-z, 0-9 or '-'", ErrInvalidID, i)
		}
	}
	return nil
}

// Config configures a Registry.
type Config struct {
	// Root is the directory holding one store directory per tenant,
	// <Root>/<id>. New creates it if missing. Required.
	Root string
	// MaxOpen: at most this many stores are open (or opening, or closing)
	// at once; opening one more first closes the least recently acquired
	// store that has no lease, or fails with ErrTooManyOpen when all are
	// leased. Once more than MaxOpen - MaxOpen/100 are open, a background
	// task closes least recently acquired unleased stores to keep that
	// 1% free, so an Acquire seldom waits for a close. 0 means
	// DefaultMaxOpen (10000); range 0..MaxMaxOpen. Each
	// open idle store holds one file descriptor (see StoreConfig), so the
	// process's descriptor limit must exceed MaxOpen with room for the
	// busy ones and the listener's connections.
	MaxOpen int
	// IdleTimeout: a store with no lease that nobody acquired or released
	// for this long is closed (its checkpoint written) by a background
	// janitor. 0 means DefaultIdleTimeout (5m); negative disables idle
	// closing; range up to 24h.
	IdleTimeout time.Duration
	// StoreConfig returns the core.Config for tenant id (the registry sets
	// Dir to <Root>/<id>). Nil means StoreConfig(dir, true) — durable.
	StoreConfig func(id string) core.Config
	// Exists reports whether tenant id exists; Acquire refuses others with
	// ErrUnknownTenant before touching the disk, so no directory is ever
	// created for a tenant Exists does not know. Required. It is called
	// on every Acquire and again just before a store is opened, without
	// the registry's lock held; it must not call into the registry. The
	// caller records a deletion (Exists then says no) before Remove.
	Exists func(id string) bool
	// Logger receives open failures and close errors. Default slog.Default().
	Logger *slog.Logger
	// Provider, when set, supplies the stores instead of the registry
	// opening, closing and deleting them itself (a cluster node owns its
	// stores). Leases, Exists and the LRU work as without it; MaxOpen then
	// bounds the stores the registry hands out, not the provider's.
	Provider Provider
}

// Provider supplies a registry's stores (see Config.Provider).
type Provider interface {
	// Open returns tenant id's store; cfg is what the registry would
	// have opened (the provider may ignore it).
	Open(id string, cfg core.Config) (*core.Store, error)
	// Release is called where the registry would close the store (idle,
	// evicted, removed, registry closed).
	Release(id string, s *core.Store) error
	// Drop removes tenant id's data (Registry.Remove).
	Drop(ctx context.Context, id string) error
}

// Stats are the registry's counters, for metrics.
type Stats struct {
	Open         int    // stores open now (opening and closing included)
	Leased       int    // open stores with at least one lease
	Opens        uint64 // stores opened since New
	OpenFailures uint64 // opens that failed
	Evictions    uint64 // stores closed to make room for another
	IdleCloses   uint64 // stores closed by the idle janitor
	// Reopens counts stores closed to be opened again because their
	// writer had stopped (core.Store.Stopped: a full disk, an I/O error).
	Reopens uint64
}

// Registry opens tenant stores lazily and closes them when idle or to
// make room (least recently acquired first, never one that is leased).
// All methods are safe for concurrent use.
//
// Lifecycle of one tenant's store:
//
//	        Acquire (Exists, slot free or freed by evicting)
//	closed ───────────────────────────────────────────────▶ open ──┐ Acquire/Release
//	  ▲                                                       │  ◀─┘ (leases counted)
//	  └── Close (checkpoint) ◀── no lease and: idle for ──────┘
//	                             IdleTimeout, or evicted for room,
//	                             or Registry.Close / Remove
//
// Concurrent Acquires of a closed tenant open it once; they all get the
// same result. A failed open is returned (wrapped) to those callers only:
// the next Acquire tries again. A store whose writer stopped (a full
// disk) is closed and opened afresh by an Acquire, leased or not, at most
// every ReopenAfter and, after a full disk, once there is room
// (reopenLocked).
type Registry struct {
	cfg       Config
	log       *slog.Logger
	storeConf func(id string) core.Config

	mu      sync.Mutex
	tenants map[string]*tenant // open, opening, closing or being removed
	// openFailed is, per tenant, when and how its last open failed for
	// want of space: such a tenant is not opened again before ReopenAfter
	// has passed and its file system has room again (roomFor); until
	// then Acquire returns that failure. An Open costs a whole recovery,
	// and on a full disk fails again at its end.
	openFailed map[string]failedOpen
	lru        list.List // of *tenant with a store, most recently acquired at front
	slots      int       // stores open, opening or closing (≤ MaxOpen)
	closed     bool

	stopJanitor context.CancelFunc
	janitorDone chan struct{}
	// reserve is how many slots the janitor keeps free by closing least
	// recently acquired unleased stores in the background (MaxOpen/100),
	// so that an Acquire seldom waits for a store to close; kick wakes it.
	reserve  int
	kick     chan struct{}
	trashSeq atomic.Uint64

	opens, openFailures, evictions, idleCloses, reopens atomic.Uint64
}

// tenant is one tenant's entry while it has a store or a transition under
// way. Fields are guarded by Registry.mu.
type tenant struct {
	id       string
	store    *core.Store // set while open
	opened   time.Time   // when store was opened
	flight   *flight     // set while opening or closing; done when finished
	leases   int
	lastUsed time.Time
	elem     *list.Element // in Registry.lru while store is set
	removing bool          // Remove under way: Acquire refuses
	removed  chan struct{} // closed when the removal under way ends
	zero     chan struct{} // closed when leases reach 0 (made by a waiter)
}

// failedOpen is an open that failed for want of space (Registry.openFailed).
type failedOpen struct {
	at   time.Time
	err  error
	need int64 // the room to wait for (reopenRoom)
}

// flight is one open or close in progress; waiters block on done.
type flight struct {
	done chan struct{}
	err  error // an open's error, shared by the Acquires that waited for it
}

// Lease is a hold on an open tenant store: the store stays open until
// Release. A long-lived use (a subscription, a worker) holds its lease for
// its whole life, which also keeps the tenant from being evicted or closed
// for idleness.
type Lease struct {
	r        *Registry
	t        *tenant
	s        *core.Store
	released atomic.Bool
}

// New makes a Registry and starts its idle janitor (stopped by Close). It
// creates Root if missing and deletes what a removal interrupted by a crash
// left there (<Root>/.trash-*). Errors: a field out of range (naming it),
// or the I/O error creating Root.
func New(cfg Config) (*Registry, error) {
	switch {
	case cfg.Root == "":
		return nil, errors.New("tenancy: Config.Root is required")
	case cfg.Exists == nil:
		return nil, errors.New("tenancy: Config.Exists is required")
	case cfg.MaxOpen < 0 || cfg.MaxOpen > MaxMaxOpen:
		return nil, fmt.Errorf("tenancy: Config.MaxOpen is %d, want 0..%d", cfg.MaxOpen, MaxMaxOpen)
	case cfg.IdleTimeout > 24*time.Hour:
		return nil, fmt.Errorf("tenancy: Config.IdleTimeout is %v, want at most 24h", cfg.IdleTimeout)
	}
	if cfg.MaxOpen == 0 {
		cfg.MaxOpen = DefaultMaxOpen
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	r := &Registry{cfg: cfg, log: cfg.Logger, tenants: map[string]*tenant{}, storeConf: cfg.StoreConfig,
		reserve: cfg.MaxOpen / 100, kick: make(chan struct{}, 1)}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.storeConf == nil {
		r.storeConf = func(string) core.Config { return StoreConfig("", true) }
	}
	if err := os.MkdirAll(cfg.Root, 0o755); err != nil {
		return nil, fmt.Errorf("tenancy: create root: %w", err)
	}
	if err := r.removeTrash(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.stopJanitor, r.janitorDone = cancel, make(chan struct{})
	go r.janitor(ctx)
	return r, nil
}

// removeTrash deletes directories a crash left half-removed.
func (r *Registry) removeTrash() error {
	ents, err := os.ReadDir(r.cfg.Root)
	if err != nil {
		return fmt.Errorf("tenancy: read root: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), trashPrefix) {
			if err := os.RemoveAll(filepath.Join(r.cfg.Root, e.Name())); err != nil {
				return fmt.Errorf("tenancy: remove leftover trash: %w", err)
			}
		}
	}
	return nil
}

// Acquire returns a lease on tenant id's store, opening it if needed
// (which may first close the least recently acquired unleased store to
// stay within MaxOpen). It moves the tenant to the front of the LRU order.
// Errors: ErrInvalidID, ErrUnknownTenant (Exists said no, or a Remove is
// under way), ErrTooManyOpen, ErrClosed, ctx's error while waiting for
// another goroutine's open or close of the same store, or the store's open
// error wrapped ("tenancy: open tenant <id>: …"); a failed open leaves
// nothing behind, and the next Acquire tries again.
func (r *Registry) Acquire(ctx context.Context, id string) (*Lease, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	if !r.cfg.Exists(id) {
		return nil, fmt.Errorf("%w: %s", ErrUnknownTenant, id)
	}
	r.mu.Lock()
	for {
		if r.closed {
			r.mu.Unlock()
			return nil, ErrClosed
		}
		t := r.tenants[id]
		switch {
		case t != nil && t.removing:
			r.mu.Unlock()
			return nil, fmt.Errorf("%w: %s is being removed", ErrUnknownTenant, id)
		case t != nil && t.store != nil && t.flight == nil && r.reopenLocked(t):
			r.closeLocked(t, &r.reopens) // unlocks and relocks; then opened afresh
			continue
		case t != nil && t.store != nil && t.flight == nil:
			t.leases++
			t.lastUsed = time.Now()
			r.lru.MoveToFront(t.elem)
			r.mu.Unlock()
			return &Lease{r: r, t: t, s: t.store}, nil
		case t != nil && t.flight != nil:
			// Opening (share its result) or closing (then open again).
			f, opening := t.flight, t.store == nil
			r.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if opening && f.err != nil {
				return nil, f.err
			}
			r.mu.Lock()
			continue
		}
		if fo, ok := r.openFailed[id]; ok {
			if time.Since(fo.at) < ReopenAfter || !roomFor(filepath.Join(r.cfg.Root, id), fo.need) {
				r.mu.Unlock()
				return nil, fo.err
			}
			delete(r.openFailed, id)
		}
		// Closed: take a slot, closing an unleased store for it if needed.
		if r.slots >= r.cfg.MaxOpen {
			victim := r.lruVictimLocked()
			if victim == nil {
				wait := r.anyClosingLocked()
				r.mu.Unlock()
				if wait == nil {
					return nil, fmt.Errorf("%w: %d open, all in use", ErrTooManyOpen, r.cfg.MaxOpen)
				}
				select {
				case <-wait:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				r.mu.Lock()
				continue
			}
			r.closeLocked(victim, &r.evictions) // unlocks and relocks
			continue
		}
		return r.openLocked(id) // unlocks
	}
}

// openLocked opens tenant id's store in a slot of its own and returns a
// lease on it. Called with r.mu held; returns with it released.
func (r *Registry) openLocked(id string) (*Lease, error) {
	f := &flight{done: make(chan struct{})}
	t := &tenant{id: id, flight: f}
	r.tenants[id] = t
	r.slots++
	r.mu.Unlock()

	cfg := r.storeConf(id)
	cfg.Dir = filepath.Join(r.cfg.Root, id) // id is valid: one element inside Root
	if cfg.Logger == nil {
		cfg.Logger = r.log
	}
	// Asked again now that the open is registered: a deletion recorded
	// after Acquire's first check either shows here or finds this open in
	// the registry (Remove waits for it), so a deleted tenant's directory
	// is never created again.
	var s *core.Store
	var err error
	if r.cfg.Exists(id) {
		if r.cfg.Provider != nil {
			s, err = r.cfg.Provider.Open(id, cfg)
		} else {
			s, err = core.Open(cfg)
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	t.flight = nil
	if s == nil {
		if err != nil {
			f.err = fmt.Errorf("tenancy: open tenant %s: %w", id, err)
			// Not for a tenant being removed (a re-created one starts
			// afresh) or a Provider's stores (its own to open).
			if errors.Is(err, syscall.ENOSPC) && !t.removing && r.cfg.Provider == nil {
				if r.openFailed == nil {
					r.openFailed = map[string]failedOpen{}
				}
				r.openFailed[id] = failedOpen{at: time.Now(), err: f.err, need: reopenRoom(cfg)}
			}
			r.openFailures.Add(1)
			r.log.Warn("tenancy: tenant store failed to open", "tenant", id, "err", err)
		} else {
			f.err = fmt.Errorf("%w: %s", ErrUnknownTenant, id)
		}
		if !t.removing {
			delete(r.tenants, id)
		}
		r.slots--
		close(f.done)
		return nil, f.err
	}
	r.opens.Add(1)
	t.store, t.opened = s, time.Now()
	t.leases = 1
	t.lastUsed = time.Now()
	t.elem = r.lru.PushFront(t)
	close(f.done)
	if r.reserve > 0 && r.slots > r.cfg.MaxOpen-r.reserve {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	return &Lease{r: r, t: t, s: s}, nil
}

// ReopenAfter is how long a tenant store whose writer stopped is kept
// before Acquire closes it and opens it again, and how long an open that
// failed for want of space is answered from its error before the next is
// tried: a reopen costs an Open (a checkpoint read, or a scan of the log),
// so they come at most this often per tenant. Meanwhile Acquire hands
// out the stopped store: its reads work, its writes fail with
// core.ErrWriterStopped. A store a full disk stopped waits, besides, for
// room on its file system (reopenLocked).
const ReopenAfter = time.Second

// reopenRoom is the free space a file system must have again before a
// store of configuration cfg that a full disk stopped is opened again:
// its largest write (one event or one batch: a group that cannot be
// reserved stops the writer) with room to spare for framing, and two of
// a segment's extensions (core reserves at most 4 MiB ahead). Less, and
// the write that stopped it, retried, would stop it again.
func reopenRoom(cfg core.Config) int64 {
	return int64(max(cfg.SingleAppendMaxBytes, cfg.Batch.MaxBytes)) + 9<<20
}

// reopenLocked reports whether t's open store must be closed and opened
// again: its writer stopped (core.Store.Stopped), it was opened at least
// ReopenAfter ago, and, when a full disk stopped it, its file system has
// reopenRoom free again (roomFor). While the disk stays full the stopped
// store is kept: it serves reads, where a reopen would stop again at the
// first write, or fail to open (recovery may have to write: a new
// segment's header cut short, a fence's cancel marker) and take the
// reads with it. The close does not wait for t's leases: their
// holders' later calls fail with core.ErrClosed (a stream ends; the
// client resumes on the reopened store), as they would fail with
// core.ErrWriterStopped anyway. A Provider's stores are its own to
// reopen. Called with r.mu held.
func (r *Registry) reopenLocked(t *tenant) bool {
	if r.cfg.Provider != nil || time.Since(t.opened) < ReopenAfter {
		return false
	}
	err := t.store.Stopped()
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) && !roomFor(t.store.Dir(), reopenRoom(t.store.Config())) {
		return false
	}
	r.log.Warn("tenancy: reopening a tenant store whose writer stopped", "tenant", t.id, "err", err)
	return true
}

// lruVictimLocked is the least recently acquired open store with no lease
// and nothing under way, or nil.
func (r *Registry) lruVictimLocked() *tenant {
	for e := r.lru.Back(); e != nil; e = e.Prev() {
		t := e.Value.(*tenant)
		if t.leases == 0 && t.flight == nil && !t.removing {
			return t
		}
	}
	return nil
}

// anyClosingLocked returns the done channel of a close under way, or nil.
func (r *Registry) anyClosingLocked() <-chan struct{} {
	for _, t := range r.tenants {
		if t.flight != nil && t.store != nil {
			return t.flight.done
		}
	}
	return nil
}

// closeLocked closes t's store (which has no lease, unless it is being
// reopened: reopenLocked) and frees its slot,
// counting the close in counter (nil: none). Called with r.mu held; it is
// released during the close and held again on return. A close error is
// logged and returned: the store is gone from the registry either way
// (core.Store.Close has released the lock; the next Open recovers).
func (r *Registry) closeLocked(t *tenant, counter *atomic.Uint64) error {
	f := &flight{done: make(chan struct{})}
	t.flight = f
	s := t.store
	r.mu.Unlock()
	err := r.closeStore(t.id, s)
	r.mu.Lock()
	r.lru.Remove(t.elem)
	t.elem, t.store, t.flight = nil, nil, nil
	if !t.removing {
		delete(r.tenants, t.id)
	}
	r.slots--
	if counter != nil {
		counter.Add(1)
	}
	close(f.done)
	if err != nil {
		r.log.Warn("tenancy: tenant store closed with an error", "tenant", t.id, "err", err)
		return fmt.Errorf("tenancy: close tenant %s: %w", t.id, err)
	}
	return nil
}

// Store is the leased store. It must not be used after Release.
func (l *Lease) Store() *core.Store { return l.s }

// Tenant is the id of the leased tenant.
func (l *Lease) Tenant() string { return l.t.id }

// Release gives the lease back; a second call does nothing. The store
// stays open (until idle, evicted or the registry closes).
func (l *Lease) Release() {
	if !l.released.CompareAndSwap(false, true) {
		return
	}
	r, t := l.r, l.t
	r.mu.Lock()
	t.leases--
	t.lastUsed = time.Now()
	if t.leases == 0 && t.zero != nil {
		close(t.zero)
		t.zero = nil
	}
	r.mu.Unlock()
}

// waitUnleasedLocked waits until t has no lease and nothing under way, or
// ctx ends (its error is returned). Called and returns with r.mu held.
func (r *Registry) waitUnleasedLocked(ctx context.Context, t *tenant) error {
	for {
		var wait <-chan struct{}
		switch {
		case t.flight != nil:
			wait = t.flight.done
		case t.leases > 0:
			if t.zero == nil {
				t.zero = make(chan struct{})
			}
			wait = t.zero
		default:
			return nil
		}
		r.mu.Unlock()
		select {
		case <-wait:
			r.mu.Lock()
		case <-ctx.Done():
			r.mu.Lock()
			return ctx.Err()
		}
	}
}

// Remove deletes tenant id's data: from its start, Acquire of id fails
// with ErrUnknownTenant; it waits (up to ctx) for the store's leases to
// end, closes it, renames <Root>/<id> to <Root>/.trash-<id>-<n> (a rename
// is atomic: the tenant's directory is either all there or gone) and then
// deletes that. A crash during the deletion leaves only trash, which New
// deletes. A tenant with no directory is removed without error. If ctx
// ends first, nothing is deleted, the tenant stays usable and ctx's error
// is returned. The caller records the deletion (Exists then says no)
// before calling Remove, so the tenant cannot come back meanwhile. A
// removal of id already under way (Remove or Forget) is waited for
// first, up to ctx.
func (r *Registry) Remove(ctx context.Context, id string) error {
	return r.remove(ctx, id, true)
}

// Forget is Remove without deleting anything: it waits (up to ctx) for
// the store's leases to end and closes it (with a Provider: releases it),
// so the next Acquire opens the tenant afresh. A cluster node calls it for
// a tenant another node deleted: the node itself removes the data.
func (r *Registry) Forget(ctx context.Context, id string) error {
	return r.remove(ctx, id, false)
}

func (r *Registry) remove(ctx context.Context, id string, deleteData bool) error {
	if err := ValidID(id); err != nil {
		return err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	t := r.tenants[id]
	for t != nil && t.removing {
		// Another removal is under way (a cluster node forgets a tenant
		// deleted by the log while the DELETE that recorded it removes
		// it): this one goes on once that one ends.
		done := t.removed
		r.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return ErrClosed
		}
		t = r.tenants[id]
	}
	if t == nil {
		t = &tenant{id: id} // holds the id against Acquire while the directory goes
		r.tenants[id] = t
	}
	t.removing, t.removed = true, make(chan struct{})
	delete(r.openFailed, id)
	if err := r.waitUnleasedLocked(ctx, t); err != nil {
		r.endRemoveLocked(t)
		r.mu.Unlock()
		return err
	}
	var closeErr error
	if t.store != nil {
		closeErr = r.closeLocked(t, nil)
	}
	r.mu.Unlock()

	if !deleteData {
		r.mu.Lock()
		r.endRemoveLocked(t)
		r.mu.Unlock()
		return closeErr
	}
	if r.cfg.Provider != nil {
		err := r.cfg.Provider.Drop(ctx, id)
		r.mu.Lock()
		r.endRemoveLocked(t)
		r.mu.Unlock()
		if err != nil {
			return fmt.Errorf("tenancy: remove tenant %s: %w", id, err)
		}
		return closeErr
	}
	dir := filepath.Join(r.cfg.Root, id)
	trash := filepath.Join(r.cfg.Root, fmt.Sprintf("%s%s-%d-%d", trashPrefix, id, time.Now().UnixNano(), r.trashSeq.Add(1)))
	err := os.Rename(dir, trash)
	r.mu.Lock()
	r.endRemoveLocked(t)
	r.mu.Unlock()
	if errors.Is(err, os.ErrNotExist) {
		return closeErr
	}
	if err != nil {
		return fmt.Errorf("tenancy: remove tenant %s: %w", id, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("tenancy: remove tenant %s (its data is out of the tenant's place; the rest is deleted at the next start): %w", id, err)
	}
	return closeErr
}

// closeStore closes s, or hands it back to the Provider.
func (r *Registry) closeStore(id string, s *core.Store) error {
	if r.cfg.Provider != nil {
		return r.cfg.Provider.Release(id, s)
	}
	return s.Close()
}

// endRemoveLocked ends t's removal: an entry with no store is dropped.
func (r *Registry) endRemoveLocked(t *tenant) {
	t.removing = false
	close(t.removed)
	if t.store == nil && t.flight == nil && r.tenants[t.id] == t {
		delete(r.tenants, t.id)
	}
}

// Close stops the janitor, refuses later Acquires and Removes (ErrClosed),
// waits up to ctx for every lease to end, and closes every store (each
// writes its checkpoint). If ctx ends first, the stores still leased are
// closed anyway — their holders' later calls fail with core.ErrClosed —
// and the error says how many were leased (matching ctx's error). Close
// errors of the stores are joined into the result. A second Close returns
// nil at once.
func (r *Registry) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.stopJanitor()
	<-r.janitorDone

	r.mu.Lock()
	var errs []error
	var all []*tenant
	for _, t := range r.tenants {
		all = append(all, t)
	}
	leased := 0
	for _, t := range all {
		if err := r.waitUnleasedLocked(ctx, t); err != nil {
			leased++
		}
	}
	if leased > 0 {
		errs = append(errs, fmt.Errorf("tenancy: %d tenant stores still leased at close: %w", leased, ctx.Err()))
	}
	// Everything left is open (or finishing a flight): close them, a few
	// at a time (each close syncs and writes a checkpoint).
	var wg sync.WaitGroup
	var emu sync.Mutex
	sem := make(chan struct{}, 8)
	for _, t := range all {
		for t.flight != nil { // a flight a timed-out wait left: it ends soon
			f := t.flight
			r.mu.Unlock()
			<-f.done
			r.mu.Lock()
		}
		if t.store == nil {
			continue
		}
		s := t.store
		t.flight = &flight{done: make(chan struct{})}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := r.closeStore(t.id, s); err != nil {
				emu.Lock()
				errs = append(errs, fmt.Errorf("tenancy: close tenant %s: %w", t.id, err))
				emu.Unlock()
			}
		}()
	}
	r.mu.Unlock()
	wg.Wait()
	r.mu.Lock()
	for _, t := range all {
		if t.store != nil {
			r.lru.Remove(t.elem)
			t.elem, t.store = nil, nil
			r.slots--
			close(t.flight.done)
			t.flight = nil
		}
		delete(r.tenants, t.id)
	}
	r.mu.Unlock()
	return errors.Join(errs...)
}

// OpenCount is how many stores are open (opening and closing included).
func (r *Registry) OpenCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.slots
}

// Stats returns the registry's counters.
func (r *Registry) Stats() Stats {
	r.mu.Lock()
	st := Stats{Open: r.slots}
	for e := r.lru.Front(); e != nil; e = e.Next() {
		if e.Value.(*tenant).leases > 0 {
			st.Leased++
		}
	}
	// Read under the lock, which every change of them holds: the counts
	// agree with Open.
	st.Opens = r.opens.Load()
	st.OpenFailures = r.openFailures.Load()
	st.Evictions = r.evictions.Load()
	st.IdleCloses = r.idleCloses.Load()
	st.Reopens = r.reopens.Load()
	r.mu.Unlock()
	return st
}

// janitor closes stores idle for IdleTimeout, and, when kicked, closes
// least recently acquired unleased stores until the reserve of free slots
// is back. It wakes every quarter of IdleTimeout (between 5 ms and 5 s), so
// a store closes between IdleTimeout and 1.25×IdleTimeout (or IdleTimeout
// + 5 s) after its last use.
func (r *Registry) janitor(ctx context.Context) {
	defer close(r.janitorDone)
	var tick <-chan time.Time
	if r.cfg.IdleTimeout > 0 {
		t := time.NewTicker(min(max(r.cfg.IdleTimeout/4, 5*time.Millisecond), 5*time.Second))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			r.closeIdle(ctx)
		case <-r.kick:
			r.refillReserve(ctx)
		}
	}
}

// refillReserve closes least recently acquired unleased stores, one at a
// time, until r.reserve slots are free (or none is left to close).
func (r *Registry) refillReserve(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.slots > r.cfg.MaxOpen-r.reserve && !r.closed && ctx.Err() == nil {
		victim := r.lruVictimLocked()
		if victim == nil {
			return
		}
		_ = r.closeLocked(victim, &r.evictions)
	}
}

// closeIdle closes every store idle for IdleTimeout, a few at a time.
func (r *Registry) closeIdle(ctx context.Context) {
	cutoff := time.Now().Add(-r.cfg.IdleTimeout)
	var idle []string
	r.mu.Lock()
	for e := r.lru.Front(); e != nil; e = e.Next() {
		t := e.Value.(*tenant)
		if t.leases == 0 && t.flight == nil && !t.removing && t.lastUsed.Before(cutoff) {
			idle = append(idle, t.id)
		}
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, id := range idle {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r.mu.Lock()
			defer r.mu.Unlock()
			// Checked again: it may have been acquired since.
			t := r.tenants[id]
			if t != nil && t.store != nil && t.leases == 0 && t.flight == nil && !t.removing && t.lastUsed.Before(cutoff) && !r.closed {
				_ = r.closeLocked(t, &r.idleCloses)
			}
		}()
	}
	wg.Wait()
}
