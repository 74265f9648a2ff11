package core

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"
)

// eventIDs is the process's event-id source.
var eventIDs idSource

// idSource makes UUIDv7 ids (RFC 9562): 48 bits of Unix time in
// milliseconds, the version, a 12-bit sub-millisecond fraction (steps of
// 256 ns, as github.com/google/uuid lays it out), the variant and 62
// random bits. The ids one process makes are strictly increasing: when
// the clock has not moved past the last id (several ids within one step,
// or the wall clock set back), the next id takes the last id's time plus
// one step, so the time an id carries may run ahead of the clock by as
// much as ids were made faster than one per step.
//
// The cost per id is a ChaCha8 draw under a mutex, and one monotonic
// clock reading per hold of the mutex: a batch draws all its ids in one
// hold (fill). The wall clock is read when the source starts and again after
// each second of monotonic time (idAnchorEvery); in between, wall time is
// the anchor plus the monotonic time elapsed since it, so a wall-clock
// step shows in ids within a second. The random bits come from a ChaCha8
// stream (a cryptographically strong generator) reseeded from crypto/rand
// at every re-anchoring.
type idSource struct {
	mu       sync.Mutex
	last     int64     // the last id's milliseconds<<12 | fraction
	anchor   time.Time // a clock reading carrying its monotonic reading
	anchorNs int64     // anchor as Unix nanoseconds
	rng      mrand.ChaCha8
	started  bool
}

// idAnchorEvery is how long the source extrapolates the wall clock from
// the monotonic one before reading it again.
const idAnchorEvery = time.Second

func (g *idSource) next() EventID {
	var id [1]EventID
	g.fill(id[:])
	return id[0]
}

// fill makes len(ids) ids, in increasing order, with one clock reading
// and one hold of the source's lock: a batch's ids cost its producer one
// lock, not one each, while other producers draw ids too. The ids are
// those len(ids) calls of next would have made at that instant.
func (g *idSource) fill(ids []EventID) {
	if len(ids) == 0 {
		return
	}
	g.mu.Lock()
	d := time.Since(g.anchor)
	if !g.started || d < 0 || d >= idAnchorEvery {
		g.reanchor()
		d = 0
	}
	ns := g.anchorNs + int64(d)
	ms := ns / int64(time.Millisecond)
	t := ms<<12 | (ns-ms*int64(time.Millisecond))>>8
	for i := range ids {
		if t <= g.last {
			t = g.last + 1
		}
		g.last = t
		r := g.rng.Uint64()
		binary.BigEndian.PutUint64(ids[i][:8], uint64(t>>12)<<16|0x7000|uint64(t&0xfff))
		binary.BigEndian.PutUint64(ids[i][8:], r>>2|1<<63) // variant 10
	}
	g.mu.Unlock()
}

// reanchor reads the wall clock and reseeds the random stream.
func (g *idSource) reanchor() {
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil { // nothing sensible to fall back to
		panic(fmt.Sprintf("batpak: cannot read randomness for event ids: %v", err))
	}
	g.rng.Seed(seed)
	g.anchor = time.Now()
	g.anchorNs = g.anchor.UnixNano()
	g.started = true
}
