package core

import "github.com/batpak-go/batpak/core/internal/format"

// digestsAhead re-derives, for Verify, the digests of the event frames
// ahead of the one being checked, many at a time (format.EventDigests: 16
// inputs at once with AVX-512), instead of one frame after another. It
// reads ahead only as far as frames are whole (their CRCs hold), so it
// hashes no frame a writer beside a read-only Verify is still copying in
// (that frame is read ahead again once the walk reaches it); a frame the
// read-ahead did not cover is hashed on its own.
type digestsAhead struct {
	data            []byte // the segment (or a packed segment's block) being walked
	base            int    // the segment offset data starts at
	offs            []int  // offsets of the frames read ahead
	recs            []format.EventView
	payload, chains [][32]byte
	next            int // the entry the walk reaches next
}

// aheadFrames is how many event frames one read-ahead covers.
const aheadFrames = 256

// resetAt starts on data, the bytes of a segment from offset base on (a
// plain segment's whole, base 0; a packed segment's block).
func (d *digestsAhead) resetAt(data []byte, base int) {
	clear(d.recs[:cap(d.recs)]) // no view keeps the previous segment's data alive
	d.data, d.base, d.offs, d.recs, d.next = data, base, d.offs[:0], d.recs[:0], 0
}

// at returns the payload digest and chain hash the event record v, at
// offset off of the segment, should carry.
func (d *digestsAhead) at(off int, v format.EventView) (payload, chain [32]byte) {
	off -= d.base
	if off < 0 || off >= len(d.data) {
		return format.PayloadHash(v.Payload()), format.ChainHash(v, v.StringsEnd())
	}
	if d.next >= len(d.offs) || d.offs[d.next] != off {
		d.readAhead(off)
	}
	if d.next < len(d.offs) && d.offs[d.next] == off {
		i := d.next
		d.next++
		return d.payload[i], d.chains[i]
	}
	return format.PayloadHash(v.Payload()), format.ChainHash(v, v.StringsEnd())
}

// readAhead takes the digests of up to aheadFrames event frames from off
// on, as far as the frames are whole (format.FrameAt checks each CRC).
func (d *digestsAhead) readAhead(off int) {
	d.offs, d.recs, d.next = d.offs[:0], d.recs[:0], 0
	for o := off; len(d.offs) < aheadFrames; {
		rec, ok := format.FrameAt(d.data, o)
		if !ok {
			break
		}
		if rec[0] == format.RecEvent && format.CheckEvent(rec) {
			d.offs = append(d.offs, o)
			d.recs = append(d.recs, format.EventView(rec))
		}
		o += format.FrameHeaderSize + len(rec)
	}
	n := len(d.recs)
	d.payload, d.chains = grow(d.payload, n), grow(d.chains, n)
	format.EventDigests(d.recs, d.payload, d.chains)
}
