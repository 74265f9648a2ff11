// Package vfs is the file-system seam of the store: every operating-system
// call core makes on files and directories goes through an FS, so tests can
// put an error-injecting (errorfs) or a strict in-memory (NewStrictMem) file
// system under a real store.
//
// # Contract
//
// An FS behaves like the os package on one machine:
//
//   - Paths are operating-system paths (filepath); a missing file is an
//     error matching fs.ErrNotExist, an existing one under O_EXCL
//     fs.ErrExist.
//   - File.Write, WriteAt and Truncate change what later reads and
//     mappings of the file see at once (the page cache), not what survives
//     a power loss. Only File.Sync, SyncData and SyncAll make a file's
//     contents durable, and only FS.SyncDir makes the entries of a
//     directory (files created, renamed, removed, subdirectories made)
//     durable: a file whose data is synced but whose name is not can still
//     vanish.
//   - SyncData flushes the data and the metadata needed to read it back
//     (fdatasync on Linux, fsync on macOS and the BSDs, FlushFileBuffers on
//     Windows); SyncAll flushes everything (fsync on Linux and the BSDs,
//     fcntl(F_FULLFSYNC) on macOS); Sync is os.File.Sync.
//   - MmapRead maps the first n bytes of a file read-only. On Unix n may
//     exceed the file's size (bytes past EOF must never be touched) and the
//     mapping sees later writes; where that is not possible (Windows, the
//     memory file systems) the mapping stops at EOF, and the caller maps
//     again to see a grown file. MmapWrite maps n bytes writable, or
//     returns a nil slice and no error where writing through a mapping is
//     not supported (Windows, the memory file systems): the caller then
//     writes with WriteAt. Munmap releases either; a mapping stays valid
//     after its file is closed.
//   - Lock takes an exclusive lock on an open file without waiting, failing
//     with ErrLocked when another holder has it; the operating system drops
//     it when the process dies. Unlock releases it.
//
// Default returns the real file system. The per-OS calls are in
// os_unix.go, os_linux.go, os_darwin.go, os_bsd.go and os_windows.go.
package vfs
