package vfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// MemFS is an in-memory file system that remembers what was made durable:
// the contents of a file as of its last Sync, SyncData or SyncAll, and the
// entries of a directory as of its last SyncDir. CrashClone and
// ResetToSyncedState drop everything else, as a power loss would: a file
// keeps only its synced contents (none if it was never synced), a
// directory only its synced entries (a file created, renamed or removed
// since the directory's last sync is back where it was).
//
// Paths are slash-separated and rooted at "/"; the root always exists.
// Mappings behave as on Windows: MmapRead stops at the end of the file and
// MmapWrite returns nil (the caller writes with WriteAt). Lock is held
// until Unlock or Close of the locking file. A MemFS is safe for
// concurrent use.
type MemFS struct {
	mu     sync.Mutex
	root   *memNode
	locked map[*memNode]bool
}

type memNode struct {
	dir      bool
	children map[string]*memNode // directory entries
	synced   map[string]*memNode // entries as of the last SyncDir
	data     []byte              // file contents
	durable  []byte              // contents as of the last sync (nil: none)
	modTime  time.Time
}

func newDirNode() *memNode {
	return &memNode{dir: true, children: map[string]*memNode{}, synced: map[string]*memNode{}, modTime: time.Now()}
}

// NewStrictMem returns an empty MemFS.
func NewStrictMem() *MemFS {
	return &MemFS{root: newDirNode(), locked: map[*memNode]bool{}}
}

// CrashClone returns a new MemFS holding only what fsys made durable (see
// MemFS), as a machine would find it after a power loss at this instant.
// fsys is unchanged and can go on being used (by a store that is then
// closed, say) without affecting the clone.
func (m *MemFS) CrashClone() *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &MemFS{root: crashCopy(m.root, map[*memNode]*memNode{}), locked: map[*memNode]bool{}}
}

// ResetToSyncedState drops everything fsys did not make durable, in place,
// and releases every lock. Files open before stay usable but are detached.
func (m *MemFS) ResetToSyncedState() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.root = crashCopy(m.root, map[*memNode]*memNode{})
	m.locked = map[*memNode]bool{}
}

func crashCopy(n *memNode, seen map[*memNode]*memNode) *memNode {
	if c, ok := seen[n]; ok {
		return c
	}
	c := &memNode{dir: n.dir, modTime: n.modTime}
	seen[n] = c
	if n.dir {
		c.children = make(map[string]*memNode, len(n.synced))
		c.synced = make(map[string]*memNode, len(n.synced))
		for name, ch := range n.synced {
			cc := crashCopy(ch, seen)
			c.children[name], c.synced[name] = cc, cc
		}
		return c
	}
	c.data = slices.Clone(n.durable)
	c.durable = slices.Clone(n.durable)
	return c
}

// split returns the parts of a cleaned absolute path ("/" has none).
func split(name string) []string {
	name = filepath.ToSlash(filepath.Clean("/" + name))
	if name == "/" {
		return nil
	}
	return strings.Split(name[1:], "/")
}

func pathErr(op, name string, err error) error { return &fs.PathError{Op: op, Path: name, Err: err} }

// lookup returns the node at name and its parent directory (nil, dir when
// the last part is missing). Called with m.mu held.
func (m *MemFS) lookup(op, name string) (n, parent *memNode, base string, err error) {
	parts := split(name)
	if len(parts) == 0 {
		return m.root, nil, "", nil
	}
	d := m.root
	for _, p := range parts[:len(parts)-1] {
		c, ok := d.children[p]
		if !ok {
			return nil, nil, "", pathErr(op, name, fs.ErrNotExist)
		}
		if !c.dir {
			return nil, nil, "", pathErr(op, name, errors.New("not a directory"))
		}
		d = c
	}
	base = parts[len(parts)-1]
	return d.children[base], d, base, nil
}

func (m *MemFS) Open(name string) (File, error) { return m.OpenFile(name, os.O_RDONLY, 0) }

func (m *MemFS) OpenFile(name string, flag int, _ fs.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, parent, base, err := m.lookup("open", name)
	if err != nil {
		return nil, err
	}
	switch {
	case n == nil && flag&os.O_CREATE == 0:
		return nil, pathErr("open", name, fs.ErrNotExist)
	case n == nil:
		if parent == nil {
			return nil, pathErr("open", name, fs.ErrInvalid)
		}
		n = &memNode{modTime: time.Now()}
		parent.children[base] = n
	case flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL:
		return nil, pathErr("open", name, fs.ErrExist)
	}
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	if n.dir && acc != os.O_RDONLY {
		return nil, pathErr("open", name, errors.New("is a directory"))
	}
	if flag&os.O_TRUNC != 0 && acc != os.O_RDONLY {
		n.data = n.data[:0]
	}
	return &memFile{fs: m, n: n, name: name, read: acc != os.O_WRONLY, write: acc != os.O_RDONLY}, nil
}

func (m *MemFS) Rename(oldpath, newpath string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, op, ob, err := m.lookup("rename", oldpath)
	if err != nil {
		return err
	}
	if n == nil || op == nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrNotExist}
	}
	t, np, nb, err := m.lookup("rename", newpath)
	if err != nil {
		return err
	}
	if np == nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrInvalid}
	}
	if t != nil && t.dir && len(t.children) > 0 {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: errors.New("directory not empty")}
	}
	delete(op.children, ob)
	np.children[nb] = n
	return nil
}

func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, parent, base, err := m.lookup("remove", name)
	if err != nil {
		return err
	}
	if n == nil || parent == nil {
		return pathErr("remove", name, fs.ErrNotExist)
	}
	if n.dir && len(n.children) > 0 {
		return pathErr("remove", name, errors.New("directory not empty"))
	}
	delete(parent.children, base)
	return nil
}

func (m *MemFS) MkdirAll(name string, _ fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.root
	for _, p := range split(name) {
		c, ok := d.children[p]
		if !ok {
			c = newDirNode()
			d.children[p] = c
		}
		if !c.dir {
			return pathErr("mkdir", name, errors.New("not a directory"))
		}
		d = c
	}
	return nil
}

func (m *MemFS) ReadDir(name string) ([]fs.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, _, _, err := m.lookup("readdir", name)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, pathErr("readdir", name, fs.ErrNotExist)
	}
	if !n.dir {
		return nil, pathErr("readdir", name, errors.New("not a directory"))
	}
	out := make([]fs.DirEntry, 0, len(n.children))
	for base, c := range n.children {
		out = append(out, fs.FileInfoToDirEntry(c.info(base)))
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

func (m *MemFS) Stat(name string) (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, _, base, err := m.lookup("stat", name)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, pathErr("stat", name, fs.ErrNotExist)
	}
	return n.info(base), nil
}

func (m *MemFS) Lstat(name string) (fs.FileInfo, error) { return m.Stat(name) }

func (m *MemFS) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, _, _, err := m.lookup("sync", dir)
	if err != nil {
		return err
	}
	if n == nil || !n.dir {
		return pathErr("sync", dir, fs.ErrNotExist)
	}
	n.synced = make(map[string]*memNode, len(n.children))
	for k, v := range n.children {
		n.synced[k] = v
	}
	return nil
}

func (m *MemFS) Lock(f File) error {
	mf, ok := f.(*memFile)
	if !ok {
		return errors.New("vfs: file was not opened by this MemFS")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locked[mf.n] {
		return ErrLocked
	}
	m.locked[mf.n], mf.locks = true, true
	return nil
}

func (m *MemFS) Unlock(f File) error {
	mf, ok := f.(*memFile)
	if !ok {
		return errors.New("vfs: file was not opened by this MemFS")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if mf.locks {
		delete(m.locked, mf.n)
		mf.locks = false
	}
	return nil
}

func (m *MemFS) MmapRead(f File, n int) ([]byte, error) {
	mf, ok := f.(*memFile)
	if !ok {
		return nil, errors.New("vfs: file was not opened by this MemFS")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n = min(n, len(mf.n.data))
	if n == 0 {
		return nil, errors.New("cannot map an empty file")
	}
	return mf.n.data[:n:n], nil
}

func (m *MemFS) MmapWrite(File, int) ([]byte, error) { return nil, nil }
func (m *MemFS) Munmap([]byte) error                 { return nil }

func (n *memNode) info(name string) fs.FileInfo {
	return memInfo{name: name, size: int64(len(n.data)), dir: n.dir, mod: n.modTime, node: n}
}

type memInfo struct {
	name string
	size int64
	dir  bool
	mod  time.Time
	node *memNode // the file itself, for SameFile
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) ModTime() time.Time { return i.mod }
func (i memInfo) IsDir() bool        { return i.dir }
func (i memInfo) Sys() any           { return nil }
func (i memInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}

// memFile is an open file of a MemFS.
type memFile struct {
	fs          *MemFS
	n           *memNode
	name        string
	read, write bool
	pos         int64 // for Read and Write (guarded by fs.mu)
	closed      bool
	locks       bool // holds the lock Lock took
}

func (f *memFile) Name() string { return f.name }

func (f *memFile) check(op string, write bool) error {
	switch {
	case f.closed:
		return pathErr(op, f.name, fs.ErrClosed)
	case write && !f.write, !write && !f.read:
		return pathErr(op, f.name, fs.ErrPermission)
	}
	return nil
}

func (f *memFile) ReadAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return f.readAt(b, off)
}

func (f *memFile) readAt(b []byte, off int64) (int, error) {
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(b, f.n.data[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Read(b []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	n, err := f.readAt(b, f.pos)
	f.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *memFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return f.writeAt(b, off)
}

func (f *memFile) writeAt(b []byte, off int64) (int, error) {
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	if end := off + int64(len(b)); end > int64(len(f.n.data)) {
		f.n.resize(end)
	}
	copy(f.n.data[off:], b)
	f.n.modTime = time.Now()
	return len(b), nil
}

func (f *memFile) Write(b []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	n, err := f.writeAt(b, f.pos)
	f.pos += int64(n)
	return n, err
}

// resize sets the file's length; bytes past the old end read as zeros. A
// larger file gets a new array (mappings made before keep the old one).
func (n *memNode) resize(size int64) {
	old := len(n.data)
	switch {
	case int(size) <= old:
		clear(n.data[size:])
		n.data = n.data[:size]
	case int(size) <= cap(n.data):
		n.data = n.data[:size]
		clear(n.data[old:])
	default:
		d := make([]byte, size, max(size, int64(2*cap(n.data))))
		copy(d, n.data)
		n.data = d
	}
}

func (f *memFile) Stat() (fs.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return nil, pathErr("stat", f.name, fs.ErrClosed)
	}
	return f.n.info(filepath.Base(f.name)), nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("truncate", true); err != nil {
		return err
	}
	f.n.resize(size)
	return nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("sync", f.name, fs.ErrClosed)
	}
	if !f.n.dir {
		f.n.durable = append(f.n.durable[:0], f.n.data...)
	}
	return nil
}

func (f *memFile) SyncData() error { return f.Sync() }
func (f *memFile) SyncAll() error  { return f.Sync() }

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("close", f.name, fs.ErrClosed)
	}
	f.closed = true
	if f.locks {
		delete(f.fs.locked, f.n)
	}
	return nil
}
