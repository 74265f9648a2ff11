// Package segment deals with the store's segment files as files: mapping
// them for reading under a file-descriptor budget (Cache), listing and
// ordering them (List, Order), packed (compressed) segments (ParsePacked,
// WritePacked, Load), the store's writer lock (Lock), and the file helpers
// every layer above uses (WriteFileAtomic, SyncDir, MkdirDurable, ZeroFill,
// WriteSynced).
//
// It sits between core and the layers below: the byte layouts are
// core/internal/format's, every operating-system call goes through the
// core/internal/vfs.FS the caller passes. It never imports core.
//
// Errors: damage found in a segment file (an empty file, a packed segment
// whose structure fails its checks, two generations of one segment) is a
// *CorruptError, which core turns into its *CorruptionError in one place;
// a lock held by another process is a *LockedError. Messages name the file
// and what was wrong; I/O errors are wrapped with what was being done.
//
// Packed segments. A sealed segment can be stored compressed, as a new
// generation of its file (see RepackedKey):
//
//	header (32 bytes, as a plain segment's, version 2, codec at byte 10,
//	        byte 11 = 1 when every frame kept its offset, see SamePlacesPacked) |
//	blocks | block table | trailer
//	block table: n × (logical start u32, file offset u64, stored length u32,
//	                  logical length u32, CRC32C of the stored bytes u32)
//	trailer (32 bytes): "BPAKBLKS" | table offset u64 | blocks u32 |
//	                  logical size u64 | CRC32C of table and trailer u32
//
// The logical content is the plain segment — its header, then its frames
// at the same offsets — cut into blocks of about 64 KiB at frame
// boundaries (a frame never spans blocks), each compressed on its own.
// Index entries keep naming logical offsets, so reading one event
// decompresses one block, never the segment.
package segment
