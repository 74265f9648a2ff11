package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/core"
)

// A node keeps a tenant's store open while something uses it, and closes
// it once nothing has for Config.StoreIdleTimeout (or sooner, least
// recently used first, when opening another would pass
// Config.MaxOpenStores). A store is in use while it is held:
//
//	holder                          from                 until
//	Node.Store's caller             Node.Store           Node.ReleaseStore
//	a Node.View callback            the call             fn returns
//	raft's apply (FSM goroutine)    its writes queued    they are written
//	a cursor commit                 the operation        its end
//	a snapshot's copy               the copy             its end
//
// A snapshot copies a closed store's directory instead, keeping the store
// closed meanwhile (snapshotStore).
//
// A closed store is opened again on its next use (a new *core.Store over
// the same directory: every event, cursor position and hash chain is
// there). Only a drop (DropStore), a restore that finds the store in
// another incarnation, and Node.Close close a store that is held.
//
// Locking: fsm.mu guards fsm.stores (membership, and each entry's busy).
// A hold is taken under fsm.mu (shared suffices) while the entry is not
// busy; it is given back without the lock. Closing needs fsm.mu
// exclusively and an entry with no holds, marked busy first: no hold can
// start until the close is done, and the store a later hold gets is the
// one opened after it. Opening and closing run with fsm.mu released, so
// reads of other tenants go on meanwhile; the entry's busy channel makes
// the tenant's other users wait for it. Restore, drops and the node's
// Close first wait until no entry is busy, then hold fsm.mu exclusively
// for their whole work.

// Defaults and ranges of the open-store bound (Config.MaxOpenStores) and
// of the idle timeout (Config.StoreIdleTimeout): the single server's
// (server.max_open_tenants, server.tenant_idle_timeout).
const (
	DefaultMaxOpenStores    = 10000
	MaxMaxOpenStores        = 1 << 20
	DefaultStoreIdleTimeout = 5 * time.Minute
	MaxStoreIdleTimeout     = 24 * time.Hour
)

// StoreStats are a node's counters of its open stores, for metrics.
type StoreStats struct {
	Open       int    // stores open now (opening and closing included)
	InUse      int    // open stores held now (Node.Store, View, applies)
	Opens      uint64 // stores opened since Open (reopens included)
	IdleCloses uint64 // stores closed after StoreIdleTimeout unused
	Evictions  uint64 // unused stores closed to stay within MaxOpenStores
	// OverBound counts opens past MaxOpenStores because every open store
	// was in use: the node opens anyway rather than stall raft's apply.
	OverBound uint64
}

// storeEntry is one tenant's store while it is open, opening or closing.
type storeEntry struct {
	name string
	s    *core.Store // set once open; nil while opening
	// busy is non-nil while the store opens or closes, closed when that
	// finishes. Guarded by fsm.mu.
	busy chan struct{}
	// users counts the holds: raised only with fsm.mu held (shared or
	// exclusive) while busy is nil, lowered anywhere (release).
	users    atomic.Int64
	lastUsed atomic.Int64 // unix nanoseconds of the last hold or release
}

func (e *storeEntry) touch() { e.lastUsed.Store(time.Now().UnixNano()) }

// release gives one hold back; false when there was none to give.
func (e *storeEntry) release() bool {
	e.touch()
	return e.releaseQuiet()
}

// releaseQuiet is release without counting it as a use (a snapshot's
// hold: it must not keep idle stores open).
func (e *storeEntry) releaseQuiet() bool {
	for {
		u := e.users.Load()
		if u <= 0 {
			return false
		}
		if e.users.CompareAndSwap(u, u-1) {
			return true
		}
	}
}

// unusedLocked reports whether e is open, not busy and held by nobody.
// The caller holds fsm.mu.
func (e *storeEntry) unusedLocked() bool {
	return e.s != nil && e.busy == nil && e.users.Load() == 0
}

// acquire holds tenant's store, opening it (creating it empty when create
// is set; otherwise ErrNoTenant when it has no directory) as needed. The
// caller releases the entry when done. Opening past MaxOpenStores first
// closes the least recently used unused store (counted in Evictions), or
// waits for a close under way; when every open store is in use it opens
// anyway (OverBound).
func (f *fsm) acquire(tenant string, create bool) (*storeEntry, error) {
	return f.hold(tenant, create, true)
}

// hold is acquire; use says whether the hold counts as a use of the
// store (resets its idle time).
func (f *fsm) hold(tenant string, create, use bool) (*storeEntry, error) {
	f.mu.RLock()
	if e := f.stores[tenant]; e != nil && e.busy == nil && !f.closed {
		e.users.Add(1)
		if use {
			e.touch()
		}
		f.mu.RUnlock()
		return e, nil
	}
	f.mu.RUnlock()
	f.mu.Lock()
	for {
		if f.closed {
			f.mu.Unlock()
			return nil, ErrClosed
		}
		e := f.stores[tenant]
		if e != nil && e.busy != nil {
			f.waitLocked(e.busy)
			continue
		}
		if e != nil {
			e.users.Add(1)
			if use {
				e.touch()
			}
			f.mu.Unlock()
			return e, nil
		}
		dir := filepath.Join(f.root, tenant)
		if !create {
			if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				f.mu.Unlock()
				return nil, fmt.Errorf("%w: %q", ErrNoTenant, tenant)
			}
		}
		if len(f.stores) >= f.maxOpen {
			if v := f.lruVictimLocked(); v != nil {
				_ = f.closeLocked(v, &f.evictions) // gone either way: the next open recovers
				continue
			}
			if ch := f.anyBusyLocked(); ch != nil {
				f.waitLocked(ch)
				continue
			}
			f.overBound.Add(1)
		}
		return f.openLocked(tenant, dir, use)
	}
}

// waitLocked waits for ch with f.mu released; it returns with f.mu held
// exclusively again.
func (f *fsm) waitLocked(ch chan struct{}) {
	f.mu.Unlock()
	<-ch
	f.mu.Lock()
}

// openLocked opens tenant's store in dir, held once. Called with f.mu held
// exclusively; returns with it released.
func (f *fsm) openLocked(tenant, dir string, use bool) (*storeEntry, error) {
	e := &storeEntry{name: tenant, busy: make(chan struct{})}
	e.users.Store(1)
	f.stores[tenant] = e
	f.mu.Unlock()
	s, err := core.Open(f.storeConfig(tenant, dir))
	f.mu.Lock()
	defer f.mu.Unlock()
	close(e.busy)
	e.busy = nil
	if err != nil {
		delete(f.stores, tenant)
		return nil, fmt.Errorf("cluster: opening tenant %q: %w", tenant, err)
	}
	e.s = s
	// A hold that is not a use leaves it untouched: the first store the
	// janitor closes, and the first evicted.
	if use {
		e.touch()
	}
	f.held.Store(s, e)
	f.opens.Add(1)
	return e, nil
}

// closeLocked closes e's store, which nobody holds (the caller saw
// unusedLocked with f.mu held exclusively), counting it in counter (nil:
// none). f.mu is released during the close and held again on return. The
// store is gone from the node even when Close fails (core released its
// lock; the next open recovers).
func (f *fsm) closeLocked(e *storeEntry, counter *atomic.Uint64) error {
	ch := make(chan struct{})
	e.busy = ch
	f.mu.Unlock()
	err := e.s.Close()
	f.mu.Lock()
	f.forgetLocked(e)
	e.busy = nil
	close(ch)
	if counter != nil {
		counter.Add(1)
	}
	if err != nil {
		return fmt.Errorf("cluster: closing tenant %q: %w", e.name, err)
	}
	return nil
}

// closeNowLocked closes e's store without releasing f.mu (a restore, a
// drop, the node's Close: nothing else may change the stores meanwhile).
// Its holders, if any, get core.ErrClosed from then on.
func (f *fsm) closeNowLocked(e *storeEntry) error {
	f.forgetLocked(e)
	if e.s == nil {
		return nil
	}
	if err := e.s.Close(); err != nil {
		return fmt.Errorf("cluster: closing tenant %q: %w", e.name, err)
	}
	return nil
}

func (f *fsm) forgetLocked(e *storeEntry) {
	if f.stores[e.name] == e {
		delete(f.stores, e.name)
	}
	if e.s != nil {
		f.held.Delete(e.s)
	}
}

// settleLocked waits until tenant's entry (every entry when tenant is
// "") is neither opening nor closing. Called and returns with f.mu held
// exclusively.
func (f *fsm) settleLocked(tenant string) {
	for {
		var ch chan struct{}
		if tenant != "" {
			if e := f.stores[tenant]; e != nil {
				ch = e.busy
			}
		} else {
			ch = f.anyBusyLocked()
		}
		if ch == nil {
			return
		}
		f.waitLocked(ch)
	}
}

// anyBusyLocked is the busy channel of an entry opening or closing, or nil.
func (f *fsm) anyBusyLocked() chan struct{} {
	for _, e := range f.stores {
		if e.busy != nil {
			return e.busy
		}
	}
	return nil
}

// lruVictimLocked is the least recently used unused store, or nil.
func (f *fsm) lruVictimLocked() *storeEntry {
	var v *storeEntry
	for _, e := range f.stores {
		if e.unusedLocked() && (v == nil || e.lastUsed.Load() < v.lastUsed.Load()) {
			v = e
		}
	}
	return v
}

// snapshotStore copies tenant's store into dest, a raft snapshot's
// staging directory, without syncing it: Persist reads it back at once
// into raft's snapshot file, which raft syncs, and a node's staging
// directory is emptied when it opens (syncing 320 MiB of copies tripled
// the time applies waited for Snapshot). Sealed segments, footers and
// checkpoints are hard-linked rather than copied (a replicated store
// never changes them in place: core.SnapshotOptions.LinkSealed), so only
// each store's active segment is copied while applies wait; Persist
// reads the linked files later, as they were. An open store is held
// meanwhile and copied by core.Store.SnapshotWithOptions; the hold does
// not count as a use (its idle time goes on). A closed store is kept closed meanwhile
// (an entry with no store, busy: its users wait) and its directory
// copied file by file (core.CopyFilesLinked): Close synced every file and wrote the checkpoint,
// and nothing writes to the directory until the store is opened again,
// so the copy is the store as its Close left it, which opens as the
// store itself would. A snapshot thus neither opens stores nor leaves
// any open.
func (f *fsm) snapshotStore(ctx context.Context, tenant, dest string) error {
	f.mu.Lock()
	f.settleLocked(tenant)
	if f.closed {
		f.mu.Unlock()
		return ErrClosed
	}
	if e := f.stores[tenant]; e != nil {
		e.users.Add(1)
		f.mu.Unlock()
		_, err := e.s.SnapshotWithOptions(ctx, dest, core.SnapshotOptions{NoSync: true, LinkSealed: true})
		e.releaseQuiet()
		return err
	}
	pin := &storeEntry{name: tenant, busy: make(chan struct{})}
	f.stores[tenant] = pin
	f.mu.Unlock()
	err := core.CopyFilesLinked(filepath.Join(f.root, tenant), dest)
	f.mu.Lock()
	if f.stores[tenant] == pin {
		delete(f.stores, tenant)
	}
	close(pin.busy)
	pin.busy = nil
	f.mu.Unlock()
	return err
}

// closeIdle closes every store nobody has used since cutoff.
func (f *fsm) closeIdle(cutoff time.Time) {
	c := cutoff.UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	var idle []*storeEntry
	for _, e := range f.stores {
		if e.unusedLocked() && e.lastUsed.Load() < c {
			idle = append(idle, e)
		}
	}
	for _, e := range idle {
		// Checked again: it may have been held, or closed, meanwhile.
		if f.closed {
			return
		}
		if f.stores[e.name] == e && e.unusedLocked() && e.lastUsed.Load() < c {
			_ = f.closeLocked(e, &f.idleCloses)
		}
	}
}

// janitor closes idle stores every quarter of the idle timeout (between
// 5ms and 5s) until stop is closed: a store closes between
// StoreIdleTimeout and 1.25×StoreIdleTimeout (or StoreIdleTimeout + 5s)
// after its last use.
func (f *fsm) janitor(idle time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(min(max(idle/4, 5*time.Millisecond), 5*time.Second))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			f.closeIdle(time.Now().Add(-idle))
		}
	}
}

// storeStats counts the open stores.
func (f *fsm) storeStats() StoreStats {
	f.mu.RLock()
	st := StoreStats{Open: len(f.stores)}
	for _, e := range f.stores {
		if e.users.Load() > 0 {
			st.InUse++
		}
	}
	f.mu.RUnlock()
	st.Opens = f.opens.Load()
	st.IdleCloses = f.idleCloses.Load()
	st.Evictions = f.evictions.Load()
	st.OverBound = f.overBound.Load()
	return st
}

// releaseStore gives back one hold Node.Store took on s; false when s is
// not an open store of this node (released already, dropped, closed).
func (f *fsm) releaseStore(s *core.Store) bool {
	v, ok := f.held.Load(s)
	if !ok {
		return false
	}
	return v.(*storeEntry).release()
}

// closeStores closes every store (the node's Close, or a test's cleanup).
// The caller holds f.mu exclusively.
func (f *fsm) closeStores() error {
	f.settleLocked("")
	var errs []error
	for _, e := range f.stores {
		if err := f.closeNowLocked(e); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
