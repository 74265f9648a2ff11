//go:build unix && !linux && !darwin

package vfs

import "os"

// syncData is fsync(2) on the BSDs and other Unix systems.
func syncData(f *os.File) error { return f.Sync() }

// syncAll is fsync(2).
func syncAll(f *os.File) error { return f.Sync() }
