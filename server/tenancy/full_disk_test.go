//go:build linux

package tenancy_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/tenancy"
)

// fullDiskRegistry: a registry on a 4 MiB tmpfs with 64 KiB segments.
func fullDiskRegistry(t *testing.T) (*tenancy.Registry, string) {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (it needs root): %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	r, _ := newRegistry(t, func(c *tenancy.Config) {
		c.Root = filepath.Join(mnt, "tenants")
		c.StoreConfig = func(string) core.Config {
			sc := tenancy.StoreConfig("", false)
			sc.SegmentMaxBytes = 64 << 10
			return sc
		}
	})
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
	c, _ := core.NewCoordinate("e", "s")
	var err error
	for i := 0; i < 10000 && err == nil; i++ {
		_, err = s.Append(context.Background(), c, kind, []byte(`{"x":"0123456789012345678901234567890123456789012345678901234567890123456789"}`))
	}
	if !errors.Is(err, core.ErrWriterStopped) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("appends to a full disk ended with %v, want ErrWriterStopped wrapping ENOSPC", err)
	}
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
	_, err = r.Acquire(context.Background(), "acme")
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

	// Room again (the tmpfs grows past the 8 MiB a reopen waits for).
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatal(err)
	}
	l3 := acquire(t, r, "acme")
	defer l3.Release()
	appendOne(t, l3.Store(), "e")
	if _, err := l3.Store().Get(first.ID); err != nil {
		t.Fatalf("the first event after room was made: %v", err)
	}
}
