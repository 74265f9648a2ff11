package testenv

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// MountTmpfs mounts a tmpfs with the mount options opts ("size=4m", say)
// at dir, creating dir first, and unmounts it when the test ends: a small
// file system to fill, for the tests of a full disk. It skips the test
// where mounting is not permitted (it needs root), whatever
// BATPAK_REQUIRE_TOOLS says: CI may run unprivileged.
func MountTmpfs(t testing.TB, dir, opts string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Skipf("cannot mount a tmpfs at %s (it needs root): %v", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
}

// ResizeTmpfs changes the size of the tmpfs MountTmpfs mounted at dir
// ("size=64m"): room made on a full disk.
func ResizeTmpfs(t testing.TB, dir, opts string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_REMOUNT, opts); err != nil {
		t.Fatalf("resize the tmpfs at %s: %v", dir, err)
	}
}
