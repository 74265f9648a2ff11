package tenancy

import "golang.org/x/sys/unix"

// reopenRoom is the free space a file system must have again before a
// store stopped by a full disk is reopened: two of a segment's
// extensions (core zero-fills or reserves at most 4 MiB ahead).
const reopenRoom = 8 << 20

// roomFor reports whether dir's file system has reopenRoom available to
// unprivileged writers (true when that cannot be told).
func roomFor(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return true
	}
	return st.Bavail*uint64(st.Bsize) >= reopenRoom
}
