package core

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

// preallocStep is the most the active segment is zero-filled ahead of its
// data at a time, so that fdatasync need not journal a size or extent
// change on every group commit. The zeros are never cut off (see
// writer.seal); readers take them as the end of data.
const preallocStep = 4 << 20

// listSegments returns the segment ids in dir, ascending (see
// orderSegments).
func listSegments(fsys vfs.FS, dir string) ([]uint32, error) {
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	return orderSegments(fsys, dir, segmentKeys(ents))
}

// segCache maps segment files for reading, keeping at most budget mappings
// (least recently used are unmapped first, once no reader holds them).
type segCache struct {
	fs     vfs.FS
	dir    string
	budget int
	// activeMapLen is the mapping length used for the active segment, so it
	// need not be remapped as it grows (pages past EOF are never touched).
	activeMapLen int

	mu        sync.Mutex
	maps      map[uint32]*mapping
	lru       list.List // of *mapping, most recent at front
	activeID  uint32
	hasActive bool
	activeEnd int64
}

type mapping struct {
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
	pk *packedSeg
	// file is the segment file mapped (another generation than id names
	// when a packing replaced it, see acquire).
	file string
	gone bool // evicted from the cache; unmap when refs reach 0
}

// bytes returns the readable part of the mapping of a plain segment.
func (m *mapping) bytes() []byte { return m.data[:min(m.limit.Load(), int64(len(m.data)))] }

// frameCopy returns a copy of the frame (header and record) at off, or
// false when no sound frame starts there. A packed segment decompresses
// the one block holding it.
func (m *mapping) frameCopy(off int) ([]byte, bool, error) {
	if m.pk != nil {
		return m.pk.frame(m.data, off)
	}
	data := m.bytes()
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

func newSegCache(fsys vfs.FS, dir string, budget, activeMapLen int) *segCache {
	return &segCache{fs: fsys, dir: dir, budget: budget, activeMapLen: activeMapLen, maps: map[uint32]*mapping{}}
}

// setActive records which segment is being appended to and where its
// published data ends.
func (c *segCache) setActive(id uint32, end int64) {
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

// publish moves the readable end of the active segment.
func (c *segCache) publish(end int64) { c.setActive(c.activeID, end) }

// seal fixes the readable size of a segment that stopped being active.
func (c *segCache) seal(id uint32, size int64) {
	c.mu.Lock()
	if m, ok := c.maps[id]; ok {
		m.limit.Store(size)
	}
	c.hasActive = false
	c.mu.Unlock()
}

// acquire returns the mapping of segment id; call release when done.
func (c *segCache) acquire(id uint32) (*mapping, error) {
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
		if next := repackedKey(id); samePlacesPacked(c.fs, filepath.Join(c.dir, format.SegmentName(next))) {
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
	n, limit := int(st.Size()), st.Size()
	if c.hasActive && id == c.activeID {
		limit = c.activeEnd
		if c.activeMapLen > n {
			n = c.activeMapLen
		}
	}
	if n == 0 {
		return nil, &CorruptionError{File: path, Reason: "empty segment file"}
	}
	data, err := c.fs.MmapRead(f, n)
	if err != nil {
		return nil, fmt.Errorf("batpak: mmap segment %s: %w", path, err)
	}
	m := &mapping{id: id, data: data, refs: 1, file: path}
	m.limit.Store(min(limit, int64(len(data))))
	if isPackedHeader(data) {
		pk, err := parsePacked(data, fileKey)
		if err != nil {
			_ = c.fs.Munmap(data)
			return nil, &CorruptionError{File: path, Reason: err.Error()}
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

func (c *segCache) release(m *mapping) {
	c.mu.Lock()
	m.refs--
	if m.refs == 0 && m.gone {
		_ = c.fs.Munmap(m.data)
		m.data = nil
	}
	c.mu.Unlock()
}

func (c *segCache) evictLocked() {
	for e := c.lru.Back(); e != nil && len(c.maps) > c.budget; {
		prev := e.Prev()
		m := e.Value.(*mapping)
		if m.refs == 0 {
			c.dropLocked(m)
		}
		e = prev
	}
}

func (c *segCache) dropLocked(m *mapping) {
	c.lru.Remove(m.elem)
	delete(c.maps, m.id)
	m.gone = true
	if m.refs == 0 {
		_ = c.fs.Munmap(m.data)
		m.data = nil
	}
}

// forget drops segment id from the cache (its file was replaced); readers
// holding its mapping keep it until they release it.
func (c *segCache) forget(id uint32) {
	c.mu.Lock()
	if m, ok := c.maps[id]; ok {
		c.dropLocked(m)
	}
	c.mu.Unlock()
}

// close unmaps everything not in use.
func (c *segCache) close() {
	c.mu.Lock()
	for _, m := range c.maps {
		c.dropLocked(m)
	}
	c.mu.Unlock()
}
