package tenantplugin

import (
	"container/list"
	"strings"
	"sync"

	"github.com/batpak-go/batpak/core"
)

// StateCache keeps projected states of every tenant's stores in one
// memory budget: at most MaxBytes of state (plus their keys), the least
// recently used dropped first. Each tenant store gets a view of it
// (Tenant) whose keys are the tenant's own. Safe for concurrent use.
type StateCache struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	ll    list.List
	keys  map[string]*list.Element
}

type cacheItem struct {
	key string
	st  core.CachedState
}

// NewStateCache returns a cache of at most maxBytes of state (a state
// larger than a quarter of it is never kept).
func NewStateCache(maxBytes int64) *StateCache {
	return &StateCache{max: maxBytes, keys: map[string]*list.Element{}}
}

// Tenant is the tenant's view of the cache, a core.ProjectionCache for
// its store's Config.ProjectionCache.
func (c *StateCache) Tenant(id string) core.ProjectionCache {
	return tenantCache{c: c, prefix: id + "\x00"}
}

// Forget drops every state of the tenant (its store is gone: a tenant
// created again under its id must not see them).
func (c *StateCache) Forget(id string) {
	prefix := id + "\x00"
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.keys {
		if strings.HasPrefix(k, prefix) {
			c.remove(e)
		}
	}
}

// Bytes is what the cache holds now.
func (c *StateCache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

func size(key string, st core.CachedState) int64 { return int64(len(key)+len(st.State)) + 64 }

func (c *StateCache) remove(e *list.Element) {
	it := e.Value.(*cacheItem)
	c.ll.Remove(e)
	delete(c.keys, it.key)
	c.bytes -= size(it.key, it.st)
}

func (c *StateCache) get(key string) (core.CachedState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.keys[key]
	if !ok {
		return core.CachedState{}, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*cacheItem).st, true
}

func (c *StateCache) put(key string, st core.CachedState) {
	n := size(key, st)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.keys[key]; ok {
		c.remove(e)
	}
	if n > c.max/4 {
		return
	}
	c.keys[key] = c.ll.PushFront(&cacheItem{key: key, st: st})
	c.bytes += n
	for c.bytes > c.max {
		c.remove(c.ll.Back())
	}
}

type tenantCache struct {
	c      *StateCache
	prefix string
}

func (t tenantCache) Get(key string) (core.CachedState, bool) { return t.c.get(t.prefix + key) }
func (t tenantCache) Put(key string, st core.CachedState)     { t.c.put(t.prefix+key, st) }

// ForgetEntities implements core.EntityForgetter: an erasure drops the
// tenant's states of the erased entities (the key's part before its
// first NUL is the entity), so no erased payload stays in memory until it
// is evicted; other tenants' states of the same names stay.
func (t tenantCache) ForgetEntities(entities map[string]bool) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for k, e := range t.c.keys {
		rest, ok := strings.CutPrefix(k, t.prefix)
		if !ok {
			continue
		}
		if entity, _, _ := strings.Cut(rest, "\x00"); entities[entity] {
			t.c.remove(e)
		}
	}
}
