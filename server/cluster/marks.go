package cluster

import (
	"sync"

	"github.com/batpak-go/batpak/core"
)

// StoreMark is what a node knows of a tenant's store without opening it:
// Born, the log index of the first entry applied to it since it was
// (re)created (the same on every replica: a store dropped and created
// again has another), and Wrote, the index of the last entry that wrote to
// it here (or of the snapshot it was restored from). Zero: unknown (no
// write applied since this process started, or no store).
type StoreMark struct {
	Born, Wrote uint64
}

// storeMarks is the node's StoreMark per tenant, safe for concurrent
// use: written by the FSM as it applies, read by anyone.
type storeMarks struct {
	mu sync.Mutex
	m  map[string]StoreMark
}

func (sm *storeMarks) wrote(tenant string, born, index uint64) {
	sm.mu.Lock()
	if sm.m == nil {
		sm.m = map[string]StoreMark{}
	}
	sm.m[tenant] = StoreMark{Born: born, Wrote: index}
	sm.mu.Unlock()
}

func (sm *storeMarks) forget(tenant string) {
	sm.mu.Lock()
	delete(sm.m, tenant)
	sm.mu.Unlock()
}

// reset replaces every mark: the stores restored from a snapshot taken at
// index, with their birth indexes.
func (sm *storeMarks) reset(born map[string]uint64, index uint64) {
	m := make(map[string]StoreMark, len(born))
	for name, b := range born {
		m[name] = StoreMark{Born: b, Wrote: index}
	}
	sm.mu.Lock()
	sm.m = m
	sm.mu.Unlock()
}

func (sm *storeMarks) get(tenant string) StoreMark {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.m[tenant]
}

// Mark is the tenant's StoreMark on this node (zero when unknown).
func (n *Node) Mark(tenant string) StoreMark { return n.fsm.marks.get(tenant) }

// Inspect runs fn with the tenant's store held open, like View, but
// without counting as a use of it: a background reader (a replica check)
// neither keeps an idle store open nor moves it ahead of the stores
// requests use when the node needs room. ErrNoTenant when this node holds
// no store for it (it is never created).
func (n *Node) Inspect(tenant string, fn func(*core.Store) error) error {
	if err := validStore(tenant); err != nil {
		return err
	}
	e, err := n.fsm.hold(tenant, false, false)
	if err != nil {
		return err
	}
	defer e.releaseQuiet()
	return fn(e.s)
}
