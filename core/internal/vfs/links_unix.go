//go:build unix

package vfs

import (
	"io/fs"
	"os"
	"syscall"
)

// Link makes newname a hard link to oldname (vfs.Link). Only Unix systems
// get it: on Windows a file open for reading (a snapshot being streamed)
// could not be renamed over or removed through another of its links.
func (osFS) Link(oldname, newname string) error { return os.Link(oldname, newname) }

// linkCount is fi's number of hard links (1 where the OS does not say).
func linkCount(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}
