package plugins

import (
	"context"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// wazero maps a module's machine code outside the Go heap and unmaps it
// in a finalizer, once the garbage collector finds the code's owner
// unreachable — after the version's runtime, compiled module and cache
// are closed, at the next collections. A charge for that code
// (HostOptions.Charge, MemoryCode) is given back only then, never when
// the version closes: otherwise closed versions' code, not yet
// collected, would add up outside the bound (a heap that grows slowly is
// collected rarely, every two minutes at least). codeFreer runs the
// collections while any closed version's code waits for them, spaced so
// that they take at most about a fifth of the time.

// codeFreer gives back the charges of closed versions' machine code once
// it is unmapped.
type codeFreer struct {
	once    sync.Once
	mu      sync.Mutex
	pending int           // closed versions whose code is still mapped
	drained chan struct{} // closed when pending is back to 0
	wake    chan struct{}
}

var freer = &codeFreer{wake: make(chan struct{}, 1)}

// minCollectEvery is the least time between the collections codeFreer
// runs; it waits four times as long as the last one took, if longer.
const minCollectEvery = 50 * time.Millisecond

// codeHold is one version's machine code, watched from the moment it is
// compiled until it is unmapped: release, set once the charge is known,
// runs then, and done is closed.
type codeHold struct {
	f       *codeFreer
	mu      sync.Mutex
	release func()
	closed  bool // the version was closed (counted in f.pending)
	freed   bool
	done    chan struct{}
}

// watch returns the hold of exec, wazero's object holding a version's
// machine code (see compiledBytes). The caller must not keep exec: the
// hold's end is that object's collection, after wazero's finalizer has
// unmapped the code.
func (f *codeFreer) watch(exec unsafe.Pointer) *codeHold {
	h := &codeHold{f: f, done: make(chan struct{})}
	runtime.AddCleanup((*byte)(exec), (*codeHold).unmapped, h)
	return h
}

// unmapped runs once the code is unmapped: the charge is given back.
func (h *codeHold) unmapped() {
	h.mu.Lock()
	release, counted := h.release, h.closed
	h.release, h.freed = nil, true
	h.mu.Unlock()
	if release != nil {
		release()
	}
	if counted {
		h.f.unpend()
	}
	close(h.done)
}

// pend counts one more closed version whose code waits to be unmapped.
func (f *codeFreer) pend() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending == 0 {
		f.drained = make(chan struct{})
	}
	f.pending++
}

// unpend counts one fewer.
func (f *codeFreer) unpend() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending--; f.pending == 0 {
		close(f.drained)
	}
}

// settle waits, within ctx and at most freeWait, until no closed
// version's code waits to be unmapped; false when none did. A load
// refused for want of room calls it and asks again: the room may be held
// by code already let go.
func (f *codeFreer) settle(ctx context.Context) bool {
	f.mu.Lock()
	if f.pending == 0 {
		f.mu.Unlock()
		return false
	}
	ch := f.drained
	f.mu.Unlock()
	waitFreed(ctx, ch)
	return true
}

// free is called once the version holding the code is closed: release
// (nil: nothing to give back) runs once the code is unmapped, and
// collections run until then; the channel is closed after it has run. h
// nil (the code could not be watched): release runs now.
func (f *codeFreer) free(h *codeHold, release func()) <-chan struct{} {
	if h == nil {
		if release != nil {
			release()
		}
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	f.pend() // before the hold is marked closed, so its cleanup counts it off after
	h.mu.Lock()
	if h.freed || h.closed {
		freed := h.freed
		h.mu.Unlock()
		f.unpend()
		if release != nil && freed {
			release()
		}
		return h.done
	}
	h.release, h.closed = release, true
	h.mu.Unlock()
	f.once.Do(func() { go f.run() })
	select {
	case f.wake <- struct{}{}:
	default:
	}
	return h.done
}

// run collects while closed versions' code waits to be unmapped.
func (f *codeFreer) run() {
	for range f.wake {
		for {
			f.mu.Lock()
			n := f.pending
			f.mu.Unlock()
			if n == 0 {
				break
			}
			// Two collections: the first finds the code unreachable and
			// queues wazero's finalizer, which unmaps it; the second
			// frees the object, which runs the cleanup.
			start := time.Now()
			runtime.GC()
			time.Sleep(time.Millisecond) // the finalizer runs
			runtime.GC()
			time.Sleep(max(minCollectEvery, 4*time.Since(start)))
		}
	}
}
