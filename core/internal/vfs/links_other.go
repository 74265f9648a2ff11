//go:build !unix

package vfs

import "io/fs"

// linkCount is 1: the store makes hard links only on Unix (see Link).
func linkCount(fs.FileInfo) uint64 { return 1 }
