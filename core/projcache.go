package core

import (
	"container/list"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
	"github.com/batpak-go/batpak/core/internal/vfs"
	"github.com/zeebo/blake3"
)

// CachedState is a projected state as a ProjectionCache holds it.
type CachedState struct {
	State []byte    // the encoded state (JSON unless the projection is a StateCodec)
	UpTo  uint64    // the entity generation it includes (see Store.EntityGeneration)
	Found bool      // whether any event was folded in
	At    time.Time // when it was computed
	// Erasures is the store's erasure epoch when it was computed: a state
	// computed before a redaction is never served after it.
	Erasures uint64
}

// ProjectionCache stores projected states. Keys combine the entity, the
// projection's Name and its SchemaVersion. Implementations must be safe
// for concurrent use; a Get miss is always allowed (a cache may forget).
type ProjectionCache interface {
	Get(key string) (CachedState, bool)
	Put(key string, st CachedState)
}

// EntityForgetter is a ProjectionCache that drops an entity's states.
// The store asks it to once it has erased events of the entity (Redact,
// EraseEntity, a compaction removing or tombstoning them), so that no
// state folded from their payloads stays behind in it; the erasure epoch
// (CachedState.Erasures) already keeps such states from being served.
// LRUCache and FileCache are EntityForgetters.
type EntityForgetter interface {
	ForgetEntities(entities map[string]bool)
}

// entityOfKey is the entity a cache key (cacheKey) is of.
func entityOfKey(key string) string {
	if i := strings.IndexByte(key, 0); i >= 0 {
		return key[:i]
	}
	return key
}

// forgetEntities asks the projection cache, if it can, to drop the states
// of entities.
func (s *Store) forgetEntities(entities map[string]int) {
	f, ok := s.cfg.ProjectionCache.(EntityForgetter)
	if !ok || len(entities) == 0 {
		return
	}
	set := make(map[string]bool, len(entities))
	for e := range entities {
		set[e] = true
	}
	f.ForgetEntities(set)
}

// LRUCache is an in-memory ProjectionCache holding at most a fixed number
// of states, evicting the least recently used.
type LRUCache struct {
	mu   sync.Mutex
	max  int
	ll   list.List
	keys map[string]*list.Element
}

type lruItem struct {
	key string
	st  CachedState
}

// NewLRUCache returns an in-memory cache of at most max states (min 1).
func NewLRUCache(n int) *LRUCache {
	return &LRUCache{max: max(n, 1), keys: map[string]*list.Element{}}
}

// Get implements ProjectionCache.
func (c *LRUCache) Get(key string) (CachedState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.keys[key]
	if !ok {
		return CachedState{}, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*lruItem).st, true
}

// Put implements ProjectionCache.
func (c *LRUCache) Put(key string, st CachedState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.keys[key]; ok {
		e.Value.(*lruItem).st = st
		c.ll.MoveToFront(e)
		return
	}
	c.keys[key] = c.ll.PushFront(&lruItem{key: key, st: st})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.keys, old.Value.(*lruItem).key)
	}
}

// ForgetEntities implements EntityForgetter.
func (c *LRUCache) ForgetEntities(entities map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.ll.Front(); el != nil; {
		next := el.Next()
		if it := el.Value.(*lruItem); entities[entityOfKey(it.key)] {
			c.ll.Remove(el)
			delete(c.keys, it.key)
		}
		el = next
	}
}

// Len is the number of cached states.
func (c *LRUCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// FileCache is a ProjectionCache keeping one file per state in a
// directory, written through a temporary file and a rename so a crash
// leaves the old state or the new one. A damaged or unreadable file is a
// miss. Each entity's states are in a directory of their own, named by a
// BLAKE3 digest of the entity (so forgetting an entity's states removes
// that directory, whatever else the cache holds), each file by a digest
// of its key.
type FileCache struct {
	dir string
	// flat removes, once, the state files an earlier version kept at the
	// top of dir (never read now: their entities' erasures would not
	// find them).
	flat sync.Once
}

// NewFileCache returns a cache in dir (created on first Put).
func NewFileCache(dir string) *FileCache { return &FileCache{dir: dir} }

// entityDir is where entity's states are kept.
func (c *FileCache) entityDir(entity string) string {
	sum := blake3.Sum256([]byte(entity))
	return filepath.Join(c.dir, hex.EncodeToString(sum[:16]))
}

func (c *FileCache) path(key string) string {
	sum := blake3.Sum256([]byte(key))
	return filepath.Join(c.entityDir(entityOfKey(key)), hex.EncodeToString(sum[:16])+".state")
}

// removeFlat removes the state files at the top of the cache's
// directory, where an earlier version kept them all.
func (c *FileCache) removeFlat() {
	c.flat.Do(func() {
		ents, err := os.ReadDir(c.dir)
		if err != nil {
			return
		}
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".state") && e.Type().IsRegular() {
				_ = os.Remove(filepath.Join(c.dir, e.Name()))
			}
		}
	})
}

// fileCacheMaxBytes bounds a state file FileCache reads back (a larger
// one, damaged or not, is a miss: the state is folded again) and writes
// (a larger state is not kept).
const fileCacheMaxBytes = 1 << 30

// A state file: "BPSTATE2" | upTo u64 | at (Unix ns) i64 | found u8 |
// key length u32 | key | erasures u64 | state | CRC32C of everything
// before it.
const stateMagic = "BPSTATE2"

// Get implements ProjectionCache.
func (c *FileCache) Get(key string) (CachedState, bool) {
	b, err := vfs.ReadFileAtMost(vfs.Default(), c.path(key), fileCacheMaxBytes)
	if err != nil || len(b) < 8+8+8+1+4+4 || string(b[:8]) != stateMagic {
		return CachedState{}, false
	}
	body := b[:len(b)-4]
	if le.Uint32(b[len(b)-4:]) != format.CRC32C(body) {
		return CachedState{}, false
	}
	kl := int(le.Uint32(body[25:]))
	if 29+kl+8 > len(body) || string(body[29:29+kl]) != key {
		return CachedState{}, false
	}
	return CachedState{
		UpTo:     le.Uint64(body[8:]),
		At:       time.Unix(0, int64(le.Uint64(body[16:]))),
		Found:    body[24] == 1,
		Erasures: le.Uint64(body[29+kl:]),
		State:    append([]byte(nil), body[29+kl+8:]...),
	}, true
}

// ForgetEntities implements EntityForgetter: it removes each entity's
// directory of states (a directory it cannot remove is left: its files'
// erasure epoch makes Get miss them).
func (c *FileCache) ForgetEntities(entities map[string]bool) {
	c.removeFlat()
	for entity := range entities {
		_ = os.RemoveAll(c.entityDir(entity))
	}
}

// Put implements ProjectionCache. It does not fsync (a cache need not be
// durable: a file a crash damaged fails its checksum and is a miss). A
// failed write is dropped: the next Get misses and the state is recomputed.
func (c *FileCache) Put(key string, st CachedState) {
	if 37+len(key)+len(st.State) > fileCacheMaxBytes {
		return
	}
	b := make([]byte, 0, 33+len(key)+len(st.State))
	b = append(b, stateMagic...)
	b = le.AppendUint64(b, st.UpTo)
	b = le.AppendUint64(b, uint64(st.At.UnixNano()))
	found := byte(0)
	if st.Found {
		found = 1
	}
	b = append(b, found)
	b = le.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	b = le.AppendUint64(b, st.Erasures)
	b = append(b, st.State...)
	b = le.AppendUint32(b, format.CRC32C(b))
	c.removeFlat()
	p := c.path(key)
	_ = segment.WriteFileAtomic(vfs.Default(), filepath.Dir(p), filepath.Base(p), b, false)
}
