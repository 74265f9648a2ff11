package core

import (
	"bytes"
	"container/list"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/batpak-go/batpak/core/internal/vfs"
)

// Segment files: "<20-digit id>.seg", a 32-byte header, then frames.
const (
	segmentHeaderSize = 32
	segmentVersion    = 1
	segmentSuffix     = ".seg"
	// preallocStep is the most the active segment is zero-filled ahead of
	// its data at a time, so that fdatasync need not journal a size or
	// extent change on every group commit. The zeros are never cut off
	// (see writer.seal); readers take them as the end of data.
	preallocStep = 4 << 20
)

var segmentMagic = [8]byte{'B', 'P', 'A', 'K', 'S', 'E', 'G', 0}

// Segment keys. A segment is named by its position in the log (id, the low
// 24 bits of its key) and, once compaction has rewritten it, a generation
// (the high 8 bits): "<id>.seg" for generation 0, "<id>.<gen>.seg" after.
// A rewrite never reuses a file name, so a reader holding an old location
// fails cleanly (and retries) instead of reading another file's bytes.
const (
	segIDBits = 24
	segIDMask = 1<<segIDBits - 1
)

func segID(key uint32) uint32  { return key & segIDMask }
func segGen(key uint32) uint32 { return key >> segIDBits }

func segmentName(key uint32) string {
	if g := segGen(key); g > 0 {
		return fmt.Sprintf("%020d.%d%s", segID(key), g, segmentSuffix)
	}
	return fmt.Sprintf("%020d%s", key, segmentSuffix)
}

func encodeSegmentHeader(id uint32) []byte {
	h := make([]byte, segmentHeaderSize)
	copy(h, segmentMagic[:])
	le.PutUint16(h[8:], segmentVersion)
	le.PutUint64(h[12:], uint64(id))
	le.PutUint32(h[20:], crc32c(h[:20]))
	return h
}

func crc32c(b []byte) uint32 { return frameCRC(nil, b) }

// checkSegmentHeader validates magic, version, checksum and id.
func checkSegmentHeader(data []byte, id uint32) string {
	switch {
	case len(data) < segmentHeaderSize:
		return "file shorter than the segment header"
	case !bytes.Equal(data[:8], segmentMagic[:]):
		return "bad magic (not a batpak segment)"
	case le.Uint32(data[20:]) != crc32c(data[:20]):
		return "segment header checksum mismatch"
	case le.Uint16(data[8:]) != segmentVersion:
		return fmt.Sprintf("unsupported segment version %d", le.Uint16(data[8:]))
	case le.Uint64(data[12:]) != uint64(id):
		return fmt.Sprintf("header names segment %d", le.Uint64(data[12:]))
	}
	return ""
}

// listSegments returns the segment ids in dir, ascending (see
// orderSegments).
func listSegments(fsys vfs.FS, dir string) ([]uint32, error) {
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	return orderSegments(fsys, dir, segmentKeys(ents))
}

// tailState says how a frame scan ended.
type tailState int

const (
	tailClean   tailState = iota // end of file, or zero padding from preallocation
	tailTorn                     // unreadable bytes with no valid frame after them
	tailCorrupt                  // an unreadable frame followed by valid ones
)

// scanFrames calls fn for every valid frame after the segment header and
// returns where the valid data ends and how the scan ended. A frame that
// fails its checks ends the scan: if only zeros follow it is a clean end,
// if a valid frame can be found anywhere after it the segment is corrupt
// (data in the middle is never silently dropped), otherwise it is a torn tail.
func scanFrames(data []byte, fn func(off int, rec []byte) error) (end int, st tailState, err error) {
	return scanFramesFrom(data, segmentHeaderSize, fn)
}

// scanFramesFrom is scanFrames starting at offset from (a frame boundary).
func scanFramesFrom(data []byte, from int, fn func(off int, rec []byte) error) (end int, st tailState, err error) {
	off := from
	for {
		rec, ok := frameAt(data, off)
		if !ok {
			break
		}
		if err := fn(off, rec); err != nil {
			return off, tailClean, err
		}
		off += frameHeaderSize + len(rec)
	}
	rest := data[off:]
	if allZero(rest) {
		return off, tailClean, nil
	}
	for p := off + 1; p+frameHeaderSize+minRecordSize <= len(data); p++ {
		if rec, ok := frameAt(data, p); ok && knownRecord(rec) {
			return off, tailCorrupt, nil
		}
	}
	return off, tailTorn, nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if le.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
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
	if off+frameHeaderSize > len(data) {
		return nil, false, nil
	}
	n := int(le.Uint32(data[off:]))
	if n < minRecordSize || n > maxRecordSize || off+frameHeaderSize+n > len(data) {
		return nil, false, nil
	}
	buf := make([]byte, frameHeaderSize+n)
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
	path := filepath.Join(c.dir, segmentName(id))
	fileKey := id
	f, err := c.fs.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		// Packed since the index was built (by this store's sealer, or by
		// the writer beside a read-only store): the next generation holds
		// the same frames at the same offsets.
		if next := repackedKey(id); samePlacesPacked(c.fs, filepath.Join(c.dir, segmentName(next))) {
			fileKey, path = next, filepath.Join(c.dir, segmentName(next))
			f, err = c.fs.Open(path)
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("batpak: segment %s was rewritten (compaction or packing) after this store read its index; reopen the store to read it: %w", segmentName(id), err)
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
