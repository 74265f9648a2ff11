package segment

import (
	"container/list"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// PreallocStep is the most the active segment is zero-filled ahead of its
// data at a time, so that fdatasync need not journal a size or extent
// change on every group commit. The zeros are never cut off (see
// writer.seal); readers take them as the end of data.
const PreallocStep = 4 << 20

// Cache maps segment files for reading, keeping at most budget mappings
// (least recently used are unmapped first, once no reader holds them).
// The budget is soft: mappings held by readers are never unmapped, so
// more than budget can be mapped while more than budget readers hold
// distinct segments; each is unmapped when the last holder releases it.
// A mapping holds no file descriptor (the file is closed once mapped);
// the budget bounds mappings and the descriptors briefly open in Acquire.
//
// All methods are safe for concurrent use (one mutex, never held across
// a caller's callback). SetActive, Publish and Seal are the writer's:
// they tell readers how far the active segment may be read.
type Cache struct {
	fs     vfs.FS
	dir    string
	budget int
	// activeMapLen is the Mapping length used for the active segment, so it
	// need not be remapped as it grows (pages past EOF are never touched).
	activeMapLen int

	mu        sync.Mutex
	maps      map[uint32]*Mapping
	lru       list.List // of *Mapping, most recent at front
	activeID  uint32
	hasActive bool
	activeEnd int64
}

// Mapping is one segment file mapped for reading, from Acquire. Its bytes
// stay valid until the caller's Release, even if the segment is forgotten
// or evicted meanwhile.
type Mapping struct {
	id   uint32
	data []byte
	// limit is how many bytes of data may be read: the file size of a sealed
	// segment, the published end of the active one. Reading past it could
	// touch pages past EOF (SIGBUS) or unpublished bytes.
	limit atomic.Int64
	refs  int
	elem  *list.Element
	// pk is the block table of a packed (compressed) segment: data is then
	// the file, read through pk.frame, and limit its logical size.
	pk *Packed
	// file is the segment file mapped (another generation than id names
	// when a packing replaced it, see acquire).
	file string
	gone bool // evicted from the cache; unmap when refs reach 0
}

// Bytes returns the readable part of the mapping of a plain segment (not
// of a packed one: see FrameCopy). The bytes must not be modified.
func (m *Mapping) Bytes() []byte { return m.data[:min(m.limit.Load(), int64(len(m.data)))] }

// FrameCopy returns a copy of the frame (header and record) at off, or
// false when no sound frame starts there. A packed segment decompresses
// the one block holding it.
func (m *Mapping) FrameCopy(off int) ([]byte, bool, error) {
	if m.pk != nil {
		return m.pk.Frame(m.data, off)
	}
	data := m.Bytes()
	if off+format.FrameHeaderSize > len(data) {
		return nil, false, nil
	}
	n := int(le.Uint32(data[off:]))
	if n < format.MinRecordSize || n > format.MaxRecordSize || off+format.FrameHeaderSize+n > len(data) {
		return nil, false, nil
	}
	buf := make([]byte, format.FrameHeaderSize+n)
	copy(buf, data[off:])
	return buf, true, nil
}

// NewCache returns a cache of the segments in dir keeping at most budget
// mappings (Config.FDBudget). activeMapLen is the length the active
// segment is mapped at, so that it need not be remapped as it grows.
func NewCache(fsys vfs.FS, dir string, budget, activeMapLen int) *Cache {
	return &Cache{fs: fsys, dir: dir, budget: budget, activeMapLen: activeMapLen, maps: map[uint32]*Mapping{}}
}

// SetActive records which segment is being appended to and where its
// published data ends.
func (c *Cache) SetActive(id uint32, end int64) {
	c.mu.Lock()
	c.activeID, c.hasActive, c.activeEnd = id, true, end
	if m, ok := c.maps[id]; ok {
		if len(m.data) < c.activeMapLen {
			// mapped while sealed, at its size then: map it again, longer
			c.dropLocked(m)
		} else {
			m.limit.Store(end)
		}
	}
	c.mu.Unlock()
}

// Publish moves the readable end of the active segment.
func (c *Cache) Publish(end int64) { c.SetActive(c.activeID, end) }

// Seal fixes the readable size of a segment that stopped being active.
func (c *Cache) Seal(id uint32, size int64) {
	c.mu.Lock()
	if m, ok := c.maps[id]; ok {
		m.limit.Store(size)
	}
	c.hasActive = false
	c.mu.Unlock()
}

// Acquire returns the mapping of segment id; call Release when done. A
// segment packed since the caller's index was built is read through its
// next generation (same frames, same offsets). Errors: a segment rewritten
// since (its file gone), an I/O or mapping error (wrapped, naming the
// file), a *CorruptError for an empty file or a damaged packed segment.
func (c *Cache) Acquire(id uint32) (*Mapping, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.maps[id]; ok {
		m.refs++
		c.lru.MoveToFront(m.elem)
		return m, nil
	}
	path := filepath.Join(c.dir, format.SegmentName(id))
	fileKey := id
	f, err := c.fs.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		// Packed since the index was built (by this store's sealer, or by
		// the writer beside a read-only store): the next generation holds
		// the same frames at the same offsets.
		if next := RepackedKey(id); SamePlacesPacked(c.fs, filepath.Join(c.dir, format.SegmentName(next))) {
			fileKey, path = next, filepath.Join(c.dir, format.SegmentName(next))
			f, err = c.fs.Open(path)
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("batpak: segment %s was rewritten (compaction or packing) after this store read its index; reopen the store to read it: %w", format.SegmentName(id), err)
	}
	if err != nil {
		return nil, fmt.Errorf("batpak: open segment: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("batpak: stat segment: %w", err)
	}
	if err := CheckFileSize(path, st.Size()); err != nil {
		return nil, err
	}
	n, limit := int(st.Size()), st.Size()
	if c.hasActive && id == c.activeID {
		limit = c.activeEnd
		if c.activeMapLen > n {
			n = c.activeMapLen
		}
	}
	if n == 0 {
		return nil, &CorruptError{File: path, Reason: "empty segment file"}
	}
	data, err := c.fs.MmapRead(f, n)
	if err != nil {
		return nil, fmt.Errorf("batpak: mmap segment %s: %w", path, err)
	}
	m := &Mapping{id: id, data: data, refs: 1, file: path}
	m.limit.Store(min(limit, int64(len(data))))
	if IsPackedHeader(data) {
		pk, err := ParsePacked(data, fileKey)
		if err != nil {
			_ = c.fs.Munmap(data)
			return nil, &CorruptError{File: path, Reason: err.Error()}
		}
		m.pk = pk
		m.limit.Store(pk.size)
	}
	if fileKey != id {
		// Not cached under a name that no longer exists (it could come back
		// with other content when generation numbers wrap): unmapped when
		// released.
		m.gone = true
		return m, nil
	}
	m.elem = c.lru.PushFront(m)
	c.maps[id] = m
	c.evictLocked()
	return m, nil
}

// Release gives back a mapping from Acquire; it is unmapped if it was
// evicted or forgotten and this was its last holder.
func (c *Cache) Release(m *Mapping) {
	c.mu.Lock()
	m.refs--
	if m.refs == 0 && m.gone {
		_ = c.fs.Munmap(m.data)
		m.data = nil
	}
	c.mu.Unlock()
}

func (c *Cache) evictLocked() {
	for e := c.lru.Back(); e != nil && len(c.maps) > c.budget; {
		prev := e.Prev()
		m := e.Value.(*Mapping)
		if m.refs == 0 {
			c.dropLocked(m)
		}
		e = prev
	}
}

func (c *Cache) dropLocked(m *Mapping) {
	c.lru.Remove(m.elem)
	delete(c.maps, m.id)
	m.gone = true
	if m.refs == 0 {
		_ = c.fs.Munmap(m.data)
		m.data = nil
	}
}

// Forget drops segment id from the cache (its file was replaced); readers
// holding its Mapping keep it until they release it.
func (c *Cache) Forget(id uint32) {
	c.mu.Lock()
	if m, ok := c.maps[id]; ok {
		c.dropLocked(m)
	}
	c.mu.Unlock()
}

// Close unmaps everything not in use; mappings still held are unmapped
// when released. Called by Store.Close after the writer has stopped.
func (c *Cache) Close() {
	c.mu.Lock()
	for _, m := range c.maps {
		c.dropLocked(m)
	}
	c.mu.Unlock()
}

// ID is the segment key the mapping was acquired for.
func (m *Mapping) ID() uint32 { return m.id }

// File is the path of the file mapped (the next generation's when the
// segment was packed after the caller's index was built).
func (m *Mapping) File() string { return m.file }

// IsPacked reports whether the mapped file is a packed segment.
func (m *Mapping) IsPacked() bool { return m.pk != nil }

// ActiveMapLen is the length the active segment is mapped at (NewCache).
func (c *Cache) ActiveMapLen() int { return c.activeMapLen }

// Mapped is how many segments the cache holds mapped now.
func (c *Cache) Mapped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.maps)
}
