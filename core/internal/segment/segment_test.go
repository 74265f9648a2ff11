package segment

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

const dir = "/store"

// countingFS records which mappings are live (mapped and not unmapped), to
// check what the cache unmaps and when.
type countingFS struct {
	vfs.FS
	mu   sync.Mutex
	live map[*byte]bool
	max  int
}

func newCountingFS(t *testing.T) *countingFS {
	t.Helper()
	m := vfs.NewStrictMem()
	if err := m.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &countingFS{FS: m, live: map[*byte]bool{}}
}

func (c *countingFS) MmapRead(f vfs.File, n int) ([]byte, error) {
	b, err := c.FS.MmapRead(f, n)
	if err == nil {
		c.mu.Lock()
		c.live[&b[0]] = true
		c.max = max(c.max, len(c.live))
		c.mu.Unlock()
	}
	return b, err
}

func (c *countingFS) Munmap(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live[&b[0]] {
		panic("unmap of a mapping that is not live")
	}
	delete(c.live, &b[0])
	return c.FS.Munmap(b)
}

func (c *countingFS) mapped(b []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live[&b[0]]
}

func (c *countingFS) liveCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.live)
}

// plainSegment returns a plain segment's bytes for key holding n frames,
// each record filled with fill.
func plainSegment(key uint32, n int, fill byte) []byte {
	b := format.EncodeSegmentHeader(key)
	for range n {
		b = format.AppendFrame(b, bytes.Repeat([]byte{fill}, format.MinRecordSize+8))
	}
	return b
}

func writeFile(t *testing.T, fsys vfs.FS, name string, b []byte) {
	t.Helper()
	if _, err := WriteSynced(fsys, filepath.Join(dir, name), b); err != nil {
		t.Fatal(err)
	}
}

func TestCacheKeepsAtMostBudgetUnheldMappings(t *testing.T) {
	fsys := newCountingFS(t)
	const budget = 3
	for id := uint32(1); id <= 10; id++ {
		writeFile(t, fsys, format.SegmentName(id), plainSegment(id, 1, byte(id)))
	}
	c := NewCache(fsys, dir, budget, 0)
	for round := range 3 {
		for id := uint32(1); id <= 10; id++ {
			m, err := c.Acquire(id)
			if err != nil {
				t.Fatal(err)
			}
			if m.ID() != id || m.File() != filepath.Join(dir, format.SegmentName(id)) {
				t.Fatalf("mapping of %d names %d, %s", id, m.ID(), m.File())
			}
			if got := m.Bytes()[format.SegmentHeaderSize+format.FrameHeaderSize]; got != byte(id) {
				t.Fatalf("round %d: segment %d reads content of %d", round, id, got)
			}
			c.Release(m)
			if c.Mapped() > budget || fsys.liveCount() > budget {
				t.Fatalf("round %d, segment %d: %d cached, %d mapped, budget %d", round, id, c.Mapped(), fsys.liveCount(), budget)
			}
		}
	}
	if fsys.max > budget+1 {
		t.Fatalf("at most %d mappings at once, budget %d (one over while the newest is added)", fsys.max, budget)
	}
	c.Close()
	if n := fsys.liveCount(); n != 0 {
		t.Fatalf("%d mappings left after Close", n)
	}
}

func TestCacheEvictsOnlyUnheldMappings(t *testing.T) {
	fsys := newCountingFS(t)
	for id := uint32(1); id <= 4; id++ {
		writeFile(t, fsys, format.SegmentName(id), plainSegment(id, 1, byte(id)))
	}
	c := NewCache(fsys, dir, 1, 0)
	var held []*Mapping
	for id := uint32(1); id <= 3; id++ {
		m, err := c.Acquire(id)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, m)
	}
	// Three held over a budget of one: none may be unmapped under a reader.
	for _, m := range held {
		if !fsys.mapped(m.data) {
			t.Fatalf("segment %d unmapped while held", m.ID())
		}
		if got := m.Bytes()[format.SegmentHeaderSize+format.FrameHeaderSize]; got != byte(m.ID()) {
			t.Fatalf("held segment %d reads %d", m.ID(), got)
		}
	}
	// Acquiring a held segment again shares its mapping.
	again, err := c.Acquire(2)
	if err != nil {
		t.Fatal(err)
	}
	if again != held[1] {
		t.Fatal("a second Acquire of a held segment mapped it again")
	}
	c.Release(again)
	for _, m := range held {
		c.Release(m)
	}
	// Released: the next Acquire brings the cache back to its budget.
	m, err := c.Acquire(4)
	if err != nil {
		t.Fatal(err)
	}
	c.Release(m)
	if c.Mapped() != 1 || fsys.liveCount() != 1 {
		t.Fatalf("after release: %d cached, %d mapped, budget 1", c.Mapped(), fsys.liveCount())
	}
}

func TestCacheForgetAndClose(t *testing.T) {
	fsys := newCountingFS(t)
	writeFile(t, fsys, format.SegmentName(1), plainSegment(1, 1, 'a'))
	writeFile(t, fsys, format.SegmentName(2), plainSegment(2, 1, 'b'))
	c := NewCache(fsys, dir, 8, 0)
	old, err := c.Acquire(1)
	if err != nil {
		t.Fatal(err)
	}
	// The file is replaced (a compaction renames a new file over it):
	// Forget drops it from the cache, the reader holding the old mapping
	// keeps it until it releases it.
	if err := WriteFileAtomic(fsys, dir, format.SegmentName(1), plainSegment(1, 1, 'z'), true); err != nil {
		t.Fatal(err)
	}
	c.Forget(1)
	if !fsys.mapped(old.data) {
		t.Fatal("Forget unmapped a held mapping")
	}
	cur, err := c.Acquire(1)
	if err != nil {
		t.Fatal(err)
	}
	if cur == old {
		t.Fatal("Acquire after Forget returned the forgotten mapping")
	}
	if got := old.Bytes()[format.SegmentHeaderSize+format.FrameHeaderSize]; got != 'a' {
		t.Fatalf("forgotten mapping reads %q, want the old file's 'a'", got)
	}
	if got := cur.Bytes()[format.SegmentHeaderSize+format.FrameHeaderSize]; got != 'z' {
		t.Fatalf("Acquire after Forget reads %q, want the new file's 'z'", got)
	}
	oldData := old.data
	c.Release(old)
	if fsys.mapped(oldData) {
		t.Fatal("forgotten mapping not unmapped at its last Release")
	}
	c.Release(cur)
	held, err := c.Acquire(2)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if fsys.liveCount() != 1 || !fsys.mapped(held.data) {
		t.Fatalf("Close: %d mappings left, want only the held one", fsys.liveCount())
	}
	heldData := held.data
	c.Release(held)
	if fsys.mapped(heldData) || fsys.liveCount() != 0 {
		t.Fatal("held mapping not unmapped at its Release after Close")
	}
}

func TestCacheActiveSegmentReadsUpToPublished(t *testing.T) {
	fsys := newCountingFS(t)
	seg := plainSegment(1, 3, 'x')
	writeFile(t, fsys, format.SegmentName(1), seg)
	c := NewCache(fsys, dir, 4, len(seg))
	published := int64(format.SegmentHeaderSize + format.FrameHeaderSize + format.MinRecordSize + 8)
	c.SetActive(1, published)
	m, err := c.Acquire(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Bytes()) != int(published) {
		t.Fatalf("active segment reads %d bytes, published %d", len(m.Bytes()), published)
	}
	if _, ok, _ := m.FrameCopy(int(published)); ok {
		t.Fatal("FrameCopy read a frame past the published end")
	}
	c.Publish(int64(len(seg)))
	if len(m.Bytes()) != len(seg) {
		t.Fatalf("after Publish: %d bytes readable, want %d", len(m.Bytes()), len(seg))
	}
	if f, ok, err := m.FrameCopy(int(published)); !ok || err != nil || len(f) != format.FrameHeaderSize+format.MinRecordSize+8 {
		t.Fatalf("FrameCopy after Publish: ok %v, err %v, %d bytes", ok, err, len(f))
	}
	c.Release(m)
}

func TestCacheEmptyFileIsCorrupt(t *testing.T) {
	fsys := newCountingFS(t)
	writeFile(t, fsys, format.SegmentName(1), nil)
	c := NewCache(fsys, dir, 4, 0)
	_, err := c.Acquire(1)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Reason != "empty segment file" || ce.File != filepath.Join(dir, format.SegmentName(1)) {
		t.Fatalf("Acquire of an empty segment: %v, want a CorruptError naming it", err)
	}
	if _, err := c.Acquire(2); err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "reopen the store") {
		t.Fatalf("Acquire of a missing segment: %v", err)
	}
}

// packedNext writes segment key's next generation, packed from plain, and
// removes the plain file when removeOld is set.
func packedNext(t *testing.T, fsys vfs.FS, key uint32, plain []byte, samePlaces, removeOld bool) uint32 {
	t.Helper()
	next := RepackedKey(key)
	if _, err := WritePacked(fsys, filepath.Join(dir, format.SegmentName(next)), plain, next, CodecS2, samePlaces); err != nil {
		t.Fatal(err)
	}
	if removeOld {
		if err := fsys.Remove(filepath.Join(dir, format.SegmentName(key))); err != nil {
			t.Fatal(err)
		}
	}
	return next
}

func TestCacheReadsRepackedGeneration(t *testing.T) {
	fsys := newCountingFS(t)
	plain := plainSegment(1, 4, 'p')
	writeFile(t, fsys, format.SegmentName(1), plain)
	next := packedNext(t, fsys, 1, plain, true, true)
	c := NewCache(fsys, dir, 4, 0)
	m, err := c.Acquire(1)
	if err != nil {
		t.Fatal(err)
	}
	if !m.IsPacked() || m.File() != filepath.Join(dir, format.SegmentName(next)) {
		t.Fatalf("segment 1 read from %s (packed %v), want its packed generation", m.File(), m.IsPacked())
	}
	off := format.SegmentHeaderSize + format.FrameHeaderSize + format.MinRecordSize + 8
	f, ok, err := m.FrameCopy(off)
	if err != nil || !ok || !bytes.Equal(f, plain[off:off+len(f)]) {
		t.Fatalf("FrameCopy from the packed generation: ok %v, err %v", ok, err)
	}
	if c.Mapped() != 0 {
		t.Fatal("a mapping of another generation was cached under the old name")
	}
	data := m.data
	c.Release(m)
	if fsys.mapped(data) {
		t.Fatal("uncached mapping not unmapped at Release")
	}
}

func TestOrderRefusesTwoGenerations(t *testing.T) {
	fsys := newCountingFS(t)
	plain := plainSegment(1, 2, 'a')
	writeFile(t, fsys, format.SegmentName(1), plain)
	// A compaction's rewrite (not a packing): two generations of segment 1.
	gen1 := 1 | 1<<format.SegIDBits
	writeFile(t, fsys, format.SegmentName(uint32(gen1)), plainSegment(uint32(gen1), 1, 'b'))
	writeFile(t, fsys, format.SegmentName(2), plainSegment(2, 1, 'c'))
	_, err := List(fsys, dir)
	var ce *CorruptError
	if !errors.As(err, &ce) || !ce.Live || !strings.Contains(ce.Reason, "two generations of segment 1") {
		t.Fatalf("List with two generations of segment 1: %v", err)
	}
	// A packed generation that did not keep the frames' places is refused too.
	if err := fsys.Remove(filepath.Join(dir, format.SegmentName(uint32(gen1)))); err != nil {
		t.Fatal(err)
	}
	packedNext(t, fsys, 1, plain, false, false)
	if _, err := List(fsys, dir); !errors.As(err, &ce) {
		t.Fatalf("List beside a packed generation with other places: %v", err)
	}
}

func TestOrderResolvesRepackedGeneration(t *testing.T) {
	fsys := newCountingFS(t)
	plain := plainSegment(1, 2, 'a')
	writeFile(t, fsys, format.SegmentName(1), plain)
	writeFile(t, fsys, format.SegmentName(2), plainSegment(2, 1, 'b'))
	// A packing caught between its rename and its delete.
	next := packedNext(t, fsys, 1, plain, true, false)
	// Neither a directory nor a stray name is a segment.
	if err := fsys.MkdirAll(filepath.Join(dir, format.SegmentName(3)), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, fsys, "00000004.seg.tmp", nil)
	keys, err := List(fsys, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0] != next || keys[1] != 2 {
		t.Fatalf("List = %v, want [%d 2] (the packed generation of 1, then 2)", keys, next)
	}
	if n, err := LogicalSize(fsys, filepath.Join(dir, format.SegmentName(next))); err != nil || n != int64(len(plain)) {
		t.Fatalf("LogicalSize of the packed generation = %d, %v; want %d", n, err, len(plain))
	}
	data, packed, release, err := Load(fsys, filepath.Join(dir, format.SegmentName(next)), next)
	if err != nil || !packed || !bytes.Equal(data[format.SegmentHeaderSize:], plain[format.SegmentHeaderSize:]) {
		t.Fatalf("Load of the packed generation: packed %v, err %v", packed, err)
	}
	release()
}

func TestParseNameRoundTrip(t *testing.T) {
	for _, key := range []uint32{0, 1, 99, format.SegIDMask, 7 | 1<<format.SegIDBits, 7 | 255<<format.SegIDBits} {
		name := format.SegmentName(key)
		if got, ok := ParseName(name); !ok || got != key {
			t.Fatalf("ParseName(%q) = %d, %v; want %d", name, got, ok, key)
		}
	}
	for _, name := range []string{"", "x.seg", "1.seg", "00000001.0.seg", "00000001.seg.tmp", "LOCK"} {
		if _, ok := ParseName(name); ok {
			t.Fatalf("ParseName(%q) accepted", name)
		}
	}
}

func TestLockRefusesSecondHolder(t *testing.T) {
	fsys := newCountingFS(t)
	f, err := Lock(fsys, dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Lock(fsys, dir)
	var le *LockedError
	if !errors.As(err, &le) || le.Dir != dir || le.PID != os.Getpid() {
		t.Fatalf("second Lock: %v, want a LockedError naming pid %d", err, os.Getpid())
	}
	if err := Unlock(fsys, f); err != nil {
		t.Fatal(err)
	}
	f, err = Lock(fsys, dir)
	if err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	_ = Unlock(fsys, f)
}

// recordingFile records the offsets of WriteAt calls.
type recordingFile struct {
	vfs.File
	offs []int64
}

func (r *recordingFile) WriteAt(b []byte, off int64) (int, error) {
	r.offs = append(r.offs, off)
	return r.File.WriteAt(b, off)
}

// ZeroFillBackward zeroes exactly [from, to), from the end towards from,
// each write within one aligned page, whatever the alignment of from and to.
func TestZeroFillBackward(t *testing.T) {
	for _, c := range []struct{ from, to int64 }{{0, 1}, {100, 5000}, {4096, 8192}, {4095, 4097}, {7, 3*4096 + 5}, {10, 10}} {
		f, err := vfs.Default().OpenFile(filepath.Join(t.TempDir(), "zf"), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		data := bytes.Repeat([]byte{0xab}, 4*4096+64)
		if _, err := f.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		rf := &recordingFile{File: f}
		if err := ZeroFillBackward(rf, c.from, c.to); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(data))
		if _, err := f.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		for i, b := range got {
			if in := int64(i) >= c.from && int64(i) < c.to; (b == 0) != in {
				t.Fatalf("[%d,%d): byte %d is %#x", c.from, c.to, i, b)
			}
		}
		for i, off := range rf.offs {
			if i > 0 && off >= rf.offs[i-1] {
				t.Fatalf("[%d,%d): write at %d after one at %d: not backwards", c.from, c.to, off, rf.offs[i-1])
			}
			if i > 0 && off%4096 != 0 && off != c.from {
				t.Fatalf("[%d,%d): write at unaligned %d", c.from, c.to, off)
			}
		}
		f.Close()
	}
}
