//go:build linux

package tenancy_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/server/tenancy"
)

// fullDiskRegistry: a registry on a 4 MiB tmpfs with 64 KiB segments.
func fullDiskRegistry(t *testing.T) (*tenancy.Registry, string) {
	t.Helper()
	mnt := t.TempDir()
	testenv.MountTmpfs(t, mnt, "size=4m")
	r, _ := newRegistry(t, func(c *tenancy.Config) { c.Root, c.StoreConfig = filepath.Join(mnt, "tenants"), smallSegments })
	return r, mnt
}

// fillDisk writes mnt/ballast until the file system is full.
func fillDisk(t *testing.T, mnt string) {
	t.Helper()
	f, err := os.Create(filepath.Join(mnt, "ballast"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			return
		}
	}
}

// A store that a full disk stopped keeps serving reads while the disk
// stays full: it is not reopened then (its Open might have to write — a
// rotation's new header cut short, a fence's cancel marker — and fail,
// taking the reads with it, or stop again at the first write), and no
// Acquire pays for an Open meanwhile. Once there is room, the next
// Acquire reopens it and it writes again.
func TestStoreStoppedByAFullDiskServesReadsUntilThereIsRoom(t *testing.T) {
	r, mnt := fullDiskRegistry(t)
	l := acquire(t, r, "acme")
	s := l.Store()
	first := appendOne(t, s, "e")
	fillDisk(t, mnt)
	stopByFullDisk(t, s)
	l.Release()
	time.Sleep(tenancy.ReopenAfter + 100*time.Millisecond)
	before := r.Stats()
	for i := range 20 {
		l2, err := r.Acquire(context.Background(), "acme")
		if err != nil {
			t.Fatalf("Acquire %d while the disk stays full: %v", i, err)
		}
		if _, err := l2.Store().Get(first.ID); err != nil {
			t.Fatalf("read %d while the disk stays full: %v", i, err)
		}
		l2.Release()
	}
	if after := r.Stats(); after.Reopens != before.Reopens || after.OpenFailures != before.OpenFailures || after.Opens != before.Opens {
		t.Fatalf("20 Acquires while the disk stays full: %+v, before %+v; want no reopen and no open", after, before)
	}

	// Closed and opened again while the disk stays full, the store cannot
	// open: the writer stopped at a rotation (64 KiB segments, each
	// reserved whole), leaving the new segment without its header, which
	// Open must write. That failed open answers the Acquires until there
	// is room again: they do not each pay for a recovery that fails again.
	_ = r.Forget(context.Background(), "acme") // the close reports the writer's failure
	_, err := r.Acquire(context.Background(), "acme")
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Acquire of the closed store on the full disk: %v, want its open's ENOSPC", err)
	}
	failed := r.Stats().OpenFailures
	for i := range 20 {
		if _, err := r.Acquire(context.Background(), "acme"); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Acquire %d right after the failed open: %v, want its ENOSPC", i, err)
		}
	}
	if n := r.Stats().OpenFailures - failed; n != 0 {
		t.Fatalf("20 Acquires right after a failed open tried %d more opens, want none", n)
	}
	time.Sleep(tenancy.ReopenAfter + 100*time.Millisecond)
	if _, err := r.Acquire(context.Background(), "acme"); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Acquire a second after the failed open, the disk still full: %v, want the ENOSPC", err)
	}
	if n := r.Stats().OpenFailures - failed; n != 0 {
		t.Fatalf("an Acquire a second after the failed open, the disk still full, tried %d opens, want none", n)
	}

	// Room again: the tmpfs grows past what a reopen waits for (the
	// store's largest write and 9 MiB).
	testenv.ResizeTmpfs(t, mnt, "size=64m")
	l3 := acquire(t, r, "acme")
	defer l3.Release()
	appendOne(t, l3.Store(), "e")
	if _, err := l3.Store().Get(first.ID); err != nil {
		t.Fatalf("the first event after room was made: %v", err)
	}
}

// smallSegments is a tenant store of 64 KiB segments, each reserved
// whole: a full disk stops it at a rotation.
func smallSegments(string) core.Config {
	sc := tenancy.StoreConfig("", false)
	sc.SegmentMaxBytes = 64 << 10
	return sc
}

// stopByFullDisk appends to s until its writer stops for want of space.
func stopByFullDisk(t *testing.T, s *core.Store) {
	t.Helper()
	c, _ := core.NewCoordinate("e", "s")
	var err error
	for i := 0; i < 100000 && err == nil; i++ {
		_, err = s.Append(context.Background(), c, kind, []byte(`{"x":"0123456789012345678901234567890123456789012345678901234567890123456789"}`))
	}
	if !errors.Is(err, core.ErrWriterStopped) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("appends to a full disk ended with %v, want ErrWriterStopped wrapping ENOSPC", err)
	}
}

// stopAndClose opens tenant acme, fills the file system at fill until
// its writer stops (at a rotation: smallSegments), and closes it
// (Forget; the close reports the writer's failure).
func stopAndClose(t *testing.T, r *tenancy.Registry, fill string) {
	t.Helper()
	l := acquire(t, r, "acme")
	appendOne(t, l.Store(), "e")
	fillDisk(t, fill)
	stopByFullDisk(t, l.Store())
	l.Release()
	_ = r.Forget(context.Background(), "acme")
}

// A tenant whose directory is a file system of its own (a volume mounted
// there, or a symlink to one) is judged by that file system's room, not
// the tenants root's: a failed open is tried again once its own volume
// has room, however full the root is.
func TestFailedOpenWaitsForTheTenantsOwnFileSystem(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "tenants")
	testenv.MountTmpfs(t, root, "size=4m") // never room enough for a reopen
	vol := filepath.Join(base, "vol")
	testenv.MountTmpfs(t, vol, "size=4m")
	if err := os.MkdirAll(filepath.Join(vol, "acme"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(vol, "acme"), filepath.Join(root, "acme")); err != nil {
		t.Fatal(err)
	}
	r, _ := newRegistry(t, func(c *tenancy.Config) { c.Root, c.StoreConfig = root, smallSegments })
	stopAndClose(t, r, vol)
	if _, err := r.Acquire(context.Background(), "acme"); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Acquire on the full volume: %v, want its open's ENOSPC", err)
	}
	testenv.ResizeTmpfs(t, vol, "size=256m")
	time.Sleep(tenancy.ReopenAfter + 100*time.Millisecond)
	l2 := acquire(t, r, "acme")
	defer l2.Release()
	appendOne(t, l2.Store(), "e")
}

// A file system out of inodes fails a store with ENOSPC as a full one
// does, with its blocks free: the stopped store is not reopened (each
// reopen would end its readers' streams and stop again) until inodes
// are free again.
func TestStoreStoppedForWantOfInodesWaitsForThem(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "m")
	testenv.MountTmpfs(t, mnt, "size=64m,nr_inodes=64")
	r, _ := newRegistry(t, func(c *tenancy.Config) { c.Root, c.StoreConfig = filepath.Join(mnt, "tenants"), smallSegments })
	l := acquire(t, r, "acme")
	first := appendOne(t, l.Store(), "e")
	var eaters []string
	for i := 0; ; i++ {
		p := filepath.Join(mnt, fmt.Sprintf("inode-%d", i))
		f, err := os.Create(p)
		if err != nil {
			break
		}
		f.Close()
		eaters = append(eaters, p)
	}
	stopByFullDisk(t, l.Store())
	defer l.Release() // a reader's lease, held throughout
	time.Sleep(tenancy.ReopenAfter + 100*time.Millisecond)
	for i := range 20 {
		l2 := acquire(t, r, "acme")
		l2.Release()
		if _, err := l.Store().Get(first.ID); err != nil {
			t.Fatalf("read %d through the held lease while inodes are out: %v", i, err)
		}
	}
	if n := r.Stats().Reopens; n != 0 {
		t.Fatalf("%d reopens while the file system has no inodes, want none", n)
	}
	for _, p := range eaters {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	l3 := acquire(t, r, "acme")
	defer l3.Release()
	appendOne(t, l3.Store(), "e")
	if n := r.Stats().Reopens; n != 1 {
		t.Fatalf("%d reopens once inodes are free, want 1", n)
	}
}

// One event larger than the free space stops the writer as a full disk
// does. The store is not reopened while the space left is less than its
// largest write: the event, retried (a client after Retry-After, a
// worker's reaction), would stop it again each time, cutting its
// readers. With room for it, the reopened store takes it.
func TestStoreStoppedByAnEventLargerThanTheRoomWaitsForRoomForIt(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "m")
	testenv.MountTmpfs(t, mnt, "size=48m")
	r, _ := newRegistry(t, func(c *tenancy.Config) { c.Root = filepath.Join(mnt, "tenants") })
	l := acquire(t, r, "acme")
	first := appendOne(t, l.Store(), "e")
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 36<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	big := []byte(`{"p":"` + strings.Repeat("b", 14<<20) + `"}`)
	c, _ := core.NewCoordinate("big", "s")
	if _, err := l.Store().Append(context.Background(), c, kind, big); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("an event of 14 MiB with ~12 MiB free: %v, want ENOSPC", err)
	}
	l.Release()
	time.Sleep(tenancy.ReopenAfter + 100*time.Millisecond)
	for i := range 10 {
		l2 := acquire(t, r, "acme")
		if _, err := l2.Store().Append(context.Background(), c, kind, big); !errors.Is(err, core.ErrWriterStopped) {
			t.Fatalf("retry %d of the large event: %v, want ErrWriterStopped", i, err)
		}
		if _, err := l2.Store().Get(first.ID); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		l2.Release()
		time.Sleep(200 * time.Millisecond)
	}
	if n := r.Stats().Reopens; n != 0 {
		t.Fatalf("%d reopens with less room than the store's largest write, want none", n)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	l3 := acquire(t, r, "acme")
	defer l3.Release()
	if _, err := l3.Store().Append(context.Background(), c, kind, big); err != nil {
		t.Fatalf("the large event once there is room for it: %v", err)
	}
}

// An open that fails for want of space while the tenant is being
// removed is not remembered: a tenant re-created under that id (no data
// on disk) opens at once, not with its predecessor's failure.
func TestFailedOpenOfARemovedTenantIsNotRemembered(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "m")
	testenv.MountTmpfs(t, mnt, "size=12m")
	var armed, calls atomic.Int32
	gate := make(chan struct{})
	r, _ := newRegistry(t, func(c *tenancy.Config) {
		c.Root, c.StoreConfig = filepath.Join(mnt, "tenants"), smallSegments
		c.Exists = func(id string) bool {
			if id == "acme" && armed.Load() == 1 && calls.Add(1) == 2 {
				<-gate // the open's own check: hold the open while Remove starts
			}
			return true
		}
	})
	stopAndClose(t, r, mnt)

	armed.Store(1)
	acquired := make(chan error, 1)
	go func() { _, err := r.Acquire(context.Background(), "acme"); acquired <- err }()
	for calls.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	removed := make(chan error, 1)
	go func() { removed <- r.Remove(context.Background(), "acme") }()
	time.Sleep(100 * time.Millisecond) // Remove waits for the open under way
	close(gate)
	if err := <-acquired; !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("the open under way on the full disk: %v, want ENOSPC", err)
	}
	if err := <-removed; err != nil {
		t.Fatalf("Remove: %v", err)
	}
	armed.Store(0)
	// A little room (not a reopen's worth): a new store fits.
	b := filepath.Join(mnt, "ballast")
	fi, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(b, fi.Size()-3<<20); err != nil {
		t.Fatal(err)
	}
	l2 := acquire(t, r, "acme") // re-created: its directory is gone
	defer l2.Release()
	appendOne(t, l2.Store(), "e")
}
