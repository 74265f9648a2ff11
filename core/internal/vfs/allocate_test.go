package vfs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/batpak-go/batpak/core/internal/vfs"
)

// Allocate grows a file with blocks that read as zeros and leaves the
// bytes already there alone; where it cannot (outside Linux, or a file of
// the in-memory FS) it says ErrNoAllocate and changes nothing.
func TestAllocateGrowsWithZerosAndKeepsData(t *testing.T) {
	fsys := vfs.Default()
	f, err := fsys.OpenFile(filepath.Join(t.TempDir(), "seg"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("head")); err != nil {
		t.Fatal(err)
	}
	err = vfs.Allocate(f, 2, 1<<20)
	if runtime.GOOS != "linux" {
		if !errors.Is(err, vfs.ErrNoAllocate) {
			t.Fatalf("Allocate on %s = %v, want ErrNoAllocate", runtime.GOOS, err)
		}
		return
	}
	if errors.Is(err, vfs.ErrNoAllocate) {
		t.Skipf("this file system has no fallocate: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 2+1<<20 {
		t.Fatalf("size after Allocate = %d, want %d", fi.Size(), 2+1<<20)
	}
	got := make([]byte, fi.Size())
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if string(got[:4]) != "head" || !bytes.Equal(got[4:], make([]byte, len(got)-4)) {
		t.Fatalf("after Allocate the file starts %q and is not all zeros after", got[:4])
	}

	m := vfs.NewStrictMem()
	mf, err := m.OpenFile("seg", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := vfs.Allocate(mf, 0, 4096); !errors.Is(err, vfs.ErrNoAllocate) {
		t.Fatalf("Allocate of an in-memory file = %v, want ErrNoAllocate", err)
	}
}
