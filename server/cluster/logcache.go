package cluster

import (
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// Bounds of the in-memory cache of recently written raft entries (the
// leader replicates from it, and a follower applies from it, without
// reading raft.db back): at most logCacheEntries entries and
// logCacheBytes of their data. raft's own LogCache bounds the count only,
// so a tenant writing entries of Config.MaxBytes each would make every
// node hold a thousand of them (16 GiB) for as long as no newer entries
// push them out.
const (
	logCacheEntries = 1024
	logCacheBytes   = 16 << 20
)

// logCache is raft.LogCache with a bound on the bytes it holds: an entry
// that would take the cache past logCacheBytes is not cached (it is read
// from the store when needed).
type logCache struct {
	store raft.LogStore

	mu    sync.RWMutex
	cache []*raft.Log // ring by index
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
		slot := l.Index % uint64(len(c.cache))
		if old := c.cache[slot]; old != nil {
			c.bytes -= len(old.Data)
			c.cache[slot] = nil
		}
		if c.bytes+len(l.Data) <= c.max {
			c.cache[slot] = l
			c.bytes += len(l.Data)
		}
	}
	return nil
}

func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }

func (c *logCache) LastIndex() (uint64, error) { return c.store.LastIndex() }

func (c *logCache) DeleteRange(min, max uint64) error {
	c.mu.Lock()
	c.cache = make([]*raft.Log, len(c.cache))
	c.bytes = 0
	c.mu.Unlock()
	return c.store.DeleteRange(min, max)
}
