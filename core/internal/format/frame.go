package format

import (
	"encoding/binary"
	"hash/crc32"
	"io"
)

var le = binary.LittleEndian

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Frame sizes and record bounds.
const (
	// FrameHeaderSize is the frame prefix: u32 record length, u32 CRC32C
	// over (length bytes ‖ record).
	FrameHeaderSize = 8
	// MinRecordSize is the smallest record a frame may hold.
	MinRecordSize = 16
	// MaxRecordSize is the largest: a 64 MiB payload with the longest
	// coordinate and idempotency key.
	MaxRecordSize = 64<<20 + EventFixedSize + 3*MaxIdempotencyKeyBytes + 2*MaxCoordinatePartBytes
	// MaxIdempotencyKeyBytes is the longest idempotency key a record holds.
	MaxIdempotencyKeyBytes = 256
	// MaxCoordinatePartBytes is the longest entity or scope a record holds.
	MaxCoordinatePartBytes = 1024
)

// CRC32C is the Castagnoli CRC of b, as headers and footers use it.
func CRC32C(b []byte) uint32 { return FrameCRC(nil, b) }

// FrameCRC is the frame checksum: CRC32C over lenBytes then rec.
func FrameCRC(lenBytes, rec []byte) uint32 {
	return crc32.Update(crc32.Update(0, crcTable, lenBytes), crcTable, rec)
}

// AppendFrame appends rec framed (length and CRC) to dst.
func AppendFrame(dst, rec []byte) []byte {
	start := len(dst)
	dst = Grow(dst, FrameHeaderSize+len(rec))
	f := dst[start:]
	copy(f[FrameHeaderSize:], rec)
	SealFrame(f[:FrameHeaderSize+len(rec)])
	return dst
}

// SealFrame writes the length and CRC of the frame f, whose record
// (f[FrameHeaderSize:]) is already in place.
func SealFrame(f []byte) {
	rec := f[FrameHeaderSize:]
	le.PutUint32(f[0:], uint32(len(rec)))
	le.PutUint32(f[4:], FrameCRC(f[0:4], rec))
}

// FrameAt returns the record of a valid frame starting at off, or false:
// the length must be within bounds and fit in data, and the CRC hold.
func FrameAt(data []byte, off int) ([]byte, bool) {
	if off < 0 || off+FrameHeaderSize > len(data) {
		return nil, false
	}
	n := int(le.Uint32(data[off:]))
	if n < MinRecordSize || n > MaxRecordSize || off+FrameHeaderSize+n > len(data) {
		return nil, false
	}
	rec := data[off+FrameHeaderSize : off+FrameHeaderSize+n]
	if FrameCRC(data[off:off+4], rec) != le.Uint32(data[off+4:]) {
		return nil, false
	}
	return rec, true
}

// Tail says how a frame scan ended.
type Tail int

const (
	// TailClean: end of data, or zero padding from preallocation.
	TailClean Tail = iota
	// TailTorn: unreadable bytes with no valid frame after them (a write
	// cut short).
	TailTorn
	// TailCorrupt: an unreadable frame followed by valid ones (damage in
	// the middle of the log).
	TailCorrupt
)

// ScanFrames calls fn for every valid frame from offset from (a frame
// boundary; SegmentHeaderSize for a whole segment) and returns where the
// valid data ends and how the scan ended. A frame that fails its checks
// ends the scan: if only zeros follow it is a clean end, if a valid frame
// of a known record type can be found anywhere after it the data is
// corrupt (data in the middle is never silently dropped), otherwise it is
// a torn tail. The search for a later frame is bounded (NextFrame, with
// ResyncBudget of the bytes after the end): bytes that would take more
// to search (crafted to look like frames at every offset) are taken as
// corrupt too. An error from fn stops the scan and is returned with the
// offset of that frame.
func ScanFrames(data []byte, from int, fn func(off int, rec []byte) error) (end int, tail Tail, err error) {
	return ScanFramesBudget(data, from, nil, fn)
}

// ScanFramesBudget is ScanFrames spending the search after a bad frame
// from *budget (nil: a budget of its own, ResyncBudget of the bytes
// after it): a caller scanning many places of one file, or many files,
// shares one budget among them, so that crafted damage repeated at each
// cannot cost a budget every time.
func ScanFramesBudget(data []byte, from int, budget *int64, fn func(off int, rec []byte) error) (end int, tail Tail, err error) {
	off := from
	for {
		rec, ok := FrameAt(data, off)
		if !ok {
			break
		}
		if err := fn(off, rec); err != nil {
			return off, TailClean, err
		}
		off += FrameHeaderSize + len(rec)
	}
	if off >= len(data) || AllZero(data[off:]) {
		return off, TailClean, nil
	}
	if budget == nil {
		b := ResyncBudget(len(data) - off)
		budget = &b
	}
	if _, found, exhausted := NextFrame(data, off, budget); found || exhausted {
		return off, TailCorrupt, nil
	}
	return off, TailTorn, nil
}

// ResyncBudget is how many bytes of CRCs a search for the next frame
// after tail bytes of damage may compute (NextFrame): 64 MiB and four
// times the damage. Damage that is not crafted costs a small part of it
// (a random length field rarely fits the bytes left, or names a known
// record type).
func ResyncBudget(tail int) int64 { return 64<<20 + 4*int64(max(tail, 0)) }

// NextFrame looks for the first offset after from where a valid frame of
// a known record type starts, and returns it (found). Each offset's
// length field, record type and (for an event) field lengths are checked
// before its CRC, and the CRCs computed are spent from *budget: when it
// runs out first, exhausted is true and nothing is known of the bytes
// left (the caller takes them as damaged, never as a clean end). So a
// search costs time linear in the bytes searched plus the budget, where
// checking every offset's CRC over the length it claims would cost their
// product.
func NextFrame(data []byte, from int, budget *int64) (p int, found, exhausted bool) {
	for p = from + 1; p+FrameHeaderSize+MinRecordSize <= len(data); p++ {
		n := int(le.Uint32(data[p:]))
		if n < MinRecordSize || n > MaxRecordSize || p+FrameHeaderSize+n > len(data) {
			continue
		}
		rec := data[p+FrameHeaderSize : p+FrameHeaderSize+n]
		if !KnownRecord(rec) || rec[0] == RecEvent && !CheckEvent(rec) {
			continue
		}
		if *budget -= int64(n); *budget < 0 {
			return p, false, true
		}
		if FrameCRC(data[p:p+4], rec) == le.Uint32(data[p+4:]) {
			return p, true, false
		}
	}
	return len(data), false, false
}

// ScanFramesAt is ScanFrames over the first size bytes of r, read a chunk
// at a time into buf (its length is the chunk's; frames longer than buf
// are read whole into one more buffer, grown to the largest of them, so a
// scan holds at most buf and its largest frame) instead of being mapped:
// scanning a whole
// segment from a mapping costs a page fault per 16 pages and a TLB miss
// per page, about three times the time of copying it out in chunks
// (measured on a 256 MiB segment in the page cache). fn's record is valid
// only during the call. The scan stops at the first frame that fails its
// checks, or an error from fn or r; reached reports whether the frames
// ran exactly to size. What ended a scan short of size (zeros, a torn
// tail, damage) is not told: ScanFrames over the mapped bytes tells it.
func ScanFramesAt(r io.ReaderAt, size int64, from int64, buf []byte, fn func(off int, rec []byte) error) (end int64, reached bool, err error) {
	return scanFramesAt(r, size, from, buf, 0, fn)
}

// scanFramesAt is ScanFramesAt with buf[:held] already holding the first
// held bytes of r (held <= from: none then).
func scanFramesAt(r io.ReaderAt, size int64, from int64, buf []byte, held int64, fn func(off int, rec []byte) error) (end int64, reached bool, err error) {
	off := from
	lo, n := off, int64(0) // buf[:n] holds the bytes from lo on
	if held > 0 && held >= from {
		lo, n = 0, held
	}
	var large []byte // for frames longer than buf
	fill := func(at, want int64) ([]byte, error) {
		if at >= lo && at+want <= lo+n {
			return buf[at-lo : at-lo+want], nil
		}
		if want > int64(len(buf)) {
			if int64(cap(large)) < want {
				large = make([]byte, want)
			}
			return large[:want], readFull(r, large[:want], at)
		}
		m := min(int64(len(buf)), size-at)
		if err := readFull(r, buf[:m], at); err != nil {
			return nil, err
		}
		lo, n = at, m
		return buf[:want], nil
	}
	for off+FrameHeaderSize <= size {
		h, err := fill(off, FrameHeaderSize)
		if err != nil {
			return off, false, err
		}
		l := int64(le.Uint32(h))
		if l < MinRecordSize || l > MaxRecordSize || off+FrameHeaderSize+l > size {
			return off, false, nil
		}
		f, err := fill(off, FrameHeaderSize+l)
		if err != nil {
			return off, false, err
		}
		rec := f[FrameHeaderSize:]
		if FrameCRC(f[:4], rec) != le.Uint32(f[4:]) {
			return off, false, nil
		}
		if err := fn(int(off), rec); err != nil {
			return off, false, err
		}
		off += FrameHeaderSize + l
	}
	return off, off == size, nil
}

// readFull fills b from r at off: a short read is an error (io.ErrUnexpectedEOF
// when r gives none).
func readFull(r io.ReaderAt, b []byte, off int64) error {
	k, err := r.ReadAt(b, off)
	if k == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// AllZero reports whether b holds only zero bytes.
func AllZero(b []byte) bool {
	for len(b) >= 8 {
		if le.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Grow extends b by n bytes, reallocating (doubling) when needed.
func Grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}
