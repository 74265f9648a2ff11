package follow

import (
	"sync"

	"github.com/batpak-go/batpak/core"
)

// Set keeps one Hub per open store (per tenant), made at the store's
// first subscription and forgotten when its last one closes, so a
// server needs no bookkeeping of its own: Subscribe with the tenant's
// store. A Set is safe for concurrent use.
type Set struct {
	opts  Options
	reads *budget // Options.StoreReadBytes, shared by its hubs

	mu     sync.Mutex
	hubs   map[*core.Store]*Hub
	closed bool
	// totals of hubs already forgotten, for Stats
	encoded, cutOff uint64
}

// NewSet makes a Set whose hubs all use opts (checked as New does).
func NewSet(opts Options) (*Set, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Set{opts: o, reads: newBudget(o.StoreReadBytes, o.Starved), hubs: map[*core.Store]*Hub{}}, nil
}

// Subscribe subscribes to region r of store st after start, through st's
// hub (see Hub.Subscribe). After Close it fails with ErrHubClosed.
func (s *Set) Subscribe(st *core.Store, r core.Region, start Start) (*Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrHubClosed
	}
	h := s.hubs[st]
	if h == nil {
		h = &Hub{store: st, opts: s.opts, idle: s.forget, reads: s.reads, share: s.reads.share()}
		s.hubs[st] = h
	}
	sub, err := h.Subscribe(r, start)
	if err != nil && h.Stats().Subscribers == 0 {
		delete(s.hubs, st)
	}
	return sub, err
}

// forget drops h once it has no subscriptions (called by the hub).
func (s *Set) forget(h *Hub) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hubs[h.store] != h {
		return
	}
	if st := h.Stats(); st.Subscribers == 0 {
		delete(s.hubs, h.store)
		s.encoded += st.Encoded
		s.cutOff += st.CutOff
	}
}

// Close ends every subscription of every hub with ErrHubClosed (each
// with its resume position) and refuses later subscriptions: what a
// server does at shutdown, before closing its stores.
func (s *Set) Close() {
	s.mu.Lock()
	s.closed = true
	hubs := make([]*Hub, 0, len(s.hubs))
	for _, h := range s.hubs {
		hubs = append(hubs, h)
	}
	s.mu.Unlock()
	for _, h := range hubs {
		h.Close()
	}
}

// Stats sums the stats of the Set's hubs; Running counts as true when any
// hub runs. Encoded and CutOff include hubs already forgotten.
func (s *Set) Stats() (st Stats, hubs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Encoded, st.CutOff = s.encoded, s.cutOff
	for _, h := range s.hubs {
		hs := h.Stats()
		st.Subscribers += hs.Subscribers
		st.Running = st.Running || hs.Running
		st.RingFrames += hs.RingFrames
		st.RingBytes += hs.RingBytes
		st.Encoded += hs.Encoded
		st.CutOff += hs.CutOff
	}
	return st, len(s.hubs)
}
