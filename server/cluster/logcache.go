package cluster

import (
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// Bounds of the in-memory cache of recently written raft entries (the
// leader replicates from it and reads each entry's term from it for the
// next AppendEntries, and a follower applies from it, without reading
// raft.db back): at most logCacheEntries entries and logCacheBytes of
// their data. raft's own LogCache bounds the count only, so a tenant
// writing entries of Config.MaxBytes each would make every node hold a
// thousand of them (16 GiB) for as long as no newer entries push them
// out.
const logCacheEntries = 1024

// logCacheBytes is the byte bound of the cache on a node whose writes
// carry at most maxBytes of payload (Config.MaxBytes): room for the
// largest entries in flight — the grouper keeps one large write in flight
// at a time, and the leader reads an entry again for the AppendEntries
// after it — with their encoding, and 16 MiB of small ones. An entry
// larger than the cache was read back from raft.db, and decoded whole,
// by each of those reads: with 16 MiB batches, every later write waited
// for several such decodes (most of a 16 MiB entry's 0.75 s here).
func logCacheBytes(maxBytes int) int { return 3*maxBytes + 16<<20 }

// logCache is raft.LogCache with a bound on the bytes it holds: an entry
// that would take the cache past its bound pushes out the oldest ones; one
// larger than the bound alone is not cached (it is read from the store
// when needed).
type logCache struct {
	store raft.LogStore

	mu    sync.RWMutex
	cache []*raft.Log // ring by index
	order []uint64    // the indexes cached, oldest first (some since pushed out of the ring)
	bytes int         // the data of the cached entries
	max   int
}

var _ raft.LogStore = (*logCache)(nil)

func newLogCache(store raft.LogStore, entries, maxBytes int) *logCache {
	return &logCache{store: store, cache: make([]*raft.Log, entries), max: maxBytes}
}

// IsMonotonic implements raft.MonotonicLogStore as the store does.
func (c *logCache) IsMonotonic() bool {
	m, ok := c.store.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (c *logCache) GetLog(idx uint64, log *raft.Log) error {
	c.mu.RLock()
	cached := c.cache[idx%uint64(len(c.cache))]
	c.mu.RUnlock()
	if cached != nil && cached.Index == idx {
		*log = *cached
		return nil
	}
	return c.store.GetLog(idx, log)
}

func (c *logCache) StoreLog(log *raft.Log) error { return c.StoreLogs([]*raft.Log{log}) }

func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.store.StoreLogs(logs); err != nil {
		return fmt.Errorf("unable to store logs within log store, err: %q", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range logs {
		c.drop(l.Index, false) // the ring's slot, whichever entry holds it
		if len(l.Data) > c.max {
			continue
		}
		for c.bytes+len(l.Data) > c.max && len(c.order) > 0 {
			c.drop(c.order[0], true)
			c.order = c.order[1:]
		}
		c.cache[l.Index%uint64(len(c.cache))] = l
		c.bytes += len(l.Data)
		c.order = append(c.order, l.Index)
	}
	// order keeps an index pushed out of the ring until it reaches the
	// front: compact it once it holds more than twice the ring.
	if len(c.order) > 2*len(c.cache) {
		kept := c.order[:0]
		for _, i := range c.order {
			if e := c.cache[i%uint64(len(c.cache))]; e != nil && e.Index == i {
				kept = append(kept, i)
			}
		}
		c.order = append([]uint64(nil), kept...)
	}
	return nil
}

// drop takes the entry in idx's slot of the ring out of the cache: any
// entry, or with exact only entry idx. The caller holds mu.
func (c *logCache) drop(idx uint64, exact bool) {
	slot := idx % uint64(len(c.cache))
	if old := c.cache[slot]; old != nil && (!exact || old.Index == idx) {
		c.bytes -= len(old.Data)
		c.cache[slot] = nil
	}
}

func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }

func (c *logCache) LastIndex() (uint64, error) { return c.store.LastIndex() }

// DeleteRange takes the entries from min to max out of the cache and the
// store. Only those: raft truncates its log behind each snapshot, and the
// newest entries, which it replicates and applies from the cache, stay.
func (c *logCache) DeleteRange(min, max uint64) error {
	c.mu.Lock()
	for i, e := range c.cache {
		if e != nil && e.Index >= min && e.Index <= max {
			c.bytes -= len(e.Data)
			c.cache[i] = nil
		}
	}
	c.mu.Unlock()
	return c.store.DeleteRange(min, max)
}
