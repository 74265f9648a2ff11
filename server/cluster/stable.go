package cluster

import (
	"sync"

	"github.com/hashicorp/raft"
)

// closingStable is raft's stable store (its current term and vote) as a
// node closes it. raft's transport answers heartbeats on the
// connection's own goroutine, which raft's Shutdown does not wait for: a
// heartbeat that passed raft's shutdown check may still record a new
// term, and raft panics when that write fails ("database not open"). So
// close waits for the calls under way, and a call arriving after it
// waits for good (its goroutine, and its connection, end with the
// process): it neither writes nor answers, so no peer is told of a term
// this node did not record.
type closingStable struct {
	raft.StableStore
	mu     sync.RWMutex
	closed bool
	never  chan struct{} // never closed
}

func newClosingStable(s raft.StableStore) *closingStable {
	return &closingStable{StableStore: s, never: make(chan struct{})}
}

// enter admits a call, or holds it forever once the store is closed.
func (s *closingStable) enter() {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		<-s.never
	}
}

// close waits for the calls under way; later ones wait for good. Then
// the underlying store can be closed.
func (s *closingStable) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

func (s *closingStable) Set(key, val []byte) error {
	s.enter()
	defer s.mu.RUnlock()
	return s.StableStore.Set(key, val)
}

func (s *closingStable) Get(key []byte) ([]byte, error) {
	s.enter()
	defer s.mu.RUnlock()
	return s.StableStore.Get(key)
}

func (s *closingStable) SetUint64(key []byte, val uint64) error {
	s.enter()
	defer s.mu.RUnlock()
	return s.StableStore.SetUint64(key, val)
}

func (s *closingStable) GetUint64(key []byte) (uint64, error) {
	s.enter()
	defer s.mu.RUnlock()
	return s.StableStore.GetUint64(key)
}
