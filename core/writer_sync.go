package core

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/core/internal/vfs"
)

// syncer runs fsyncs that no receipt waits for (EveryNEvents > 1, the
// Interval timer) on its own goroutine, so the writer keeps writing while
// the disk flushes. At most one such sync is in flight; the writer waits
// for it before starting another, before a synchronous sync, and before it
// seals or closes the file.
type syncer struct {
	mode   SyncMode
	fsyncs *atomic.Uint64
	req    chan vfs.File
	done   chan error
	busy   bool // a sync is in flight (writer goroutine only)
	// running: the goroutine was started. It starts with the first
	// background sync, so a store that syncs every event (EveryNEvents 1,
	// no Interval) has no goroutine for it until a group large enough to
	// sync while it publishes (writer.syncAndPublish), and one that sits
	// idle has none. It ends when the store closes.
	running bool
	lastNs  atomic.Int64
	totalNs atomic.Int64 // time spent in sync, for Stats.SyncTime
}

func (sy *syncer) start(mode SyncMode, fsyncs *atomic.Uint64) {
	sy.mode, sy.fsyncs = mode, fsyncs
	sy.req = make(chan vfs.File, 1)
	sy.done = make(chan error, 1)
}

// launch starts the goroutine on the first background sync.
func (sy *syncer) launch() {
	if sy.running {
		return
	}
	sy.running = true
	go func() {
		for f := range sy.req {
			sy.done <- sy.sync(f)
		}
	}()
}

func (sy *syncer) stop() { close(sy.req) }

// sync flushes f with the configured system call and records its duration.
func (sy *syncer) sync(f vfs.File) error {
	start := time.Now()
	var err error
	if sy.mode == SyncAll {
		err = f.SyncAll()
	} else {
		err = f.SyncData()
	}
	sy.fsyncs.Add(1)
	d := time.Since(start).Nanoseconds()
	sy.totalNs.Add(d)
	old := sy.lastNs.Load()
	if old == 0 {
		old = d
	}
	sy.lastNs.Store(old + (d-old)/8)
	if err != nil {
		return fmt.Errorf("batpak: sync segment: %w", err)
	}
	return nil
}

// inFlightDone is the channel that reports the in-flight sync, or nil.
func (w *writer) inFlightDone() <-chan error {
	if w.syncer.busy {
		return w.syncer.done
	}
	return nil
}

func (w *writer) syncFinished(err error) {
	w.fail(w.syncReturned(err))
}

// awaitSync waits for the in-flight background sync, if any.
func (w *writer) awaitSync() error {
	if !w.syncer.busy {
		return nil
	}
	return w.syncReturned(<-w.syncer.done)
}

// syncReturned records that the in-flight background sync returned err.
func (w *writer) syncReturned(err error) error {
	w.syncer.busy = false
	w.synced(err)
	return err
}

// startSync starts a background sync of everything written so far. If one
// is still running it waits for it first, so at most about 2×EveryNEvents
// events are ever unsynced: those of the running sync, and those written
// since it started (syncGroup owes the next sync rather than wait when
// that keeps them within 2N, and flush starts it before it writes more).
func (w *writer) startSync() error {
	if err := w.awaitSync(); err != nil {
		return err
	}
	w.syncer.launch()
	w.syncer.busy = true
	// The events placed in w.buf are not written yet: the sync covers
	// those before them.
	w.syncingSeq = w.nextSeq - uint64(w.bufEvents)
	w.syncer.req <- w.file
	w.unsynced = 0
	w.syncOwed = false
	w.disarm()
	return nil
}

// payOwedSync starts the sync syncGroup owed, once the running one has
// returned; flush calls it before it writes.
func (w *writer) payOwedSync() error {
	if !w.syncOwed {
		return nil
	}
	return w.startSync()
}

// syncNow syncs everything written so far before returning.
func (w *writer) syncNow() error {
	if err := w.awaitSync(); err != nil {
		return err
	}
	if err := w.syncer.sync(w.file); err != nil {
		return err
	}
	w.durable.Store(w.nextSeq)
	w.unsynced = 0
	w.syncOwed = false
	w.disarm()
	return nil
}

func (w *writer) disarm() {
	if w.armed {
		w.timer.Stop()
		w.armed = false
	}
}

// synced records a finished background sync (err nil: it succeeded).
func (w *writer) synced(err error) {
	if err == nil {
		w.durable.Store(w.syncingSeq)
	}
}
