package tenantplugin

import (
	"container/list"
	"strings"
	"sync"

	"github.com/batpak-go/batpak/core"
)

// StateCache keeps projected states of every tenant's stores in one
// memory budget: at most MaxBytes of state (each state counted with its
// key and the cache's own bookkeeping, stateOverhead), a tenant
// at most half of it (as the plugins' code and idle budgets), so that
// one tenant's large or many states cannot push every other tenant's
// out. A state that takes a tenant over its half drops that tenant's own
// least recently used states; one that takes the cache over the whole
// drops the least recently used of all. Each tenant store gets a view of
// it (Tenant) whose keys are the tenant's own. Safe for concurrent use.
type StateCache struct {
	mu      sync.Mutex
	max     int64
	bytes   int64
	ll      list.List // every tenant's states, most recently used first
	keys    map[string]*list.Element
	tenants map[string]*tenantStates
}

// tenantStates are one tenant's states, most recently used first.
type tenantStates struct {
	bytes int64
	ll    list.List // of *list.Element of StateCache.ll
}

type cacheItem struct {
	key    string
	tenant string
	own    *list.Element // in the tenant's list
	st     core.CachedState
}

// NewStateCache returns a cache of at most maxBytes of state, a tenant at
// most half of it (a state larger than a quarter of it is never kept).
func NewStateCache(maxBytes int64) *StateCache {
	return &StateCache{max: maxBytes, keys: map[string]*list.Element{}, tenants: map[string]*tenantStates{}}
}

// Tenant is the tenant's view of the cache, a core.ProjectionCache for
// its store's Config.ProjectionCache.
func (c *StateCache) Tenant(id string) core.ProjectionCache {
	return tenantCache{c: c, id: id, prefix: id + "\x00"}
}

// Forget drops every state of the tenant (its store is gone: a tenant
// created again under its id must not see them).
func (c *StateCache) Forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.tenants[id]; t != nil {
		for t.ll.Len() > 0 {
			c.remove(t.ll.Back().Value.(*list.Element))
		}
	}
}

// Bytes is what the cache holds now.
func (c *StateCache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// stateOverhead is what the cache counts for keeping a state beside its
// key's and its own bytes: its entry (about 112 bytes), its two list
// elements (48 each), its place in the key map (25 to 57 bytes, as the
// map fills), the rounding of its key and bytes to Go's allocation sizes.
// Measured with Go 1.26 on amd64, a 1-byte state under a 31-byte key
// holds about 300 bytes of the heap.
const stateOverhead = 320

// size is what the cache counts for keeping st under key.
func size(key string, st core.CachedState) int64 {
	return int64(len(key)+len(st.State)) + stateOverhead
}

func (c *StateCache) remove(e *list.Element) {
	it := e.Value.(*cacheItem)
	n := size(it.key, it.st)
	c.ll.Remove(e)
	delete(c.keys, it.key)
	c.bytes -= n
	t := c.tenants[it.tenant]
	t.ll.Remove(it.own)
	if t.bytes -= n; t.ll.Len() == 0 {
		delete(c.tenants, it.tenant)
	}
}

func (c *StateCache) get(key string) (core.CachedState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.keys[key]
	if !ok {
		return core.CachedState{}, false
	}
	it := e.Value.(*cacheItem)
	c.ll.MoveToFront(e)
	c.tenants[it.tenant].ll.MoveToFront(it.own)
	return it.st, true
}

func (c *StateCache) put(tenant, key string, st core.CachedState) {
	n := size(key, st)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.keys[key]; ok {
		c.remove(e)
	}
	if n > c.max/4 {
		return
	}
	t := c.tenants[tenant]
	if t == nil {
		t = &tenantStates{}
		c.tenants[tenant] = t
	}
	e := c.ll.PushFront(&cacheItem{key: key, tenant: tenant, st: st})
	e.Value.(*cacheItem).own = t.ll.PushFront(e)
	c.keys[key] = e
	c.bytes += n
	t.bytes += n
	for t.bytes > c.max/2 { // the tenant's half: its own oldest go
		c.remove(t.ll.Back().Value.(*list.Element))
	}
	for c.bytes > c.max {
		c.remove(c.ll.Back())
	}
}

type tenantCache struct {
	c      *StateCache
	id     string
	prefix string
}

func (t tenantCache) Get(key string) (core.CachedState, bool) { return t.c.get(t.prefix + key) }
func (t tenantCache) Put(key string, st core.CachedState)     { t.c.put(t.id, t.prefix+key, st) }

// ForgetEntities implements core.EntityForgetter: an erasure drops the
// tenant's states of the erased entities (the key's part before its
// first NUL is the entity), so no erased payload stays in memory until it
// is evicted; other tenants' states of the same names stay.
func (t tenantCache) ForgetEntities(entities map[string]bool) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	ts := t.c.tenants[t.id]
	if ts == nil {
		return
	}
	for o := ts.ll.Front(); o != nil; {
		next := o.Next()
		e := o.Value.(*list.Element)
		rest := strings.TrimPrefix(e.Value.(*cacheItem).key, t.prefix)
		if entity, _, _ := strings.Cut(rest, "\x00"); entities[entity] {
			t.c.remove(e)
		}
		o = next
	}
}
