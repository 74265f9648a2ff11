// Package errorfs wraps a vfs.FS and makes chosen operations fail, as a
// failing disk would: the Nth write, sync, rename, mapping, removal,
// directory sync or open — optionally only of files whose name matches a
// pattern — fails with EIO or ENOSPC, or writes only part of its bytes
// (a short write). It counts every operation it sees, so a test can also
// assert what a store did (how many syncs, renames, directory syncs).
//
// Typical use:
//
//	efs := errorfs.Wrap(vfs.NewStrictMem())
//	efs.Inject(errorfs.Fault{Op: errorfs.OpSync, Pattern: "*.seg", Nth: 3, Err: errorfs.EIO})
//
// A fault fires once, on the Nth matching operation counted from when it
// was injected, unless Persist is set (then it fires on that one and every
// later matching one). Operations that fail return the error wrapped in an
// *fs.PathError, so errors.Is(err, errorfs.EIO) holds.
package errorfs
