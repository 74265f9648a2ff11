package tenancy

import (
	"os"

	"golang.org/x/sys/unix"
)

// minFreeInodes is how many free inodes roomFor wants besides the space:
// a file system out of inodes fails a store's new segment or checkpoint
// with ENOSPC just as a full one does.
const minFreeInodes = 16

// roomFor reports whether the file system holding dir has need bytes free
// for this process — the blocks reserved for root count when it runs as
// root, as they do for its writes — and minFreeInodes inodes where it
// counts them. It reports true when that cannot be told.
func roomFor(dir string, need int64) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return true
	}
	free := st.Bavail
	if os.Geteuid() == 0 {
		free = st.Bfree
	}
	if st.Files > 0 && st.Ffree < minFreeInodes {
		return false
	}
	return free*uint64(st.Bsize) >= uint64(need)
}
